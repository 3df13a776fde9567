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

    /// Gives the file at `path` mode 0600: for a file that other code created with the umask's mode (ONNX Runtime
    /// writing an optimized model), before it gets its final name.
    /// - Returns: whether the mode was set.
    @discardableResult
    public static func restrict(fileAtPath path: String) -> Bool { chmod(path, 0o600) == 0 }
}
