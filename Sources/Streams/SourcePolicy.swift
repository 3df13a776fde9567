import Foundation
import Primitives
import VideoDecoding

/// Which sources and output files a stream may use, checked like model paths: a file must lie inside the media
/// folder, a URL must start with one of the allowed prefixes, a device must be allowed by name.
///
/// Keys (`streams` in the service's YAML) and defaults:
/// - `media_dir` (none: no file sources): files are given relative to it and may not leave it (symlinks resolved).
/// - `allowed_urls` (`[]`): prefixes a network source must start with, e.g. `udp://127.0.0.1:`, `rtsp://cam-`. Both
///   are compared without user-info (`user:password@`, as FFmpeg splits it: up to the authority's last `@`), so that
///   `rtsp://cam-a@elsewhere/` is not taken for a `cam-` host; credentials in the source are fine. A prefix that
///   ends with `/` or `:` pins the whole host name.
/// - `allowed_devices` (`[]`): V4L2 devices, e.g. `/dev/video0`.
/// - `output_dir` (none: no file outputs): JSON-lines outputs are written inside it.
///
/// Thread-safety: a value.
public struct SourcePolicy: Sendable, Equatable {
    public var mediaDirectory: String?
    public var allowedURLPrefixes: [String]
    public var allowedDevices: [String]
    public var outputDirectory: String?
    /// The local user of the CLI: any path, URL or device.
    public var allowsAnything: Bool

    public init(mediaDirectory: String? = nil, allowedURLPrefixes: [String] = [], allowedDevices: [String] = [],
                outputDirectory: String? = nil, allowsAnything: Bool = false) {
        self.mediaDirectory = mediaDirectory
        self.allowedURLPrefixes = allowedURLPrefixes
        self.allowedDevices = allowedDevices
        self.outputDirectory = outputDirectory
        self.allowsAnything = allowsAnything
    }

    /// What the CLI uses: everything the user running it can reach.
    public static let unrestricted = SourcePolicy(allowsAnything: true)

    /// Turns what a caller wrote into a source, or says why not.
    /// - Throws: `StreamError.sourceNotAllowed` with the reason.
    public func resolve(_ text: String) throws(StreamError) -> VideoSource {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.count <= 4096, !trimmed.contains("\0") else {
            // Shown without credentials, and not all of it.
            throw .sourceNotAllowed(source: String(VideoSource.network(url: trimmed).description.prefix(200)),
                reason: "empty or malformed")
        }
        if let colon = trimmed.firstIndex(of: ":"), trimmed[colon...].hasPrefix("://") {
            let scheme = trimmed[..<colon].lowercased()
            // Its credentials are not repeated in the refusal (which the audit log records).
            let shown = VideoSource.network(url: trimmed).description
            guard VideoSource.networkSchemes.contains(scheme) else {
                throw .sourceNotAllowed(source: shown,
                    reason: "scheme '\(scheme)' is not one of \(VideoSource.networkSchemes.joined(separator: ", "))")
            }
            // Printable ASCII only (anything else percent-encoded): what is checked here is then what FFmpeg parses.
            // Refused showing its scheme only: where its user-info ends is what cannot be told for certain.
            guard trimmed.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw .sourceNotAllowed(source: "\(scheme)://…", reason: "a URL must be printable ASCII without "
                    + "spaces (percent-encode other characters)")
            }
            let host = Self.withoutUserInfo(trimmed)
            guard allowsAnything
                || allowedURLPrefixes.contains(where: { host.hasBytePrefix(Self.withoutUserInfo($0)) })
            else {
                throw .sourceNotAllowed(source: shown, reason: "the URL matches no streams.allowed_urls prefix")
            }
            return .network(url: trimmed)
        }
        if trimmed.hasPrefix("/dev/") {
            guard allowsAnything || allowedDevices.contains(trimmed) else {
                throw .sourceNotAllowed(source: text, reason: "the device is not in streams.allowed_devices")
            }
            return .device(path: trimmed)
        }
        if allowsAnything {
            // Resolved: the decoder opens a path with no link in it.
            guard let path = Self.realPath(trimmed) else {
                throw .sourceNotAllowed(source: text, reason: "no such file")
            }
            return .file(path: try regularFile(path, shownAs: text))
        }
        guard let root = mediaDirectory else {
            throw .sourceNotAllowed(source: text, reason: "no streams.media_dir is configured for file sources")
        }
        let path = try Self.inside(root, trimmed, shownAs: text)
        return .file(path: try regularFile(path, shownAs: text))
    }

    /// `url` without the user-info of its authority: the authority runs from `://` to the first `/`, `?` or `#`, and
    /// its user-info up to its last `@` (FFmpeg's `av_url_split`), so what is left starts with the host FFmpeg
    /// connects to.
    static func withoutUserInfo(_ url: String) -> String {
        guard let userInfo = VideoSource.userInfo(of: url) else { return url }
        // After the `@`, by bytes (a character would take the marks that follow it too).
        return String(url[..<userInfo.lowerBound] + url[url.utf8.index(after: userInfo.upperBound)...])
    }

    /// The absolute path, with no symbolic link in it, of an output file inside the output folder (the file is then
    /// opened with ``LinkFreePath``).
    /// - Throws: `StreamError.outputNotAllowed` when none is configured or the path leaves it.
    public func resolveOutput(_ text: String) throws(StreamError) -> String {
        // No path the system opens is longer (PATH_MAX); the walk up a missing path is bounded by it too.
        guard !text.isEmpty, text.utf8.count <= Self.maxPathBytes, !text.contains("\0") else {
            throw .outputNotAllowed(path: String(text.prefix(64)),
                reason: "empty, longer than \(Self.maxPathBytes) bytes, or holding a NUL")
        }
        if allowsAnything {
            let absolute = URL(fileURLWithPath: text).standardizedFileURL
            do { return try Self.resolved(absolute, shownAs: text) } catch {
                guard case .sourceNotAllowed(_, let reason) = error else { throw error }
                throw .outputNotAllowed(path: text, reason: reason)
            }
        }
        guard let root = outputDirectory else {
            throw .outputNotAllowed(path: text, reason: "no streams.output_dir is configured for file outputs")
        }
        do { return try Self.inside(root, text, shownAs: text) } catch {
            guard case .sourceNotAllowed(_, let reason) = error, reason != Self.outside else {
                throw .outputNotAllowed(path: text, reason: "it lies outside streams.output_dir")
            }
            throw .outputNotAllowed(path: text, reason: reason)
        }
    }

    /// `relative` resolved against `root`, refused if it leaves `root`: the longest part of it that exists is resolved
    /// by `realpath(3)` (every symbolic link in it followed), the rest appended as named. A part that is a symbolic
    /// link leading nowhere is refused (a file created through it would land where it points). What is returned is
    /// what was checked: the caller opens that path with `LinkFreePath`, so that a link planted since fails the open.
    private static func inside(_ root: String, _ relative: String, shownAs text: String) throws(StreamError) -> String {
        guard !relative.hasPrefix("/") else {
            throw .sourceNotAllowed(source: text, reason: "give a path relative to the media folder")
        }
        guard let base = realPath(root) else {
            throw .sourceNotAllowed(source: text, reason: "the folder \(root) does not exist")
        }
        let candidate = try resolved(URL(fileURLWithPath: base).appendingPathComponent(relative).standardizedFileURL,
            shownAs: text)
        // Byte for byte (`hasPrefix` takes a canonically equivalent folder name for the same folder).
        guard candidate.hasBytePrefix(base.hasSuffix("/") ? base : base + "/") else {
            throw .sourceNotAllowed(source: text, reason: Self.outside)
        }
        return candidate
    }

    /// An absolute, standardized `url`'s path with the longest part of it that exists resolved by `realpath(3)`, the
    /// rest appended as named. A part that is a symbolic link leading nowhere is refused.
    private static func resolved(_ url: URL, shownAs text: String) throws(StreamError) -> String {
        var existing = url
        var missing: [String] = []
        var resolved: String?
        while resolved == nil {
            resolved = realPath(existing.path)
            guard resolved == nil else { break }
            var info = stat()
            if lstat(existing.path, &info) == 0 {
                let link = (info.st_mode & S_IFMT) == S_IFLNK
                throw .sourceNotAllowed(source: text, reason: link
                    ? "it goes through a symbolic link that leads nowhere" : "a part of it cannot be resolved")
            }
            missing.append(existing.lastPathComponent)
            let parent = existing.deletingLastPathComponent()
            guard parent.path != existing.path else { break }
            existing = parent
        }
        return ([resolved ?? "/"] + missing.reversed()).joined(separator: "/")
            .replacingOccurrences(of: "//", with: "/")
    }

    private static let outside = "it lies outside the folder"
    /// Linux's PATH_MAX.
    static let maxPathBytes = 4096

    /// `path` with every symbolic link resolved, or nil when some part of it does not exist.
    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Only a regular file is read (a FIFO or a device would block or never end).
    private func regularFile(_ path: String, shownAs text: String) throws(StreamError) -> String {
        var info = stat()
        guard stat(path, &info) == 0 else { throw .sourceNotAllowed(source: text, reason: "no such file") }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .sourceNotAllowed(source: text, reason: "not a regular file")
        }
        return path
    }
}

/// Errors of creating or running a stream.
public enum StreamError: Error, Equatable, CustomStringConvertible {
    case sourceNotAllowed(source: String, reason: String)
    case outputNotAllowed(path: String, reason: String)
    /// The output could not be created for a want of the service's own (descriptors, disk space): not the request's
    /// fault, and it may succeed later.
    case outputUnavailable(path: String, reason: String)
    case invalid(String)
    /// `finishingVideos` of the streams counted have ended, their annotated video still being finished.
    case tooManyStreams(limit: Int, finishingVideos: Int = 0)
    case unknownSlot(String)
    /// A stream of that name is running.
    case nameTaken(String)
    /// The service is stopping.
    case shuttingDown

    public var description: String {
        switch self {
        case .sourceNotAllowed(let source, let reason): "source '\(source)' is not allowed: \(reason)"
        case .outputNotAllowed(let path, let reason): "output '\(path)' is not allowed: \(reason)"
        case .outputUnavailable(let path, let reason): "output '\(path)' cannot be created now: \(reason)"
        case .invalid(let reason): reason
        case .tooManyStreams(let limit, let finishing):
            "at most \(limit) streams may run at once"
                + (finishing == 0 ? "" : " (\(finishing) of them ended, their annotated video still being finished)")
        case .unknownSlot(let slot): "no slot '\(slot)'"
        case .nameTaken(let name): "a stream named '\(name)' is running (stop it first)"
        case .shuttingDown: "the service is shutting down"
        }
    }
}
