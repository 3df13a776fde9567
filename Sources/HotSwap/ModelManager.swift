import Foundation
import Logging
import Synchronization
import YOLO

/// Errors of control-plane operations (the load failures themselves are in `LoadFailure`).
public enum ControlError: Error, Equatable, CustomStringConvertible {
    case unknownSlot(String)
    case slotExists(String)
    case nothingStaged(slot: String)
    case nothingToRollBackTo(slot: String)
    case loadFailed(slot: String, LoadFailure)

    public var description: String {
        switch self {
        case .unknownSlot(let slot): "unknown slot '\(slot)'"
        case .slotExists(let slot): "slot '\(slot)' already exists"
        case .nothingStaged(let slot): "slot '\(slot)' has no staged model to switch to"
        case .nothingToRollBackTo(let slot): "slot '\(slot)' has no standby and no previous model to roll back to"
        case .loadFailed(let slot, let failure): "slot '\(slot)': \(failure)"
        }
    }
}

/// The control plane: one API for every trigger (HTTP, MQTT, file watchers, the CLI) to load, switch, roll back and
/// discard models in named slots.
///
/// Operations on one slot are serialized (each waits for the previous one); slots are independent. Concurrent loads
/// of the same model share one operation, and a newer load supersedes an older one still in progress. Every
/// completed operation emits a `SwapEvent` (stored when a `StateStore` is given, and streamed to `events()`), and
/// every change of the active model is committed to the store, so a restart restores the last committed state.
///
/// Thread-safety: an actor; serving requests go straight to the `ModelSlot`s and never wait on it.
public actor ModelManager {
    public nonisolated let configuration: HotSwapConfiguration
    public nonisolated let releaser: ModelReleaser
    nonisolated let loadExecutor: InferenceExecutor
    private nonisolated let pipeline: LoadPipeline
    private nonisolated let store: StateStore?
    private nonisolated let logger: Logger
    private nonisolated let registry = Locked<[String: ModelSlot]>([:])
    private nonisolated let ledger: MemoryLedger
    private nonisolated let releaseLog = Locked<[ModelRelease]>([])

    private var operations: [String: LoadOperation] = [:]
    private var operationOrder: [String] = []
    private var currentLoad: [String: LoadOperation] = [:]
    private var tails: [String: Task<Void, Never>] = [:]
    private var previousModels: [String: [ModelRecord]] = [:]
    private var recent: [SwapEvent] = []
    private var subscribers: [UUID: AsyncStream<SwapEvent>.Continuation] = [:]

    /// - Parameters:
    ///   - loader: makes inference backends from verified bytes (`ORTModelLoader` in production).
    ///   - verifier: checks signatures in the verifying stage.
    ///   - store: where committed state and events persist; nil keeps everything in memory.
    public init(configuration: HotSwapConfiguration = .init(), loader: any ModelLoader,
                verifier: (any ModelVerifier)? = nil, store: StateStore? = nil,
                logger: Logger = Logger(label: "yoloswap.hotswap")) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        let releaser = ModelReleaser()
        self.releaser = releaser
        let loadExecutor = InferenceExecutor(label: "yoloswap.load", threads: max(1, configuration.loadThreads),
            queueCapacity: 256, priority: .background)
        self.loadExecutor = loadExecutor
        let ledger = MemoryLedger(budget: configuration.memoryBudgetBytes)
        self.ledger = ledger
        let registry = self.registry
        let releaseLog = self.releaseLog
        self.pipeline = LoadPipeline(
            loader: loader, verifier: verifier, executor: loadExecutor, configuration: configuration,
            onRelease: { release in
                releaseLog.withLock {
                    $0.append(release)
                    if $0.count > 1000 { $0.removeFirst($0.count - 1000) }
                }
                logger.debug("model released", metadata: ["model": "\(release.identity.id)",
                    "thread": "\(release.threadName)"])
            },
            checkBudget: { sha, size, path throws(LoadFailure) in
                let inUse = registry.withLock { $0.values.reduce(0) { $0 + $1.memoryInUse } }
                try ledger.check(sha256: sha, byteCount: size, inUse: inUse, path: path)
            },
            recordCost: { sha, bytes in ledger.record(sha256: sha, bytes: bytes) })
    }

    // MARK: Slots

    /// Creates an empty slot with its own worker threads and queue.
    @discardableResult
    public func createSlot(_ name: String) throws -> ModelSlot {
        try registry.withLock { slots in
            guard slots[name] == nil else { throw ControlError.slotExists(name) }
            let executor = InferenceExecutor(label: "slot-\(name)", threads: max(1, configuration.servingThreads),
                queueCapacity: max(1, configuration.queueCapacity))
            let slot = ModelSlot(name: name, executor: executor, releaser: releaser)
            slots[name] = slot
            return slot
        }
    }

    /// The slot named `name`, if it exists. Callable from any thread without waiting on the actor.
    public nonisolated func slot(_ name: String) -> ModelSlot? { registry.withLock { $0[name] } }

    public nonisolated var slotNames: [String] { registry.withLock { $0.keys.sorted() } }

    /// The most recent model releases (identity, thread, in-flight count at release; up to 1000): for tests and
    /// diagnostics.
    public nonisolated var releases: [ModelRelease] { releaseLog.withLock { $0 } }

    /// Measured memory cost per model digest, in bytes.
    public nonisolated var memoryCosts: [String: Int] { ledger.costs }

    // MARK: Operations

    /// Starts loading a model into a slot in the background and returns the operation at once.
    ///
    /// A load of the same slot, file and digest already in progress is returned instead of starting another; a
    /// different load in progress for the slot is cancelled (superseded).
    /// - Throws: `ControlError.unknownSlot`.
    public func load(_ request: LoadRequest) throws -> LoadOperation {
        guard let slot = slot(request.slot) else { throw ControlError.unknownSlot(request.slot) }
        if let current = currentLoad[request.slot], !current.status.stage.isTerminal {
            if current.request.sharingKey == request.sharingKey { return current }
            current.cancel(reason: "superseded by a newer load of \(request.path)")
        }
        let op = LoadOperation(request: request)
        remember(op)
        currentLoad[request.slot] = op
        enqueue(request.slot) { manager in await manager.performLoad(op, slot: slot) }
        return op
    }

    /// A load operation by id (the most recent few hundred are kept).
    public func operation(_ id: String) -> LoadOperation? { operations[id] }

    /// The slot's most recent load operation (running or finished).
    public func latestOperation(slot: String) -> LoadOperation? { currentLoad[slot] }

    /// Loads the slot's initial model and activates it; waits for the result.
    public func loadAndActivate(_ request: LoadRequest) async throws -> LoadOperation.Status {
        var request = request
        request.activate = true
        let status = await (try load(request)).wait()
        if let failure = status.failure { throw ControlError.loadFailed(slot: request.slot, failure) }
        return status
    }

    /// Switches the staged model in.
    /// - Throws: `ControlError.nothingStaged` when nothing is staged.
    public func switchStaged(slot name: String) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in
            guard let staged = slot.roles.staged else { throw ControlError.nothingStaged(slot: name) }
            let flip = await manager.activate(staged, in: slot)
            var timings = LoadTimings()
            timings.flipMicroseconds = flip.microseconds
            return await manager.emit(SwapEvent(slot: name, operation: .switch, result: .succeeded,
                from: flip.previous?.identity, to: staged.identity, generation: flip.generation, timings: timings))
        }
    }

    /// Rolls back: flips the warm standby in (microseconds), or, without one, reloads the previous model from its
    /// recorded path and digest through the full pipeline.
    public func rollback(slot name: String) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in try await manager.performRollback(slot) }
    }

    /// Discards the staged model.
    public func discardStaged(slot name: String) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in
            guard let identity = slot.discardStaged() else { throw ControlError.nothingStaged(slot: name) }
            return await manager.emit(SwapEvent(slot: name, operation: .discard, result: .succeeded, from: identity))
        }
    }

    /// Restores every committed slot from the store: the active model re-verified against its recorded digest, then
    /// the standby. Returns one event per slot.
    public func restore() async -> [SwapEvent] {
        guard let store else { return [] }
        let committed: [CommittedSlot]
        do { committed = try store.committedSlots() } catch {
            logger.error("cannot read committed state", metadata: ["error": "\(error)"])
            return []
        }
        var events: [SwapEvent] = []
        for entry in committed {
            let slot = self.slot(entry.slot) ?? (try? createSlot(entry.slot))
            guard let slot else { continue }
            let request = LoadRequest(slot: entry.slot, path: entry.active.path, version: entry.active.version,
                expectedSHA256: entry.active.sha256, activate: true, allowSchemaChange: true)
            let op = LoadOperation(request: request)
            remember(op)
            // The activation below adds one: the restored model comes back with its committed generation, in the
            // same flip that makes the slot ready.
            slot.setGeneration(max(0, entry.generation - 1))
            let event: SwapEvent = await serialized(entry.slot) { manager in
                await manager.performLoad(op, slot: slot, operation: .restore)
            }
            events.append(event)
            guard event.result == .succeeded else { continue }
            // The standby comes back too (best effort).
            if let standby = entry.standby {
                let standbyOp = LoadOperation(request: LoadRequest(slot: entry.slot, path: standby.path,
                    version: standby.version, expectedSHA256: standby.sha256, allowSchemaChange: true))
                do {
                    slot.setStandby(try await pipeline.run(standbyOp, active: nil))
                    standbyOp.finish(.ready)
                } catch {
                    standbyOp.finish(.failed, failure: error)
                    logger.warning("standby not restored", metadata: ["slot": "\(entry.slot)", "error": "\(error)"])
                }
            }
            commit(slot)
        }
        return events
    }

    /// A stream of every event from now on.
    public func events() -> AsyncStream<SwapEvent> {
        let (stream, continuation) = AsyncStream<SwapEvent>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        let id = UUID()
        subscribers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.unsubscribe(id) }
        }
        return stream
    }

    /// The most recent events, newest first.
    public func recentEvents(slot: String? = nil, limit: Int = 100) -> [SwapEvent] {
        Array(recent.reversed().filter { slot == nil || $0.slot == slot }.prefix(limit))
    }

    /// Cancels loads in progress, stops the slots' workers after their queued requests, and releases every model.
    public func shutdown() async {
        currentLoad.values.forEach { $0.cancel(reason: "shutting down") }
        for task in tails.values { await task.value }
        for slot in registry.withLock({ Array($0.values) }) {
            await slot.executor.shutdown()
            slot.retireAll()
        }
        await loadExecutor.shutdown()
        releaser.shutdown()
        subscribers.values.forEach { $0.finish() }
    }

    // MARK: Implementation

    private func unsubscribe(_ id: UUID) { subscribers[id] = nil }

    private func remember(_ op: LoadOperation) {
        operations[op.id] = op
        operationOrder.append(op.id)
        if operationOrder.count > 500 { operations[operationOrder.removeFirst()] = nil }
    }

    /// Runs `body` after every operation queued before it on the same slot.
    private func serialized<T: Sendable>(_ slot: String, _ body: @escaping @Sendable (ModelManager) async throws -> T)
        async throws -> T
    {
        let previous = tails[slot]
        let task = Task { [self] in
            await previous?.value
            return try await body(self)
        }
        tails[slot] = Task { _ = try? await task.value }
        return try await task.value
    }

    private func serialized<T: Sendable>(_ slot: String, _ body: @escaping @Sendable (ModelManager) async -> T)
        async -> T
    {
        let previous = tails[slot]
        let task = Task { [self] in
            await previous?.value
            return await body(self)
        }
        tails[slot] = Task { _ = await task.value }
        return await task.value
    }

    private func enqueue(_ slot: String, _ body: @escaping @Sendable (ModelManager) async -> SwapEvent) {
        let previous = tails[slot]
        tails[slot] = Task { [self] in
            await previous?.value
            _ = await body(self)
        }
    }

    private func performLoad(_ op: LoadOperation, slot: ModelSlot, operation: SwapEvent.Operation = .load) async
        -> SwapEvent
    {
        let request = op.request
        // Only what is needed of the active model: holding the instance here would keep it alive (and delay its
        // release) after it leaves every role.
        let previous = slot.roles.active.map { (identity: $0.identity, signature: $0.signature) }
        if op.isCancelled {
            return emit(event(for: op, operation: operation, from: previous?.identity))
        }
        let policy = resolvedPolicy(for: request, slot: slot)
        if request.activate, policy == .resourcePreserving, let previous {
            return await performResourcePreservingLoad(op, slot: slot, previous: previous.identity,
                previousSignature: previous.signature, operation: operation)
        }
        do throws(LoadFailure) {
            // A switch displaces the standby anyway: free it before the new session exists (old + new, not three).
            let releaseStandby = request.activate && configuration.releaseStandbyBeforeLoad
            let model = try await pipeline.run(op, active: previous?.signature) {
                if releaseStandby { await slot.releaseStandbyAndWait() }
            }
            if op.isCancelled {
                // Cancelled after the pipeline's last check: the model never takes a role.
                releaser.retire(model)
                throw LoadFailure.cancelled(path: request.path, reason: "superseded or cancelled")
            }
            if request.activate {
                let flip = activate(model, in: slot)
                op.update {
                    $0.timings.flipMicroseconds = flip.microseconds
                    $0.generation = flip.generation
                }
            } else {
                slot.stage(model)
            }
            op.finish(.ready)
        } catch {
            op.finish(error.isCancellation ? .cancelled : .failed, failure: error)
        }
        return emit(event(for: op, operation: operation, from: previous?.identity))
    }

    /// Drain and release the old model first, then load; on failure, bring the old model back.
    private func performResourcePreservingLoad(_ op: LoadOperation, slot: ModelSlot,
                                               previous previousRecord: ModelIdentity,
                                               previousSignature: ModelSignature,
                                               operation: SwapEvent.Operation) async -> SwapEvent {
        slot.dropStandby()
        slot.discardStaged()
        guard let drained = slot.deactivate() else {
            op.finish(.failed, failure: .cancelled(path: op.request.path, reason: "the active model vanished"))
            return emit(event(for: op, operation: operation, from: previousRecord))
        }
        // Hand over this last reference: the releaser frees the model only once it holds the only one.
        await releaser.retireAndWait(consume drained)
        do {
            let model = try await pipeline.run(op, active: previousSignature)
            let flip = activate(model, in: slot, keepStandby: false)
            op.update {
                $0.timings.flipMicroseconds = flip.microseconds
                $0.generation = flip.generation
            }
            op.finish(.ready)
            return emit(event(for: op, operation: operation, from: previousRecord))
        } catch {
            op.finish(error.isCancellation ? .cancelled : .failed, failure: error)
            var failed = event(for: op, operation: operation, from: previousRecord)
            // Bring the previous model back through the same verified pipeline.
            let restore = LoadOperation(request: LoadRequest(slot: slot.name, path: previousRecord.path,
                name: previousRecord.name, version: previousRecord.version, expectedSHA256: previousRecord.sha256,
                allowSchemaChange: true))
            do {
                let model = try await pipeline.run(restore, active: nil)
                _ = activate(model, in: slot, keepStandby: false)
                failed.reason = (failed.reason ?? "") + "; previous model \(previousRecord.id) restored"
            } catch {
                failed.reason = (failed.reason ?? "") + "; restoring \(previousRecord.id) failed too: \(error)"
                logger.critical("slot has no active model", metadata: ["slot": "\(slot.name)"])
            }
            return emit(failed)
        }
    }

    private func performRollback(_ slot: ModelSlot) async throws -> SwapEvent {
        if let standby = slot.roles.standby, let flip = slot.flipToStandby() {
            commit(slot)
            var timings = LoadTimings()
            timings.flipMicroseconds = flip.microseconds
            return emit(SwapEvent(slot: slot.name, operation: .rollback, result: .succeeded,
                from: flip.previous?.identity, to: standby.identity, generation: flip.generation, timings: timings))
        }
        guard let record = previousModels[slot.name]?.last else {
            throw ControlError.nothingToRollBackTo(slot: slot.name)
        }
        let op = LoadOperation(request: LoadRequest(slot: slot.name, path: record.path, version: record.version,
            expectedSHA256: record.sha256, activate: true, allowSchemaChange: true))
        remember(op)
        let event = await performLoad(op, slot: slot, operation: .rollback)
        if let failure = op.status.failure { throw ControlError.loadFailed(slot: slot.name, failure) }
        return event
    }

    /// Flips a model in, applies the standby retention, records the previous model and commits the new state.
    private func activate(_ model: ModelInstance, in slot: ModelSlot, keepStandby: Bool? = nil) -> FlipResult {
        let keep = keepStandby ?? (configuration.standbyRetention != .release)
        let flip = slot.activate(model, keepStandby: keep)
        if let previous = flip.previous {
            previousModels[slot.name, default: []].append(previous.identity.record)
            if previousModels[slot.name]!.count > 10 { previousModels[slot.name]!.removeFirst() }
            if case .keepFor(let duration) = configuration.standbyRetention {
                // Weak: a standby replaced or released before the time is up must not be kept alive by this task.
                Task { [weak slot, weak previous] in
                    try? await Task.sleep(for: duration)
                    guard let previous else { return }
                    slot?.dropStandby(only: previous)
                }
            }
        }
        commit(slot)
        return flip
    }

    private func commit(_ slot: ModelSlot) {
        configuration.beforeCommit?(slot.name)
        guard let store else { return }
        let roles = slot.roles
        guard let active = roles.active else { return }
        do {
            try store.commit(CommittedSlot(slot: slot.name, active: active.identity.record,
                standby: roles.standby?.identity.record, generation: roles.generation))
        } catch {
            logger.error("cannot commit slot state", metadata: ["slot": "\(slot.name)", "error": "\(error)"])
        }
    }

    private func resolvedPolicy(for request: LoadRequest, slot: ModelSlot) -> SwapPolicy {
        let policy = request.policy ?? configuration.policy
        guard policy == .auto else { return policy }
        guard let budget = configuration.memoryBudgetBytes else { return .availabilityPreserving }
        let inUse = registry.withLock { $0.values.reduce(0) { $0 + $1.memoryInUse } }
        let estimate = ledger.estimate(sha256: request.expectedSHA256, path: request.path)
        return inUse + estimate <= budget ? .availabilityPreserving : .resourcePreserving
    }

    private func event(for op: LoadOperation, operation: SwapEvent.Operation, from: ModelIdentity?) -> SwapEvent {
        let status = op.status
        let result: SwapEvent.Outcome =
            switch status.stage {
            case .ready: .succeeded
            case .cancelled: .cancelled
            default: .failed
            }
        return SwapEvent(slot: op.request.slot, operation: op.request.activate && operation == .load ? .activate
            : operation, result: result, reason: status.failure?.description, from: from, to: status.identity,
            generation: status.generation, timings: status.timings, operationID: op.id)
    }

    @discardableResult
    private func emit(_ event: SwapEvent) -> SwapEvent {
        recent.append(event)
        if recent.count > 1000 { recent.removeFirst(recent.count - 1000) }
        if let store {
            do { try store.append(event.record) } catch {
                logger.error("cannot store event", metadata: ["error": "\(error)"])
            }
        }
        subscribers.values.forEach { $0.yield(event) }
        var metadata: Logger.Metadata = ["slot": "\(event.slot)", "operation": "\(event.operation.rawValue)",
            "result": "\(event.result.rawValue)"]
        if let to = event.to { metadata["model"] = "\(to.id)" }
        if let reason = event.reason { metadata["reason"] = "\(reason)" }
        if event.result == .failed { logger.warning("swap operation failed", metadata: metadata) }
        else { logger.info("swap operation", metadata: metadata) }
        return event
    }
}

extension ModelSlot {
    /// Measured memory of the models this slot holds in any role.
    var memoryInUse: Int {
        let roles = self.roles
        return [roles.active, roles.staged, roles.standby].compactMap { $0 }.reduce(0) { $0 + $1.memoryBytes }
    }
}

extension LoadFailure {
    var isCancellation: Bool { if case .cancelled = self { true } else { false } }
}

/// Memory costs per model digest and the budget check.
///
/// Thread-safety: guarded by a mutex.
final class MemoryLedger: Sendable {
    let budget: Int?
    private let measured = Locked<[String: Int]>([:])
    /// A model not measured yet is assumed to cost this many times its file size (weights plus ORT's buffers).
    static let unknownCostFactor = 2

    init(budget: Int?) { self.budget = budget }

    var costs: [String: Int] { measured.withLock { $0 } }

    func record(sha256: String, bytes: Int) { measured.withLock { $0[sha256] = bytes } }

    func estimate(sha256: String?, path: String) -> Int {
        if let sha256, let known = measured.withLock({ $0[sha256] }) { return known }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return size * Self.unknownCostFactor
    }

    func check(sha256: String, byteCount: Int, inUse: Int, path: String) throws(LoadFailure) {
        guard let budget else { return }
        let needed = measured.withLock { $0[sha256] } ?? byteCount * Self.unknownCostFactor
        if inUse + needed > budget {
            throw .overMemoryBudget(path: path, neededBytes: needed, budgetBytes: budget, inUseBytes: inUse)
        }
    }
}
