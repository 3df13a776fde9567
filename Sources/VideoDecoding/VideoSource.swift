/// Where a stream's frames come from, as FFmpeg is to open it.
///
/// A source is built by a ``SourcePolicy`` from what a caller wrote, so that a file lies inside the configured media
/// folder and a URL or device is one the configuration allows; nothing here checks that again.
///
/// Thread-safety: a value.
public enum VideoSource: Sendable, Equatable, CustomStringConvertible {
    /// A video file (an absolute path with no symbolic link in it: the decoder opens it with ``LinkFreePath``). Ends
    /// at its last frame.
    case file(path: String)
    /// A live network source: `udp://`, `rtp://`, `rtsp://`, `http(s)://` (MJPEG or anything FFmpeg reads over it).
    case network(url: String)
    /// A V4L2 capture device (`/dev/videoN`).
    case device(path: String)

    /// A live source has no end: it is reconnected when it stops, and `latest` back-pressure suits it.
    public var isLive: Bool {
        if case .file = self { return false }
        return true
    }

    /// What is shown of the source (its status, logs, the audit log, errors): a network URL with its password
    /// replaced by `***` (the whole user-info when it has no password, a token perhaps), so that a camera's
    /// credentials reach no viewer, log or audit record.
    public var description: String {
        switch self {
        case .file(let path): path
        case .network(let url): redacting(url)
        case .device(let path): "v4l2:\(path)"
        }
    }

    /// The user-info of a URL's authority: the authority runs from `://` to the first `/`, `?` or `#`, and its
    /// user-info up to its last `@` (FFmpeg's `av_url_split`). Nil when there is none.
    ///
    /// Found byte by byte, as FFmpeg finds it: Swift's characters join a combining mark (or U+0600, which joins what
    /// follows it) with the `@` or `/` beside it, which would then be found in another place than FFmpeg's.
    public static func userInfo(of url: String) -> Range<String.Index>? {
        let utf8 = url.utf8
        guard let separator = utf8.firstRange(of: "://".utf8) else { return nil }
        let rest = utf8[separator.upperBound...]
        let authorityEnd = rest.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }
            ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: UInt8(ascii: "@")) else { return nil }
        return separator.upperBound..<at
    }

    /// `text` (a URL, FFmpeg's log) with this network source's credentials replaced as `description` shows them.
    public func redacting(_ text: String) -> String {
        guard case .network(let url) = self, let range = Self.userInfo(of: url), !range.isEmpty else { return text }
        let userInfo = String(url[range])
        // By bytes (see `userInfo(of:)`): the user-info may end in a character that what follows joins.
        let shown = userInfo.utf8.firstIndex(of: UInt8(ascii: ":")).map { String(userInfo[..<$0]) + ":***" } ?? "***"
        return text.replacingBytes(of: userInfo + "@", with: shown + "@")
    }

    /// The URL schemes a network source may use.
    public static let networkSchemes = ["udp", "rtp", "rtsp", "http", "https"]

    /// Demuxers of a live stream of packets (no playlist among them): MPEG-TS, raw H.264/HEVC, MJPEG (which FFmpeg's
    /// probe mostly takes for `jpeg_pipe`, JPEG images one after another).
    static let streamFormats = "mpegts,h264,hevc,mjpeg,jpeg_pipe"

    /// Demuxers of a file source: single-file containers and raw streams, no playlist (HLS, DASH, concat, image
    /// sequences), which would have FFmpeg open other files — or hosts — than the one checked.
    static let fileFormats = "mov,matroska,avi,mpegts,flv,asf,ogg,nut,ivf,dv,mpeg,mpegvideo,m4v,h264,hevc,mjpeg,"
        + "jpeg_pipe,gif,yuv4mpegpipe"

    /// FFmpeg's input options and input for this source, in order (what comes before and after `-i`).
    ///
    /// A file is read from the descriptor the decoder opened (FFmpeg's descriptor 3, `/proc/self/fd/3`: FFmpeg needs
    /// `/proc`), through the `file` protocol only and by the demuxers of `fileFormats` only, so FFmpeg reads that one
    /// file and nothing it names; its container is told by its content (FFmpeg does not see the name). RTSP is read
    /// over TCP (no UDP ports to open); live sources skip FFmpeg's input buffering so the newest frame arrives first. A
    /// network source is read only by the demuxers its scheme carries (`-format_whitelist`): an allowed HTTP endpoint
    /// that answers a playlist (HLS, DASH, concat), which would have FFmpeg fetch from hosts `allowed_urls` never
    /// named, is refused. (FFmpeg's HTTP client still follows redirects.)
    var ffmpegInput: [String] {
        switch self {
        case .file:
            return ["-protocol_whitelist", "file", "-format_whitelist", Self.fileFormats, "-i", "file:/proc/self/fd/3"]
        case .network(let url):
            let scheme = url.split(separator: ":", maxSplits: 1).first.map { $0.lowercased() } ?? ""
            // At most a second of probing: a live source starts (and restarts) within it.
            var options = ["-fflags", "nobuffer", "-analyzeduration", "1000000"]
            switch scheme {
            case "rtsp":
                options += ["-rtsp_transport", "tcp", "-protocol_whitelist", "rtsp,rtp,tcp,udp",
                    "-format_whitelist", "rtsp"]
            case "udp": options += ["-protocol_whitelist", "udp", "-format_whitelist", Self.streamFormats]
            case "rtp": options += ["-protocol_whitelist", "rtp,udp", "-format_whitelist", "rtp"]
            default:
                options += ["-protocol_whitelist", "http,https,tcp,tls", "-format_whitelist",
                    Self.streamFormats + ",mpjpeg,flv,matroska,mov"]
            }
            return options + ["-i", url]
        case .device(let path):
            return ["-f", "v4l2", "-i", path]
        }
    }
}
