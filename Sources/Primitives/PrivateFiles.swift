import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a private folder or file could not be created.
public struct FileCreationError: Error, Equatable, CustomStringConvertible {
    public var path: String
    /// The system's words.
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "cannot create \(path): \(reason)" }
}

/// Folders and files that only this user may open: the state directory, its SQLite databases and the
/// optimized-model cache hold what the service trusts (committed models, the audit chain, models it will load), so
/// nobody else should read or replace them.
///
/// Folders are created 0700 and files 0600, whatever the umask lets through; what exists already keeps its mode (an
/// operator may have chosen it).
///
/// Thread-safety: stateless.
public enum PrivateFiles {
    /// Creates the folder at `path`, and any missing folders above it, each with mode 0700.
    /// - Throws: `FileCreationError` naming the folder that could not be created.
    public static func createDirectory(atPath path: String) throws(FileCreationError) {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            return
        }
        let parent = url.deletingLastPathComponent()
        if parent.path != url.path { try createDirectory(atPath: parent.path) }
        guard mkdir(url.path, 0o700) == 0 else {
            let code = errno
            if code == EEXIST, FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory),
                isDirectory.boolValue
            {
                return  // made by someone else meanwhile
            }
            throw FileCreationError(path: url.path, reason: String(cString: strerror(code)))
        }
        // mkdir's mode passes through the umask, which may take away more than others' access.
        _ = chmod(url.path, 0o700)
    }

    /// Whether `path` is a folder (not a link to one) that this user owns and nobody else may write: nobody else can
    /// then replace or rename what is in it between two of our calls.
    public static func isPrivateDirectory(atPath path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else { return false }
        return info.st_mode & S_IFMT == S_IFDIR && info.st_uid == geteuid() && info.st_mode & 0o022 == 0
    }

    /// Whether `path` is a folder (not a link) in which nobody but this user (or root) can replace or rename this
    /// user's entries: owned by this user or root, and writable by nobody else — or sticky, as `/tmp` is, where
    /// others may add entries but not rename or remove ours.
    public static func isSafeParentDirectory(atPath path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { return false }
        guard info.st_uid == geteuid() || info.st_uid == 0 else { return false }
        return info.st_mode & 0o022 == 0 || info.st_mode & S_ISVTX != 0
    }

    /// Whether `path` is a regular file (not a link) this user owns that nobody else may read or write (a key).
    public static func isPrivateFile(atPath path: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0 else { return false }
        return info.st_mode & S_IFMT == S_IFREG && info.st_uid == geteuid() && info.st_mode & 0o077 == 0
    }

    /// Creates an empty file at `path` with mode 0600, unless something is there already (which is left as it is):
    /// what SQLite opens next keeps the mode, and gives it to its `-wal` and `-shm` files.
    /// - Throws: `FileCreationError` when the file cannot be created.
    public static func createFileIfMissing(atPath path: String) throws(FileCreationError) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let code = errno
            if code == EEXIST { return }
            throw FileCreationError(path: path, reason: String(cString: strerror(code)))
        }
        _ = fchmod(descriptor, 0o600)
        close(descriptor)
    }

    /// Replaces the file at `path` with `bytes`, durably: written to a new owner-only (0600) file beside it, flushed
    /// to disk, renamed over `path`, and the folder flushed, so that after a crash or a power loss `path` holds either
    /// the old contents or the new, and a write that returned survives. Blocks for the flushes (milliseconds; more on a
    /// slow disk): call it off Swift's cooperative pool.
    /// - Throws: `FileCreationError` naming the file and the system's reason.
    public static func replaceDurably(atPath path: String, with bytes: [UInt8]) throws(FileCreationError) {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let temporary = "\(path).\(UInt64.random(in: 0...UInt64.max)).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw FileCreationError(path: temporary, reason: reason(errno)) }
        var failure: String?
        var offset = 0
        while failure == nil, offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if written > 0 { offset += written } else if written < 0, errno == EINTR { continue } else {
                failure = written < 0 ? reason(errno) : "short write"
            }
        }
        if failure == nil, fsync(descriptor) != 0 { failure = reason(errno) }
        close(descriptor)
        if failure == nil, rename(temporary, path) != 0 { failure = reason(errno) }
        if let failure {
            unlink(temporary)
            throw FileCreationError(path: path, reason: failure)
        }
        // The rename is durable once the folder's entry is.
        let folderDescriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folderDescriptor >= 0 else { throw FileCreationError(path: folder, reason: reason(errno)) }
        defer { close(folderDescriptor) }
        guard fsync(folderDescriptor) == 0 else { throw FileCreationError(path: folder, reason: reason(errno)) }
    }

    private static func reason(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Gives the file at `path` mode 0600: for a file that other code created with the umask's mode (ONNX Runtime
    /// writing an optimized model), before it gets its final name.
    /// - Returns: whether the mode was set.
    @discardableResult
    public static func restrict(fileAtPath path: String) -> Bool { chmod(path, 0o600) == 0 }
}
