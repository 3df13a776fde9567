import Foundation
import HotSwap
import Primitives
import TestSupport
import Testing

extension HotSwapSuite {
    /// Opening a model file: only regular files are read, and anything else is refused without waiting on it.
    @Suite("Model files")
    struct ModelFileTests {
        @Test("a FIFO, a link to /dev/zero and a folder are refused at once as unreadable, naming the path")
        func notRegularFiles() async throws {
            let dir = try TemporaryDirectory()
            try makeFIFO(at: dir.file("pipe.onnx"))
            defer { releaseFIFOReaders(at: dir.file("pipe.onnx")) }
            try FileManager.default.createSymbolicLink(atPath: dir.file("zero.onnx"), withDestinationPath: "/dev/zero")
            try FileManager.default.createDirectory(atPath: dir.file("folder.onnx"), withIntermediateDirectories: true)
            let cases = [
                (dir.file("pipe.onnx"), "not a regular file"), (dir.file("zero.onnx"), "not a regular file"),
                (dir.file("folder.onnx"), "it is a directory"), (dir.file("missing.onnx"), "no such file"),
            ]
            for (path, expected) in cases {
                let outcome = await finishing(within: .seconds(5)) {
                    Result { () throws(ModelFileError) -> ModelFile in try ModelFile(verifying: path) }
                }
                guard let outcome else {
                    Issue.record("opening \(path) did not finish within 5 s")
                    continue
                }
                guard case .failure(.unreadable(let failedPath, let reason)) = outcome else {
                    Issue.record("\(path): expected unreadable, got \(outcome)")
                    continue
                }
                #expect(failedPath == path)
                #expect(reason.contains(expected), "\(path): \(reason)")
            }
        }

        @Test("a file over 2 GiB is refused at once, unread (it was hashed whole, copied and held in memory)")
        func tooLarge() async throws {
            let dir = try TemporaryDirectory()
            let path = dir.file("huge.onnx")
            // Sparse: 200 GB that take no disk.
            try #require(FileManager.default.createFile(atPath: path, contents: nil))
            try #require(truncate(path, 200_000_000_000) == 0)
            let outcome = await finishing(within: .seconds(5)) {
                Result { () throws(ModelFileError) -> ModelFile in try ModelFile(verifying: path) }
            }
            guard case .failure(.unreadable(_, let reason))? = outcome else {
                Issue.record("expected a refusal within 5 s, got \(String(describing: outcome))")
                return
            }
            #expect(reason.contains("larger than 2 GiB"), "\(reason)")
        }

        @Test("a regular file and a link to one still hash to the bytes' SHA-256")
        func regularFiles() async throws {
            let dir = try TemporaryDirectory()
            try Data("model bytes".utf8).write(to: URL(fileURLWithPath: dir.file("model.onnx")))
            try FileManager.default.createSymbolicLink(atPath: dir.file("link.onnx"), withDestinationPath: "model.onnx")
            let expected = String(try await runProcess("/usr/bin/sha256sum", [dir.file("model.onnx")]).stdout.prefix(64))
            for path in [dir.file("model.onnx"), dir.file("link.onnx")] {
                let file = try ModelFile(verifying: path)
                #expect(file.sha256 == expected)
                #expect(file.byteCount == 11)
                #expect(try file.readVerifiedBytes() == Array("model bytes".utf8))
            }
        }

        @Test("a file grown since it was verified is refused as changed, read no further than a chunk past its size")
        func grownSinceVerification() throws {
            let dir = try TemporaryDirectory()
            let path = dir.file("model.onnx")
            try Data("model bytes".utf8).write(to: URL(fileURLWithPath: path))
            let file = try ModelFile(verifying: path)
            // Replaced by a much larger file (sparse: 4 GiB that would be read to its end, and buffered, before).
            try Data("model bytes".utf8).write(to: URL(fileURLWithPath: path))
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: 4 << 30)
            try handle.close()
            #expect { _ = try file.readVerifiedBytes() } throws: { error in
                guard case .changedSinceVerification = error as? ModelFileError else { return false }
                return true
            }
            #expect { try file.copyVerified(to: dir.file("copy.onnx")) } throws: { error in
                guard case .changedSinceVerification = error as? ModelFileError else { return false }
                return true
            }
            #expect(!FileManager.default.fileExists(atPath: dir.file("copy.onnx")))
            // What is read of it: nothing, its size already over the verified one (4 GiB before, buffered whole).
            let (digest, count) = try FileDigest.sha256(ofFileAt: path, maxBytes: 11)
            #expect(count == 4 << 30 && digest.isEmpty)
        }
    }
}
