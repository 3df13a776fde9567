import Foundation
import HotSwap
import ImageCodecs
import Primitives
import YOLO

/// One JSON line of a stream's results: one per detected frame.
///
/// `detections` is the detection JSON of `POST /v1/detect` and `yoloswap detect`; `model` is the stamp of the model
/// that answered the frame (its `generation` never goes down along a stream).
///
/// Thread-safety: a value.
public struct StreamFrameResult: Sendable, Codable, Equatable {
    public struct Image: Sendable, Codable, Equatable { public var width: Int; public var height: Int }
    /// Stage timings of the detection, the wait for a worker, and the frame's latency from decoded to answered.
    public struct Timings: Sendable, Codable, Equatable {
        public var decode: Double
        public var preprocess: Double
        public var inference: Double
        public var postprocess: Double
        public var queue: Double
        /// From the frame's last byte arriving from FFmpeg to its detections (milliseconds).
        public var latency: Double
    }
    public var stream: String
    /// 0-based index of the frame among those decoded (frames dropped under `latest` leave gaps).
    public var frame: Int
    /// Presentation time in seconds (null when the source gave none).
    public var pts: Double?
    public var model: ModelStamp
    public var image: Image
    public var detections: [Detection]
    public var timings_ms: Timings
}

/// Something that happened to a stream: the model changed between two frames, the source was reconnected, the
/// stream ended.
///
/// Thread-safety: a value.
public struct StreamEvent: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case switched = "switch", reconnect, ended, failed }
    public var stream: String
    public var type: Kind
    public var time: Date
    /// For a switch: the first frame answered by the new generation. For a reconnect: the index the first frame
    /// after it will have (the source's pts may start again there).
    public var frame: Int?
    public var from: ModelStamp?
    public var to: ModelStamp?
    public var message: String?
}

/// What a results subscriber receives: a frame's result, an event, or a keep-alive.
public enum StreamMessage: Sendable {
    case frame(StreamFrameResult)
    case event(StreamEvent)
    /// Nothing else was sent for the stream's `keepAliveInterval` (a live source reconnecting, a paced stream): a
    /// viewer over HTTP writes something its client ignores, so that a proxy's idle timeout does not cut it and a
    /// viewer that went away is noticed (its write fails) rather than held until the next frame. Sent only to
    /// subscribers that ask for it (`VideoStream.subscribe(buffer:keepAlive:)`).
    case keepAlive

    public var isKeepAlive: Bool {
        if case .keepAlive = self { return true }
        return false
    }
}

/// A detected frame with its detections: the annotated preview's (the newest one) and the output video's (each one).
public struct PreviewFrame: Sendable {
    public let frame: Int
    public let pts: Double?
    public let image: RGBImage
    public let detections: [Detection]
    /// The preview's encoding of this frame (its JPEG), made by the first viewer that shows it and shared with the
    /// others: every viewer of a stream is handed the same frame, and encodes it once between them.
    public let encoded = Memo<[UInt8]>()

    public init(frame: Int, pts: Double?, image: RGBImage, detections: [Detection]) {
        self.frame = frame
        self.pts = pts
        self.image = image
        self.detections = detections
    }

    /// Shown before the stream's first detected frame (frame -1: a grey 160×90 image), so that a preview response
    /// writes something while it waits: a viewer that left is found out only by a write.
    public static let waiting = PreviewFrame(frame: -1, pts: nil,
        image: RGBImage(width: 160, height: 90, fill: (128, 128, 128)), detections: [])

    /// The frame with each detection's box and label (class, confidence) drawn, as `yoloswap detect --save` draws them.
    public var annotated: RGBImage {
        var canvas = image
        Annotator.draw(detections.map {
            Annotation(x1: $0.box.x1, y1: $0.box.y1, x2: $0.box.x2, y2: $0.box.y2,
                label: "\($0.className) \(String(format: "%.2f", $0.confidence))", classID: $0.classID)
        }, on: &canvas)
        return canvas
    }
}

/// A stream's state as `GET /v1/streams/{id}` shows it.
///
/// Thread-safety: a value.
public struct StreamStatus: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable { case starting, running, reconnecting, ended, failed, stopped }
    public var id: String
    public var source: String
    public var slot: String
    public var back_pressure: BackPressure
    public var fps_cap: Double?
    public var state: State
    public var live: Bool
    /// Frames decoded, detected, dropped under `latest`.
    public var frames_decoded: Int
    public var frames_detected: Int
    public var frames_dropped: Int
    /// Results a slow results subscriber did not get (the stream never waits for a viewer).
    public var viewer_drops: Int
    public var reconnects: Int
    public var model: ModelStamp?
    public var last_pts: Double?
    public var last_error: String?
    /// Model switches seen on the stream, all of them.
    public var switch_count: Int
    /// The most recent model switches seen on the stream (at most 100).
    public var switches: [StreamEvent]
    public var started_at: Date
    /// When it ended, stopped or failed (nil while it runs).
    public var ended_at: Date? = nil
    public var outputs: [String]
    /// What each delivering output (`mqtt`, `video`, `file`) delivered, by output.
    public var deliveries: [String: StreamDelivery]
}

/// What one stream output has delivered: messages published, failed (not acknowledged or refused), and the last
/// failure's reason. Messages the output could not take in time (it lags behind the stream) count in `viewer_drops`.
///
/// Thread-safety: a value.
public struct StreamDelivery: Sendable, Codable, Equatable {
    public var target: String
    public var published: Int
    public var failed: Int
    public var last_error: String?

    public init(target: String, published: Int = 0, failed: Int = 0, last_error: String? = nil) {
        self.target = target
        self.published = published
        self.failed = failed
        self.last_error = last_error
    }
}

/// Where a stream's results and events go when it asks for the `mqtt` output: the service's MQTT connection (its
/// fleet agent's client).
///
/// Thread-safety: called from any task, concurrently.
public protocol StreamPublisher: Sendable {
    /// The topic a stream's frame results (`events == false`) or events go to.
    func topic(stream: String, events: Bool) -> String
    /// Publishes one message; returns once the broker has taken it.
    /// - Throws: when it was refused or the connection is not running.
    func publish(_ topic: String, payload: [UInt8]) async throws
}
