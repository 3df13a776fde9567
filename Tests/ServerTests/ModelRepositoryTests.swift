import Foundation
import Server
import TestSupport
import Testing

@Suite("Model repository")
struct ModelRepositoryTests {
    /// A repository with one model file, a symbolic link to it, and a sub-folder.
    struct Fixture {
        let dir: TemporaryDirectory
        let repository: ModelRepository

        init() throws {
            dir = try TemporaryDirectory(prefix: "model-repository")
            try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
            try Data("model bytes".utf8).write(to: URL(fileURLWithPath: dir.file("sub/model.onnx")))
            try FileManager.default.createSymbolicLink(
                atPath: dir.file("alias.onnx"), withDestinationPath: "sub/model.onnx")
            repository = ModelRepository(root: dir.path)
        }

        /// What `resolve` answers for `relative`, within a deadline: nil when it had not answered by then.
        func resolve(_ relative: String) async -> Result<String, any Error>? {
            await finishing(within: .seconds(5)) { [repository] in Result { try repository.resolveBlocking(relative) } }
        }
    }

    @Test("a model and a link to it inside the repository resolve to the model's real path")
    func resolvesInside() async throws {
        let f = try Fixture()
        let real = URL(fileURLWithPath: f.dir.file("sub/model.onnx")).resolvingSymlinksInPath().path
        #expect(try await f.resolve("sub/model.onnx")?.get() == real)
        #expect(try await f.resolve("alias.onnx")?.get() == real)
    }

    @Test("'..' is found by bytes: one followed by a combining mark is refused as '..' (as Characters it was not)")
    func dotDotByBytes() async throws {
        let f = try Fixture()
        for path in ["../x.onnx", "sub/../../x.onnx", "../\u{301}x.onnx"] {
            guard case .failure(let error)? = await f.resolve(path) else {
                Issue.record("\(path) was not refused")
                continue
            }
            #expect("\(error)".contains("may not contain '..'"), "\(path): \(error)")
        }
    }

    @Test("a FIFO, a link to /dev/zero and a folder are refused at once, naming the path")
    func refusesWhatIsNotARegularFile() async throws {
        let f = try Fixture()
        try makeFIFO(at: f.dir.file("pipe.onnx"))
        defer { releaseFIFOReaders(at: f.dir.file("pipe.onnx")) }
        try FileManager.default.createSymbolicLink(atPath: f.dir.file("zero.onnx"), withDestinationPath: "/dev/zero")
        for (path, status) in [("pipe.onnx", 400), ("zero.onnx", 400), ("sub", 404)] {
            let answer = await f.resolve(path)
            guard let answer else {
                Issue.record("resolving \(path) did not answer within the deadline")
                continue
            }
            guard case .failure(let error) = answer, let problem = error as? Problem else {
                Issue.record("\(path) resolved to \(answer), expected a refusal")
                continue
            }
            #expect(problem.status.code == status, "\(path): \(problem.detail)")
            #expect(problem.detail.contains("'\(path)'"), "\(problem.detail)")
        }
    }
}

@Suite("Model repository: names compared byte for byte")
struct ModelRepositoryUnicodeTests {
    @Test("a link to a sibling folder whose name is the repository's in another Unicode form leaves the repository")
    func canonicallyEquivalentSibling() async throws {
        let dir = try TemporaryDirectory(prefix: "unicode-repository")
        // "modèles" composed (NFC, the repository) and decomposed (NFD, a different folder to the file system).
        let composed = dir.file("mod\u{E8}les"), decomposed = dir.file("mode\u{300}les")
        #expect(composed == decomposed, "Swift takes them for equal: what the comparison must not do")
        for folder in [composed, decomposed] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).count == 2)
        try Data("outside".utf8).write(to: URL(fileURLWithPath: decomposed + "/outside.onnx"))
        try Data("inside".utf8).write(to: URL(fileURLWithPath: composed + "/inside.onnx"))
        try FileManager.default.createSymbolicLink(atPath: composed + "/link.onnx",
            withDestinationPath: "../mode\u{300}les/outside.onnx")
        let repository = ModelRepository(root: composed)
        #expect(try repository.resolveBlocking("inside.onnx").hasSuffix("/inside.onnx"))
        #expect { _ = try repository.resolveBlocking("link.onnx") } throws: { "\($0)".contains("leaves the model repository") }
        #expect(!repository.contains(decomposed + "/outside.onnx"))
        #expect(repository.relative(decomposed + "/outside.onnx") == decomposed + "/outside.onnx")
    }
}
