import Foundation

/// The folder every model path in the API is relative to. Paths may not leave it: no absolute paths, no `..`, no
/// symbolic links pointing outside.
///
/// Thread-safety: immutable.
public struct ModelRepository: Sendable {
    public let root: String

    public init(root: String) {
        self.root = URL(fileURLWithPath: root).standardizedFileURL.resolvingSymlinksInPath().path
    }

    /// The absolute path of a model inside the repository.
    /// - Throws: `Problem` 400 for a path that leaves the repository, 404 for a missing file.
    public func resolve(_ relative: String) throws -> String {
        guard !relative.isEmpty else { throw Problem.badRequest("model path is empty") }
        guard !relative.hasPrefix("/") else {
            throw Problem.badRequest("model path '\(relative)' must be relative to the model repository")
        }
        guard !relative.split(separator: "/").contains("..") else {
            throw Problem.badRequest("model path '\(relative)' may not contain '..'")
        }
        let candidate = URL(fileURLWithPath: root).appendingPathComponent(relative).standardizedFileURL
        let real = candidate.resolvingSymlinksInPath().path
        guard real == root || real.hasPrefix(root + "/") else {
            throw Problem.badRequest("model path '\(relative)' leaves the model repository")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: real, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw Problem.notFound("no model '\(relative)' in the model repository")
        }
        return real
    }

    /// Text (an error message) with the repository's absolute location replaced by paths relative to it, so answers
    /// do not reveal the server's file layout.
    public func hidingRoot(_ text: String) -> String { text.replacingOccurrences(of: root + "/", with: "") }

    /// A path inside the repository shown relative to it.
    /// Whether `absolute` (a committed model's path) lies inside the repository, symbolic links resolved.
    public func contains(_ absolute: String) -> Bool {
        let real = URL(fileURLWithPath: absolute).standardizedFileURL.resolvingSymlinksInPath().path
        let realRoot = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
        return real.hasPrefix(realRoot + "/")
    }

    public func relative(_ absolute: String) -> String {
        absolute.hasPrefix(root + "/") ? String(absolute.dropFirst(root.count + 1)) : absolute
    }
}
