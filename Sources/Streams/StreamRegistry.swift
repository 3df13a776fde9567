import Foundation
import HotSwap
import Logging
import Primitives
import VideoDecoding

/// The service's running streams by id: created from a request checked against the ``SourcePolicy``, listed,
/// stopped. Ended streams stay listed (with their final status) until deleted, replaced by a new stream of their
/// name, or forgotten to make room under the limit.
///
/// Thread-safety: all members may be used from any thread or task.
public final class StreamRegistry: Sendable {
    /// A stream to create, as the API takes it.
    public struct Request: Sendable {
        public var source: String
        public var slot: String
        public var fpsCap: Double?
        /// Frames detected at once (`StreamConfiguration.framesInFlight`).
        public var framesInFlight: Int?
        public var backPressure: BackPressure?
        /// A JSON-lines file inside the output folder, one line per frame.
        public var outputFile: String?
        /// Publish the results and events over the service's MQTT connection (`StreamPublisher`).
        public var mqtt: Bool
        /// An annotated video (every frame with its boxes drawn) inside the output folder, encoded by FFmpeg.
        public var outputVideo: String?
        public var confidence: Float?
        public var iou: Float?
        /// The stream's id (``StreamRegistry/checkName(_:)``); nil: a random one.
        public var name: String?

        public init(source: String, slot: String, fpsCap: Double? = nil, framesInFlight: Int? = nil,
                    backPressure: BackPressure? = nil,
                    outputFile: String? = nil, mqtt: Bool = false, outputVideo: String? = nil,
                    confidence: Float? = nil, iou: Float? = nil, name: String? = nil) {
            self.name = name
            self.source = source
            self.slot = slot
            self.fpsCap = fpsCap
            self.framesInFlight = framesInFlight
            self.backPressure = backPressure
            self.outputFile = outputFile
            self.mqtt = mqtt
            self.outputVideo = outputVideo
            self.confidence = confidence
            self.iou = iou
        }
    }

    public let policy: SourcePolicy
    public let maxStreams: Int
    /// The largest frame a stream takes (width × height); a larger one ends it.
    public let maxPixels: Int
    /// Each stream's `keepAliveInterval`.
    public let keepAliveInterval: Duration
    private let slots: @Sendable (String) -> ModelSlot?
    private let observer: (any DetectionObserver)?
    private let publisher: (any StreamPublisher)?
    private let logger: Logger
    /// The streams by id and the output files each writes; the ids and output files `reserved` by creations under way;
    /// those of streams being stopped (`stopping`: the name and the files stay taken until the stream has stopped) and
    /// the files of annotated videos still being finished (`finishing`: an ended stream's name is free again, its
    /// video file only once it is complete), each under a key of its own; behind one lock. And, set at shutdown,
    /// `closed`: no stream is created afterwards.
    private struct Table {
        var streams: [String: VideoStream] = [:]
        var outputPaths: [String: [String]] = [:]
        var reserved: [String: [String]] = [:]
        var stopping: [UUID: (id: String, paths: [String], stream: VideoStream)] = [:]
        var finishing: [UUID: (id: String, paths: [String], stream: VideoStream)] = [:]
        /// The video file each stream reads (by id; a stream whose source is not a file has none), from its
        /// reservation on: an output naming it would empty it under the stream.
        var sourceFiles: [String: FileIdentity] = [:]
        var closed = false

        /// The id of a running stream, a creation under way, a stream being stopped or a video being finished that
        /// writes `path`.
        func writer(of path: String) -> String? {
            if let id = reserved.first(where: { $0.value.contains(path) })?.key { return id }
            if let held = stopping.values.first(where: { $0.paths.contains(path) }) { return held.id }
            if let held = finishing.values.first(where: { $0.paths.contains(path) }) { return held.id }
            return outputPaths.first { id, paths in
                paths.contains(path) && streams[id].map { !$0.isReleased } == true
            }?.key
        }

        /// The id of a running stream, a creation under way or a stream being stopped that reads the file `identity`.
        func reader(of identity: FileIdentity) -> String? {
            sourceFiles.first { id, source in source == identity && isActive(id) }?.key
        }

        /// The id of a stream that writes (or is about to write: its creation under way) the file `identity`.
        func writer(of identity: FileIdentity) -> String? {
            let running = outputPaths.filter { streams[$0.key].map { !$0.isReleased } == true }
            let held = reserved.map { ($0.key, $0.value) } + running.map { ($0.key, $0.value) }
                + stopping.values.map { ($0.id, $0.paths) } + finishing.values.map { ($0.id, $0.paths) }
            return held.first { $0.1.contains { FileIdentity(path: $0) == identity } }?.0
        }

        /// Whether stream `id` is running, being created or being stopped.
        func isActive(_ id: String) -> Bool {
            reserved[id] != nil || streams[id].map { !$0.isReleased } == true
                || stopping.values.contains { $0.id == id }
        }

        /// Whether `name` is held: by a running stream, a creation under way or a stream being stopped.
        func holds(_ name: String) -> Bool {
            reserved[name] != nil || streams[name].map({ !$0.isReleased }) == true
                || stopping.values.contains { $0.id == name }
        }
    }
    private let table = Locked(Table())
    /// The outputs still delivering, each under a key of its own: MQTT publishing tasks until they have delivered
    /// their stream's end, and output videos until their file is complete. (Not by stream id: a name is reused once
    /// its stream has ended, while that stream's outputs may still be delivering.)
    private let publishing = Locked<[UUID: Task<Void, Never>]>([:])

    /// - Parameters:
    ///   - observer: told of every frame's detection (the service's releases count them).
    ///   - publisher: the `mqtt` output; without it a stream asking for that output is refused.
    ///   - slots: finds a slot by name.
    public init(policy: SourcePolicy, maxStreams: Int = 16, maxPixels: Int = StreamConfiguration.defaultMaxPixels,
                keepAliveInterval: Duration = .seconds(15), logger: Logger = Logger(label: "yoloswap.streams"),
                observer: (any DetectionObserver)? = nil, publisher: (any StreamPublisher)? = nil,
                slots: @escaping @Sendable (String) -> ModelSlot?) {
        self.policy = policy
        self.maxStreams = maxStreams
        self.maxPixels = maxPixels
        self.keepAliveInterval = keepAliveInterval
        self.logger = logger
        self.observer = observer
        self.publisher = publisher
        self.slots = slots
    }

    /// Checks the request, starts the stream and returns it.
    /// - Throws: `StreamError` (source or output not allowed, an output file another stream writes, unknown slot,
    ///   bad numbers or name, a running stream of that name, too many streams, shutting down).
    public func create(_ request: Request) throws(StreamError) -> VideoStream {
        var configuration = try Self.check(request, policy: policy, mqttAvailable: publisher != nil)
        configuration.maxPixels = maxPixels
        configuration.keepAliveInterval = keepAliveInterval
        guard let slot = slots(request.slot) else { throw .unknownSlot(request.slot) }
        // The output files as the request names them and as resolved.
        var files: [(shown: String, path: String)] = []
        for file in [request.outputFile, request.outputVideo].compactMap({ $0 }) {
            files.append((file, try policy.resolveOutput(file)))
        }
        let paths = files.map(\.path)
        let videoPath = request.outputVideo == nil ? nil : paths.last
        var source: (shown: String, identity: FileIdentity)?
        if case .file(let path) = configuration.source, let identity = FileIdentity(path: path) {
            source = (request.source, identity)
        }
        let id = try reserve(name: request.name, files: files, source: source)
        // Once inserted, the stream holds its name and files itself; until then (and on any refusal) the reservation.
        var inserted = false
        defer { if !inserted { _ = table.withLock { $0.reserved.removeValue(forKey: id) } } }

        var outputs = ["results", "preview"]
        // Each stream's files are written off the cooperative pool on a serial queue of its own: one stream's slow
        // disk or busy encoder holds back that stream only.
        let writer = BlockingQueue(label: "yoloswap.stream-output.\(id)")
        // The outputs' deliveries are counted in the stream's status, which the sinks reach once the stream exists —
        // weakly: the stream holds the sinks, and a strong reference back kept every such stream (its queue, its
        // files' descriptors, its encoder's pipe) for the life of the process.
        let counted = Locked(WeakStream())
        var sink: (@Sendable (StreamFrameResult) async -> Void)?
        var jsonLines: JSONLinesFile?
        defer { if !inserted { jsonLines?.discardIfCreated() } }
        if let file = request.outputFile, let path = paths.first {
            let output: JSONLinesFile
            do { output = try JSONLinesFile(path: path) } catch {
                // Not emptied before the stream is in the table: a creation refused after the open leaves the file
                // as it was.
                throw Self.outputRefusal(file, error)
            }
            outputs.append("file:\(file)")
            jsonLines = output
            sink = { [writer] result in
                // A failed write (a full disk) is counted and said in the status; the lines after it are still tried.
                let error = await writer.run { output.append(result) }
                counted.value.stream?.recordDelivery(output: "file", target: file, error: error)
            }
        }
        let publisher = request.mqtt ? self.publisher : nil
        if let publisher { outputs.append("mqtt:\(publisher.topic(stream: id, events: false))") }
        var video: AnnotatedVideoOutput?
        defer { if !inserted { video?.discardIfCreated() } }
        var frameSink: (@Sendable (PreviewFrame) async -> Void)?
        if let videoPath, let name = request.outputVideo {
            let output: AnnotatedVideoOutput
            do {
                output = try AnnotatedVideoOutput(path: videoPath, fallbackFPS: request.fpsCap,
                    ffmpeg: configuration.ffmpeg)
            } catch {
                throw Self.outputRefusal(name, error)
            }
            video = output
            outputs.append("video:\(name)")
            frameSink = { [writer] (frame: PreviewFrame) async in
                // `published` counts the frames in the file: a held first frame once written, none after the end.
                let outcome = await writer.run { output.append(frame) }
                counted.value.stream.map { Self.record(outcome, of: name, in: $0) }
            }
        }
        let stream = VideoStream(id: id, configuration: configuration, slot: slot, outputs: outputs, logger: logger,
            observer: observer, sink: sink, frameSink: frameSink)
        counted.withLock { $0.stream = stream }
        // Holds the video's file from the insertion until the file is complete (`finishAtEnd`).
        let videoKey = UUID()
        try table.withLock { (t: inout Table) throws(StreamError) in
            // Checked under the same lock as the insertion: a stream is either refused here or listed for the
            // shutdown's stop of every stream, which closes the table first.
            if t.closed { throw .shuttingDown }
            // A name is reused once its stream has ended: that one's final status is forgotten. (A running one
            // cannot be here: the reservation held the name.)
            if let previous = t.streams[id] {
                guard previous.isFinished else { throw .nameTaken(id) }
                // Its series stay: they are the new stream's too (the same name), counting on.
                t.streams.removeValue(forKey: id)
                t.outputPaths.removeValue(forKey: id)
            }
            if t.streams.count >= maxStreams {
                // Room is made by forgetting an ended stream; running ones are never displaced (the reservation
                // counted them, so one has ended).
                guard let ended = (t.streams.first { $0.value.isReleased } ?? t.streams.first { $0.value.isFinished })?
                    .key else {
                    throw .tooManyStreams(limit: maxStreams)
                }
                t.streams.removeValue(forKey: ended).map { Self.releaseMetrics(of: $0, in: t) }
                t.outputPaths.removeValue(forKey: ended)
            }
            t.streams[id] = stream
            t.outputPaths[id] = paths
            t.reserved.removeValue(forKey: id)
            if let videoPath { t.finishing[videoKey] = (id, [videoPath], stream) }
        }
        inserted = true
        // The files are the stream's now: emptied before its first frame.
        let emptied = [(request.outputFile, jsonLines?.truncate() ?? true ? nil : errno),
                       (request.outputVideo, video?.truncate() ?? true ? nil : errno)]
        for case let (file?, code?) in emptied {
            logger.warning("output file not emptied: what it held stays before the stream's output",
                metadata: ["stream": "\(id)", "file": "\(file)", "error": "\(String(cString: strerror(code)))"])
        }
        logger.info("stream started", metadata: ["stream": "\(id)", "source": "\(configuration.source)",
            "slot": "\(request.slot)", "back_pressure": "\(configuration.backPressure.rawValue)"])
        // Subscribed before the first frame, so that the output misses nothing.
        if let publisher { publish(stream, to: publisher) }
        if let video, let name = request.outputVideo {
            finishAtEnd(stream, video, name: name, writer: writer, key: videoKey)
        }
        if let jsonLines {
            // Closed after the last line (the writer's queue is serial): an ended stream stays listed, and kept its
            // descriptor open (a deleted file's space not freed) until it was forgotten.
            Task { [writer] in
                await stream.waitUntilFinished()
                await writer.run { jsonLines.close() }
            }
        }
        stream.start()
        return stream
    }

    /// Reserves the stream's id (its name, or a random one) and its output files for a creation under way; returns
    /// the id. Refused when the service is stopping, a running stream or another creation has the name or writes one
    /// of the files, or the running streams, creations under way and ended streams' videos still being finished
    /// already number `maxStreams`.
    /// An output is refused, too, when it is the file this stream or another one reads (`media_dir` and `output_dir`
    /// may be one folder): it is emptied as the stream starts; and a source another stream writes (it is emptied, or
    /// still being written).
    private func reserve(name: String?, files: [(shown: String, path: String)],
                         source: (shown: String, identity: FileIdentity)?) throws(StreamError) -> String
    {
        try table.withLock { (t: inout Table) throws(StreamError) -> String in
            if t.closed { throw .shuttingDown }
            var id = name ?? ""
            if let name {
                if t.holds(name) { throw .nameTaken(name) }
            } else {
                repeat { id = String(UUID().uuidString.prefix(8)).lowercased() }
                    while t.holds(id) || t.streams[id] != nil
            }
            for file in files {
                if let other = t.writer(of: file.path) {
                    throw .outputNotAllowed(path: file.shown, reason: "stream '\(other)' writes it")
                }
                guard let identity = FileIdentity(path: file.path) else { continue }
                if identity == source?.identity {
                    throw .outputNotAllowed(path: file.shown, reason: "it is the stream's own source")
                }
                if let other = t.reader(of: identity) {
                    throw .outputNotAllowed(path: file.shown, reason: "stream '\(other)' reads it")
                }
            }
            // An ended stream whose annotated video FFmpeg is still finishing counts until the file is complete: its
            // encoder runs on, and streams ended one after another must not pile encoders up.
            let finishing = t.finishing.values.count { video in
                video.stream.isFinished && !t.stopping.values.contains { $0.stream === video.stream }
            }
            let running = t.streams.values.count(where: { !$0.isReleased }) + t.reserved.count + t.stopping.count
            if running + finishing >= maxStreams {
                throw .tooManyStreams(limit: maxStreams, finishingVideos: finishing)
            }
            if let source, let other = t.writer(of: source.identity) {
                throw .sourceNotAllowed(source: source.shown, reason: "stream '\(other)' writes it")
            }
            t.reserved[id] = files.map(\.path)
            // Only the streams that can still read: an ended stream's entry goes (random ids would pile up).
            t.sourceFiles = t.sourceFiles.filter { t.isActive($0.key) }
            t.sourceFiles[id] = source?.identity
            return id
        }
    }

    /// Checks what a request asks for without starting anything: its name, source and outputs against the policy,
    /// its numbers' ranges, and MQTT output only where the service has a connection (`mqttAvailable`). The slot, the
    /// number of streams and the name's being free are checked by `create`. Returns the stream's settings.
    public static func check(_ request: Request, policy: SourcePolicy, mqttAvailable: Bool)
        throws(StreamError) -> StreamConfiguration
    {
        if let name = request.name { try checkName(name) }
        let configuration = try configuration(for: request, policy: policy)
        if request.mqtt && !mqttAvailable {
            throw .outputNotAllowed(path: "mqtt", reason: "the service has no MQTT connection (configure `mqtt:`)")
        }
        if let file = request.outputFile { _ = try policy.resolveOutput(file) }
        if let video = request.outputVideo {
            let path = try policy.resolveOutput(video)
            // The container comes from the name FFmpeg's file has: the resolved one (an existing link's target).
            guard FFmpegEncoder.muxer(forFileName: path) != nil else {
                throw .outputNotAllowed(path: video, reason: "a video's name must end in "
                    + FFmpegEncoder.muxers.keys.sorted().map { "." + $0 }.joined(separator: ", "))
            }
            if let other = request.outputFile, (try? policy.resolveOutput(other)) == path {
                throw .invalid("outputs.video and outputs.file name the same file")
            }
        }
        return configuration
    }

    /// A stream's name is its id in every URL and topic: 1…64 ASCII letters, digits, `.`, `_` or `-`, starting with a
    /// letter or digit.
    public static func checkName(_ name: String) throws(StreamError) {
        let bytes = Array(name.utf8)
        func allowed(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
        }
        guard (1...64).contains(bytes.count), allowed(bytes[0]),
            bytes.allSatisfy({ allowed($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
                || $0 == UInt8(ascii: "-") })
        else {
            throw .invalid("name '\(name.prefix(80))' must be 1 to 64 letters, digits, '.', '_' or '-', "
                + "starting with a letter or digit")
        }
    }

    /// The request's source (checked by the policy) and settings (checked for range).
    private static func configuration(for request: Request, policy: SourcePolicy)
        throws(StreamError) -> StreamConfiguration
    {
        let source = try policy.resolve(request.source)
        if let cap = request.fpsCap, !StreamConfiguration.fpsCapRange.contains(cap) {
            throw .invalid("fps_cap must lie in \(StreamConfiguration.fpsCapRange)")
        }
        if let n = request.framesInFlight, !(1...StreamConfiguration.maxFramesInFlight).contains(n) {
            throw .invalid("frames_in_flight must lie in 1...\(StreamConfiguration.maxFramesInFlight)")
        }
        var configuration = StreamConfiguration(source: source, slot: request.slot, backPressure: request.backPressure,
            fpsCap: request.fpsCap, framesInFlight: request.framesInFlight ?? 1)
        for (name, value) in [("conf", request.confidence), ("iou", request.iou)] {
            if let value, !(0...1).contains(value) { throw .invalid("\(name) must lie in [0, 1]") }
        }
        if let conf = request.confidence { configuration.detection.confidence = conf }
        if let iou = request.iou { configuration.detection.iou = iou }
        return configuration
    }

    /// Publishes the stream's results and events, in order, until it ends. The output is a results subscriber: when
    /// the broker is slower than the stream for longer than its buffer (1024 messages), the oldest are dropped
    /// (`viewer_drops`); the stream never waits for it.
    private func publish(_ stream: VideoStream, to publisher: any StreamPublisher) {
        let messages = stream.subscribe(buffer: 1024)
        let results = publisher.topic(stream: stream.id, events: false)
        let events = publisher.topic(stream: stream.id, events: true)
        let key = UUID()
        let task = Task.detached { [publishing] in
            defer { _ = publishing.withLock { $0.removeValue(forKey: key) } }
            let encoder = JSONEncoder.yoloswap
            for await message in messages {
                let topic: String
                let payload: Data
                do {
                    switch message {
                    case .frame(let result): (topic, payload) = (results, try encoder.encode(result))
                    case .event(let event): (topic, payload) = (events, try encoder.encode(event))
                    case .keepAlive: continue  // not asked for: the broker's connection has keep-alives of its own
                    }
                    try await publisher.publish(topic, payload: [UInt8](payload))
                    stream.recordDelivery(output: "mqtt", target: results, error: nil)
                } catch {
                    stream.recordDelivery(output: "mqtt", target: results, error: "\(error)")
                }
            }
        }
        // Before the stream starts: the task cannot have ended yet.
        publishing.withLock { $0[key] = task }
    }

    /// Counts what a call of the annotated video did in its stream's `deliveries.video`.
    private static func record(_ outcome: AnnotatedVideoOutput.Outcome, of name: String, in stream: VideoStream) {
        for _ in 0..<outcome.written { stream.recordDelivery(output: "video", target: name, error: nil) }
        if let error = outcome.error { stream.recordDelivery(output: "video", target: name, error: error) }
    }

    /// Writes the rest of the annotated video once the stream has ended (its last frame written).
    /// The video's file stays taken (`Table.finishing[key]`) until then.
    private func finishAtEnd(_ stream: VideoStream, _ video: AnnotatedVideoOutput, name: String,
                             writer: BlockingQueue, key: UUID) {
        let task = Task.detached { [writer, publishing, table] in
            defer {
                // Counted done before the file is given back: whoever gets the file finds this output done.
                _ = publishing.withLock { $0.removeValue(forKey: key) }
                _ = table.withLock { $0.finishing.removeValue(forKey: key) }
            }
            await stream.waitUntilFinished()
            Self.record(await writer.run { video.finish() }, of: name, in: stream)
        }
        publishing.withLock { $0[key] = task }
    }

    /// Removes a forgotten stream's series from the metrics, unless its name is taken again (a stream of that name
    /// created, or being created, since): the series are per name, and that stream's counters are the same objects.
    /// Called under the table's lock, so that no creation of the name can come between the check and the removal.
    private static func releaseMetrics(of stream: VideoStream, in t: Table) {
        guard t.reserved[stream.id] == nil, t.streams[stream.id] == nil,
              !t.stopping.values.contains(where: { $0.id == stream.id }) else { return }
        stream.releaseMetrics()
    }

    /// Refuses every later `create` (shutdown): streams started by requests that arrive while the service stops
    /// would outlive the shutdown's stop of every stream.
    public func close() { table.withLock { $0.closed = true } }

    /// Waits until the MQTT outputs have published what their streams gave them (their end included) and the output
    /// videos are written to their end, at most `timeout`; returns whether they all finished.
    @discardableResult
    public func waitForOutputs(within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if publishing.withLock({ $0.isEmpty }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return publishing.withLock { $0.isEmpty }
    }

    /// Every stream, by id.
    public var all: [VideoStream] { table.withLock { Array($0.streams.values) }.sorted { $0.id < $1.id } }

    public func stream(_ id: String) -> VideoStream? { table.withLock { $0.streams[id] } }

    /// Stops a stream and forgets it; nil when there is none. Its name and output files stay reserved until it has
    /// stopped.
    public func remove(_ id: String) async -> StreamStatus? {
        // Under a key of its own: a creation of the same name (the stream had ended) keeps its reservation.
        let key = UUID()
        let removed = table.withLock { t -> VideoStream? in
            guard let stream = t.streams.removeValue(forKey: id) else { return nil }
            t.stopping[key] = (id, t.outputPaths.removeValue(forKey: id) ?? [], stream)
            return stream
        }
        guard let stream = removed else { return nil }
        await stream.stop()
        table.withLock { t in
            t.stopping.removeValue(forKey: key)
            Self.releaseMetrics(of: stream, in: t)
        }
        return stream.currentStatus
    }
}

/// A stream, not kept alive by this reference.
struct WeakStream: Sendable {
    weak var stream: VideoStream?
}

/// A JSON-lines file a stream's results are appended to.
///
/// Thread-safety: `append` is called from one serial queue.
/// An output file a stream's creation opens: made new or found, and removed again by a refused creation that made it.
enum NewOutputFile {
    /// Whether nothing is at `path` (before it is opened).
    static func isMissing(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) != 0 && errno == ENOENT
    }

    /// Removes the file at `path` when it is still the one open as `descriptor` (same device and inode) and empty.
    static func removeIfEmpty(_ path: String, descriptor: Int32) {
        var open = stat(), named = stat()
        guard fstat(descriptor, &open) == 0, open.st_size == 0, lstat(path, &named) == 0,
              named.st_dev == open.st_dev, named.st_ino == open.st_ino else { return }
        unlink(path)
    }
}

extension StreamRegistry {
    /// Why an output file that could not be opened is refused: the service's shortage (descriptors, disk space) is
    /// its own, anything else (a link planted, a folder missing, permissions) the path's.
    static func outputRefusal(_ shown: String, _ error: FileOpenError) -> StreamError {
        error.isResourceShortage
            ? .outputUnavailable(path: shown, reason: error.reason)
            : .outputNotAllowed(path: shown, reason: "it cannot be created: \(error.reason)")
    }
}

final class JSONLinesFile: @unchecked Sendable {
    // @unchecked: the handle is used only from its stream's serial writer queue.
    private let handle: FileHandle
    private let path: String
    /// Whether no file was at the path before this opened it.
    private let created: Bool

    /// Opens the file at `path`, creating it if missing, without emptying it (`truncate()` does, once the stream is
    /// created): the path must hold no symbolic link, and the file must be a regular one with no other hard link
    /// (``LinkFreePath/openRegularFileForWriting(_:mode:)``), so that nothing planted in the output folder since the
    /// path was checked redirects or blocks the write.
    /// - Throws: `FileOpenError` when it cannot be opened that way.
    init(path: String) throws(FileOpenError) {
        created = NewOutputFile.isMissing(path)
        let descriptor = try LinkFreePath.openRegularFileForWriting(path)
        self.handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        self.path = path
    }

    /// Removes the file when this opened it new and nothing was written (a creation refused after the open): a
    /// refused request leaves no file behind. One that was there before is left as it was.
    func discardIfCreated() {
        if created { NewOutputFile.removeIfEmpty(path, descriptor: handle.fileDescriptor) }
    }

    deinit { try? handle.close() }

    /// Closes the file; a line appended after it fails (its error counted as a write's).
    func close() { try? handle.close() }

    /// Empties the file (before the first line); returns whether it could (`errno` says why not).
    func truncate() -> Bool { ftruncate(handle.fileDescriptor, 0) == 0 }

    /// Appends the result's line; returns why it could not, or nil.
    func append(_ result: StreamFrameResult) -> String? {
        do {
            try handle.write(contentsOf: try JSONEncoder.yoloswap.encode(result) + Data("\n".utf8))
            return nil
        } catch {
            return "\(error)"
        }
    }
}

/// A file as the kernel knows it (device and inode): the same file whatever path, link or hard link names it.
struct FileIdentity: Hashable, Sendable {
    let device: UInt64, inode: UInt64

    /// The identity of the file at `path`; nil when there is none (an output not made yet).
    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}
