import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a file could not be opened by ``LinkFreePath``.
public struct FileOpenError: Error, Equatable, CustomStringConvertible {
    public var path: String
    /// The system's words, or which part of the path is a symbolic link.
    public var reason: String
    /// The system's error number, when the system refused the open (nil for a refusal of this module's own).
    public var code: Int32?

    public init(path: String, reason: String, code: Int32? = nil) {
        self.path = path
        self.reason = reason
        self.code = code
    }

    /// Whether the system ran short of something of its own (descriptors, disk space or quota, memory, a failing
    /// disk), not refused the path: the same request may succeed later, and the fault is not the caller's.
    public var isResourceShortage: Bool {
        guard let code else { return false }
        return [EMFILE, ENFILE, ENOSPC, EDQUOT, ENOMEM, EIO].contains(code)
    }

    public var description: String { "cannot open \(path): \(reason)" }
}

/// Opens a file by an absolute path that must hold no symbolic link at all: each folder on the way is opened from the
/// one before it without following a link (`O_NOFOLLOW | O_DIRECTORY`), and so is the file itself.
///
/// This closes the gap between checking a path and opening it. A caller resolves what it was given (`realpath(3)`,
/// which leaves no link in it), checks that the result lies where it may, and later opens the result here: a link
/// planted on the way in between — a folder swapped for a link to `/etc`, a file name made a link — makes the open
/// fail, where a plain `open` would follow it. (`openat2`'s `RESOLVE_NO_SYMLINKS` does the same in one call; this
/// works on every kernel and under seccomp profiles that refuse `openat2`.)
///
/// Thread-safety: stateless.
public enum LinkFreePath {
    /// Opens `path` with `flags` (`O_NOFOLLOW` and `O_CLOEXEC` are added) and `mode` for a file it creates; returns the
    /// descriptor, which the caller closes.
    /// - Throws: `FileOpenError` for a relative path or one with `.` or `..` parts, a part that is a symbolic link
    ///   ("`/a/b` is a symbolic link"), or the system's refusal.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(FileOpenError) -> Int32 {
        // Split by bytes: a '/' followed by a combining mark is one character for Swift, and a part holding it would
        // have `openat` walk (and follow links in) more than one folder.
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
            .map { String(decoding: $0, as: UTF8.self) }
        guard path.utf8.first == UInt8(ascii: "/"), let name = parts.last else {
            throw FileOpenError(path: path, reason: "not an absolute path to a file")
        }
        guard !parts.contains(where: { $0 == "." || $0 == ".." }) else {
            throw FileOpenError(path: path, reason: "it has a '.' or '..' part")
        }
        var folder = Glibc.open("/", pathOnly | O_DIRECTORY | O_CLOEXEC)
        guard folder >= 0 else {
            let code = errno
            throw FileOpenError(path: path, reason: String(cString: strerror(code)), code: code)
        }
        defer { close(folder) }
        for (index, part) in parts.dropLast().enumerated() {
            let next = openat(folder, part, pathOnly | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard next >= 0 else {
                let code = errno
                throw failure(path, at: "/" + parts[...index].joined(separator: "/"), part, in: folder, errno: code)
            }
            close(folder)
            folder = next
        }
        let descriptor = openat(folder, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)
        guard descriptor >= 0 else {
            let code = errno
            throw failure(path, at: path, name, in: folder, errno: code)
        }
        return descriptor
    }

    /// Opens `path` for writing as ``open(_:flags:mode:)`` does, creating the file if it is missing but not emptying
    /// it (the caller truncates it once it commits to writing), and only if it is a regular file with no other hard
    /// link: a FIFO planted there would block the open (it is opened non-blocking, then set back to blocking), a
    /// device would take the writes, and a hard link would have them land in a file elsewhere.
    /// - Throws: `FileOpenError` as `open` does, or saying what the file is instead.
    public static func openRegularFileForWriting(_ path: String, mode: mode_t = 0o644) throws(FileOpenError) -> Int32 {
        let descriptor = try open(path, flags: O_WRONLY | O_CREAT | O_NONBLOCK, mode: mode)
        var info = stat()
        let refusal: (reason: String, code: Int32?)? =
            if fstat(descriptor, &info) != 0 { (String(cString: strerror(errno)), errno) }
            else if (info.st_mode & S_IFMT) != S_IFREG { ("not a regular file", nil) }
            else if info.st_nlink != 1 { ("it has another hard link", nil) }
            else if fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) & ~O_NONBLOCK) != 0 {
                (String(cString: strerror(errno)), errno)
            } else { nil }
        if let refusal {
            close(descriptor)
            throw FileOpenError(path: path, reason: refusal.reason, code: refusal.code)
        }
        return descriptor
    }

    /// Linux's `O_PATH` (`010000000`; Swift's Glibc module does not export it): a folder opened only to look names up
    /// in, which needs no read permission on it.
    private static let pathOnly: Int32 = 0o10000000

    /// Why opening `part` (at `shown`) in `folder` failed: a link says so; anything else in the system's words.
    private static func failure(_ path: String, at shown: String, _ part: String, in folder: Int32, errno code: Int32)
        -> FileOpenError
    {
        var info = stat()
        if fstatat(folder, part, &info, AT_SYMLINK_NOFOLLOW) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            return FileOpenError(path: path, reason: "\(shown) is a symbolic link")
        }
        return FileOpenError(path: path, reason: code == ENOENT && shown != path
            ? "the folder \(shown) does not exist" : String(cString: strerror(code)), code: code)
    }
}
