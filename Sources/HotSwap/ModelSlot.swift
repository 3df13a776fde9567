import Foundation
import ImageCodecs
import YOLO
import Primitives

/// Decides which of a slot's models serves a request — the one replaceable step where canary, shadow and A/B
/// routing plug in (module `Releases`). The default serves the active model.
///
/// The slot calls it under its roles lock, once per request: it must be quick and must not block.
public protocol ModelRouter: Sendable {
    /// Picks a model from the slot's current roles; nil when none can serve.
    func route(_ roles: SlotRoles, request: RoutingContext) -> ModelInstance?
    /// Picks a model and names the variant it stands for in a release (`baseline`, `candidate`, an A/B name); the
    /// default names none.
    func choose(_ roles: SlotRoles, request: RoutingContext) -> RoutedModel?
}

extension ModelRouter {
    public func choose(_ roles: SlotRoles, request: RoutingContext) -> RoutedModel? {
        route(roles, request: request).map { RoutedModel(model: $0, variant: nil) }
    }
}

/// A router's choice: the model and, during a release, the variant it stands for.
public struct RoutedModel: Sendable {
    public var model: ModelInstance
    public var variant: String?
    public init(model: ModelInstance, variant: String?) {
        self.model = model
        self.variant = variant
    }
}

/// Serves every request from the active model.
public struct ActiveModelRouter: ModelRouter {
    public init() {}
    public func route(_ roles: SlotRoles, request: RoutingContext) -> ModelInstance? { roles.active }
}

/// What a router can see of a request.
public struct RoutingContext: Sendable {
    public var product: String?
    /// The value of the header a release assigns variants by (e.g. `X-Work-Order`), when the request has it.
    public var key: String?
    /// The active model must serve: a retry after a release's candidate failed the request.
    public var preferActive: Bool
    public init(product: String? = nil, key: String? = nil, preferActive: Bool = false) {
        self.product = product
        self.key = key
        self.preferActive = preferActive
    }
}

/// The models a slot holds, by role.
public struct SlotRoles: Sendable {
    public var active: ModelInstance?
    /// Loaded, verified and warmed up; switched in by `switch`.
    public var staged: ModelInstance?
    /// The previous active model, kept warm for an instant rollback.
    public var standby: ModelInstance?
    /// Increases with every change of the active model.
    public var generation: Int
}

extension SlotRoles {
    /// The active, staged or standby model whose version is `version`, looked for in that order.
    public func model(version: String) -> ModelInstance? {
        [active, staged, standby].lazy.compactMap { $0 }.first { $0.identity.version == version }
    }
}

/// Which of a slot's models a request runs on.
public enum ModelChoice: Sendable {
    /// The model the slot's router picks (the active model unless a release routes elsewhere).
    case routed(RoutingContext)
    /// The active, staged or standby model with this version label, looked for in that order.
    case version(String)
}

/// A detection and the model that produced it.
public struct SlotDetection: Sendable {
    public var result: DetectionResult
    public var model: ModelStamp
    /// The release variant that answered (`baseline`, `candidate`, an A/B name); nil outside a release.
    public var variant: String?
    /// Time spent waiting for a worker thread (and for a model during a resource-preserving swap).
    public var queueMilliseconds: Double

    public init(result: DetectionResult, model: ModelStamp, variant: String?, queueMilliseconds: Double) {
        self.result = result
        self.model = model
        self.variant = variant
        self.queueMilliseconds = queueMilliseconds
    }
}

/// What a detection runs on: encoded image bytes (an API request) or a decoded image (a video frame).
public enum DetectionInput: Sendable {
    case encoded([UInt8])
    case decoded(RGBImage)
}

/// Told of routed detections made outside the service's `POST /v1/detect` path — a video stream's frames, the Open
/// Inference Protocol's images — so that a release counts them for the variant that answered (and mirrors them to a
/// shadow candidate) like any other request.
///
/// Thread-safety: implementations are called from any task, concurrently, and must not block.
public protocol DetectionObserver: Sendable {
    /// `detection` was answered on `slot`, by its `variant` (nil outside a release).
    /// - Parameter key: the request's sticky key (a stream's id), if any.
    func answered(slot: String, input: DetectionInput, options: DetectionOptions, key: String?,
                  detection: SlotDetection)

    /// A detection by the release variant `variant` failed.
    /// - Returns: whether to detect again on the active model (the variant was the release's candidate: its failure is
    ///   the release's to count, not the client's); false when the active model failed.
    func failed(slot: String, variant: String, error: DetectionError) -> Bool
}

/// A detection that failed on the model a release's router chose: the variant, and the pipeline's error. Thrown only
/// while a router names variants, so that the caller can count the failure against the variant (and retry a failed
/// candidate request on the baseline).
public struct RoutedDetectionError: Error, CustomStringConvertible {
    public var variant: String
    public var error: DetectionError
    public var description: String { "\(error) (variant \(variant))" }
}

/// Errors a request to a slot can end with.
public enum SlotError: Error, Equatable, CustomStringConvertible {
    /// No model became active before the request's deadline (e.g. during a resource-preserving swap).
    case unavailable(slot: String, waited: Duration)
    /// The request waited in the slot's queue past its deadline (the slot has a model; its workers were busy).
    case timedOutInQueue(slot: String, waited: Duration)
    /// The slot's queue is full; retry after the hint.
    case overloaded(slot: String, queueDepth: Int, retryAfter: Duration)
    /// No model of the slot (active, staged or standby) has the version a request named.
    case noSuchVersion(slot: String, version: String)
    /// The slot is shutting down.
    case shutDown(slot: String)

    public var description: String {
        switch self {
        case .unavailable(let slot, let waited):
            "slot '\(slot)' has no active model (waited \(waited.formatted(.units(allowed: [.milliseconds]))))"
        case .timedOutInQueue(let slot, let waited):
            "slot '\(slot)' did not start the request before its deadline (waited "
                + "\(waited.formatted(.units(allowed: [.milliseconds]))) for a worker)"
        case .overloaded(let slot, let depth, let retry):
            "slot '\(slot)' is overloaded (\(depth) requests queued); retry after "
                + retry.formatted(.units(allowed: [.milliseconds]))
        case .shutDown(let slot): "slot '\(slot)' is shutting down"
        case .noSuchVersion(let slot, let version):
            "slot '\(slot)' has no active, staged or standby model with version '\(version)'"
        }
    }
}

/// Measures of one flip of a slot's active model.
public struct FlipResult: Sendable {
    public var generation: Int
    /// Time the slot's lock was held to swap the reference, in microseconds.
    public var microseconds: Double
    public var previous: ModelInstance?
}

/// A named slot serving one active model, with its own bounded queue and worker threads.
///
/// The roles live behind one lock held only to read or swap references (microseconds). A request takes a lease —
/// the chosen model and an in-flight count — under that lock, runs on a worker thread, and ends the lease after
/// dropping its reference; a request that started before a flip finishes on the model it started with. Models
/// leaving every role go to the `ModelReleaser`.
///
/// Thread-safety: all methods may be called from any thread or task.
public final class ModelSlot: Sendable {
    public let name: String
    public let executor: InferenceExecutor
    let releaser: ModelReleaser
    private let router: Locked<any ModelRouter>

    private struct State {
        var roles = SlotRoles(generation: 0)
        /// Requests waiting for an active model, resumed when one is switched in.
        var waiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Locked(State())

    public init(name: String, executor: InferenceExecutor, releaser: ModelReleaser,
                router: any ModelRouter = ActiveModelRouter()) {
        self.name = name
        self.executor = executor
        self.releaser = releaser
        self.router = Locked(router)
    }

    /// The models by role, as of now.
    public var roles: SlotRoles { state.withLock { $0.roles } }

    /// Replaces the routing step.
    public func setRouter(_ newRouter: any ModelRouter) { router.withLock { $0 = newRouter } }

    // MARK: Requests

    /// Detects objects in encoded image bytes on the model the router picks, on a worker thread.
    /// - Parameters:
    ///   - deadline: the latest time the request may start (waiting in the queue or for a model); nil = no limit.
    /// - Throws: `SlotError` (overloaded, unavailable, shut down), `DetectionError` (bad image, inference failure),
    ///   `CancellationError` when the calling task is cancelled before the work starts (in the queue, or waiting for a
    ///   model).
    public func detect(imageBytes: [UInt8], options: DetectionOptions = .init(), context: RoutingContext = .init(),
                       deadline: ContinuousClock.Instant? = nil) async throws -> SlotDetection {
        let executor = self.executor
        return try await detection(context: context, deadline: deadline) { detector throws(DetectionError) in
            // The two-thread JPEG decode only while this is the slot's one request (nothing else running or queued):
            // under load the second thread would only take a core from another request.
            try detector.detect(imageBytes: imageBytes, options: options,
                decodeInParallel: !executor.hasWorkBesidesOne)
        }
    }

    /// Detects objects in a decoded image (a video frame) on the model the router picks, on a worker thread.
    ///
    /// The model is chosen when the frame's lease is taken: a stream calling this once per frame, in order, reads the
    /// slot's model at each frame boundary, and its generations never go down. The letterbox takes a second thread
    /// only while this is the slot's one request (this slot's: a load or another slot's work is not counted).
    /// - Throws: as `detect(imageBytes:)`.
    public func detect(image: RGBImage, options: DetectionOptions = .init(), context: RoutingContext = .init(),
                       deadline: ContinuousClock.Instant? = nil) async throws -> SlotDetection {
        let executor = self.executor
        return try await detection(context: context, deadline: deadline) { detector throws(DetectionError) in
            // The letterbox's second thread only while this is the slot's one request: a stream with frames in flight
            // keeps both cores busy, and a frame would wait for that thread's rows.
            try detector.detect(image: image, options: options, resizeInParallel: !executor.hasWorkBesidesOne)
        }
    }

    /// A detection on the routed model, as `withModel` runs it, with the variant that answered.
    /// - Throws: a `DetectionError` wrapped in `RoutedDetectionError` when a release's variant answered.
    private func detection(
        context: RoutingContext, deadline: ContinuousClock.Instant?,
        _ detect: @escaping @Sendable (Detector) throws(DetectionError) -> DetectionResult
    ) async throws -> SlotDetection {
        let run = try await withModel(.routed(context), deadline: deadline) { model in try detect(model.detector) }
        return SlotDetection(result: run.value, model: run.model, variant: run.variant,
            queueMilliseconds: run.queueMilliseconds)
    }

    /// Runs `work` on one of the slot's models, on a worker thread, under a lease: the model cannot be released
    /// while `work` runs. Detections go through it; so do requests of other kinds (the Open Inference Protocol's raw
    /// tensors, a detection on a model named by version).
    ///
    /// `work` must not keep the model beyond its return (its result must not hold it): the request is counted out
    /// once `work` has returned and its reference is gone.
    /// - Parameters:
    ///   - choice: the model the router picks (waiting for an active model, as `detect` does), or the active, staged
    ///     or standby model with a given version.
    ///   - deadline: the latest time the request may start (waiting in the queue or for a model); nil = no limit.
    /// - Returns: what `work` returned, the stamp of the model it ran on, the release variant it stands for (routed
    ///   requests during a release), and the time spent waiting for a worker.
    /// - Throws: `SlotError` (overloaded, unavailable, shut down, no model with that version); `CancellationError`
    ///   when the calling task is cancelled before `work` starts; what `work` threw — a
    ///   `DetectionError` wrapped in `RoutedDetectionError` when a release's variant ran it.
    public func withModel<T: Sendable>(
        _ choice: ModelChoice, deadline: ContinuousClock.Instant? = nil,
        _ work: @escaping @Sendable (ModelInstance) throws -> T
    ) async throws -> (value: T, model: ModelStamp, variant: String?, queueMilliseconds: Double) {
        let enqueued = ContinuousClock.now
        while true {
            if case .routed = choice { try await waitForModel(deadline: deadline, since: enqueued) }
            let outcome: (Result<(T, ModelStamp, Double), any Error>, InFlightCounter, String?)?
            do {
                outcome = try await executor.run(deadline: deadline) { [self] in
                    self.runLeased(choice, since: enqueued, work)
                }
            } catch let error as ExecutorError {
                throw map(error, since: enqueued)
            }
            if let (result, counter, variant) = outcome {
                counter.decrement()
                switch result {
                case .success(let (value, stamp, queue)): return (value, stamp, variant, queue)
                case .failure(let error as DetectionError) where variant != nil:
                    throw RoutedDetectionError(variant: variant!, error: error)
                case .failure(let error): throw error
                }
            }
            // The model went away between the wait and the worker (resource-preserving swap): wait again.
            if case .version(let version) = choice { throw SlotError.noSuchVersion(slot: name, version: version) }
        }
    }

    /// Takes a lease, runs `work`, and returns the counter to decrement. The model reference dies with this
    /// function's frame, before the caller counts the request down — so the releaser can never see a zero count
    /// while a request still holds the model.
    private func runLeased<T: Sendable>(
        _ choice: ModelChoice, since enqueued: ContinuousClock.Instant,
        _ work: @Sendable (ModelInstance) throws -> T
    ) -> (Result<(T, ModelStamp, Double), any Error>, InFlightCounter, String?)? {
        let started = ContinuousClock.now
        guard let (model, variant, generation) = lease(choice) else { return nil }
        let stamp = ModelStamp(slot: name, identity: model.identity, generation: generation,
            target: model.execution.target)
        let result = Result { (try work(model), stamp, (started - enqueued).milliseconds) }
        return (result, model.inFlight, variant)
    }

    /// Picks the model under the lock and counts the request in: the router's choice (and its release variant), or
    /// the model with the version asked for.
    private func lease(_ choice: ModelChoice) -> (ModelInstance, String?, Int)? {
        let router = self.router.withLock { $0 }
        return state.withLock { s in
            let picked: RoutedModel? =
                switch choice {
                case .routed(let context): router.choose(s.roles, request: context)
                case .version(let version): s.roles.model(version: version).map { RoutedModel(model: $0, variant: nil) }
                }
            guard let picked else { return nil }
            picked.model.inFlight.increment()
            return (picked.model, picked.variant, s.roles.generation)
        }
    }

    // MARK: Mirrored requests

    /// Runs a copy of a request on the staged model (a release's shadow candidate) on `executor` — a separate,
    /// lower-priority pool — and never waits for a model: nil when nothing is staged.
    /// - Throws: `ExecutorError` (the mirror pool is full: the caller sheds the copy), `DetectionError`.
    public func detectOnStaged(_ input: DetectionInput, options: DetectionOptions, executor: InferenceExecutor)
        async throws -> SlotDetection?
    {
        let enqueued = ContinuousClock.now
        let outcome = try await executor.run { [self] () -> (Result<SlotDetection, DetectionError>, InFlightCounter)? in
            let started = ContinuousClock.now
            let leased = state.withLock { s -> (ModelInstance, Int)? in
                guard let staged = s.roles.staged else { return nil }
                staged.inFlight.increment()
                return (staged, s.roles.generation)
            }
            guard let (model, generation) = leased else { return nil }
            let stamp = ModelStamp(slot: name, identity: model.identity, generation: generation,
                target: model.execution.target)
            let result = Result { () throws(DetectionError) in
                let result =
                    switch input {
                    case .encoded(let bytes):
                        try model.detector.detect(imageBytes: bytes, options: options, decodeInParallel: false)
                    case .decoded(let image):
                        try model.detector.detect(image: image, options: options, resizeInParallel: false)
                    }
                return SlotDetection(result: result, model: stamp, variant: "candidate",
                    queueMilliseconds: (started - enqueued).milliseconds)
            }
            return (result, model.inFlight)
        }
        guard let (result, counter) = outcome else { return nil }
        counter.decrement()
        return try result.get()
    }

    /// Requests waiting for the slot to have an active model (at most the queue's capacity).
    public var waitingForModel: Int { state.withLock { $0.waiters.count } }

    private func waitForModel(
        deadline: ContinuousClock.Instant?, since enqueued: ContinuousClock.Instant
    ) async throws {
        if state.withLock({ $0.roles.active != nil }) { return }
        // A slot that is shutting down gets no model again: waiting would never end.
        if executor.isShuttingDown { throw SlotError.shutDown(slot: name) }
        let id = UUID()
        let timeout: Task<Void, Never>? = deadline.map { deadline in
            Task { [self] in
                try? await Task.sleep(until: deadline, clock: .continuous)
                state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
            }
        }
        defer { timeout?.cancel() }
        // Requests waiting for a model are bounded as the queue is: each holds its image until its deadline.
        let full = Locked<Int?>(nil)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    // Checked under the lock `retireAll`, the timeout and a cancellation wake the waiters under: a
                    // shutdown that began since is seen, and so are a deadline whose timeout fired and a cancellation
                    // that came before this waiter was registered.
                    if s.roles.active != nil || executor.isShuttingDown || Task.isCancelled { return true }
                    if let deadline, ContinuousClock.now >= deadline { return true }
                    if s.waiters.count >= executor.queueCapacity {
                        full.withLock { $0 = s.waiters.count }
                        return true
                    }
                    s.waiters[id] = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
        if let waiting = full.value {
            throw SlotError.overloaded(slot: name, queueDepth: waiting, retryAfter: .seconds(1))
        }
        guard state.withLock({ $0.roles.active == nil }) else {
            // A model came, but only at or past the deadline: the time went to waiting for it, not for a worker.
            if let deadline, ContinuousClock.now >= deadline {
                throw SlotError.unavailable(slot: name, waited: ContinuousClock.now - enqueued)
            }
            return
        }
        try Task.checkCancellation()
        if executor.isShuttingDown { throw SlotError.shutDown(slot: name) }
        if let deadline, ContinuousClock.now >= deadline {
            throw SlotError.unavailable(slot: name, waited: ContinuousClock.now - enqueued)
        }
    }

    private func map(_ error: ExecutorError, since enqueued: ContinuousClock.Instant) -> any Error {
        switch error {
        case .overloaded(let depth, let retry): SlotError.overloaded(slot: name, queueDepth: depth, retryAfter: retry)
        case .deadlineExceeded: SlotError.timedOutInQueue(slot: name, waited: ContinuousClock.now - enqueued)
        case .shutDown: SlotError.shutDown(slot: name)
        }
    }

    // MARK: Role changes (called by the control plane, serialized per slot)

    /// Puts a loaded model in the staged role; a model it replaces is retired.
    func stage(_ model: ModelInstance) { put(model, in: \.staged) }

    /// Drops the staged model, if any; returns it (retired).
    @discardableResult
    func discardStaged() -> ModelIdentity? {
        guard let staged = state.withLock({ s -> ModelInstance? in
            defer { s.roles.staged = nil }
            return s.roles.staged
        }) else { return nil }
        releaser.retire(staged)
        return staged.identity
    }

    /// Drops the staged model, if any, and returns its identity once its memory is freed (after its last request).
    func discardStagedAndWait() async -> ModelIdentity? {
        guard let staged = state.withLock({ s -> ModelInstance? in
            defer { s.roles.staged = nil }
            return s.roles.staged
        }) else { return nil }
        let identity = staged.identity
        await releaser.retireAndWait(consume staged)
        return identity
    }

    /// Flips `model` in as the active model. The previous active model becomes the standby when `keepStandby`,
    /// otherwise it is retired, and so is any standby; a replaced standby is retired. Requests waiting for a model are
    /// resumed.
    func activate(_ model: ModelInstance, keepStandby: Bool) -> FlipResult {
        let clock = ContinuousClock()
        var previous: ModelInstance?
        var displaced: [ModelInstance] = []
        var waiters: [CheckedContinuation<Void, Never>] = []
        var generation = 0
        let start = clock.now
        state.withLock { s in
            previous = s.roles.active
            s.roles.active = model
            s.roles.generation += 1
            generation = s.roles.generation
            if s.roles.staged === model { s.roles.staged = nil }
            if s.roles.standby === model { s.roles.standby = nil }
            if let previous, keepStandby {
                if let old = s.roles.standby { displaced.append(old) }
                s.roles.standby = previous
            } else if let previous {
                displaced.append(previous)
                // Nor a standby already there (kept by a promotion or a rollback under `release`): left, it outlived
                // the retention for good, and a rollback went to it past the model just replaced.
                if let old = s.roles.standby {
                    displaced.append(old)
                    s.roles.standby = nil
                }
            }
            waiters = Array(s.waiters.values)
            s.waiters.removeAll()
        }
        let elapsed = clock.now - start
        model.reservation?.release()  // counted as the slot's now
        waiters.forEach { $0.resume() }
        displaced.forEach(releaser.retire)
        return FlipResult(generation: generation, microseconds: elapsed.milliseconds * 1000, previous: previous)
    }

    /// Takes the active model out (resource-preserving swaps): requests wait until a model is activated.
    func deactivate() -> ModelInstance? {
        state.withLock { s in
            defer { s.roles.active = nil }
            return s.roles.active
        }
    }

    /// Swaps the active and standby models: a rollback without loading anything.
    func flipToStandby() -> FlipResult? {
        let clock = ContinuousClock()
        let start = clock.now
        let flipped = state.withLock { s -> (Int, ModelInstance?)? in
            guard let standby = s.roles.standby else { return nil }
            let previous = s.roles.active
            s.roles.active = standby
            s.roles.standby = previous
            s.roles.generation += 1
            return (s.roles.generation, previous)
        }
        let elapsed = clock.now - start
        guard let (generation, previous) = flipped else { return nil }
        return FlipResult(generation: generation, microseconds: elapsed.milliseconds * 1000, previous: previous)
    }

    /// Sets the generation (restoring a committed state at start).
    func setGeneration(_ generation: Int) { state.withLock { $0.roles.generation = generation } }

    /// Puts a loaded model in the standby role (restoring a committed standby at start).
    func setStandby(_ model: ModelInstance) { put(model, in: \.standby) }

    /// Puts `model` in a role; the model it replaces there, if another, is retired.
    private func put(_ model: ModelInstance, in role: WritableKeyPath<SlotRoles, ModelInstance?>) {
        let replaced = state.withLock { s -> ModelInstance? in
            defer { s.roles[keyPath: role] = model }
            return s.roles[keyPath: role]
        }
        model.reservation?.release()  // counted as the slot's now
        if let replaced, replaced !== model { releaser.retire(replaced) }
    }

    /// Releases the standby (retention expired, or memory is needed); when `only` is given, only if the standby is
    /// still that model.
    @discardableResult
    func dropStandby(only: ModelInstance? = nil) -> ModelIdentity? {
        guard let standby = state.withLock({ s -> ModelInstance? in
            guard let current = s.roles.standby, only == nil || only === current else { return nil }
            s.roles.standby = nil
            return current
        }) else { return nil }
        releaser.retire(standby)
        return standby.identity
    }

    /// Releases the standby and returns once its memory is freed (after its last request, if any is still running).
    /// - Returns: whether there was a standby.
    @discardableResult
    func releaseStandbyAndWait() async -> Bool {
        guard let standby = state.withLock({ s -> ModelInstance? in
            defer { s.roles.standby = nil }
            return s.roles.standby
        }) else { return false }
        await releaser.retireAndWait(consume standby)
        return true
    }

    /// Retires every model (shutdown).
    func retireAll() {
        let (all, waiters) = state.withLock { s -> ([ModelInstance], [CheckedContinuation<Void, Never>]) in
            defer {
                s.roles = SlotRoles(generation: s.roles.generation)
                s.waiters.removeAll()
            }
            return ([s.roles.active, s.roles.staged, s.roles.standby].compactMap { $0 }, Array(s.waiters.values))
        }
        all.forEach(releaser.retire)
        // Requests waiting for a model learn that none will come (the executor is shutting down by now).
        waiters.forEach { $0.resume() }
    }
}
