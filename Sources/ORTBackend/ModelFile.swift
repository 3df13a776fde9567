import Crypto
import Foundation

/// A model file whose SHA-256 has been computed, streamed in 1 MiB chunks (no whole-file buffer).
///
/// Verification (expected digest, signature over the digest) works on this value before anything is loaded; a loader
/// that needs the bytes reads them with `readVerifiedBytes()`, which hashes them again and refuses them when they no
/// longer match — so the bytes a session is created from are always bytes with the verified digest, even if the file
/// was replaced in between.
///
/// Thread-safety: an immutable value.
public struct ModelFile: Sendable, Equatable {
    public let path: String
    /// Lower-case hex SHA-256 of the file's content.
    public let sha256: String
    public let byteCount: Int

    /// Hashes the file at `path`.
    /// - Throws: `ModelLoadError.unreadable` with the path and the system's reason.
    public init(verifying path: String) throws(ModelLoadError) {
        var hasher = SHA256()
        var count = 0
        try Self.readChunks(of: path) { chunk in
            hasher.update(data: chunk)
            count += chunk.count
        }
        self.init(path: path, sha256: hasher.finalize().hexString, byteCount: count)
    }

    public init(path: String, sha256: String, byteCount: Int) {
        self.path = path
        self.sha256 = sha256
        self.byteCount = byteCount
    }

    /// Reads the whole file into memory (one buffer, filled chunk by chunk) and checks that it still has the verified
    /// digest.
    /// - Throws: `ModelLoadError.unreadable`, or `.changedSinceVerification` when the content differs now.
    public func readVerifiedBytes() throws(ModelLoadError) -> [UInt8] {
        let bytes = try ModelBytes(contentsOf: path)
        guard bytes.sha256 == sha256 else {
            throw .changedSinceVerification(path: path, verified: sha256, now: bytes.sha256)
        }
        return bytes.bytes
    }

    /// Copies the file to `destination` (created readable and writable by this user only), chunk by chunk, and
    /// checks that what was copied has the verified digest — a private copy of verified bytes, without a whole-file
    /// buffer.
    /// - Throws: `ModelLoadError.unreadable` (reading or writing), or `.changedSinceVerification` (the copy is then
    ///   removed).
    public func copyVerified(to destination: String) throws(ModelLoadError) {
        guard FileManager.default.createFile(atPath: destination, contents: nil, attributes: [.posixPermissions: 0o600]),
            let output = FileHandle(forWritingAtPath: destination)
        else { throw .unreadable(path: destination, reason: "cannot create the file") }
        var hasher = SHA256()
        var writeError: (any Error)?
        do {
            defer { try? output.close() }
            try Self.readChunks(of: path) { chunk in
                guard writeError == nil else { return }
                hasher.update(data: chunk)
                do { try output.write(contentsOf: chunk) } catch { writeError = error }
            }
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
        let digest = hasher.finalize().hexString
        if let writeError {
            try? FileManager.default.removeItem(atPath: destination)
            throw .unreadable(path: destination, reason: "cannot write: \(writeError)")
        }
        guard digest == sha256 else {
            try? FileManager.default.removeItem(atPath: destination)
            throw .changedSinceVerification(path: path, verified: sha256, now: digest)
        }
    }

    /// Calls `body` with the file's content in chunks of at most 1 MiB.
    static func readChunks(of path: String, _ body: (Data) -> Void) throws(ModelLoadError) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            throw .unreadable(path: path, reason: !exists ? "no such file" : isDirectory.boolValue
                ? "it is a directory" : "cannot open the file")
        }
        defer { try? handle.close() }
        do {
            while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { body(chunk) }
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
    }
}

extension Sequence<UInt8> {
    /// Lower-case hexadecimal digits, two per byte.
    var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in self {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
