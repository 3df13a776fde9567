import Crypto
import Foundation

/// Why a file could not be read.
public struct FileReadError: Error, Equatable, CustomStringConvertible {
    public var path: String
    /// What went wrong, in the system's words ("no such file", "it is a directory", ...).
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "cannot read \(path): \(reason)" }
}

/// Streaming SHA-256 of files, read in chunks of at most 1 MiB (never a whole-file buffer): the one file hasher of
/// the code base.
///
/// Blocking: each call reads the file. Call it on a thread made for blocking work, never on Swift's cooperative pool.
/// Thread-safety: stateless.
public enum FileDigest {
    /// The digest of the file at `path`.
    /// - Parameters:
    ///   - maxBytes: read no further once past this many bytes (a file verified at one size and grown since: what is
    ///     read is not the verified content, and is not worth reading to its end); the count returned is over it then,
    ///     and the chunk that went past is hashed but not handed to `forEachChunk`. A file already over it when opened
    ///     is not read at all: its size is returned, with an empty digest.
    ///   - forEachChunk: also called with each chunk, in order, as it is hashed (to copy or keep the bytes that were
    ///     hashed, without reading the file twice).
    /// - Returns: the lower-case hex SHA-256 and the number of bytes hashed.
    /// - Throws: `FileReadError` with the path and the system's reason.
    public static func sha256(ofFileAt path: String, maxBytes: Int = .max, forEachChunk: (Data) -> Void = { _ in })
        throws(FileReadError) -> (sha256: String, byteCount: Int)
    {
        var hasher = SHA256()
        var count = 0
        let file = try RegularFile(openingForReading: path)
        guard file.byteCount <= maxBytes else { return ("", file.byteCount) }
        while count <= maxBytes {
            let chunk = try file.read(upToCount: 1 << 20)
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            count += chunk.count
            if count <= maxBytes { forEachChunk(chunk) }
        }
        return (hasher.finalize().hexString, count)
    }

    /// Calls `body` with the file's content in order, in chunks of at most 1 MiB.
    ///
    /// Only a regular file is read, and opening never waits: a FIFO, a device such as `/dev/zero` or a folder is
    /// refused at once (see `RegularFile`), so a model repository holding one cannot block or exhaust a load.
    /// - Throws: `FileReadError` when the file is not a regular file or cannot be opened or read.
    public static func readChunks(of path: String, _ body: (Data) -> Void) throws(FileReadError) {
        try RegularFile(openingForReading: path).readChunks { chunk in body(chunk) }
    }
}
