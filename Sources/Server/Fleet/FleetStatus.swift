import Fleet
import Foundation
import Metrics

// What a device publishes about itself: the retained status (`<prefix>/<device>/status`) and the metrics of its
// fleet connection. Field names are snake_case on the wire, as everywhere in the API.

/// The fleet document this device admitted last.
struct FleetDocumentStatusDTO: Codable, Sendable, Equatable {
    var topic: String
    var issued_at: Int64
    var nonce: String
}

/// The desired state in the status: the reconciler's status, and whether every slot of the document is Converged.
struct FleetDesiredStatusDTO: Codable, Sendable, Equatable {
    var observed_generation: Int
    var content_sha256: String?
    var source: String?
    var converged: Bool
    var slots: [String: DesiredSlotStatusDTO]
    var last_rejection: DesiredRejectionDTO?
}

/// `<prefix>/<device>/status` (retained). `state` is `online`, or `offline` (published on a clean stop, and by the
/// broker as the last will when the connection is lost); an offline status has only `device`, `state` and `time`.
/// The slots are as `GET /v1/slots` shows them.
struct FleetStatusDTO: Encodable, Sendable {
    var device: String
    var state: String
    var time: Date?
    var group: String?
    var client_id: String?
    var slots: [SlotDTO]?
    var desired: FleetDesiredStatusDTO?
    var fleet_document: FleetDocumentStatusDTO?
    /// Sections added by `FleetStatusContributor`s (a release's progress), by name.
    var extensions: [String: FleetJSON]?

    static func offline(device: String, time: Date?) -> FleetStatusDTO {
        FleetStatusDTO(device: device, state: "offline", time: time)
    }
}

extension FleetDesiredStatusDTO {
    init(_ status: DesiredStatusDTO) {
        observed_generation = status.observed_generation
        content_sha256 = status.content_sha256
        source = status.source
        slots = status.slots
        last_rejection = status.last_rejection
        converged = status.observed_generation > 0 && status.routes_converged != false
            && status.slots.values.allSatisfy { slot in
                slot.conditions.contains { $0.type == "Converged" && $0.status == "True" }
            }
    }
}

/// JSON as the fleet topics carry it: sorted keys, ISO 8601 dates. A value that cannot be encoded (a number that is
/// not finite) comes out empty, which `FleetSession.send` does not publish.
enum FleetJSONCoding {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return (try? encoder.encode(value)).map { [UInt8]($0) } ?? []
    }
}

// MARK: - Metrics

/// The fleet connection's metrics (through swift-metrics, like `ServerMetrics`).
enum FleetMetrics {
    static let helpTexts: [String: String] = [
        "yoloswap_mqtt_connected": "Whether the MQTT fleet connection is up (1) or not (0).",
        "yoloswap_mqtt_messages_total": "Fleet messages received, by kind (command, desired) and outcome.",
        "yoloswap_mqtt_refused_total":
            "Fleet messages refused, by kind and reason (unsigned, bad_signature, stale, ...).",
        "yoloswap_mqtt_refusals_not_recorded_total":
            "Fleet refusals over the rate limit: counted, but not audited, logged or answered one by one.",
    ]

    static func connected(_ up: Bool) {
        Gauge(label: "yoloswap_mqtt_connected").record(up ? 1 : 0)
    }

    static func received(kind: String, outcome: String) {
        Counter(label: "yoloswap_mqtt_messages_total", dimensions: [("kind", kind), ("outcome", outcome)]).increment()
    }

    static func refused(kind: String, reason: FleetRefusal.Reason) {
        Counter(label: "yoloswap_mqtt_refused_total", dimensions: [("kind", kind), ("reason", reason.rawValue)])
            .increment()
    }

    static func refusalNotRecorded() { Counter(label: "yoloswap_mqtt_refusals_not_recorded_total").increment() }
}
