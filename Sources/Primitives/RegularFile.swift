import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A regular file, open for reading.
///
/// Opening never waits on what it opens and reads only regular files: the open does not block (`O_NONBLOCK`, so a
/// FIFO without a writer cannot hold the caller for ever), then the opened descriptor — not the path, which may name
/// something else by then — must be a regular file. A FIFO, a device such as `/dev/zero` (named directly or through a
/// symbolic link), a socket or a folder is refused with the reason, before a byte is read. Everything read afterwards
/// comes from that one descriptor.
///
/// Blocking: the initializer and the reads wait on the file system; use them on a thread made for blocking work.
/// Thread-safety: one reader at a time. The descriptor is closed when the value is dropped.
public final class RegularFile {
    /// The path the file was opened by.
    public let path: String
    /// The file's size when it was opened.
    public let byteCount: Int
    /// When the file's content last changed, as of its opening (its mtime).
    public let modifiedAt: Date
    private let descriptor: Int32

    /// Opens the file at `path` (following symbolic links) and checks that what was opened is a regular file.
    /// - Throws: `FileReadError` with the path and the reason: "no such file", "it is a directory", "not a regular
    ///   file (a FIFO)", or the system's words.
    public init(openingForReading path: String) throws(FileReadError) {
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileReadError(path: path, reason: Self.reason(errno)) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            let reason = Self.reason(errno)
            close(descriptor)
            throw FileReadError(path: path, reason: reason)
        }
        let kind = status.st_mode & S_IFMT
        guard kind == S_IFREG else {
            close(descriptor)
            throw FileReadError(path: path, reason: Self.refusal(kind))
        }
        // Reads of a regular file never return EAGAIN, but they should behave as any blocking read does.
        let flags = fcntl(descriptor, F_GETFL)
        if flags >= 0 { _ = fcntl(descriptor, F_SETFL, flags & ~O_NONBLOCK) }
        self.path = path
        self.descriptor = descriptor
        self.byteCount = Int(status.st_size)
        #if canImport(Glibc)
            let time = status.st_mtim
        #else
            let time = status.st_mtimespec
        #endif
        self.modifiedAt = Date(timeIntervalSince1970: Double(time.tv_sec) + Double(time.tv_nsec) / 1e9)
    }

    deinit { close(descriptor) }

    /// Whether some descriptor — another process's, typically — has the file open for writing now: Linux grants a
    /// read lease only when none has. Nil when that cannot be told (a file of another user's, without `CAP_LEASE`; a
    /// file system without leases; not Linux).
    ///
    /// The lease is let go at once. Were a writer to open the file meanwhile, the kernel would signal this process:
    /// with `SIGURG`, set here, which is ignored unless handled (the default, `SIGIO`, ends the process).
    public var isOpenForWriting: Bool? {
        #if os(Linux)
            // F_SETSIG and F_SETLEASE (Linux's fcntl.h, not in Swift's Glibc module).
            let setSignal: Int32 = 10, setLease: Int32 = 1024
            guard fcntl(descriptor, setSignal, SIGURG) == 0 else { return nil }
            if fcntl(descriptor, setLease, Int32(F_RDLCK)) == 0 {
                _ = fcntl(descriptor, setLease, Int32(F_UNLCK))
                return false
            }
            return errno == EAGAIN ? true : nil
        #else
            return nil
        #endif
    }

    /// Calls `body` with the file's content in order, in chunks of at most `chunkSize` bytes.
    /// - Throws: `FileReadError` when a read fails.
    public func readChunks(chunkSize: Int = 1 << 20, _ body: (Data) throws(FileReadError) -> Void)
        throws(FileReadError)
    {
        while true {
            let chunk = try read(upToCount: chunkSize)
            if chunk.isEmpty { return }
            try body(chunk)
        }
    }

    /// The whole content, when it is at most `limit` bytes (checked before reading, and again while reading, in
    /// case the file grew).
    /// - Throws: `FileReadError` when the file is larger than `limit` or a read fails.
    public func readAll(limit: Int) throws(FileReadError) -> Data {
        let tooLarge = FileReadError(path: path, reason: "it is larger than the limit of \(limit) bytes")
        guard byteCount <= limit else { throw tooLarge }
        var content = Data()
        content.reserveCapacity(byteCount)  // one buffer, not a doubling series of copies
        try readChunks(chunkSize: min(limit + 1, 1 << 16)) { chunk throws(FileReadError) in
            content.append(chunk)
            if content.count > limit { throw tooLarge }
        }
        return content
    }

    /// The path of the file that was opened, as the system knows it now: absolute, with every symbolic link
    /// resolved, whatever has happened since to the path it was opened by (Linux: `/proc/self/fd/N`). Nil when the
    /// system cannot tell.
    public var realPath: String? {
        #if os(Linux)
            return try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(descriptor)")
        #elseif canImport(Darwin)
            var buffer = [CChar](repeating: 0, count: Int(MAXPATHLEN))
            guard fcntl(descriptor, F_GETPATH, &buffer) == 0 else { return nil }
            return String(cString: buffer)
        #else
            return nil
        #endif
    }

    /// Reads at most `count` bytes at the current offset; empty at the end of the file.
    func read(upToCount count: Int) throws(FileReadError) -> Data {
        var chunk = Data(count: count)
        while true {
            let got = chunk.withUnsafeMutableBytes { buffer in
                systemRead(descriptor, buffer.baseAddress, count)
            }
            if got >= 0 {
                chunk.count = got
                return chunk
            }
            if errno != EINTR { throw FileReadError(path: path, reason: Self.reason(errno)) }
        }
    }

    /// What is wrong with a file of this kind, to a reader that wants a regular file.
    private static func refusal(_ kind: mode_t) -> String {
        switch kind {
        case S_IFDIR: "it is a directory"
        case S_IFIFO: "not a regular file (a FIFO)"
        case S_IFCHR: "not a regular file (a character device)"
        case S_IFBLK: "not a regular file (a block device)"
        case S_IFSOCK: "not a regular file (a socket)"
        default: "not a regular file"
        }
    }

    /// The system's words for `code`, with the two a user meets most put plainly.
    private static func reason(_ code: Int32) -> String {
        switch code {
        case ENOENT: "no such file"
        case EACCES: "permission denied"
        default: String(cString: strerror(code))
        }
    }
}

/// `read(2)`, named apart from `RegularFile.read(upToCount:)`.
private func systemRead(_ descriptor: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    read(descriptor, buffer, count)
}
