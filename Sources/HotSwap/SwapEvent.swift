import Foundation

/// A completed control-plane operation, emitted to audit, metrics, logs (and later MQTT) and stored.
public struct SwapEvent: Sendable, Equatable {
    public enum Operation: String, Sendable, Codable { case load, activate, `switch`, rollback, discard, release, restore }
    public enum Outcome: String, Sendable, Codable { case succeeded, failed, cancelled }

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

    public init(slot: String, operation: Operation, result: Outcome, reason: String? = nil, from: ModelIdentity? = nil,
                to: ModelIdentity? = nil, generation: Int? = nil, timings: LoadTimings = LoadTimings(),
                operationID: String? = nil, time: Date = Date()) {
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
    }

    var record: SwapEventRecord {
        SwapEventRecord(
            time: time, slot: slot, operation: operation.rawValue, result: result.rawValue, reason: reason,
            fromModel: from?.id, fromSHA256: from?.sha256, toModel: to?.id, toSHA256: to?.sha256,
            generation: generation, verifyMs: timings.verify, loadMs: timings.load, warmupMs: timings.warmup,
            flipMicroseconds: timings.flipMicroseconds, totalMs: timings.total)
    }
}
