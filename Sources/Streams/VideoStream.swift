import Foundation
import HotSwap
import Logging
import Metrics
import Primitives
import VideoDecoding
import YOLO

/// How one stream runs.
///
/// Thread-safety: a value.
public struct StreamConfiguration: Sendable {
    public var source: VideoSource
    public var slot: String
    public var backPressure: BackPressure
    /// At most this many detections per second (nil: as fast as the model answers; clamped to `fpsCapRange`). Under
    /// `block` the decoder waits; under `latest` the frames in between are dropped.
    public var fpsCap: Double?
    public var detection: DetectionOptions
    /// Largest frame accepted (width × height); a larger one ends the stream, live or not.
    public var maxPixels: Int
    /// Reconnect backoff of a live source: the first wait, doubled per failed attempt up to the maximum.
    public var reconnectInitial: Duration
    public var reconnectMaximum: Duration
    /// A live source that delivers no frame for this long is restarted, once it has delivered its first.
    public var stallTimeout: Duration
    /// A live source's FFmpeg that delivers no first frame for this long is restarted. Longer than the stall timeout:
    /// starting FFmpeg, opening the camera or connection, probing the stream and waiting for its next key frame all
    /// come before the first frame (under emulation FFmpeg alone took longer than 5 s to start).
    public var openTimeout: Duration
    /// The program run to decode.
    public var ffmpeg: String
    /// Frames detected at once (1…8), on as many of the slot's worker threads, results still handed on in frame
    /// order: throughput for a file under `block` with no `fpsCap` (otherwise 1). On a machine whose cores one
    /// inference does not fill (one intra-op thread per model), 2 runs two frames side by side.
    public var framesInFlight: Int
    /// The stream ends (`ended`) once this many frames (at least 1) have been answered, no frame more detected (nil:
    /// at the end of a file, or when stopped).
    public var maxFrames: Int?
    /// Results subscribers get a `keepAlive` message when nothing else was sent to them for this long (at least 10 ms),
    /// and preview viewers the newest frame again (see `previewFrames()`).
    public var keepAliveInterval: Duration = .seconds(15)

    public init(source: VideoSource, slot: String, backPressure: BackPressure? = nil, fpsCap: Double? = nil,
                detection: DetectionOptions = .init(), maxPixels: Int = Self.defaultMaxPixels,
                reconnectInitial: Duration = .milliseconds(250), reconnectMaximum: Duration = .seconds(10),
                stallTimeout: Duration = .seconds(5), openTimeout: Duration = .seconds(30), ffmpeg: String = "ffmpeg",
                framesInFlight: Int = 1, maxFrames: Int? = nil) {
        self.source = source
        self.slot = slot
        self.backPressure = backPressure ?? (source.isLive ? .latest : .block)
        self.fpsCap = fpsCap.flatMap { cap in
            cap.isNaN ? nil : min(max(cap, Self.fpsCapRange.lowerBound), Self.fpsCapRange.upperBound)
        }
        self.detection = detection
        self.maxPixels = maxPixels
        self.reconnectInitial = reconnectInitial
        self.reconnectMaximum = reconnectMaximum
        self.stallTimeout = stallTimeout
        self.openTimeout = openTimeout
        self.ffmpeg = ffmpeg
        self.framesInFlight = min(max(framesInFlight, 1), Self.maxFramesInFlight)
        self.maxFrames = maxFrames
    }

    /// The wait between two detections that `fpsCap` asks for (clamped to `fpsCapRange` here too: the property may
    /// have been set after the init).
    var minimumInterval: Duration? {
        fpsCap.flatMap { cap in
            cap.isNaN ? nil : .seconds(1 / min(max(cap, Self.fpsCapRange.lowerBound), Self.fpsCapRange.upperBound))
        }
    }

    public static let maxFramesInFlight = 8
    /// The frame rates a cap may set: from one frame in 1000 s to 1000 a second.
    public static let fpsCapRange: ClosedRange<Double> = 0.001...1000
    /// The largest pixel limit a stream may set: 8192² (FFmpeg's `-max_pixels`, given an eighth more, takes at most
    /// a 32-bit int).
    public static let maxPixelsLimit = 8192 * 8192
    /// The largest frame by default: the limit `POST /v1/detect` puts on an image (50 M pixels).
    public static let defaultMaxPixels = 50_000_000
}

/// A video stream detected frame by frame on a slot's active model, through any number of swaps.
///
/// Two halves joined by a ``FrameMailbox``: a dedicated decoder thread runs FFmpeg (restarting a live source that
/// ends, fails or stalls, with backoff) and hands frames over; a task takes them in decode order and detects each on
/// the slot (`ModelSlot.detect(image:)`, on the slot's worker threads), which leases the slot's model at that frame
/// boundary — so one frame is one detection on one model generation, and the generations seen never go down. A
/// change of generation between two frames is reported as a `switch` event naming the first frame of the new one.
///
/// Results go to the `sink` (in order, awaited: a file writer or stdout), to results subscribers (each with its own
/// bounded buffer: a slow one loses the oldest results, the stream never waits for it), and to preview subscribers
/// (the newest frame only).
///
/// Thread-safety: all members may be used from any thread or task.
public final class VideoStream: Sendable {
    public let id: String
    public let configuration: StreamConfiguration
    private let slot: ModelSlot
    private let logger: Logger
    private let sink: (@Sendable (StreamFrameResult) async -> Void)?
    private let frameSink: (@Sendable (PreviewFrame) async -> Void)?
    private let observer: (any DetectionObserver)?
    private let outputs: [String]
    private let mailbox: FrameMailbox
    private let status: Locked<StreamStatus>
    private let decoder = Locked<FFmpegDecoder?>(nil)
    private let stopping = Locked(false)
    /// Set with `stopping` when `maxFrames` frames have been answered: the stream then ends as `ended`, not `stopped`
    /// (also when a `stop()` comes at the same moment).
    private let reachedLimit = Locked(false)
    private let subscribers = ViewerSet<StreamMessage>()
    private let previews = ViewerSet<PreviewFrame>()
    /// The detection loop's task: `halt()` cancels it, and with it the frames in flight, so that a frame waiting for
    /// a model (its slot has none active) does not hold a stop back.
    private let loop = Locked<Task<Void, Never>?>(nil)
    /// Opened when the detection loop has ended and the final state is written.
    private let finished = Latch()
    /// Opened when the decoder thread has ended (its last FFmpeg reaped).
    private let decoderEnded = Latch()
    /// Cuts a reconnect's backoff short when the stream stops.
    private let wake = DispatchSemaphore(value: 0)
    private let lastFrameAt = Locked(ContinuousClock.now)
    /// The running FFmpeg has delivered no frame yet: the watchdog allows it the open timeout.
    private let awaitingFirstFrame = Locked(true)
    /// The decoder thread is waiting for the detection loop (`block`): not a stalled source.
    private let waitingForConsumer = Locked(false)
    private let dropCounter: Counter
    private let frameCounter: Counter
    /// When a message was last sent to the results subscribers.
    private let lastBroadcastAt = Locked(ContinuousClock.now)
    /// The newest frame shown to preview viewers (kept only while someone views), and when it was last shown.
    private let lastPreview = Locked<(frame: PreviewFrame?, at: ContinuousClock.Instant)>((nil, .now))
    /// Sends `keepAlive` to the results subscribers that asked for it while the stream runs; cancelled at its end.
    private let keepAlive = Locked<Task<Void, Never>?>(nil)

    /// - Parameters:
    ///   - sink: gets every result in order; the stream waits for it (its back-pressure applies).
    ///   - frameSink: gets every detected frame with its detections, in order, after `sink`; the stream waits for it.
    ///   - outputs: what the status lists as the stream's outputs.
    ///   - observer: told of every frame's detection and of a release variant's failures (the service counts them
    ///     in the slot's release).
    public init(id: String, configuration: StreamConfiguration, slot: ModelSlot, outputs: [String] = [],
                logger: Logger = Logger(label: "yoloswap.stream"), observer: (any DetectionObserver)? = nil,
                sink: (@Sendable (StreamFrameResult) async -> Void)? = nil,
                frameSink: (@Sendable (PreviewFrame) async -> Void)? = nil) {
        self.id = id
        self.configuration = configuration
        self.slot = slot
        self.logger = logger
        self.sink = sink
        self.frameSink = frameSink
        self.observer = observer
        self.outputs = outputs
        mailbox = FrameMailbox(policy: configuration.backPressure)
        status = Locked(StreamStatus(id: id, source: configuration.source.description, slot: configuration.slot,
            back_pressure: configuration.backPressure, fps_cap: configuration.fpsCap, state: .starting,
            live: configuration.source.isLive, frames_decoded: 0, frames_detected: 0, frames_dropped: 0,
            viewer_drops: 0, reconnects: 0, model: nil, last_pts: nil, last_error: nil, switch_count: 0, switches: [],
            started_at: Date(), outputs: outputs, deliveries: [:]))
        dropCounter = Counter(label: "yoloswap_stream_frames_dropped_total", dimensions: [("stream", id)])
        frameCounter = Counter(label: "yoloswap_stream_frames_total", dimensions: [("stream", id)])
    }

    /// The stream's state now.
    public var currentStatus: StreamStatus {
        var s = status.value
        s.frames_dropped = mailbox.dropped
        return s
    }

    /// Whether the stream has ended (end of file, failure or stop).
    public var isFinished: Bool { finished.isOpen }
    /// Whether the stream has ended and its FFmpeg has been reaped: a device it read, a file it wrote, are free again
    /// (a stream that fails or reaches its frame limit ends before its decoder thread has reaped FFmpeg).
    public var isReleased: Bool { finished.isOpen && decoderEnded.isOpen }

    /// Removes the stream's series from the metrics (`/metrics`), once it has ended and is forgotten (deleted, or
    /// dropped to make room) and no stream has its name (`StreamRegistry` checks): streams come and go, often under
    /// random ids, and their series must not pile up. A stream of the same name later starts its series again from
    /// zero (a counter reset, which Prometheus's `rate` and `increase` take in their stride); one that replaces an
    /// ended stream of its name counts on in the same series.
    public func releaseMetrics() {
        dropCounter.destroy()
        frameCounter.destroy()
        Counter(label: "yoloswap_stream_reconnects_total", dimensions: [("stream", id)]).destroy()
    }

    /// Starts decoding and detecting.
    public func start() {
        do { try SystemThread.detach(name: "yoloswap.stream-decode") { [self] in decodeLoop() } } catch {
            // The stream fails at once (its detection loop ends with the closed mailbox), and nothing waits for a
            // decoder that never ran.
            fail("\(error)")
            decoderEnded.open()
        }
        let task = Task.detached { [self] in await detectLoop() }
        loop.withLock { $0 = task }
        // A stop that came before the task was kept.
        if stopping.value { task.cancel() }
        lastBroadcastAt.withLock { $0 = .now }
        let interval = max(configuration.keepAliveInterval, .milliseconds(10))
        let keeper = Task.detached { [self] in
            while !isFinished {
                let quietUntil = lastBroadcastAt.value + interval
                if ContinuousClock.now >= quietUntil {
                    broadcast(.keepAlive)
                } else {
                    let previewDue = showPreviewAgain(after: interval)
                    do { try await Task.sleep(until: min(quietUntil, previewDue)) } catch { return }
                }
            }
        }
        keepAlive.withLock { $0 = keeper }
        // The stream may have ended already (a source that failed at once): `end()` found no task to cancel.
        if isFinished { keeper.cancel() }
    }

    /// Stops the stream: FFmpeg is killed, queued frames are discarded; returns once the detection loop has ended and
    /// FFmpeg has been reaped (a device it held is free again).
    public func stop() async {
        halt()
        await waitUntilFinished()
        await decoderEnded.wait()
    }

    /// Kills FFmpeg and discards the queued frames; the decoder thread (which reaps FFmpeg) and the detection loop
    /// then end. Never blocks: it is called from tasks.
    private func halt() {
        stopping.withLock { $0 = true }
        mailbox.close()
        decoder.withLock { $0 }?.terminate()
        wake.signal()
        loop.withLock { $0 }?.cancel()
    }

    /// Returns once the stream has ended.
    public func waitUntilFinished() async {
        await finished.wait()
    }

    /// Results and events from now on, and with `keepAlive` a `.keepAlive` after each `keepAliveInterval` without
    /// either. The subscriber's buffer holds `buffer` messages; when it lags further, the oldest are dropped (counted
    /// in `viewer_drops`, keep-alives not). The sequence ends with the stream's last event.
    public func subscribe(buffer: Int = 256, keepAlive: Bool = false) -> AsyncStream<StreamMessage> {
        subscribers.subscribe(buffer: buffer, keepAlive: keepAlive)
    }

    /// Counts a message (`mqtt`) or frame (`video`) an output delivered to `target`, or failed to with `error`.
    public func recordDelivery(output: String, target: String, error: String?) {
        status.withLock { s in
            var delivery = s.deliveries[output] ?? StreamDelivery(target: target)
            if let error {
                delivery.failed += 1
                delivery.last_error = error
            } else {
                delivery.published += 1
            }
            s.deliveries[output] = delivery
        }
    }

    /// The newest detected frame with its detections, as frames are detected (frames a slow viewer missed are
    /// skipped), and again after each `keepAliveInterval` without a new one (a live source reconnecting, a slow cap):
    /// an MJPEG response that sends nothing for long is cut as idle by proxies. With no frame to show (none detected
    /// since the viewer came), `PreviewFrame.waiting` at that interval. Frames are kept for previews only while someone
    /// subscribes.
    public func previewFrames() -> AsyncStream<PreviewFrame> {
        // With no frame kept, the placeholder's interval counts from the first viewer's coming (not from each one's:
        // viewers coming and going would hold it off for the others).
        lastPreview.withLock { if $0.frame == nil && previews.isEmpty { $0.at = .now } }
        return previews.subscribe(buffer: 1)
    }

    // MARK: Decoding (its own thread: FFmpeg's pipe reads block)

    private func decodeLoop() {
        var failures = 0
        var nextIndex = 0
        let watchdog = configuration.source.isLive ? startWatchdog() : nil
        defer {
            watchdog?.cancel()
            decoderEnded.open()
        }
        while !stopping.value {
            var delivered = 0
            // When the run's first and last frames came: how long frames flowed (not the stall after them).
            var (firstFrameAt, lastFrameOfRun): (ContinuousClock.Instant?, ContinuousClock.Instant?) = (nil, nil)
            var endError: String?
            var tooLarge = false
            let started: FFmpegDecoder
            do {
                started = try FFmpegDecoder(source: configuration.source, ffmpeg: configuration.ffmpeg,
                    maxPixels: configuration.maxPixels)
            } catch {
                // A live source rides out a shortage (descriptors, processes, memory) as it rides out a disconnect;
                // anything else (no such program) ends the stream.
                guard configuration.source.isLive, error.isShortage else {
                    fail("\(error)")
                    return
                }
                guard let wait = reconnectWait(after: "\(error)", flowedFor: nil, failures: &failures,
                    nextIndex: nextIndex) else { break }
                _ = wake.wait(timeout: .now() + wait.seconds)
                continue
            }
            // The clock first: a watchdog tick in between would take the new FFmpeg for a stalled one.
            lastFrameAt.withLock { $0 = .now }
            awaitingFirstFrame.withLock { $0 = true }
            decoder.withLock { $0 = started }
            if stopping.value { started.close() }
            do {
                while var frame = try started.nextFrame() {
                    frame.index = nextIndex
                    nextIndex += 1
                    delivered += 1
                    lastFrameOfRun = .now
                    if firstFrameAt == nil { firstFrameAt = lastFrameOfRun }
                    lastFrameAt.withLock { $0 = .now }
                    awaitingFirstFrame.withLock { $0 = false }
                    status.withLock { s in
                        s.frames_decoded = nextIndex
                        if s.state == .starting || s.state == .reconnecting { s.state = .running }
                    }
                    waitingForConsumer.withLock { $0 = true }
                    let accepted = mailbox.push(frame)
                    // The clock before the flag: a watchdog tick in between would otherwise see a source no longer
                    // waiting with the clock of before the wait, and restart a live `block` stream that is fine.
                    lastFrameAt.withLock { $0 = .now }
                    waitingForConsumer.withLock { $0 = false }
                    guard accepted else { break }
                }
            } catch {
                endError = "\(error)"
                if case .frameTooLarge = error { tooLarge = true }
            }
            started.close()
            decoder.withLock { $0 = nil }
            if stopping.value { break }
            // A frame over the limit ends a live stream too: the camera would send it again after a reconnect.
            guard configuration.source.isLive, !tooLarge else {
                if let endError { fail(endError) } else { mailbox.finish() }
                return
            }
            var flowedFor: Duration?
            if let firstFrameAt, let lastFrameOfRun { flowedFor = lastFrameOfRun - firstFrameAt }
            guard let wait = reconnectWait(after: endError, flowedFor: flowedFor, failures: &failures,
                nextIndex: nextIndex) else { break }
            _ = wake.wait(timeout: .now() + wait.seconds)
        }
        mailbox.finish()
    }

    /// A live source that ended, failed or stalled (or whose FFmpeg could not start): reports the reconnect and
    /// returns the backoff to wait — `reconnectInitial`, doubled per attempt up to `reconnectMaximum` — which starts
    /// afresh after a run whose frames flowed for a stall timeout or longer; nil when the stream is stopping.
    /// - Parameter flowedFor: from the run's first frame to its last (nil: it delivered none).
    private func reconnectWait(after endError: String?, flowedFor: Duration?, failures: inout Int, nextIndex: Int)
        -> Duration?
    {
        // A few frames are no working connection: a camera that sends some and drops, or a short clip served as a
        // live source, restarted every 250 ms for good when any frame reset the backoff.
        if let flowedFor, flowedFor >= configuration.stallTimeout { failures = 0 }
        let wait = min(configuration.reconnectMaximum, configuration.reconnectInitial * (1 << min(failures, 16)))
        failures += 1
        // Checked again under the status lock: a stop (or the frame limit) that came since must not be followed by a
        // reconnecting state after the stream has reported its end.
        let reconnecting = status.withLock { s -> Bool in
            guard !stopping.value else { return false }
            s.state = .reconnecting
            s.reconnects += 1
            if let endError { s.last_error = endError }
            return true
        }
        guard reconnecting else { return nil }
        Counter(label: "yoloswap_stream_reconnects_total", dimensions: [("stream", id)]).increment()
        logger.warning("stream source stopped; reconnecting", metadata: ["stream": "\(id)",
            "source": "\(configuration.source)", "error": "\(endError ?? "end of stream")", "wait": "\(wait)"])
        broadcast(.event(StreamEvent(stream: id, type: .reconnect, time: Date(), frame: nextIndex,
            message: endError)))
        return wait
    }

    /// Restarts FFmpeg when a live source delivers no first frame within the open timeout, or no further frame within
    /// the stall timeout.
    private func startWatchdog() -> DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: .global(qos: .utility))
        let period = min(min(configuration.stallTimeout, configuration.openTimeout).seconds / 4, 0.5)
        timer.schedule(deadline: .now() + period, repeating: period)
        timer.setEventHandler { [self] in
            // The decoder first: the decoder thread sets the clock and the first-frame flag before it installs a new
            // FFmpeg, so a tick that sees the new one also sees them (not the clock of before the backoff). No decoder:
            // between two FFmpeg runs (a reconnect's backoff), which is no stall; its error stays shown.
            guard let running = decoder.value, !stopping.value else { return }
            let opening = awaitingFirstFrame.value
            let limit = opening ? configuration.openTimeout : configuration.stallTimeout
            guard !waitingForConsumer.value, ContinuousClock.now - lastFrameAt.value > limit else { return }
            lastFrameAt.withLock { $0 = .now }
            status.withLock { $0.last_error = opening ? "no first frame within \(limit)" : "no frame for \(limit)" }
            running.terminate()
        }
        timer.resume()
        return timer
    }

    private func fail(_ message: String) {
        logger.error("stream failed", metadata: ["stream": "\(id)", "error": "\(message)"])
        status.withLock { s in
            s.state = .failed
            s.last_error = message
        }
        mailbox.finish()
    }

    // MARK: Detection (a task: awaits the slot's workers)

    /// Takes frames in decode order and detects them, up to `framesInFlight` at once (one for a live source, when a
    /// frame rate is capped or under `latest`, where the newest frame matters), and hands the results on in frame
    /// order.
    ///
    /// With several frames in flight, a later frame may take its model lease before an earlier one: across a swap it
    /// could answer on the older generation. Such a result is not handed on; the frame is detected again, on the
    /// model of now, so that generations never go down along the results and each frame is answered once.
    private func detectLoop() async {
        var previous: ModelStamp?
        var lastStart: ContinuousClock.Instant?
        let minimumInterval = configuration.minimumInterval
        // Only for a file: a live source's frames come at the camera's pace, and the results of the frames in flight
        // would wait for the frames after them (through an outage, for as long as it lasts).
        let depth = minimumInterval == nil && configuration.backPressure == .block && !configuration.source.isLive
            ? max(1, configuration.framesInFlight) : 1
        var inFlight: [(frame: VideoFrame, detection: Task<SlotDetection?, Never>)] = []
        var sourceEnded = false
        var answered = 0
        let limit = configuration.maxFrames.map { max($0, 1) } ?? .max
        while true {
            // No frame is taken beyond the limit, so none is detected in vain.
            while !sourceEnded, inFlight.count < depth, answered + inFlight.count < limit {
                // The cap's wait comes before the frame is taken, so that under `latest` the frame detected is the
                // newest when the wait ends (a cap sets depth 1).
                if let minimumInterval, let lastStart { await pause(until: lastStart + minimumInterval) }
                guard let frame = await mailbox.next() else {
                    sourceEnded = true
                    break
                }
                lastStart = .now
                inFlight.append((frame, Task { await self.detect(frame) }))
            }
            guard !inFlight.isEmpty else { break }
            let (frame, task) = inFlight.removeFirst()
            guard var detection = await withTaskCancellationHandler(operation: { await task.value },
                onCancel: { task.cancel() }) else { break }
            if let previous, detection.model.generation < previous.generation {
                guard let again = await detect(frame) else { break }
                detection = again
            }
            observer?.answered(slot: configuration.slot, input: .decoded(frame.image), options: configuration.detection,
                key: id, detection: detection)
            emit(frame, detection, after: &previous)
            let result = resultLine(frame, detection)
            await sink?(result)
            await frameSink?(PreviewFrame(frame: frame.index, pts: frame.pts, image: frame.image,
                detections: result.detections))
            show(result, frame)
            answered += 1
            if answered == limit {
                reachedLimit.withLock { $0 = true }
                halt()
                break
            }
        }
        // The stream ends: frames still in flight finish (or, stopping, give up) before it is reported ended.
        for (_, task) in inFlight {
            if Task.isCancelled { task.cancel() }
            _ = await task.value
        }
        end()
    }

    /// Sleeps until `deadline` or until the stream is stopping, whichever comes first (a cap of one frame in 1000 s
    /// must not hold a stop back).
    private func pause(until deadline: ContinuousClock.Instant) async {
        // Nor the end of a file: once the decoder has finished and every frame is taken, there is nothing to wait for.
        while !stopping.value, !mailbox.isDrained, ContinuousClock.now < deadline {
            try? await Task.sleep(until: min(deadline, .now + .milliseconds(50)), clock: .continuous)
        }
    }

    /// Records a frame's answer: a switch event when the model changed since `previous`, the status and counters.
    private func emit(_ frame: VideoFrame, _ detection: SlotDetection, after previous: inout ModelStamp?) {
        let stamp = detection.model
        if let previous, previous.generation != stamp.generation || previous.sha256 != stamp.sha256 {
            let event = StreamEvent(stream: id, type: .switched, time: Date(), frame: frame.index, from: previous,
                to: stamp)
            status.withLock { s in
                s.switch_count += 1
                s.switches.append(event)
                if s.switches.count > 100 { s.switches.removeFirst() }
            }
            logger.info("stream switched model", metadata: ["stream": "\(id)", "frame": "\(frame.index)",
                "from": "\(previous.id)#\(previous.generation)", "to": "\(stamp.id)#\(stamp.generation)"])
            broadcast(.event(event))
        }
        previous = stamp
        status.withLock { s in
            s.frames_detected += 1
            s.model = stamp
            s.last_pts = frame.pts
        }
        frameCounter.increment()
        countDrops()
    }

    /// Brings the status's and Prometheus' dropped frames up to the mailbox's count: after each detection, and at
    /// the end (frames dropped after the last detection, or while the slot had no model, count too).
    private func countDrops() {
        let dropped = mailbox.dropped
        // Two frames' detections may get here in either order: the count only goes up.
        let counted = status.withLock { s -> Int in
            defer { s.frames_dropped = max(s.frames_dropped, dropped) }
            return s.frames_dropped
        }
        if dropped > counted { dropCounter.increment(by: dropped - counted) }
    }

    /// The frame's result line.
    private func resultLine(_ frame: VideoFrame, _ detection: SlotDetection) -> StreamFrameResult {
        let t = detection.result.timings
        return StreamFrameResult(stream: id, frame: frame.index, pts: frame.pts, model: detection.model,
            image: .init(width: frame.image.width, height: frame.image.height),
            detections: detection.result.detections,
            timings_ms: .init(decode: t.decode, preprocess: t.preprocess, inference: t.inference,
                postprocess: t.postprocess, queue: detection.queueMilliseconds,
                latency: (ContinuousClock.now - frame.decodedAt).milliseconds))
    }

    /// Hands a result to the results subscribers and, with its frame, to the preview viewers.
    private func show(_ result: StreamFrameResult, _ frame: VideoFrame) {
        broadcast(.frame(result))
        if !previews.isEmpty {
            let preview = PreviewFrame(frame: frame.index, pts: frame.pts, image: frame.image,
                detections: result.detections)
            // Handed out under the lock the keep-alive takes too: it never shows an older frame after this one.
            lastPreview.withLock {
                $0 = (preview, .now)
                previews.yield(preview)
            }
        }
    }

    /// Shows the newest preview frame again when none was shown for `interval` — `PreviewFrame.waiting` when no frame
    /// is kept (none detected yet, or none since a viewer joined: a response that never writes is never closed,
    /// Hummingbird finds a viewer gone only by a write, and a source reconnecting for hours would keep every abandoned
    /// viewer's connection) —; returns when that is due next. The frame is let go once nobody views.
    private func showPreviewAgain(after interval: Duration) -> ContinuousClock.Instant {
        let now = ContinuousClock.now
        return lastPreview.withLock { last in
            guard !previews.isEmpty else {
                // Counted from now: a viewer who joins a running stream is shown its frames, not a placeholder at once.
                last = (nil, now)
                return now + interval
            }
            guard now >= last.at + interval else { return last.at + interval }
            last.at = now
            previews.yield(last.frame ?? .waiting)
            return now + interval
        }
    }

    /// Detects one frame; under `block` an overloaded slot is retried (never dropping the frame). Nil when the
    /// stream must end (the slot shut down, or the stream is stopping).
    ///
    /// During a release the stream's id is the sticky key: one camera's frames go to one variant while the share is
    /// unchanged, so its results do not flicker between models. A frame the candidate fails is detected again on the
    /// active model (as `POST /v1/detect` answers from the baseline), so a failing candidate does not end the stream.
    /// A variant's failure is told to the observer here; the answer handed on, by the detection loop.
    private func detect(_ frame: VideoFrame) async -> SlotDetection? {
        var context = RoutingContext(key: id)
        let options = configuration.detection
        while !stopping.value {
            do {
                return try await slot.detect(image: frame.image, options: options, context: context)
            } catch _ where stopping.value {
                // Given up, stopping (cancelled while waiting for a worker or a model).
                return nil
            } catch SlotError.overloaded(_, _, let retryAfter) {
                try? await Task.sleep(for: retryAfter)
            } catch let routed as RoutedDetectionError where !context.preferActive {
                if case .decode = routed.error {
                    abort("frame \(frame.index): \(routed.error)")
                    return nil
                }
                // Without an observer (the CLI has no releases) any variant's failure is retried once.
                let retry = observer?.failed(slot: configuration.slot, variant: routed.variant, error: routed.error)
                guard retry ?? true else {
                    abort("frame \(frame.index): \(routed)")
                    return nil
                }
                context.preferActive = true
            } catch {
                // The active model failed the frame (also on a retry after the candidate failed it): the release
                // counts it, and the stream ends with the reason, as outside a release.
                if let routed = error as? RoutedDetectionError {
                    _ = observer?.failed(slot: configuration.slot, variant: routed.variant, error: routed.error)
                }
                abort("frame \(frame.index): \(error)")
                return nil
            }
        }
        return nil
    }

    /// Fails the stream from the detection loop: the decoder is stopped and queued frames are discarded. The state
    /// stays `failed`; `stopping` keeps a live source from reconnecting.
    private func abort(_ message: String) {
        // `stopping` first: a decoder thread between its checks then cannot write `reconnecting` after `failed`.
        halt()
        fail(message)
    }

    private func broadcast(_ message: StreamMessage) {
        lastBroadcastAt.withLock { $0 = .now }
        count(lost: subscribers.yield(message, keepAliveOnly: message.isKeepAlive))
    }

    /// Counts in `viewer_drops` the messages lagging viewers lost: results and events, not keep-alives.
    private func count(lost: [StreamMessage]) {
        let lost = lost.count { !$0.isKeepAlive }
        if lost > 0 { status.withLock { $0.viewer_drops += lost } }
    }

    private func end() {
        countDrops()
        let final = status.withLock { s -> StreamStatus in
            if s.state != .failed { s.state = stopping.value && !reachedLimit.value ? .stopped : .ended }
            s.ended_at = Date()
            return s
        }
        // The last message: handed out with the close, so no keep-alive can follow it.
        let last = StreamEvent(stream: id, type: final.state == .failed ? .failed : .ended, time: Date(),
            message: final.last_error)
        count(lost: subscribers.close(final: .event(last)))
        previews.close()
        lastPreview.withLock { $0.frame = nil }
        finished.open()
        keepAlive.withLock { $0 }?.cancel()
    }
}

/// The continuations of a stream's viewers (results subscribers or preview viewers), closed once when the stream ends:
/// a viewer that comes after that is handed the final element (the `ended` or `failed` event: a client reconnecting
/// just after the end learns how it ended) and finished at once, so that none waits for an end that already came.
/// Elements are handed out under the same lock as the close, so none follows the final one.
///
/// Thread-safety: all members may be used from any thread.
final class ViewerSet<Element: Sendable>: Sendable {
    private struct Viewer {
        var continuation: AsyncStream<Element>.Continuation
        /// Whether it is sent keep-alives (`yield(_:keepAliveOnly:)`).
        var keepAlive: Bool
    }
    private let state = Locked<(viewers: [UUID: Viewer], closed: Bool, final: Element?)>(([:], false, nil))

    /// A new viewer's sequence, holding up to `buffer` elements (the oldest dropped when it lags further); with
    /// `keepAlive` it is also sent what is yielded to keep-alive viewers only.
    func subscribe(buffer: Int, keepAlive: Bool = false) -> AsyncStream<Element> {
        let (elements, continuation) = AsyncStream.makeStream(of: Element.self,
            bufferingPolicy: .bufferingNewest(max(1, buffer)))
        let key = UUID()
        continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.viewers.removeValue(forKey: key) } }
        let (added, final) = state.withLock { s -> (Bool, Element?) in
            guard !s.closed else { return (false, s.final) }
            s.viewers[key] = Viewer(continuation: continuation, keepAlive: keepAlive)
            return (true, nil)
        }
        // Outside the lock: `finish` runs the termination handler, which takes it.
        if !added {
            if let final { continuation.yield(final) }
            continuation.finish()
        }
        return elements
    }

    /// Whether nobody views.
    var isEmpty: Bool { state.withLock { $0.viewers.isEmpty } }

    /// Hands `element` to every viewer (with `keepAliveOnly`, to those that asked for keep-alives), unless closed;
    /// returns the elements the viewers' buffers dropped to take it (each the oldest of a viewer that lags).
    @discardableResult
    func yield(_ element: Element, keepAliveOnly: Bool = false) -> [Element] {
        state.withLock { s in
            guard !s.closed else { return [] }
            var dropped: [Element] = []
            for viewer in s.viewers.values where viewer.keepAlive || !keepAliveOnly {
                if case .dropped(let old) = viewer.continuation.yield(element) { dropped.append(old) }
            }
            return dropped
        }
    }

    /// Hands every viewer `final` (if any), then finishes them; later viewers are handed `final` and finished as they
    /// come, and nothing else is handed out any more. Returns the elements the viewers' buffers dropped to take
    /// `final`.
    @discardableResult
    func close(final: Element? = nil) -> [Element] {
        let (viewers, dropped) = state.withLock { s -> ([AsyncStream<Element>.Continuation], [Element]) in
            s.closed = true
            s.final = final
            defer { s.viewers.removeAll() }
            var dropped: [Element] = []
            for viewer in s.viewers.values {
                if let final, case .dropped(let old) = viewer.continuation.yield(final) { dropped.append(old) }
            }
            return (s.viewers.values.map(\.continuation), dropped)
        }
        viewers.forEach { $0.finish() }
        return dropped
    }
}
