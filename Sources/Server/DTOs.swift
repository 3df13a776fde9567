import Foundation
import HotSwap
import Hummingbird
import YOLO

// The JSON shapes of the API (documented in openapi.yaml). Field names are snake_case on the wire.

struct ModelDTO: ResponseEncodable, Equatable {
    var id: String
    var path: String
    var version: String
    var sha256: String
    var signature_key_id: String?
    var memory_bytes: Int
    var in_flight: Int
    /// Where the session runs: `cpu`, `cuda:0`, `tensorrt:1`.
    var provider: String
    /// The device that holds the session: `host`, `gpu:0`.
    var device: String
    /// What the model is taken to hold on its GPU (0 on the CPU).
    var device_memory_bytes: Int

    init(_ model: ModelInstance, repository: ModelRepository) {
        id = model.identity.id
        path = repository.relative(model.identity.path)
        version = model.identity.version
        sha256 = model.identity.sha256
        signature_key_id = model.signatureKeyID
        memory_bytes = model.memoryBytes
        in_flight = model.inFlightCount
        provider = model.execution.target.description
        device = model.execution.target.device.description
        device_memory_bytes = model.deviceMemoryBytes
    }
}

struct OperationDTO: ResponseEncodable {
    var id: String
    var slot: String
    var model: String
    var activate: Bool
    var state: String
    var elapsed_s: Double
    var reason: String?
    var model_id: String?
    var sha256: String?
    var signature_key_id: String?
    var generation: Int?
    var timings: LoadTimings
    /// Where the model runs, once resolved.
    var provider: String?
    var device: String?
    var allow_device_change: Bool
    /// The swap policy the load runs with and why, once chosen.
    var policy: PolicyDecision?

    init(_ op: LoadOperation, repository: ModelRepository) {
        let status = op.shownStatus
        id = op.id
        slot = op.request.slot
        model = repository.relative(op.request.path)
        activate = op.request.activate
        state = status.stage.rawValue
        elapsed_s = op.elapsed
        reason = status.failure.map { repository.hidingRoot($0.description) }
        model_id = status.identity?.id
        sha256 = status.identity?.sha256
        signature_key_id = status.signatureKeyID
        generation = status.generation
        timings = status.timings
        provider = status.execution?.target.description ?? op.request.target?.description
        device = (status.execution?.target ?? op.request.target)?.device.description
        allow_device_change = op.request.allowDeviceChange
        policy = status.policy
    }
}

struct FailureDTO: ResponseEncodable {
    var time: Date
    var operation: String
    var reason: String
}

struct SlotDTO: ResponseEncodable {
    var name: String
    var generation: Int
    var active: ModelDTO?
    var staged: ModelDTO?
    var standby: ModelDTO?
    var in_flight: Int
    var queue_depth: Int
    var operation: OperationDTO?
    var last_failure: FailureDTO?
}

struct SlotListDTO: ResponseEncodable { var slots: [SlotDTO] }

struct EventListDTO: Encodable { var events: [SwapEvent] }

struct RoutesDTO: ResponseEncodable, Codable { var routes: [String: String] }

struct LoadBody: Codable {
    var model: String
    var version: String?
    var sha256: String?
    var activate: Bool?
    var allow_schema_change: Bool?
    /// `cpu` | `cuda[:id]` | `tensorrt[:id]`, one the slot permits (default: where the active model runs).
    var provider: String?
    /// Move the slot to another provider or device than its active model's.
    var allow_device_change: Bool?
    /// `availability-preserving` | `resource-preserving` | `auto` (default: `hotswap.policy`).
    var policy: String?
    /// Refuse the model before it is parsed unless a trusted key signed it (default: `require_signature`'s setting).
    var require_signature: Bool?

    /// The body with its strings within the bounds a desired-state document has (`DesiredState.Limits`: a model
    /// path of at most 1024 bytes, a version of at most 128, a sha256 of 64 hex digits, taken in lower case): they go
    /// into audit entries, events and metric labels.
    /// - Throws: `Problem` 400 naming the field.
    func checked() throws -> LoadBody {
        var body = self
        guard !model.isEmpty, model.utf8.count <= DesiredState.Limits.pathLength else {
            throw Problem.badRequest("model must be a path of 1 to \(DesiredState.Limits.pathLength) bytes")
        }
        if let version, version.isEmpty || version.utf8.count > DesiredState.Limits.versionLength {
            throw Problem.badRequest("version must be 1 to \(DesiredState.Limits.versionLength) bytes")
        }
        if let digest = sha256 {
            guard digest.isASCIIHex(count: 64) else {
                throw Problem.badRequest("sha256 must be 64 hex digits (the SHA-256 of the model file)")
            }
            body.sha256 = digest.lowercased()
        }
        for (name, value) in [("provider", provider), ("policy", policy)] {
            if let value, value.utf8.count > 64 { throw Problem.badRequest("\(name) is too long") }
        }
        return body
    }

    /// The fields as an audit entry keeps them when the body was refused: cut to their bounds.
    var auditedModel: String { model.prefix(utf8Bytes: DesiredState.Limits.pathLength) }
    var auditedVersion: String? { version.map { $0.prefix(utf8Bytes: DesiredState.Limits.versionLength) } }
    var auditedSHA256: String? { sha256.map { $0.prefix(utf8Bytes: 64) } }
}

/// `POST /v1/detect`'s answer; `detections` and the stage timings are the detection JSON the CLI writes too.
struct DetectResponseDTO: ResponseEncodable {
    struct Image: Encodable { var width: Int; var height: Int }
    /// The pipeline's stage timings, plus the wait for a worker and the whole request (milliseconds).
    struct Timings: Encodable {
        var stages: StageTimings
        var queue: Double
        var total: Double

        enum CodingKeys: String, CodingKey { case queue, total }

        func encode(to encoder: any Encoder) throws {
            try stages.encode(to: encoder)
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(queue, forKey: .queue)
            try container.encode(total, forKey: .total)
        }
    }
    var model: ModelStamp
    /// During a release: the variant that answered (`baseline`, `candidate`, an A/B name).
    var variant: String?
    /// During a release: the id to quote in `POST /v1/feedback`.
    var request_id: String?
    var image: Image
    var detections: [Detection]
    var timings_ms: Timings

    init(_ d: SlotDetection, totalMilliseconds: Double) {
        model = d.model
        variant = d.variant
        image = Image(width: d.result.imageSize.width, height: d.result.imageSize.height)
        detections = d.result.detections
        timings_ms = Timings(stages: d.result.timings, queue: d.queueMilliseconds, total: totalMilliseconds)
    }
}

struct HealthDTO: ResponseEncodable {
    var status: String
    var slots: [String: String]?
}
