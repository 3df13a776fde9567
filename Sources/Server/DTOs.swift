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

    init(_ model: ModelInstance, repository: ModelRepository) {
        id = model.identity.id
        path = repository.relative(model.identity.path)
        version = model.identity.version
        sha256 = model.identity.sha256
        signature_key_id = model.signatureKeyID
        memory_bytes = model.memoryBytes
        in_flight = model.inFlightCount
    }
}

struct TimingsDTO: ResponseEncodable {
    var verify_ms: Double?
    var load_ms: Double?
    var validate_ms: Double?
    var warmup_ms: Double?
    var flip_us: Double?
    var total_ms: Double?

    init(_ t: LoadTimings) {
        verify_ms = t.verify
        load_ms = t.load
        validate_ms = t.validate
        warmup_ms = t.warmup
        flip_us = t.flipMicroseconds
        total_ms = t.total
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
    var timings: TimingsDTO

    init(_ op: LoadOperation, repository: ModelRepository) {
        let status = op.status
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
        timings = TimingsDTO(status.timings)
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

struct EventDTO: ResponseEncodable {
    var time: Date
    var slot: String
    var operation: String
    var result: String
    var reason: String?
    var from_model: String?
    var from_sha256: String?
    var to_model: String?
    var to_sha256: String?
    var generation: Int?
    var operation_id: String?
    var timings: TimingsDTO

    init(_ e: SwapEvent) {
        time = e.time
        slot = e.slot
        operation = e.operation.rawValue
        result = e.result.rawValue
        reason = e.reason
        from_model = e.from?.id
        from_sha256 = e.from?.sha256
        to_model = e.to?.id
        to_sha256 = e.to?.sha256
        generation = e.generation
        operation_id = e.operationID
        timings = TimingsDTO(e.timings)
    }
}

struct EventListDTO: ResponseEncodable { var events: [EventDTO] }

struct RoutesDTO: ResponseEncodable, Decodable { var routes: [String: String] }

struct LoadBody: Decodable {
    var model: String
    var version: String?
    var sha256: String?
    var activate: Bool?
    var allow_schema_change: Bool?
}

struct DetectResponseDTO: ResponseEncodable {
    struct Model: Encodable { var slot: String; var id: String; var version: String; var sha256: String; var generation: Int }
    struct Image: Encodable { var width: Int; var height: Int }
    struct BoxDTO: Encodable { var x1: Double; var y1: Double; var x2: Double; var y2: Double }
    struct DetectionDTO: Encodable {
        var class_id: Int
        var class_name: String
        var confidence: Float
        var box: BoxDTO
    }
    struct Timings: Encodable {
        var queue: Double
        var decode: Double
        var preprocess: Double
        var inference: Double
        var postprocess: Double
        var total: Double
    }
    var model: Model
    var image: Image
    var detections: [DetectionDTO]
    var timings_ms: Timings

    init(_ d: SlotDetection, totalMilliseconds: Double) {
        model = Model(slot: d.model.slot, id: d.model.id, version: d.model.version, sha256: d.model.sha256,
            generation: d.model.generation)
        image = Image(width: d.result.imageSize.width, height: d.result.imageSize.height)
        detections = d.result.detections.map {
            DetectionDTO(class_id: $0.classID, class_name: $0.className, confidence: $0.confidence,
                box: BoxDTO(x1: $0.box.x1, y1: $0.box.y1, x2: $0.box.x2, y2: $0.box.y2))
        }
        let t = d.result.timings
        timings_ms = Timings(queue: d.queueMilliseconds, decode: t.decode, preprocess: t.preprocess,
            inference: t.inference, postprocess: t.postprocess, total: totalMilliseconds)
    }
}

struct HealthDTO: ResponseEncodable {
    var status: String
    var slots: [String: String]?
}
