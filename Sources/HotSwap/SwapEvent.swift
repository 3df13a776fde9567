import Foundation

/// A completed control-plane operation: what the manager emits to its subscribers (metrics, logs, the HTTP API, later
/// MQTT) and appends to the state store.
///
/// One Codable shape everywhere (the store keeps exactly this JSON; `GET /v1/events` answers with it):
/// `{"time", "slot", "operation", "result", "reason"?, "from"?: ModelIdentity, "to"?: ModelIdentity, "generation"?,
/// "operation_id"?, "timings": LoadTimings, "provider"?, "device"?, "policy"?: PolicyDecision}`.
///
/// Thread-safety: a value.
public struct SwapEvent: Sendable, Equatable, Codable {
    public enum Operation: String, Sendable, Codable {
        case load, activate, `switch`, rollback, discard, release, restore
        /// The steps of a release of a candidate beside the active model (module `Releases`).
        case releaseStart = "release-start", releaseStep = "release-step", releasePause = "release-pause"
        case releaseResume = "release-resume", releasePromote = "release-promote"
        case releaseRollback = "release-rollback", releaseAbort = "release-abort"
    }
    public enum Outcome: String, Sendable, Codable { case succeeded, failed, cancelled }

    enum CodingKeys: String, CodingKey {
        case time, slot, operation, result, reason, from, to, generation, timings, provider, device, policy
        case operationID = "operation_id"
    }

    public var time: Date
    public var slot: String
    public var operation: Operation
    public var result: Outcome
    public var reason: String?
    /// The model that was active before (or the one released).
    public var from: ModelIdentity?
    /// The model loaded or switched in.
    public var to: ModelIdentity?
    public var generation: Int?
    public var timings: LoadTimings
    /// The load operation this event ends, if any.
    public var operationID: String?
    /// The execution provider `to` runs (or was to run) on, when the event concerns a model (`cuda:0`).
    public var provider: String?
    /// The device that holds `to`'s session (`host`, `gpu:0`).
    public var device: String?
    /// The swap policy a load ran with and why (loads, activations, rollbacks and restores).
    public var policy: PolicyDecision?

    public init(slot: String, operation: Operation, result: Outcome, reason: String? = nil, from: ModelIdentity? = nil,
                to: ModelIdentity? = nil, generation: Int? = nil, timings: LoadTimings = LoadTimings(),
                operationID: String? = nil, target: ExecutionTarget? = nil, policy: PolicyDecision? = nil,
                time: Date = Date()) {
        self.time = time
        self.slot = slot
        self.operation = operation
        self.result = result
        self.reason = reason
        self.from = from
        self.to = to
        self.generation = generation
        self.timings = timings
        self.operationID = operationID
        self.provider = target?.description
        self.device = target?.device.description
        self.policy = policy
    }

    /// The same event with every model path and the reason passed through `transform` (the API shows paths relative
    /// to the model repository).
    public func mappingPaths(_ transform: (String) -> String) -> SwapEvent {
        var event = self
        if let from { event.from?.path = transform(from.path) }
        if let to { event.to?.path = transform(to.path) }
        event.reason = reason.map(transform)
        return event
    }
}
