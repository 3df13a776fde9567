import Foundation
import TestSupport
import Testing

@testable import ModelSigning

/// Signature and key files that are not small regular files: refused at once with the reason, never read for ever
/// or into all of memory.
@Suite("Hostile signature and key files")
struct HostileFileTests {
    /// The most bytes a signature or key file may hold.
    static let limit = 64 << 10

    /// What `read` gives within a deadline; nil (and a recorded issue) when it had not returned by then.
    private func outcome<T: Sendable, E: Error>(_ what: String, _ read: @escaping @Sendable () throws(E) -> T) async
        -> Result<T, E>?
    {
        let outcome = await finishing(within: .seconds(5)) { Result { () throws(E) -> T in try read() } }
        if outcome == nil { Issue.record("reading \(what) did not finish within 5 s") }
        return outcome
    }

    /// Expects `.unreadable` naming `path`, with a reason containing `expected`.
    private func expectUnreadable<T>(_ outcome: Result<T, SignatureError>?, path: String, expected: String) {
        guard let outcome else { return }
        guard case .failure(.unreadable(let failedPath, let reason)) = outcome else {
            Issue.record("\(path): expected unreadable, got \(outcome)")
            return
        }
        #expect(failedPath == path)
        #expect(reason.contains(expected), "\(reason)")
    }

    @Test("a .sig that is a FIFO is refused at once, whether signatures are required or not")
    func signatureFIFO() async throws {
        for required in [true, false] {
            let f = try SignatureTests.Fixture(requireSignature: required)
            try FileManager.default.removeItem(atPath: f.signaturePath)
            try makeFIFO(at: f.signaturePath)
            defer { releaseFIFOReaders(at: f.signaturePath) }
            let result = await outcome(f.signaturePath) { () throws(SignatureError) in try f.verifyAsLoaded() }
            expectUnreadable(result, path: f.signaturePath, expected: "not a regular file")
        }
    }

    @Test("a .sig that links to /dev/zero is refused at once")
    func signatureDevZero() async throws {
        let f = try SignatureTests.Fixture()
        try FileManager.default.removeItem(atPath: f.signaturePath)
        try FileManager.default.createSymbolicLink(atPath: f.signaturePath, withDestinationPath: "/dev/zero")
        let result = await outcome(f.signaturePath) { () throws(SignatureError) in try f.verifyAsLoaded() }
        expectUnreadable(result, path: f.signaturePath, expected: "not a regular file")
        let verified = await outcome(f.signaturePath) { () throws(SignatureError) in
            try f.verifier.verifyModel(at: f.model)
        }
        expectUnreadable(verified, path: f.signaturePath, expected: "not a regular file")
    }

    @Test("a .sig past the size limit is refused, even when it holds a valid signature")
    func signatureTooLarge() async throws {
        let f = try SignatureTests.Fixture()
        var padded = try Data(contentsOf: URL(fileURLWithPath: f.signaturePath))
        padded.append(Data(repeating: UInt8(ascii: " "), count: Self.limit))
        try padded.write(to: URL(fileURLWithPath: f.signaturePath))
        let result = await outcome(f.signaturePath) { () throws(SignatureError) in try f.verifyAsLoaded() }
        expectUnreadable(result, path: f.signaturePath, expected: "larger than the limit of \(Self.limit) bytes")
    }

    @Test("a trusted key file that is a FIFO, links to /dev/zero or is past the size limit is refused at once")
    func keyFiles() async throws {
        let dir = try TemporaryDirectory()
        let key = SigningKey()
        try key.write(to: dir.file("k"))
        try makeFIFO(at: dir.file("fifo.pub"))
        defer { releaseFIFOReaders(at: dir.file("fifo.pub")) }
        try FileManager.default.createSymbolicLink(atPath: dir.file("zero.pub"), withDestinationPath: "/dev/zero")
        var padded = try Data(contentsOf: URL(fileURLWithPath: dir.file("k.pub")))
        padded.append(Data(repeating: UInt8(ascii: " "), count: Self.limit))
        try padded.write(to: URL(fileURLWithPath: dir.file("large.pub")))

        let cases = [
            ("fifo.pub", "not a regular file"), ("zero.pub", "not a regular file"),
            ("large.pub", "larger than the limit of \(Self.limit) bytes"),
        ]
        for (name, expected) in cases {
            let path = dir.file(name)
            let verifier = await outcome(path) { () throws(KeyFileError) in
                try SignatureVerifier(trustedKeyFiles: [path], requireSignature: true)
            }
            guard let verifier else { continue }
            guard case .failure(let error) = verifier else {
                Issue.record("\(name): expected a key file error, got \(verifier)")
                continue
            }
            #expect(error.path == path)
            #expect(error.reason.contains(expected), "\(name): \(error)")
        }
        // The same goes for private keys.
        try FileManager.default.createSymbolicLink(atPath: dir.file("zero.key"), withDestinationPath: "/dev/zero")
        let signing = await outcome("zero.key") { () throws(KeyFileError) in
            try SigningKey(contentsOf: dir.file("zero.key"))
        }
        if case .failure(let error) = signing {
            #expect(error.reason.contains("not a regular file"), "\(error)")
        } else if let signing {
            Issue.record("expected a key file error, got \(signing)")
        }
    }
}
