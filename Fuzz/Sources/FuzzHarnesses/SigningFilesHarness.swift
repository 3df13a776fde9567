import Crypto
import Foundation
import ModelSigning

/// The files model signing reads: `MODEL.sig` (`SignatureFile(contentsOf:model:)`, then `SignatureVerifier.check`
/// against a trusted key) and the key files (`VerificationKey(contentsOf:)` for `KEY.pub`, `SigningKey(contentsOf:)`
/// for `KEY`). Each input is written to a file and read through those public entry points, so the size limit and the
/// regular-file check are exercised too.
///
/// With `FUZZ_WRITE_SEEDS=DIR` the program instead writes seed files made with the same APIs (a key pair whose public
/// half the verifier trusts, and a signature by it) and exits: `make fuzz-seeds` commits them.
public enum SigningFilesHarness {
    /// A fixed key pair, so that seed signatures verify: the fuzzer can then reach the checks after the signature's.
    /// The seeds are signed with the private key (32 bytes of 42); the fuzzing process trusts its public half, written
    /// out here rather than derived from a `SigningKey` kept for the whole run (see below).
    static let privateKeyBytes = [UInt8](repeating: 42, count: 32)
    static let publicKeyBytes: [UInt8] = [
        25, 127, 107, 35, 225, 108, 133, 50, 198, 171, 200, 56, 250, 205, 94, 167, 137, 190, 12, 118, 178, 146, 3, 52,
        3, 155, 250, 139, 61, 54, 141, 97,
    ]
    static let modelSHA256 = String(repeating: "ab", count: 32)

    /// The file each input is written to, in a directory of this process's.
    static let inputPath: String = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-signing-\(getpid())").path
        try! FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory + "/input"
    }()

    public static func run(_ data: UnsafeBufferPointer<UInt8>) {
        let path = inputPath
        // Made for each input, so that it is freed before the process exits: LeakSanitizer reports the buffer
        // behind a key's `rawRepresentation` as leaked when a key lives until the end.
        let trusted = VerificationKey(try! Curve25519.Signing.PublicKey(rawRepresentation: publicKeyBytes))
        let verifier = SignatureVerifier(trustedKeys: [trusted], requireSignature: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(data)) else {
            fatalError("cannot write \(path)")
        }
        if let document = try? SignatureFile(contentsOf: path, model: "model.onnx") {
            _ = try? verifier.check(
                document, signaturePath: path, model: "model.onnx", sha256: modelSHA256, version: "1.0")
        }
        if let key = try? VerificationKey(contentsOf: path) {
            precondition(key.rawRepresentation.count == 32, "a public key of \(key.rawRepresentation.count) bytes")
        }
        if let key = try? SigningKey(contentsOf: path) {
            precondition(key.verificationKey.keyID.count == 16, "key id \(key.verificationKey.keyID)")
        }
    }

    public static func writeSeeds(to directory: String) {
        do {
            let signingKey = SigningKey(try Curve25519.Signing.PrivateKey(rawRepresentation: privateKeyBytes))
            precondition(signingKey.verificationKey.rawRepresentation == Data(publicKeyBytes), "public key")
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try signingKey.write(to: directory + "/key", overwrite: true)  // also writes key.pub
            try signingKey.sign(sha256: modelSHA256, version: "1.0", at: Date(timeIntervalSince1970: 1_800_000_000))
                .write(to: directory + "/model.onnx.sig")
            try signingKey.sign(sha256: modelSHA256, version: nil, at: Date(timeIntervalSince1970: 1_800_000_000))
                .write(to: directory + "/unversioned.sig")
        } catch {
            fatalError("writing seeds to \(directory): \(error)")
        }
    }
}
