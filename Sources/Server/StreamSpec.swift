import Streams

/// A stream as `POST /v1/streams` takes it and as `streams.run` in the configuration lists it (the same keys).
public struct StreamSpec: Sendable, Decodable, Equatable {
    public struct Outputs: Sendable, Decodable, Equatable {
        /// A JSON-lines file inside `streams.output_dir`.
        public var file: String?
        /// Publish results and events over the service's MQTT connection (`mqtt:` in the configuration).
        public var mqtt: Bool?
        /// An annotated video (every frame with its boxes) inside `streams.output_dir`, encoded by FFmpeg.
        public var video: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case file, mqtt, video }
    }

    /// The stream's id (required in `streams.run`); none: a random one.
    public var name: String?
    public var source: String
    public var slot: String?
    public var fpsCap: Double?
    /// Frames detected at once (1…8; files under `block` with no `fps_cap`).
    public var framesInFlight: Int?
    /// `block` | `latest` (default: `block` for files, `latest` for live sources).
    public var backPressure: BackPressure?
    public var outputs: Outputs?
    public var confidence: Float?
    public var iou: Float?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, source, slot, outputs, iou
        case fpsCap = "fps_cap", framesInFlight = "frames_in_flight", backPressure = "back_pressure"
        case confidence = "conf"
    }

    /// The registry's request for this stream on `slot`.
    func request(slot: String) -> StreamRegistry.Request {
        StreamRegistry.Request(source: source, slot: slot, fpsCap: fpsCap, framesInFlight: framesInFlight,
            backPressure: backPressure, outputFile: outputs?.file, mqtt: outputs?.mqtt ?? false,
            outputVideo: outputs?.video, confidence: confidence, iou: iou, name: name)
    }
}

/// An entry of `streams.run`: the stream, and the keys it holds that a stream has not (`outputs.` for those of its
/// outputs), which the configuration refuses — a misspelt `fps_cap` would otherwise be dropped without a word.
struct ConfiguredStreamEntry: Decodable {
    var spec: StreamSpec
    var unknownKeys: [String]

    init(from decoder: any Decoder) throws {
        spec = try StreamSpec(from: decoder)
        let container = try decoder.container(keyedBy: AnyKey.self)
        unknownKeys = container.allKeys.map(\.stringValue).filter { StreamSpec.CodingKeys(stringValue: $0) == nil }
        let outputs = AnyKey(stringValue: StreamSpec.CodingKeys.outputs.rawValue)
        if container.contains(outputs), try !container.decodeNil(forKey: outputs) {
            unknownKeys += try container.nestedContainer(keyedBy: AnyKey.self, forKey: outputs).allKeys
                .map(\.stringValue).filter { StreamSpec.Outputs.CodingKeys(stringValue: $0) == nil }
                .map { "outputs.\($0)" }
        }
    }

    /// Any key of a mapping, to list them all.
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
