import ArgumentParser
import Foundation
import HotSwap
import ONNXRuntime
import ORTBackend
import Primitives
import Streams
import UnixSignals
import VideoDecoding
import YOLO

/// `yoloswap stream`: detects every frame of a video source and prints one JSON object per frame, no server.
struct StreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream",
        abstract: "Detect objects in a video (file, udp://, rtp://, rtsp://, http:// or /dev/videoN), frame by frame.",
        discussion: """
            Prints one JSON object per detected frame on stdout: stream, frame (0-based), pts (seconds), model (the \
            stamp), image, detections (the detect JSON) and timings_ms. Events (reconnects, the end) go to stderr. \
            A file ends at its last frame, any source after --max-frames frames; SIGINT or SIGTERM stop it cleanly.
            """)

    @Option(help: "The video source: a file path, a URL or a V4L2 device.") var source: String
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Confidence threshold.") var conf: Float = 0.25
    @Option(help: "NMS IoU threshold.") var iou: Float = 0.7
    @Option(help: "block (never drop; default for files) or latest (keep the newest; default for live sources).")
    var backPressure: BackPressure?
    @Option(help: "At most this many detections per second.") var fpsCap: Double?
    @Option(help: "Refuse frames with more pixels than this.") var maxPixels: Int = 50_000_000
    @Option(help: "The ffmpeg program.") var ffmpeg = "ffmpeg"
    @Option(help: ArgumentHelp("Frames detected at once, each on a worker thread of its own (results in frame order).",
        discussion: "For a file under block with no --fps-cap; try 2 with --threads 1 on a 2-core machine."))
    var framesInFlight = 1
    @Flag(help: "Print no per-frame JSON; a summary at the end instead.") var summary = false
    @Option(help: ArgumentHelp("End after this many frames have been detected.",
        discussion: "A live source otherwise runs until SIGINT or SIGTERM, which stop it cleanly."))
    var maxFrames: Int?

    func validate() throws {
        guard (0...1).contains(conf), (0...1).contains(iou) else {
            throw ValidationError("--conf and --iou lie in [0, 1]")
        }
        if let fpsCap, !StreamConfiguration.fpsCapRange.contains(fpsCap) {
            throw ValidationError("--fps-cap lies in \(StreamConfiguration.fpsCapRange)")
        }
        guard (1...StreamConfiguration.maxPixelsLimit).contains(maxPixels) else {
            throw ValidationError("--max-pixels lies in 1...\(StreamConfiguration.maxPixelsLimit)")
        }
        if let maxFrames, maxFrames <= 0 { throw ValidationError("--max-frames must be positive") }
        try modelOptions.refuseDetectorOverrides(command: "stream")
        guard (1...StreamConfiguration.maxFramesInFlight).contains(framesInFlight) else {
            throw ValidationError("--frames-in-flight lies in 1...\(StreamConfiguration.maxFramesInFlight)")
        }
    }

    func run() async throws {
        let videoSource: VideoSource
        do { videoSource = try SourcePolicy.unrestricted.resolve(source) } catch { throw failure("\(error)") }
        let manager = try StreamSlot.makeManager(modelOptions: modelOptions, servingThreads: framesInFlight)
        let slot = try await manager.createSlot("stream")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "stream", path: modelOptions.model))
        let configuration = StreamConfiguration(source: videoSource, slot: "stream", backPressure: backPressure,
            fpsCap: fpsCap, detection: DetectionOptions(confidence: conf, iou: iou), maxPixels: maxPixels,
            ffmpeg: ffmpeg, framesInFlight: framesInFlight, maxFrames: maxFrames)
        let printFrames = !summary
        // Stdout is written off the cooperative pool: a reader that falls behind (a full pipe) blocks that thread, and
        // the stream waits for it as it waits for any sink.
        let stdout = BlockingQueue(label: "yoloswap.stream-stdout")
        // A write that fails (a closed pipe, a full disk) stops the stream: there is no one to tell its frames to.
        let writeFailure = Locked<String?>(nil)
        let streamToStop = Locked<VideoStream?>(nil)
        let stream = VideoStream(id: "cli", configuration: configuration, slot: slot, sink: { result in
            guard printFrames, writeFailure.value == nil, let line = try? JSONEncoder.yoloswap.encode(result)
            else { return }
            let failed = await stdout.run { () -> String? in
                do { try FileHandle.standardOutput.write(contentsOf: line + Data("\n".utf8)) } catch {
                    // Foundation wraps the errno (EPIPE, ENOSPC) in a Cocoa error: its text says what happened.
                    let posix = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
                    return posix.map { String(cString: strerror(Int32($0.code))) } ?? "\(error)"
                }
                return nil
            }
            if let failed, writeFailure.withLock({ first in defer { first = first ?? failed }; return first == nil }) {
                // Stopped from a task of its own: a stop waits for the sink, which is this call.
                Task { await streamToStop.value?.stop() }
            }
        })
        streamToStop.withLock { $0 = stream }
        // Trapped before the stream starts; handled by a task of their own.
        let trapped = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        let signals = Task { await Self.stop(stream, on: trapped) }
        defer { signals.cancel() }
        let events = stream.subscribe(buffer: 1024)
        let printer = Task {
            for await message in events {
                if case .event(let event) = message, let line = try? JSONEncoder.yoloswap.encode(event) {
                    printError(String(decoding: line, as: UTF8.self))
                }
            }
        }
        stream.start()
        await stream.waitUntilFinished()
        await printer.value
        let status = stream.currentStatus
        if summary, let line = try? JSONEncoder.yoloswap.encode(status) { print(String(decoding: line, as: UTF8.self)) }
        await manager.shutdown()
        if let reason = writeFailure.value { throw failure("cannot write to standard output: \(reason)") }
        if status.state == .failed { throw ExitCode(1) }
    }

    /// SIGINT and SIGTERM stop the stream cleanly (FFmpeg reaped, the summary printed). One that comes while a stop
    /// is already under way, or after the stream has finished (a shutdown that does not end), ends the process as
    /// that signal would have.
    private static func stop(_ stream: VideoStream, on signals: UnixSignalsSequence) async {
        var stopping = false
        for await received in signals {
            if stopping || stream.isFinished { terminate(by: received.rawValue) }
            stopping = true
            Task { await stream.stop() }
        }
    }

    /// Dies of `number` with its default action. Dispatch receives trapped signals with them blocked on its threads,
    /// so the signal is unblocked on this one before it is raised; should it still not end the process, `_exit` does.
    private static func terminate(by number: Int32) -> Never {
        signal(number, SIG_DFL)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, number)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        raise(number)
        _exit(128 + number)
    }
}

extension BackPressure: ExpressibleByArgument {}

/// The one-slot manager the stream commands run on.
enum StreamSlot {
    /// - Parameters:
    ///   - warmupConcurrency: the warm-up Runs of a new model that run at once (nil: `servingThreads`).
    ///   - cache: the optimized-model cache loads go through (as the service's do), if any.
    static func makeManager(modelOptions: ModelOptions, servingThreads: Int = 1, warmupConcurrency: Int? = nil,
        cache: OptimizedModelCache? = nil) throws -> ModelManager
    {
        let options = try modelOptions.sessionOptions()
        // The service's defaults, warm-up included (see `HotSwapConfiguration.warmupRuns`).
        var configuration = HotSwapConfiguration(servingThreads: servingThreads,
            intraOpThreads: options.intraOpThreads)
        configuration.warmupConcurrency = warmupConcurrency
        configuration.slotExecution = ["stream": SlotExecution(target: ExecutionTarget(parsing: modelOptions.provider)
            ?? .cpu)]
        let library = try ORTLibrary.load(explicitPath: modelOptions.ortLibrary)
        return ModelManager(configuration: configuration,
            loader: ORTModelLoader(environment: try ORTEnvironment(library: library), options: options, cache: cache))
    }
}
