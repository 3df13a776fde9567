import Foundation
import ImageCodecs
import Primitives

#if canImport(Glibc)
    import Glibc
#endif

/// One decoded frame: its pixels and its presentation time.
///
/// Thread-safety: a value.
public struct VideoFrame: Sendable {
    /// 0-based index of the frame among those this decoder produced.
    public var index: Int
    /// Presentation time in seconds, as the source stamped it (nil where the source gave none).
    public var pts: Double?
    public var image: RGBImage
    /// When the frame's pixels had all arrived from FFmpeg.
    public var decodedAt: ContinuousClock.Instant
}

/// What ends a decode other than the end of the source.
public enum VideoDecodeError: Error, Equatable, CustomStringConvertible {
    /// `code` is the errno where a system call failed (nil for a refusal of ours, such as an unknown extension).
    case cannotStart(program: String, reason: String, code: Int32? = nil)
    /// A file source could not be opened: missing, not a regular file, or a symbolic link on its path.
    case cannotOpen(source: String, reason: String)
    /// FFmpeg exited without a frame, or with an error status; `log` is the tail of what it printed.
    case ffmpegFailed(source: String, status: String, log: String)
    /// A frame's size is outside the limit (or its byte count would overflow).
    case frameTooLarge(source: String, width: Int, height: Int, maxPixels: Int)
    /// FFmpeg's frame report and its pixels disagree (a truncated frame, an unparsable report).
    case protocolError(source: String, reason: String)

    public var description: String {
        switch self {
        case .cannotStart(let program, let reason, _): "cannot start \(program): \(reason)"
        case .cannotOpen(let source, let reason): "cannot open \(source): \(reason)"
        case .ffmpegFailed(let source, let status, let log):
            "ffmpeg failed on \(source) (\(status))" + (log.isEmpty ? "" : ": \(log)")
        case .frameTooLarge(let source, let width, let height, let maxPixels):
            "\(source): a \(width)x\(height) frame is over the limit of \(maxPixels) pixels"
        case .protocolError(let source, let reason): "\(source): \(reason)"
        }
    }

    /// Whether the program could not start for want of something that may be free again later: descriptors (EMFILE,
    /// ENFILE), processes (EAGAIN), memory (ENOMEM).
    public var isShortage: Bool {
        guard case .cannotStart(_, _, let code?) = self else { return false }
        return [EMFILE, ENFILE, EAGAIN, ENOMEM].contains(code)
    }
}

/// Decodes a video source with the `ffmpeg` program, run as a child process: RGB24 frames on its stdout, each
/// frame's size and pts on its stderr (the `showinfo` filter), read in lockstep.
///
/// `showinfo` sits last in the filter chain and logs each frame before the frame is written to the output pipe, so when
/// a frame's report has been read its pixels follow on stdout; the report gives the size, so a change of resolution
/// mid-stream is followed (`-autoscale 0`: FFmpeg would otherwise scale every later frame to the first one's size after
/// `showinfo` reported it, and the reports and pixels would part), and every size is checked against `maxPixels` (and
/// for overflow) before a byte of pixels is allocated. FFmpeg's own decoders are limited to the same pixel count
/// (`-max_pixels`).
///
/// The reports share stderr with what FFmpeg prints of the source itself, metadata included, which the media controls
/// and which can hold line breaks: a title could imitate a report and put the pixels out of step. So the `showinfo`
/// instance is named with a random tag (`showinfo@<tag>`, which FFmpeg prints in each of its lines) that no media can
/// know, and only lines with that tag are taken as reports.
///
/// A crash of FFmpeg on hostile media ends the decode with an error, never the service. `close()` (or `deinit`)
/// kills and reaps the child.
///
/// Thread-safety: `nextFrame()` is for one thread at a time; `close()` may be called from any thread, also while
/// `nextFrame()` blocks (it then returns nil).
public final class FFmpegDecoder: Sendable {
    public let source: VideoSource
    public let maxPixels: Int
    private let child: ChildProcess
    private let reports: ReportQueue
    private let produced = Locked(0)
    private let closed = Locked(false)

    /// Starts FFmpeg on `source`.
    /// - Parameters:
    ///   - ffmpeg: the program (looked up on `PATH`).
    ///   - maxPixels: the largest frame accepted (width × height).
    /// - Throws: `VideoDecodeError.cannotStart` when the program cannot be run; `.cannotOpen` for a file source that
    ///   is missing, not a regular file, or reached through a symbolic link (one planted since its path was checked).
    public init(source: VideoSource, ffmpeg: String = "ffmpeg", maxPixels: Int = 8192 * 8192)
        throws(VideoDecodeError)
    {
        self.source = source
        self.maxPixels = maxPixels
        // A file is opened here and handed to FFmpeg, which never opens the path (and reads no other file: no
        // playlist demuxer), so what is read is what was checked.
        let file = try Self.open(source)
        defer { if let file { Glibc.close(file) } }
        // The `showinfo` instance's secret name.
        let tag = FrameReport.randomTag()
        // FFmpeg's decoders check the width rounded up to their stride alignment (up to 64): with an eighth more than
        // the limit they never refuse a frame within it, and this decoder's own check (exact) refuses the rest.
        let (slack, overflow) = maxPixels.addingReportingOverflow(maxPixels / 8)
        let arguments = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
            "-max_pixels", String(overflow ? Int.max : slack)]
            + source.ffmpegInput
            // `V`: the first video stream that is not a picture (cover art, a thumbnail), which an MP4 may put first.
            + ["-map", "0:V:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
               "-vf", "format=rgb24,showinfo@\(tag)=checksum=0", "-autoscale", "0",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        child = try ChildProcess(arguments, file: file)
        let reports = ReportQueue(redact: source.redacting)
        self.reports = reports
        let (fd, started) = (child.stderr, child)
        // Ends at FFmpeg's end of stderr: when it exits or is killed. A frame FFmpeg refused as over its limit ends
        // the decode (a live source would otherwise run on, refusing every frame): at once after the first frame,
        // after `ReportQueue.probingGrace` before it (the refusal may be of another stream, read while probing).
        do {
            try SystemThread.detach(name: "yoloswap.ffmpeg-log") {
                Self.readReports(fd: fd, tag: tag, into: reports, onRefusal: { started.terminate() })
            }
        } catch {
            // Nobody would read FFmpeg's reports (nor its stderr, which would fill and stall it): not started.
            Glibc.close(fd)
            reports.finish()
            terminate()
            throw .cannotStart(program: ffmpeg, reason: "\(error)", code: error.code)
        }
    }

    deinit { close() }

    /// The descriptor of a file source, opened for reading without following a link; nil for other sources. Opened
    /// non-blocking (a FIFO would block the open), and refused unless it is a regular file (a FIFO or a device would
    /// block or never end).
    private static func open(_ source: VideoSource) throws(VideoDecodeError) -> Int32? {
        guard case .file(let path) = source else { return nil }
        let file: Int32
        do { file = try LinkFreePath.open(path, flags: O_RDONLY | O_NONBLOCK) } catch {
            throw .cannotOpen(source: path, reason: error.reason)
        }
        var info = stat()
        let reason: String? =
            if fstat(file, &info) != 0 { String(cString: strerror(errno)) }
            else if (info.st_mode & S_IFMT) != S_IFREG { "not a regular file" }
            else { nil }
        if let reason {
            Glibc.close(file)
            throw .cannotOpen(source: path, reason: reason)
        }
        return file
    }

    /// The next frame, or nil at the end of the source (or after `close()`).
    /// - Throws: `VideoDecodeError` when FFmpeg failed, a frame is over the limit, or its pixels are short.
    public func nextFrame() throws(VideoDecodeError) -> VideoFrame? {
        guard let report = reports.next() else { return try finish() }
        let (width, height) = (report.width, report.height)
        guard width > 0, height > 0, width <= maxPixels, height <= maxPixels,
            case let (pixels, overflow) = width.multipliedReportingOverflow(by: height), !overflow,
            pixels <= maxPixels, case let (bytes, overflow3) = pixels.multipliedReportingOverflow(by: 3), !overflow3
        else {
            close()
            throw .frameTooLarge(source: source.description, width: width, height: height, maxPixels: maxPixels)
        }
        if produced.value == 0 { ChildProcess.widen(pipe: child.stdout, toHold: bytes) }
        var got = 0
        let buffer = [UInt8](unsafeUninitializedCapacity: bytes) { raw, count in
            got = readFully(child.stdout, into: UnsafeMutableRawBufferPointer(raw), count: bytes)
            count = got
        }
        guard got == bytes else {
            if closed.value { return nil }
            _ = try finish()
            throw .protocolError(source: source.description,
                reason: "frame \(produced.value) ended after \(got) of \(bytes) bytes")
        }
        let index = produced.withLock { n in
            defer { n += 1 }
            return n
        }
        return VideoFrame(index: index, pts: report.pts, image: RGBImage(width: width, height: height, pixels: buffer),
            decodedAt: .now)
    }

    /// Kills FFmpeg (if still running) and reaps it. Idempotent.
    public func close() {
        terminate()
        child.waitForExit()
    }

    /// Kills FFmpeg (if still running) without waiting for it: `nextFrame()` then returns nil, and whoever calls it
    /// closes the decoder. Never blocks, so it may be called from Swift's cooperative pool.
    public func terminate() {
        closed.withLock { $0 = true }
        child.terminate()
    }

    /// The end of the frame reports: a clean end (nil) or FFmpeg's failure — `frameTooLarge` when its decoder refused
    /// a frame over `-max_pixels` (whether FFmpeg then exited, skipped it, or was killed for it), so that a frame over
    /// the limit reads the same whichever check saw it first. (FFmpeg logs the width rounded up to its alignment.)
    private func finish() throws(VideoDecodeError) -> VideoFrame? {
        let status = child.waitForExit()
        if let (width, height) = reports.refusedSize {
            throw .frameTooLarge(source: source.description, width: width, height: height, maxPixels: maxPixels)
        }
        if closed.value || ChildProcess.succeeded(status) { return nil }
        throw .ffmpegFailed(source: source.description, status: ChildProcess.describe(status),
            log: reports.logTail)
    }

    /// Splits FFmpeg's stderr into lines: frame reports go to the queue, the rest is kept as the log's tail.
    private static func readReports(fd: Int32, tag: String, into queue: ReportQueue,
                                    onRefusal: @Sendable () -> Void) {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        // showinfo's input time base (`config in time_base: 1/15360`): pts × time base is exact where `pts_time`
        // is rounded to 6 digits.
        var timeBase: (Int, Int)?
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            pending.append(contentsOf: chunk[0..<n])
            // Lines are taken from `start` on, and what they held removed once a read: removing each line as it was
            // taken moved the rest of the buffer every time (a read of short lines, quadratic).
            var start = pending.startIndex
            while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[start..<newline], as: UTF8.self)
                start = newline + 1
                if var report = FrameReport(parsing: line, tag: tag) {
                    if let (num, den) = timeBase, let pts = report.rawPTS { report.pts = Double(pts) * Double(num) / Double(den) }
                    queue.push(report)
                } else if let base = FrameReport.timeBase(parsing: line, tag: tag) {
                    timeBase = base
                } else {
                    if let size = FrameReport.refusedSize(parsing: line), queue.refuse(size) { onRefusal() }
                    queue.log(line)
                }
            }
            pending.removeSubrange(..<start)
            // A line longer than this is no report of ours: keep memory bounded.
            if pending.count > 64 * 1024 { pending.removeAll(keepingCapacity: true) }
        }
        Glibc.close(fd)
        queue.finish()
    }
}

/// A frame as `showinfo@<tag>` reports it: `[showinfo@<tag> @ 0x…] n:   0 pts:      0 pts_time:0  … s:640x480 …`.
struct FrameReport: Equatable {
    var width: Int
    var height: Int
    var pts: Double?
    /// The integer pts in the filter's time base.
    var rawPTS: Int?

    init(width: Int, height: Int, pts: Double?, rawPTS: Int? = nil) {
        self.width = width
        self.height = height
        self.pts = pts
        self.rawPTS = rawPTS
    }

    /// A new secret name for a `showinfo` instance: 128 random bits in hex.
    static func randomTag() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<2).map { _ in String(generator.next() as UInt64, radix: 16) }.joined(separator: "x")
    }

    /// What FFmpeg prints at the start of each line of the `showinfo@<tag>` instance.
    static func prefix(_ tag: String) -> String { "[showinfo@\(tag) @ " }

    /// Parses the `showinfo@<tag>` instance's `config in time_base: 1/15360, …` line.
    static func timeBase(parsing line: String, tag: String) -> (Int, Int)? {
        guard line.contains(prefix(tag)), let range = line.range(of: "config in time_base: ") else { return nil }
        let text = line[range.upperBound...].prefix { $0 != "," }
        let parts = text.split(separator: "/")
        guard parts.count == 2, let num = Int(parts[0]), let den = Int(parts[1]), num > 0, den > 0 else { return nil }
        return (num, den)
    }

    /// The size in FFmpeg's refusal of a frame over `-max_pixels`: `[IMGUTILS @ 0x…] Picture size 320x240 exceeds
    /// specified max pixel count 76000, …`, after the contexts it was logged from (`[h264 @ 0x…] `). Only a line that
    /// starts so: the input's metadata, which FFmpeg prints too (indented), is the source's to choose, and a title
    /// that reads like the refusal must not end a live stream for good.
    static func refusedSize(parsing line: String) -> (Int, Int)? {
        var rest = Substring(line)
        while rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            let context = rest[rest.index(after: rest.startIndex)..<close]
            rest = rest[rest.index(after: close)...]
            guard context.contains(" @ 0x"), rest.hasPrefix(" ") else { return nil }
            rest = rest.dropFirst()
            guard context.hasPrefix("IMGUTILS @ ") else { continue }
            guard rest.hasPrefix("Picture size "), rest.contains(" exceeds specified max pixel count") else {
                return nil
            }
            let parts = rest.dropFirst("Picture size ".count).prefix { $0 != " " }.split(separator: "x")
            guard parts.count == 2, let width = Int(parts[0]), let height = Int(parts[1]) else { return nil }
            return (width, height)
        }
        return nil
    }

    /// Parses a frame line of the `showinfo@<tag>` instance; nil for any other line (its configuration lines,
    /// FFmpeg's other messages, anything without the tag).
    init?(parsing line: String, tag: String) {
        guard line.contains(Self.prefix(tag)), line.contains(" n:"), line.contains("pts_time:") else { return nil }
        // `key:value` pairs; showinfo pads some values (`pts:      0`), which then follow as the next token.
        var fields: [Substring: Substring] = [:]
        let tokens = line.split(separator: " ")
        var i = 0
        while i < tokens.count {
            let token = tokens[i]
            i += 1
            guard let colon = token.firstIndex(of: ":") else { continue }
            var value = token[token.index(after: colon)...]
            if value.isEmpty, i < tokens.count, !tokens[i].contains(":") {
                value = tokens[i]
                i += 1
            }
            fields[token[..<colon]] = value
        }
        guard let size = fields["s"] else { return nil }
        let parts = size.split(separator: "x")
        guard parts.count == 2, let width = Int(parts[0]), let height = Int(parts[1]) else { return nil }
        self.width = width
        self.height = height
        // "NOPTS" (no timestamp) parses as nil.
        pts = fields["pts_time"].flatMap { Double($0) }.flatMap { $0.isFinite ? $0 : nil }
        rawPTS = pts == nil ? nil : fields["pts"].flatMap { Int($0) }
    }
}

/// Frame reports handed from the stderr thread to the decoding thread, and the tail of FFmpeg's other messages.
///
/// Thread-safety: all members may be used from any thread.
final class ReportQueue: @unchecked Sendable {
    // @unchecked: every stored property is read and written with `condition` locked.
    private let condition = NSCondition()
    private var reports: [FrameReport] = []
    private var head = 0
    private var finished = false
    private var tail: [String] = []
    private var refused: (Int, Int)?
    /// A refusal before the first frame, and when it came: FFmpeg holds every stream's decoder to `-max_pixels` while
    /// it probes the input, so it may be another stream's frame, not one of the mapped stream's.
    private var refusedEarly: (size: (Int, Int), at: ContinuousClock.Instant)?
    private var framesReported = 0
    /// Applied to each log line before it is cut to length: a source's credentials never reach the tail whole.
    private let redact: @Sendable (String) -> String

    init(redact: @escaping @Sendable (String) -> String) { self.redact = redact }

    func push(_ report: FrameReport) {
        condition.lock()
        framesReported += 1
        if let early = refusedEarly {
            // Frames came after it: another stream's, refused while FFmpeg probed the input.
            tail.append("(before the first frame FFmpeg refused a \(early.size.0)x\(early.size.1) frame over the "
                + "pixel limit: another stream's, read while probing the input)")
            if tail.count > 8 { tail.removeFirst() }
            refusedEarly = nil
        }
        reports.append(report)
        condition.signal()
        condition.unlock()
    }

    func log(_ line: String) {
        condition.lock()
        tail.append(String(redact(line).prefix(500)))
        if tail.count > 8 { tail.removeFirst() }
        condition.unlock()
    }

    /// How long refusals before the first frame may go on before FFmpeg is stopped for them: its probing of the
    /// input is over within it, and a live source whose own frames are over the limit is refused frame after frame.
    static let probingGrace: Duration = .seconds(5)

    /// Notes FFmpeg's refusal of a frame over its pixel limit; returns whether FFmpeg is to be stopped now. After the
    /// first frame, at once (the mapped stream's frame: a live source would otherwise run on, refusing every frame);
    /// before it, once refusals have gone on for `probingGrace` with no frame.
    func refuse(_ size: (Int, Int), now: ContinuousClock.Instant = .now) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard framesReported == 0 else {
            if refused == nil { refused = size }
            return true
        }
        guard let early = refusedEarly else {
            refusedEarly = (size, now)
            return false
        }
        return now - early.at >= Self.probingGrace
    }

    /// The size of the first frame FFmpeg refused as over its pixel limit since the first frame, or before it when
    /// no frame came after: nil when none was refused, or only while probing, before frames that came.
    var refusedSize: (Int, Int)? {
        condition.lock()
        defer { condition.unlock() }
        return refused ?? refusedEarly?.size
    }

    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// The next report, waiting for it; nil once FFmpeg's stderr has ended and every report was taken.
    func next() -> FrameReport? {
        condition.lock()
        defer { condition.unlock() }
        while head == reports.count && !finished { condition.wait() }
        guard head < reports.count else { return nil }
        let report = reports[head]
        head += 1
        if head > 256 {
            reports.removeFirst(head)
            head = 0
        }
        return report
    }

    /// FFmpeg's last few lines other than frame reports.
    var logTail: String {
        condition.lock()
        defer { condition.unlock() }
        return tail.filter { !$0.contains("[showinfo@") }.suffix(4).joined(separator: " | ")
    }
}
