import Foundation
import Primitives

/// The folder every model path in the API is relative to. Paths may not leave it: no absolute paths, no `..`, no
/// symbolic links pointing outside. A path must name a regular file: a FIFO, a device or a folder is refused.
///
/// Thread-safety: immutable.
public struct ModelRepository: Sendable {
    public let root: String
    /// The server's state directory (databases, optimized-model cache), hidden like the root in text shown to
    /// clients; `nil` when not known.
    public let stateDirectory: String?

    /// - Parameters:
    ///   - root: the repository's folder.
    ///   - stateDirectory: the server's state directory, whose absolute path errors (a database that is full or
    ///     locked) must not show either.
    public init(root: String, stateDirectory: String? = nil) {
        self.stateDirectory = stateDirectory.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let standardized = URL(fileURLWithPath: root).standardizedFileURL
        // The system's own canonical path when the folder exists, as `/proc/self/fd` names opened files.
        self.root = standardized.withUnsafeFileSystemRepresentation { path in
            path.flatMap { realpath($0, nil) }.map { resolved in
                defer { free(resolved) }
                return String(cString: resolved)
            }
        } ?? standardized.resolvingSymlinksInPath().path
    }

    /// The absolute path of a model inside the repository: the real path (symbolic links resolved) of the regular
    /// file that `relative` names.
    ///
    /// The file is opened once (`RegularFile`: without waiting, and refused unless it is a regular file), and the
    /// path returned is where the opened file itself lies, which must be inside the repository: a link swapped
    /// between checking the path and opening it cannot point the answer elsewhere. Before that, a path whose links
    /// lead outside is refused without being opened at all (opening a device may act on it).
    ///
    /// What remains: the load pipeline opens the returned path again (it knows nothing of repositories), so a folder
    /// on that path replaced by a link in between could still redirect the later open. That open too reads regular
    /// files only, and what it loads is what it hashed: a digest given with the load, or a required signature,
    /// still decides what may be loaded.
    /// - Throws: `Problem` 400 for a path that leaves the repository or names something other than a regular file,
    ///   404 for a missing file or a folder.
    public func resolve(_ relative: String) async throws -> String {
        try await Self.files.run { [self] in try resolveBlocking(relative) }
    }

    /// The file-system calls of `resolve`, one call at a time: a repository on a network share that stops answering
    /// holds the callers waiting here, not the cooperative pool's threads (the requests of every other route).
    private static let files = BlockingQueue(label: "yoloswap.model-repository")

    /// `resolve` on the calling thread, which may block in `realpath` and `open` (for a thread that may wait).
    public func resolveBlocking(_ relative: String) throws -> String {
        guard !relative.isEmpty else { throw Problem.badRequest("model path is empty") }
        guard !relative.hasPrefix("/") else {
            throw Problem.badRequest("model path '\(relative)' must be relative to the model repository")
        }
        guard !relative.hasParentPart else {
            throw Problem.badRequest("model path '\(relative)' may not contain '..'")
        }
        let leaves = Problem.badRequest("model path '\(relative)' leaves the model repository")
        let candidate = URL(fileURLWithPath: root).appendingPathComponent(relative).standardizedFileURL.path
        guard holds(URL(fileURLWithPath: candidate).resolvingSymlinksInPath().path) else { throw leaves }
        let file: RegularFile
        do { file = try RegularFile(openingForReading: candidate) } catch {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue
            else { throw Problem.notFound("no model '\(relative)' in the model repository") }
            throw Problem.badRequest("model path '\(relative)' cannot be used: \(error.reason)")
        }
        guard let opened = file.realPath, holds(opened) else { throw leaves }
        return opened
    }

    /// Whether `path`, absolute and free of links already, lies inside the repository.
    /// Compared byte for byte: a folder whose name is canonically equivalent to the root's is another folder.
    private func holds(_ path: String) -> Bool { path.isByteEqual(to: root) || path.hasBytePrefix(root + "/") }

    /// Text (an error message) with the repository's absolute location replaced by paths relative to it, and the state
    /// directory's by `state_dir/` (`state_dir/audit.sqlite`: which database, not where), so answers do not reveal
    /// the server's file layout.
    public func hidingRoot(_ text: String) -> String {
        let relative = text.replacingOccurrences(of: root + "/", with: "")
        guard let stateDirectory else { return relative }
        return relative.replacingOccurrences(of: stateDirectory + "/", with: "state_dir/")
    }

    /// A path inside the repository shown relative to it.
    /// Whether `absolute` (a committed model's path) lies inside the repository, symbolic links resolved.
    public func contains(_ absolute: String) -> Bool {
        let real = URL(fileURLWithPath: absolute).standardizedFileURL.resolvingSymlinksInPath().path
        let realRoot = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
        return real.hasBytePrefix(realRoot + "/")
    }

    public func relative(_ absolute: String) -> String {
        guard absolute.hasBytePrefix(root + "/") else { return absolute }
        return String(decoding: absolute.utf8.dropFirst(root.utf8.count + 1), as: UTF8.self)
    }
}
