import Foundation
import Primitives

/// Why a model file could not be read, or no longer has the content it was verified with.
public enum ModelFileError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    /// The file's content no longer has the digest it was verified with.
    case changedSinceVerification(path: String, verified: String, now: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read model \(path): \(reason)"
        case .changedSinceVerification(let path, let verified, let now):
            "model \(path) changed after it was verified (sha256 \(verified.prefix(12)) then, \(now.prefix(12)) now)"
        }
    }

    init(_ error: FileReadError) { self = .unreadable(path: error.path, reason: error.reason) }
}

/// A model file whose SHA-256 has been computed, streamed in 1 MiB chunks (no whole-file buffer): what the load
/// pipeline hands a `ModelLoader`.
///
/// Verification (expected digest, signature over the digest) works on this value before anything is loaded; a loader
/// that needs the bytes reads them with `readVerifiedBytes()`, which hashes them again and refuses them when they no
/// longer match — so the bytes a session is created from are always bytes with the verified digest, even if the file
/// was replaced in between.
///
/// Blocking: the initializer and the methods read the file; call them on a thread made for blocking work.
/// Thread-safety: an immutable value.
public struct ModelFile: Sendable, Equatable {
    public let path: String
    /// Lower-case hex SHA-256 of the file's content.
    public let sha256: String
    public let byteCount: Int

    /// The largest model file read: a protobuf ONNX Runtime can parse is under 2 GiB, and external data is refused,
    /// so nothing loadable is larger — and a larger file would be hashed whole, copied to the optimized-model cache
    /// and held in memory before ONNX Runtime refused it.
    public static let maxBytes = 2 << 30

    /// Hashes the file at `path`, reading no further than `maxBytes` (and a little).
    /// - Throws: `ModelFileError.unreadable` with the path and the system's reason, or for a file over `maxBytes`.
    public init(verifying path: String) throws(ModelFileError) {
        let (sha256, count): (String, Int)
        do { (sha256, count) = try FileDigest.sha256(ofFileAt: path, maxBytes: Self.maxBytes) } catch {
            throw ModelFileError(error)
        }
        guard count <= Self.maxBytes else {
            throw .unreadable(path: path, reason: "it is larger than \(Self.maxBytes >> 30) GiB, the most an ONNX model "
                + "can be without external data (which is refused)")
        }
        self.init(path: path, sha256: sha256, byteCount: count)
    }

    public init(path: String, sha256: String, byteCount: Int) {
        self.path = path
        self.sha256 = sha256
        self.byteCount = byteCount
    }

    /// Reads the whole file into memory (one buffer, filled chunk by chunk) and checks that it still has the verified
    /// digest.
    /// - Throws: `ModelFileError.unreadable`, or `.changedSinceVerification` when the content differs now.
    public func readVerifiedBytes() throws(ModelFileError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        let read: (sha256: String, byteCount: Int)
        // No further than the verified size (the memory budget reserved for it): a file grown since is not read whole.
        do {
            read = try FileDigest.sha256(ofFileAt: path, maxBytes: byteCount) { bytes.append(contentsOf: $0) }
        } catch {
            throw ModelFileError(error)
        }
        try check(read)
        return bytes
    }

    /// Copies the file to `destination` (created readable and writable by this user only), chunk by chunk, and
    /// checks that what was copied has the verified digest — a private copy of verified bytes, without a whole-file
    /// buffer.
    /// - Throws: `ModelFileError.unreadable` (reading or writing), or `.changedSinceVerification` (the copy is then
    ///   removed).
    public func copyVerified(to destination: String) throws(ModelFileError) {
        guard
            FileManager.default.createFile(atPath: destination, contents: nil, attributes: [.posixPermissions: 0o600]),
            let output = FileHandle(forWritingAtPath: destination)
        else { throw .unreadable(path: destination, reason: "cannot create the file") }
        var writeError: (any Error)?
        let read: (sha256: String, byteCount: Int)
        do {
            read = try FileDigest.sha256(ofFileAt: path, maxBytes: byteCount) { chunk in
                guard writeError == nil else { return }
                do { try output.write(contentsOf: chunk) } catch { writeError = error }
            }
        } catch {
            try? output.close()
            try? FileManager.default.removeItem(atPath: destination)
            throw ModelFileError(error)
        }
        // A network file system may report a failed write only when the file is closed: the copy is what is handed
        // on, and a damaged one would be optimized and vouched for.
        do { try output.close() } catch { writeError = writeError ?? error }
        if let writeError {
            try? FileManager.default.removeItem(atPath: destination)
            throw .unreadable(path: destination, reason: "cannot write: \(writeError)")
        }
        do throws(ModelFileError) { try check(read) } catch {
            try? FileManager.default.removeItem(atPath: destination)
            throw error
        }
    }

    /// Whether what was read is the verified content. A file read past its verified size has no digest to report
    /// (only a prefix of it was hashed): it is said to be longer.
    private func check(_ read: (sha256: String, byteCount: Int)) throws(ModelFileError) {
        guard read.byteCount <= byteCount else {
            throw .changedSinceVerification(path: path, verified: sha256,
                now: "a file longer than the \(byteCount) bytes verified")
        }
        guard read.sha256 == sha256 else {
            throw .changedSinceVerification(path: path, verified: sha256, now: read.sha256)
        }
    }
}
