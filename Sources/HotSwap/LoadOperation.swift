import Foundation
import YOLO
import Primitives

/// The stages of a load, in order; `ready` means staged (or active when the load activates).
public enum LoadStage: String, Sendable, Codable {
    case queued, verifying, loading, validating, warming, ready, failed, cancelled

    /// True once the load has ended.
    public var isTerminal: Bool { self == .ready || self == .failed || self == .cancelled }
}

/// What to load into a slot.
public struct LoadRequest: Sendable, Equatable {
    public var slot: String
    /// Path of the model file.
    public var path: String
    /// Model name; default: the file name without extension.
    public var name: String?
    /// Version label; default: the first 12 hex digits of the SHA-256.
    public var version: String?
    /// When set, the bytes must hash to this (lower-case hex).
    public var expectedSHA256: String?
    /// Switch the model in as soon as it is ready.
    public var activate: Bool
    /// Accept a model whose classes, task, output format, channel order or normalization differ from the active one.
    public var allowSchemaChange: Bool
    /// Overrides the manager's swap policy for this load (only matters when `activate`).
    public var policy: SwapPolicy?
    /// Overrides the manager's warm-up timeout for this load (a model known to warm up slowly, or quickly).
    public var warmupTimeout: Duration?
    /// Where the model runs: one of the targets the slot permits (`SlotExecution`); nil = where the slot's active
    /// model runs, else the slot's configured target.
    public var target: ExecutionTarget?
    /// Accept a target whose provider or device differs from the active model's (moving the slot); without it such a
    /// load is refused before anything is loaded.
    public var allowDeviceChange: Bool
    /// Refuse the model in the verifying stage unless a trusted key signed it, whatever the manager's verifier
    /// requires of every load (a desired-state slot's `require_signature`); with no verifier, every model is refused.
    public var requireSignature: Bool

    public init(slot: String, path: String, name: String? = nil, version: String? = nil,
                expectedSHA256: String? = nil, activate: Bool = false, allowSchemaChange: Bool = false,
                policy: SwapPolicy? = nil, warmupTimeout: Duration? = nil, target: ExecutionTarget? = nil,
                allowDeviceChange: Bool = false, requireSignature: Bool = false) {
        self.slot = slot
        self.path = path
        self.name = name
        self.version = version
        self.expectedSHA256 = expectedSHA256?.lowercased()
        self.activate = activate
        self.allowSchemaChange = allowSchemaChange
        self.policy = policy
        self.warmupTimeout = warmupTimeout
        self.target = target
        self.allowDeviceChange = allowDeviceChange
        self.requireSignature = requireSignature
    }

    /// Loads asking for the same thing share one operation: the same slot, file, name, version, expected digest,
    /// activation, target, policy, warm-up timeout, permissions and signature requirement (one that forbids a schema
    /// or device change, or needs a signature, must not get what a load without that made).
    var sharingKey: SharingKey {
        SharingKey(slot: slot, path: path, name: name, version: version, expectedSHA256: expectedSHA256,
            activate: activate, target: target?.description, policy: policy, warmupTimeout: warmupTimeout,
            allowSchemaChange: allowSchemaChange, allowDeviceChange: allowDeviceChange,
            requireSignature: requireSignature)
    }

    /// The fields as they are (no joined string, in which one field's text could pass for another's).
    struct SharingKey: Hashable {
        var slot, path: String
        var name, version, expectedSHA256: String?
        var activate: Bool
        var target: String?
        var policy: SwapPolicy?
        var warmupTimeout: Duration?
        var allowSchemaChange, allowDeviceChange, requireSignature: Bool
    }
}

/// Durations of a load's stages, in milliseconds. Codable as `{"verify_ms", "load_ms", "validate_ms", "warmup_ms",
/// "flip_us", "total_ms"}` (absent stages omitted).
public struct LoadTimings: Sendable, Equatable, Codable {
    enum CodingKeys: String, CodingKey {
        case verify = "verify_ms"
        case load = "load_ms"
        case validate = "validate_ms"
        case warmup = "warmup_ms"
        case flipMicroseconds = "flip_us"
        case total = "total_ms"
    }

    public var verify: Double?
    public var load: Double?
    public var validate: Double?
    public var warmup: Double?
    /// Time to flip the model in, in microseconds (loads that activate).
    public var flipMicroseconds: Double?
    public var total: Double?
    public init() {}
}

/// Why a load failed. The slot's active model is untouched, except by a resource-preserving load that failed after
/// the old model left: that one is brought back (or, if that fails too, the slot is left without a model).
public enum LoadFailure: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case digestMismatch(path: String, expected: String, actual: String)
    case signatureRejected(path: String, reason: String)
    case overMemoryBudget(path: String, neededBytes: Int, budgetBytes: Int, inUseBytes: Int)
    /// The model does not fit in a GPU's budget (`device` is `gpu:N`).
    case overDeviceMemoryBudget(path: String, device: String, neededBytes: Int, budgetBytes: Int, inUseBytes: Int)
    /// The load asked for an execution target its slot does not permit.
    case providerNotAllowed(path: String, requested: String, allowed: [String])
    /// The load's target differs from the active model's and the load did not allow moving the slot.
    case deviceChange(path: String, active: String, requested: String)
    case runtime(path: String, reason: String)
    case unsupportedModel(path: String, reason: String)
    case incompatible(path: String, differences: [String])
    case warmupFailed(path: String, reason: String)
    case warmupTimeout(path: String, after: Duration)
    case cancelled(path: String, reason: String)
    /// The model was ready but the state store could not record the switch: nothing was switched.
    case notCommitted(path: String, reason: String)

    /// Refused because a memory budget had no room for the model (on the host or a GPU).
    public var isOverBudget: Bool {
        switch self {
        case .overMemoryBudget, .overDeviceMemoryBudget: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .digestMismatch(let path, let expected, let actual):
            "sha256 mismatch for \(path): expected \(expected), got \(actual)"
        case .signatureRejected(let path, let reason): "signature check failed for \(path): \(reason)"
        case .overMemoryBudget(let path, let needed, let budget, let inUse):
            "loading \(path) needs about \(needed / 1_048_576) MiB but the memory budget is \(budget / 1_048_576) MiB "
                + "with \(inUse / 1_048_576) MiB in use"
        case .overDeviceMemoryBudget(let path, let device, let needed, let budget, let inUse):
            "loading \(path) needs about \(needed / 1_048_576) MiB on \(device) but its memory budget is "
                + "\(budget / 1_048_576) MiB with \(inUse / 1_048_576) MiB in use"
        case .providerNotAllowed(let path, let requested, let allowed):
            "\(path) may not run on \(requested) in this slot (allowed: \(allowed.joined(separator: ", ")))"
        case .deviceChange(let path, let active, let requested):
            "\(path) would run on \(requested) but the slot's active model runs on \(active); a swap keeps the "
                + "device unless the load allows a device change (allow_device_change)"
        case .runtime(let path, let reason): "ONNX Runtime could not load \(path): \(reason)"
        case .unsupportedModel(let path, let reason): "\(path) is not a supported YOLO detector: \(reason)"
        case .incompatible(let path, let differences):
            "\(path) is incompatible with the active model: " + differences.joined(separator: "; ")
        case .warmupFailed(let path, let reason): "warm-up of \(path) failed: \(reason)"
        case .warmupTimeout(let path, let after):
            "warm-up of \(path) timed out after \(after.formatted(.units(allowed: [.seconds, .milliseconds])))"
        case .cancelled(let path, let reason): "load of \(path) cancelled: \(reason)"
        case .notCommitted(let path, let reason):
            "\(path) was not switched in: the state store could not record it (\(reason)); "
                + "the active model is unchanged"
        }
    }
}

/// One load, observable while it runs: `queued → verifying → loading → validating → warming → ready`, or
/// `failed` / `cancelled`. Concurrent requests for the same model share one operation.
///
/// Thread-safety: all members may be used from any thread.
public final class LoadOperation: Sendable {
    public let id: String
    public let request: LoadRequest
    public let createdAt: Date

    /// A snapshot of the operation's progress.
    public struct Status: Sendable {
        public var stage: LoadStage
        public var failure: LoadFailure?
        public var timings: LoadTimings
        /// Known once the bytes are verified.
        public var identity: ModelIdentity?
        public var signatureKeyID: String?
        /// The slot's generation after an activating load.
        public var generation: Int?
        /// Where the model runs, once the load's target is resolved.
        public var execution: ModelExecution?
        /// The swap policy that ran and why, once chosen.
        public var policy: PolicyDecision?
        public var finishedAt: Date?
    }

    /// `recorded`: the manager has recorded the outcome (`markRecorded`); `wait()` returns only then. `shown`: what
    /// `shownStatus` answers.
    private let state: Locked<(status: Status, recorded: Bool, waiters: [CheckedContinuation<Status, Never>],
        shown: Status)>
    /// Set by whichever comes first: a cancellation, or the model being switched in (`beginActivation`).
    private let settled = Locked(false)
    /// Cancels a warm-up run in flight when the load is cancelled or times out.
    let runCancellation = RunCancellation()
    /// Told of each change of stage (`observeStages`).
    private let stageObserver = Locked<(@Sendable (LoadOperation) -> Void)?>(nil)

    init(request: LoadRequest) {
        self.id = UUID().uuidString.lowercased()
        self.request = request
        self.createdAt = Date()
        let queued = Status(stage: .queued, timings: LoadTimings())
        state = Locked((queued, false, [], queued))
    }

    public var status: Status { state.withLock { $0.status } }

    /// The status as clients are shown it (`GET /v1/operations/{id}`, a slot's operation, the load progress stream): a
    /// terminal stage only once the manager has recorded the outcome, until then the stage before it — so that a client
    /// that sees `ready` (or `failed`) finds the load's event in the event log, as `wait()` guarantees its callers.
    public var shownStatus: Status { state.withLock { $0.shown } }
    public var isCancelled: Bool { state.withLock { $0.status.stage == .cancelled } || runCancellation.isCancelled }

    /// Seconds since the operation was created (or until it finished).
    public var elapsed: TimeInterval {
        (state.withLock { $0.status.finishedAt } ?? Date()).timeIntervalSince(createdAt)
    }

    /// Suspends until the load has ended and the manager has recorded how (its event is in the event log and the
    /// state store); returns its final status. A load cancelled while queued is recorded when its turn in the slot's
    /// queue comes.
    public func wait() async -> Status {
        await withCheckedContinuation { continuation in
            let done = state.withLock { s -> Status? in
                if s.status.stage.isTerminal && s.recorded { return s.status }
                s.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Asks the load to stop; it ends `cancelled` at its next check (a warm-up Run in flight is aborted).
    /// Does nothing once the model is being switched in (the flip has happened or is happening): the load then
    /// ends `ready`.
    public func cancel(reason: String = "cancelled") {
        let cancellable = settled.withLock { done in
            defer { done = true }
            return !done
        }
        guard cancellable else { return }
        runCancellation.cancel()
        finish(.cancelled, failure: .cancelled(path: request.path, reason: reason))
    }

    /// Marks the point of no return, just before the model is switched in.
    /// - Returns: false when the load was cancelled first (the model must then take no role).
    func beginActivation() -> Bool {
        settled.withLock { done in
            defer { done = true }
            return !done
        } && !isCancelled
    }

    func update(_ body: (inout Status) -> Void) {
        state.withLock { s in
            guard !s.status.stage.isTerminal else { return }
            body(&s.status)
            s.shown = s.status
        }
    }

    func enter(_ stage: LoadStage) {
        update { $0.stage = stage }
        notifyStage()
    }

    /// Calls `observer` after each change of stage, on the thread that made it (it must not block); one observer,
    /// set before the load starts.
    func observeStages(_ observer: @escaping @Sendable (LoadOperation) -> Void) {
        stageObserver.withLock { $0 = observer }
    }

    private func notifyStage() {
        stageObserver.withLock { $0 }?(self)
    }

    func finish(_ stage: LoadStage, failure: LoadFailure? = nil) {
        let (waiters, status, shown) = state.withLock { s -> ([CheckedContinuation<Status, Never>], Status, Bool) in
            guard !s.status.stage.isTerminal else { return ([], s.status, false) }
            s.status.stage = stage
            s.status.failure = failure
            s.status.finishedAt = Date()
            s.status.timings.total = Date().timeIntervalSince(createdAt) * 1000
            guard s.recorded else { return ([], s.status, false) }
            s.shown = s.status
            defer { s.waiters = [] }
            return (s.waiters, s.status, true)
        }
        waiters.forEach { $0.resume(returning: status) }
        // The end is shown (and told to the progress observer) once it is recorded: here, or in `markRecorded`.
        if shown { notifyStage() }
    }

    /// Lets `wait()` return: called by the manager once the outcome is recorded (after `finish`), so that whoever
    /// waited for the load finds its event already there.
    func markRecorded() {
        let (waiters, status, shown) = state.withLock { s -> ([CheckedContinuation<Status, Never>], Status, Bool) in
            s.recorded = true
            guard s.status.stage.isTerminal else { return ([], s.status, false) }
            let newlyShown = !s.shown.stage.isTerminal
            s.shown = s.status
            defer { s.waiters = [] }
            return (s.waiters, s.status, newlyShown)
        }
        // The observer first: a waiter that answers at once finds the end already handed to the progress stream.
        if shown { notifyStage() }
        waiters.forEach { $0.resume(returning: status) }
    }
}
