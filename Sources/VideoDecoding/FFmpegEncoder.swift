import Foundation
import ImageCodecs
import Primitives

#if canImport(Glibc)
    import Glibc
#endif

/// Encodes RGB24 frames into a video file with the `ffmpeg` program, run as a child process that reads them from a
/// pipe on its stdin: H.264 (`libx264`, `veryfast`, yuv420p) in the container the file's extension names (`.mp4`,
/// `.mkv`, …: ``muxer(forFileName:)``). A stream's annotated output video is made this way.
///
/// The file is one the caller opened (and checked): FFmpeg writes it through the descriptor it is handed (as
/// `/proc/self/fd/3`, so that the MP4 muxer can seek back to write its index), never by opening the path itself.
///
/// Every frame must have the size given at creation. Writing blocks while FFmpeg is behind (the pipe is full), so a
/// caller on Swift's cooperative pool writes through a serial queue of its own. Writing after FFmpeg died fails with its
/// message rather than raising SIGPIPE: creating an encoder sets the process's SIGPIPE to ignored.
///
/// Thread-safety: `write` and `finish` are for one thread at a time (one serial queue); `cancel` may be called from
/// any thread.
public final class FFmpegEncoder: Sendable {
    /// The file as shown in errors.
    public let path: String
    public let width: Int
    public let height: Int
    private let child: ChildProcess
    private let log = Locked<[String]>([])
    private let logDone = DispatchSemaphore(value: 0)

    /// The containers a file may be written in, by its extension (lower case), with FFmpeg's muxer for each.
    public static let muxers = ["mp4": "mp4", "m4v": "mp4", "mov": "mov", "3gp": "3gp", "mkv": "matroska",
                                "avi": "avi", "ts": "mpegts", "m2ts": "mpegts", "mts": "mpegts", "flv": "flv",
                                "nut": "nut"]

    /// FFmpeg's muxer for a file of that name, by its extension; nil for one not in ``muxers``.
    public static func muxer(forFileName name: String) -> String? {
        let dot = name.lastIndex(of: ".").map { name.index(after: $0) }
        guard let dot, !name[dot...].contains("/") else { return nil }
        return muxers[name[dot...].lowercased()]
    }

    /// Starts FFmpeg writing the open, writable `file` (shown in errors as `path`, its container chosen by the name's
    /// extension) at `fps` frames a second. The caller keeps `file` and closes it: FFmpeg has its own copy.
    /// - Throws: `VideoDecodeError.cannotStart` when the program cannot be run or the name has no known extension;
    ///   `.frameTooLarge` for a size that is not positive or over `maxPixels`. (An odd side is padded by one pixel:
    ///   yuv420p needs even ones.)
    public init(file: Int32, path: String, width: Int, height: Int, fps: Double, maxPixels: Int = 8192 * 8192,
                ffmpeg: String = "ffmpeg") throws(VideoDecodeError) {
        guard width > 0, height > 0, width <= maxPixels, height <= maxPixels,
            case let (pixels, overflow) = width.multipliedReportingOverflow(by: height), !overflow, pixels <= maxPixels
        else { throw .frameTooLarge(source: path, width: width, height: height, maxPixels: maxPixels) }
        guard let muxer = Self.muxer(forFileName: path) else {
            throw .cannotStart(program: ffmpeg, reason: "\(path): the name ends in none of "
                + Self.muxers.keys.sorted().map { "." + $0 }.joined(separator: ", "))
        }
        signal(SIGPIPE, SIG_IGN)
        self.path = path
        self.width = width
        self.height = height
        let rate = fps.isFinite && fps > 0 && fps <= 1000 ? String(format: "%.3f", fps) : "30"
        child = try ChildProcess([ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "\(width)x\(height)", "-r", rate, "-i", "pipe:0",
            "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", "yuv420p", "-f", muxer, "file:/proc/self/fd/3"],
            writableStdin: true, file: file)
        ChildProcess.widen(pipe: child.stdin, toHold: min(pixels, ChildProcess.maxFramePipeBytes) * 3)
        // FFmpeg's messages, drained (a full stderr pipe would stall it) and kept for an error; ends at its exit.
        let (fd, log, done) = (child.stderr, log, logDone)
        let drain: @Sendable () -> Void = {
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                let text = String(decoding: chunk[0..<n], as: UTF8.self)
                log.withLock { lines in
                    lines += text.split(separator: "\n").map(String.init)
                    if lines.count > 20 { lines.removeFirst(lines.count - 20) }
                }
            }
            Glibc.close(fd)
            done.signal()
        }
        do { try SystemThread.detach(name: "yoloswap.ffmpeg-enc", drain) } catch {
            // FFmpeg's stderr would fill with nobody reading it, and stall it: not started.
            Glibc.close(fd)
            done.signal()
            child.terminate()
            throw .cannotStart(program: ffmpeg, reason: "\(error)", code: error.code)
        }
    }

    deinit { cancel() }

    /// Writes one frame; blocks while FFmpeg is behind.
    /// - Throws: `VideoDecodeError.protocolError` for a frame of another size; `.ffmpegFailed` when FFmpeg has ended.
    public func write(_ image: RGBImage) throws(VideoDecodeError) {
        guard image.width == width, image.height == height, image.pixels.count == width * height * 3 else {
            throw .protocolError(source: path, reason: "a \(image.width)x\(image.height) frame in a \(width)x\(height) "
                + "video")
        }
        let written = image.pixels.withUnsafeBytes { bytes -> Bool in
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(child.stdin, bytes.baseAddress! + done, bytes.count - done)
                if n > 0 {
                    done += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return false
                }
            }
            return true
        }
        if !written { throw failure() }
    }

    /// Ends the file: closes FFmpeg's input and waits for it to write the rest.
    /// - Throws: `VideoDecodeError.ffmpegFailed` when it exits with an error.
    public func finish() throws(VideoDecodeError) {
        child.closeStdin()
        let status = child.waitForExit()
        guard ChildProcess.succeeded(status) else { throw failure(status) }
    }

    /// Kills FFmpeg without finishing the file.
    public func cancel() {
        child.closeStdin()
        child.terminate()
        child.waitForExit()
    }

    private func failure(_ status: Int32? = nil) -> VideoDecodeError {
        child.closeStdin()
        let status = status ?? child.waitForExit()
        // Its last messages: the log thread ends at FFmpeg's exit.
        _ = logDone.wait(timeout: .now() + 2)
        return .ffmpegFailed(source: path, status: ChildProcess.describe(status),
            log: log.value.suffix(5).joined(separator: "; "))
    }
}
