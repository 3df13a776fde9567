import Foundation
import VideoDecoding

/// A stream's annotated output video: every detected frame with its boxes drawn, encoded by FFmpeg into a file
/// (`FFmpegEncoder`). The frame rate comes from the first two frames' pts (else the stream's `fps_cap`, else 30), so
/// the encoder starts at the second frame. The first failure (FFmpeg died, the disk is full, the frame size changed)
/// ends the output; the stream goes on. A change of size (a camera that reconnected in another mode) ends the file
/// properly, so that what was recorded until then plays.
///
/// Thread-safety: used from one serial queue (its stream's writer), never concurrently.
final class AnnotatedVideoOutput: @unchecked Sendable {
    // @unchecked: all state is touched only from its stream's serial writer queue.
    let path: String
    private let fallbackFPS: Double
    private let ffmpeg: String
    private var first: PreviewFrame?
    private var encoder: FFmpegEncoder?
    private var failed = false

    init(path: String, fallbackFPS: Double?, ffmpeg: String) {
        self.path = path
        self.fallbackFPS = fallbackFPS ?? 30
        self.ffmpeg = ffmpeg
    }

    /// What became of a frame.
    enum Outcome: Equatable {
        /// Written (or held to be written with the next one).
        case written
        /// The output ended on this frame, for this reason.
        case failed(String)
        /// The output had ended before: the frame was not written.
        case skipped
    }

    /// Adds a frame.
    func append(_ frame: PreviewFrame) -> Outcome {
        guard !failed else { return .skipped }
        let error: String?
        if let encoder {
            error = write(frame, to: encoder)
        } else if let first {
            let interval = (frame.pts ?? .nan) - (first.pts ?? .nan)
            error = start(with: [first, frame], fps: interval > 0 && interval <= 10 ? 1 / interval : fallbackFPS)
        } else {
            first = frame
            error = nil
        }
        return error.map(Outcome.failed) ?? .written
    }

    /// Writes the rest of the file; returns the error, if any.
    func finish() -> String? {
        if encoder == nil, let first { if let error = start(with: [first], fps: fallbackFPS) { return error } }
        guard let encoder, !failed else { return nil }
        do { try encoder.finish() } catch {
            failed = true
            return "\(error)"
        }
        return nil
    }

    private func start(with frames: [PreviewFrame], fps: Double) -> String? {
        first = nil
        do {
            let made = try FFmpegEncoder(path: path, width: frames[0].image.width, height: frames[0].image.height,
                fps: fps, ffmpeg: ffmpeg)
            encoder = made
            for frame in frames { if let error = write(frame, to: made) { return error } }
            return nil
        } catch {
            failed = true
            return "\(error)"
        }
    }

    private func write(_ frame: PreviewFrame, to encoder: FFmpegEncoder) -> String? {
        do { try encoder.write(frame.annotated) } catch {
            failed = true
            // A frame of another size: FFmpeg is fine, and finishing writes the file's index (an MP4 killed without
            // it does not play). Otherwise FFmpeg has died, and cancelling only reaps it.
            if case .protocolError = error { try? encoder.finish() } else { encoder.cancel() }
            return "\(error)"
        }
        return nil
    }
}
