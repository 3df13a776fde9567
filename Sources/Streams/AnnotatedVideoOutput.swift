import Foundation
import Primitives
import VideoDecoding

#if canImport(Glibc)
    import Glibc
#endif

/// A stream's annotated output video: every detected frame with its boxes drawn, encoded by FFmpeg into a file
/// (`FFmpegEncoder`). The frame rate comes from the first two frames' pts (else the stream's `fps_cap`, else 30), so
/// the encoder starts at the second frame. The first failure (FFmpeg died, the disk is full, the frame size changed)
/// ends the output; the stream goes on. A change of size (a camera that reconnected in another mode) ends the file
/// properly, so that what was recorded until then plays.
///
/// The file is opened when the stream is created (``LinkFreePath``, as the output policy resolved it; emptied once the
/// stream is in the registry), so that a refusal is the creation's, and FFmpeg writes through that descriptor: a link
/// planted in the output folder since the check cannot redirect the video. A stream that ends without a frame leaves
/// the file empty.
///
/// Thread-safety: used from one serial queue (its stream's writer), never concurrently.
final class AnnotatedVideoOutput: @unchecked Sendable {
    // @unchecked: all state is touched only from its stream's serial writer queue.
    let path: String
    private let fallbackFPS: Double
    private let ffmpeg: String
    /// The open file, until FFmpeg has its own copy (or the output ends without one).
    private var file: Int32?
    private var first: PreviewFrame?
    private var encoder: FFmpegEncoder?
    private var failed = false
    /// Whether no file was at the path before this opened it.
    private let created: Bool

    /// Opens the file at `path`, which must hold no symbolic link and be a regular file if it exists
    /// (``LinkFreePath/openRegularFileForWriting(_:mode:)``); creates it if missing, and leaves what it holds until
    /// `truncate()`.
    /// - Throws: `FileOpenError` when it cannot be opened that way.
    init(path: String, fallbackFPS: Double?, ffmpeg: String) throws(FileOpenError) {
        self.path = path
        self.fallbackFPS = fallbackFPS ?? 30
        self.ffmpeg = ffmpeg
        created = NewOutputFile.isMissing(path)
        file = try LinkFreePath.openRegularFileForWriting(path)
    }

    /// Removes the file when this opened it new and it is still empty (a creation refused after the open).
    func discardIfCreated() {
        if created, let file { NewOutputFile.removeIfEmpty(path, descriptor: file) }
    }

    /// Empties the file: its stream has been created. (FFmpeg empties it again when it starts.) Returns whether it
    /// could (`errno` says why not).
    func truncate() -> Bool {
        guard let file else { return true }
        return ftruncate(file, 0) == 0
    }

    deinit { closeFile() }

    private func closeFile() {
        if let file { close(file) }
        file = nil
    }

    /// What a call did: the frames that went into the file with it, and why the output ended, if it ended with it.
    struct Outcome: Equatable, Sendable {
        /// Frames written by this call: 0 while the first frame is held (the encoder starts with the second), 2 when
        /// the encoder starts, 0 once the output has ended.
        var written = 0
        /// Why the output ended with this call (reported once).
        var error: String?
    }

    /// Adds a frame.
    func append(_ frame: PreviewFrame) -> Outcome {
        guard !failed else { return Outcome() }
        if let encoder { return write([frame], to: encoder) }
        guard let first else {
            first = frame
            return Outcome()
        }
        let interval = (frame.pts ?? .nan) - (first.pts ?? .nan)
        return start(with: [first, frame], fps: interval > 0 && interval <= 10 ? 1 / interval : fallbackFPS)
    }

    /// Writes the rest of the file (a held first frame included).
    func finish() -> Outcome {
        var outcome = Outcome()
        if encoder == nil, let first {
            outcome = start(with: [first], fps: fallbackFPS)
            if outcome.error != nil { return outcome }
        }
        closeFile()  // no frame came: the file stays empty
        guard let encoder, !failed else { return outcome }
        do { try encoder.finish() } catch {
            failed = true
            outcome.error = "\(error)"
        }
        return outcome
    }

    private func start(with frames: [PreviewFrame], fps: Double) -> Outcome {
        first = nil
        defer { closeFile() }
        guard let file else { return Outcome() }
        do {
            let made = try FFmpegEncoder(file: file, path: path, width: frames[0].image.width,
                height: frames[0].image.height, fps: fps, ffmpeg: ffmpeg)
            encoder = made
            return write(frames, to: made)
        } catch {
            failed = true
            return Outcome(error: "\(error)")
        }
    }

    private func write(_ frames: [PreviewFrame], to encoder: FFmpegEncoder) -> Outcome {
        var outcome = Outcome()
        for frame in frames {
            do { try encoder.write(frame.annotated) } catch {
                failed = true
                outcome.error = "\(error)"
                // A frame of another size: FFmpeg is fine, and finishing writes the file's index (an MP4 killed
                // without it does not play). Otherwise FFmpeg has died, and cancelling only reaps it.
                if case .protocolError = error {
                    do { try encoder.finish() } catch { outcome.error! += "; finishing the file failed too: \(error)" }
                } else {
                    encoder.cancel()
                }
                return outcome
            }
            outcome.written += 1
        }
        return outcome
    }
}
