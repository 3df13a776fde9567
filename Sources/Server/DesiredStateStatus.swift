import Foundation
import Metrics

// The desired state's status as the API shows it (`GET /v1/desired/status`, the answer of `PUT /v1/desired`), and
// its metrics. Field names are snake_case on the wire, as everywhere in the API.

/// Where a document came from; it names the actor of the audit entries its changes make.
public enum DesiredStateSource: Sendable, Equatable {
    /// `PUT /v1/desired` by the named token.
    case http(token: String)
    /// The watched file (a ConfigMap key), with the SHA-256 of the content read.
    case configMap(path: String)
    /// A signed MQTT message (a group's retained document, an `apply-desired` command), received by this client.
    case mqtt(clientID: String)

    /// `http:<token name>`, `configmap:<path>@<content sha256>` or `mqtt:<client id>`.
    func actor(contentSHA256: String) -> String {
        switch self {
        case .http(let token): "http:\(token)"
        case .configMap(let path): "configmap:\(path)@\(contentSHA256)"
        case .mqtt(let clientID): "mqtt:\(clientID)"
        }
    }

    /// Who sends documents from this source, whatever their content: `http:<token name>`, `configmap:<path>` or
    /// `mqtt:<client id>` (the key its refusals are rate-limited by).
    var sender: String {
        switch self {
        case .http(let token): "http:\(token)"
        case .configMap(let path): "configmap:\(path)"
        case .mqtt(let clientID): "mqtt:\(clientID)"
        }
    }

    /// The metric label: `http`, `configmap` or `mqtt`.
    var kind: String {
        switch self {
        case .http: "http"
        case .configMap: "configmap"
        case .mqtt: "mqtt"
        }
    }
}

/// One step of a plan: what the reconciler does (or, dry run, would do) to reach the document.
public struct DesiredPlanStep: Sendable, Equatable, Codable {
    /// `load+switch` (stage the model through the full verifying pipeline, then switch it in) or `routes.replace`.
    public var action: String
    public var slot: String?
    /// What the slot serves now (`name@version (sha256 prefix)`), or the current routes.
    public var from: String?
    /// What it will serve.
    public var to: String
}

/// A Kubernetes-style condition: one of `Converged`, `Progressing`, `Failed`, true or false.
struct DesiredConditionDTO: Codable, Sendable, Equatable {
    var type: String
    var status: String
    var reason: String
    var message: String?
    var last_transition_time: Date
}

/// A slot's reconciliation status.
struct DesiredSlotStatusDTO: Codable, Sendable, Equatable {
    var observed_generation: Int
    var conditions: [DesiredConditionDTO]
    var last_error: String?
}

/// The last document refused, and why.
struct DesiredRejectionDTO: Codable, Sendable, Equatable {
    var time: Date
    var source: String
    var content_sha256: String
    var reason: String
}

/// `GET /v1/desired/status`.
struct DesiredStatusDTO: Codable, Sendable, Equatable {
    /// The generation of the document last accepted (0: none yet).
    var observed_generation: Int
    var content_sha256: String?
    var source: String?
    var applied_at: Date?
    var slots: [String: DesiredSlotStatusDTO]
    /// Whether the routes are the document's (nil when the document has none).
    var routes_converged: Bool?
    var last_rejection: DesiredRejectionDTO?
    /// The next apply of this document, when slots failed (see `DesiredStateReconciler`).
    var retry: DesiredRetryDTO?
}

/// When the document that left slots failed is applied again.
struct DesiredRetryDTO: Codable, Sendable, Equatable {
    /// 1 for the first retry.
    var attempt: Int
    var at: Date
    var delay_s: Double
}

/// `PUT /v1/desired`'s answer.
struct DesiredApplyDTO: Codable, Sendable {
    /// Whether anything was (dry run: would be) done: false when the document was already applied and in force.
    var changed: Bool
    var dry_run: Bool
    /// Whether every slot of the document is Converged (a dry run: whether the plan is empty).
    var converged: Bool
    var generation: Int
    var content_sha256: String
    var plan: [DesiredPlanStep]
    var status: DesiredStatusDTO
}

/// `GET /v1/desired`.
struct DesiredDocumentDTO: Codable, Sendable {
    var generation: Int
    var content_sha256: String
    var source: String
    var applied_at: Date
    var document: DesiredState
}

// MARK: - Slot state

/// A slot's place in reconciliation; rendered as the three conditions.
struct DesiredSlotState: Sendable, Equatable {
    enum Phase: String, Sendable { case converged = "Converged", progressing = "Progressing", failed = "Failed" }
    var phase: Phase
    var reason: String
    var message: String?
    var generation: Int
    var since: Date
    var lastError: String?
    /// The SHA-256 of the model the slot served when it converged: one changed since (a switch or rollback by hand)
    /// is shown as no longer converged.
    var servedSHA256: String?

    /// Whether the slot converged and serves another model since (`active`, its SHA-256): no condition holds.
    func isChanged(serving active: String?) -> Bool {
        phase == .converged && servedSHA256 != nil && active != servedSHA256
    }

    var dto: DesiredSlotStatusDTO {
        let types: [Phase] = [.converged, .progressing, .failed]
        return DesiredSlotStatusDTO(observed_generation: generation,
            conditions: types.map { type in
                DesiredConditionDTO(type: type.rawValue, status: type == phase ? "True" : "False",
                    reason: type == phase ? reason : "", message: type == phase ? message : nil,
                    last_transition_time: since)
            },
            last_error: lastError)
    }

    /// The status when the slot now serves `active` (its SHA-256): a converged slot that serves another model than
    /// it converged to is Converged False, reason `ModelChanged`, until the next apply brings it back.
    func dto(serving active: String?) -> DesiredSlotStatusDTO {
        guard isChanged(serving: active) else { return dto }
        var changed = dto
        changed.conditions = changed.conditions.map { condition in
            var condition = condition
            condition.status = "False"
            if condition.type == Phase.converged.rawValue {
                condition.reason = "ModelChanged"
                condition.message = "the slot serves " + (active.map { "the model with sha256 \($0.prefix(12))" }
                    ?? "nothing") + " since it converged, not the document's; the next apply brings it back"
            }
            return condition
        }
        return changed
    }
}

// MARK: - Metrics

/// The desired state's metrics (through swift-metrics, like `ServerMetrics`).
enum DesiredMetrics {
    static let helpTexts: [String: String] = [
        "yoloswap_desired_observed_generation": "Generation of the desired-state document this instance last accepted.",
        "yoloswap_desired_slot_condition": "Reconciliation condition per slot (1 for the slot's current condition).",
        "yoloswap_desired_rejected_total": "Desired-state documents refused, by source (http, configmap).",
    ]

    static func generation(_ value: Int) {
        Gauge(label: "yoloswap_desired_observed_generation").record(value)
    }

    /// Sets the slot's condition series: 1 for `phase`, 0 for the others (all 0 for nil: a converged slot changed by
    /// hand since, whose status shows every condition False).
    static func condition(slot: String, _ phase: DesiredSlotState.Phase?) {
        for type in [DesiredSlotState.Phase.converged, .progressing, .failed] {
            Gauge(label: "yoloswap_desired_slot_condition", dimensions: [("slot", slot), ("condition", type.rawValue)])
                .record(type == phase ? 1 : 0)
        }
    }

    /// A slot the document in force no longer names: its condition series go (an alert on `Converged != 1` would
    /// otherwise fire for it forever).
    static func forget(slot: String) {
        for type in [DesiredSlotState.Phase.converged, .progressing, .failed] {
            Gauge(label: "yoloswap_desired_slot_condition", dimensions: [("slot", slot), ("condition", type.rawValue)])
                .destroy()
        }
    }

    static func rejected(source: DesiredStateSource) {
        Counter(label: "yoloswap_desired_rejected_total", dimensions: [("source", source.kind)]).increment()
    }

    /// A document that left slots failed will be applied again.
    static func retryScheduled() {
        Counter(label: "yoloswap_desired_retries_total").increment()
    }
}
