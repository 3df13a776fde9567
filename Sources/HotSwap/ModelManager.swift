import Foundation
import Logging
import Primitives
import YOLO

/// Errors of control-plane operations (the load failures themselves are in `LoadFailure`).
public enum ControlError: Error, Equatable, CustomStringConvertible {
    case unknownSlot(String)
    case slotExists(String)
    case nothingStaged(slot: String)
    /// The staged model is not the one the caller staged (another load replaced it): nothing was switched.
    case stagedChanged(slot: String, expected: String)
    case nothingToRollBackTo(slot: String)
    case loadFailed(slot: String, LoadFailure)
    /// The state store could not record the change: nothing was changed.
    case notCommitted(slot: String, reason: String)
    /// Another load of the slot is in progress, and this one was asked not to supersede it.
    case loadInProgress(slot: String, path: String)
    /// The state store could not be read at a restore: what is committed is unknown.
    case stateUnreadable(reason: String)

    public var description: String {
        switch self {
        case .unknownSlot(let slot): "unknown slot '\(slot)'"
        case .slotExists(let slot): "slot '\(slot)' already exists"
        case .nothingStaged(let slot): "slot '\(slot)' has no staged model to switch to"
        case .stagedChanged(let slot, let expected):
            "slot '\(slot)' has another staged model than \(expected), which another load replaced: nothing switched"
        case .nothingToRollBackTo(let slot): "slot '\(slot)' has no standby and no previous model to roll back to"
        case .loadFailed(let slot, let failure): "slot '\(slot)': \(failure)"
        case .notCommitted(let slot, let reason):
            "slot '\(slot)' is unchanged: the state store could not record the change (\(reason))"
        case .stateUnreadable(let reason):
            "the committed state cannot be read (\(reason)): nothing restored; fix or move the state store aside"
        case .loadInProgress(let slot, let path):
            "slot '\(slot)' has a load of \(URL(fileURLWithPath: path).lastPathComponent) in progress: wait for it"
        }
    }
}

/// The control plane: one API for every trigger (HTTP, MQTT, file watchers, the CLI) to load, switch, roll back and
/// discard models in named slots.
///
/// Operations on one slot are serialized (each waits for the previous one); slots are independent. Concurrent loads
/// of the same model share one operation, and a newer load supersedes an older one still in progress. Every
/// completed operation emits a `SwapEvent` (stored when a store is given, and streamed to `events()`), and every
/// change of the active model is committed to the store before it is made: a change the store cannot record is not
/// made (the operation fails, the active model keeps serving), and a restart restores the last committed state.
///
/// The store's calls block (SQLite, fsync): they run on the manager's own serial queue, in order, and the actor only
/// awaits them — it never blocks a thread of Swift's cooperative pool. The queue is shared by all slots (one SQLite
/// file): a slow commit delays other slots' changes too (each waits for its own commit), never their requests. The
/// operations themselves are in `ModelManager+Operations.swift`.
///
/// Thread-safety: an actor; serving requests go straight to the `ModelSlot`s and never wait on it.
public actor ModelManager {
    public nonisolated let configuration: HotSwapConfiguration
    public nonisolated let releaser: ModelReleaser
    nonisolated let loadExecutor: InferenceExecutor
    nonisolated let pipeline: LoadPipeline
    nonisolated let store: (any SlotStateStore)?
    /// Runs the manager's blocking calls — the store's (SQLite, fsync) and file metadata reads — one at a time, in
    /// the order they were made, off the cooperative pool.
    nonisolated let ioQueue = BlockingQueue(label: "yoloswap.state")
    nonisolated let logger: Logger
    nonisolated let registry = Locked<[String: ModelSlot]>([:])
    nonisolated let ledger: MemoryLedger
    nonisolated let eventLog = SwapEventLog()
    /// Loads' stage changes, for subscribers that show progress (`subscribeLoadProgress`).
    nonisolated let loadProgress = LoadProgressLog()

    var operations: [String: LoadOperation] = [:]
    var operationOrder: [String] = []
    var currentLoad: [String: LoadOperation] = [:]
    /// Per slot, the last operation queued: the next one waits for it.
    var tails: [String: Task<Void, Never>] = [:]
    /// Per slot, the models that were active before and where they ran (newest last, up to 10): what a rollback
    /// without a standby reloads.
    var previousModels: [String: [(record: ModelRecord, target: ExecutionTarget)]] = [:]
    /// Per slot, the standby retention timer that may still release the standby (`armRetention`): an older timer
    /// finds another token here and leaves the standby alone.
    var retentionTimers: [String: UUID] = [:]
    /// Restores under way — at a start, a rollback's reload, a failed resource-preserving load's previous model
    /// brought back — not superseded by other loads; cancelled only by shutdown.
    var restoring: [String: LoadOperation] = [:]
    /// Set by `cancelLoads`/`shutdown`: no new restore starts, and a load asked for is cancelled at once.
    public private(set) var isShuttingDown = false
    /// Set by `cancelLoads` unless it keeps restores: a failed resource-preserving load's restore is cancelled too.
    var cancelsRestores = false
    /// Slots whose entry in `restoring` brings back the model a failed resource-preserving load released.
    var bringingBack: Set<String> = []

    /// - Parameters:
    ///   - loader: makes inference backends from verified model files (`ORTBackend.ORTModelLoader` in production).
    ///   - verifier: checks signatures in the verifying stage.
    ///   - store: where committed state and events persist; nil keeps everything in memory.
    ///   - releaseObserver: told of every model released (identity, thread, in-flight count), on the releaser's
    ///     thread; for logs, metrics and tests.
    public init(configuration: HotSwapConfiguration = .init(), loader: any ModelLoader,
                verifier: (any ModelVerifier)? = nil, store: (any SlotStateStore)? = nil,
                logger: Logger = Logger(label: "yoloswap.hotswap"),
                releaseObserver: (@Sendable (ModelRelease) -> Void)? = nil) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        let releaser = ModelReleaser()
        self.releaser = releaser
        let loadExecutor = InferenceExecutor(label: "yoloswap.load", threads: max(1, configuration.loadThreads),
            queueCapacity: 256, priority: .background)
        self.loadExecutor = loadExecutor
        let ledger = MemoryLedger(hostBudget: configuration.memoryBudgetBytes,
            gpuBudgets: configuration.gpuMemoryBudgets)
        self.ledger = ledger
        let registry = self.registry
        self.pipeline = LoadPipeline(
            loader: loader, verifier: verifier, executor: loadExecutor, configuration: configuration,
            onRelease: { release in
                logger.debug("model released", metadata: ["model": "\(release.identity.id)",
                    "thread": "\(release.threadName)"])
                releaseObserver?(release)
            },
            reserveBudget: { sha, size, execution, path, freed throws(LoadFailure) in
                try ledger.reserve(ledger.estimate(sha256: sha, byteCount: size, execution: execution), inUse: {
                    ModelManager.memoryHeld(in: registry).merging(freed.mapValues { -$0 }, uniquingKeysWith: +)
                }, path: path)
            },
            recordCost: { sha, target, bytes in ledger.record(sha256: sha, target: target, bytes: bytes) })
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

    /// Measured memory cost per model digest (models run on the CPU), in bytes.
    public nonisolated var memoryCosts: [String: Int] { ledger.costs }

    /// Memory reserved by loads under way, per device (bytes): their models' estimates, from their budget check until
    /// they end; empty when none runs.
    public nonisolated var memoryReserved: [ComputeDevice: Int] { ledger.reserved }

    /// Memory the models of every slot hold now, per device (bytes): measured on the host, estimated on GPUs.
    public nonisolated var memoryInUse: [ComputeDevice: Int] { Self.memoryHeld(in: registry) }

    static func memoryHeld(in registry: Locked<[String: ModelSlot]>) -> [ComputeDevice: Int] {
        registry.withLock { slots in
            slots.values.reduce(into: [:]) { total, slot in total.merge(slot.memoryByDevice, uniquingKeysWith: +) }
        }
    }

    // MARK: Operations

    /// Starts loading a model into a slot in the background and returns the operation at once.
    ///
    /// A load of the same slot, file and digest already in progress is returned instead of starting another; a
    /// different load in progress for the slot is cancelled (superseded), or with `supersede: false` left alone and
    /// this one refused (a release's candidate must not cancel an operator's load).
    /// - Throws: `ControlError.unknownSlot`, `.loadInProgress`.
    public func load(_ request: LoadRequest, supersede: Bool = true) throws -> LoadOperation {
        guard let slot = slot(request.slot) else { throw ControlError.unknownSlot(request.slot) }
        if let current = currentLoad[request.slot], !current.status.stage.isTerminal {
            if current.request.sharingKey == request.sharingKey { return current }
            guard supersede else { throw ControlError.loadInProgress(slot: request.slot, path: current.request.path) }
            current.cancel(reason: "superseded by a newer load of \(request.path)")
        }
        let op = LoadOperation(request: request)
        op.observeStages { [loadProgress] in loadProgress.record($0) }
        remember(op)
        currentLoad[request.slot] = op
        // Asked for after `cancelLoads`: cancelled before it starts, as the loads under way were.
        if isShuttingDown { op.cancel(reason: "shutting down") }
        enqueue(request.slot) { manager in _ = await manager.performLoad(op, slot: slot) }
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
    /// - Parameter expecting: the staged model the caller means (its load's identity): checked in the slot's turn,
    ///   so that a load another caller finished meanwhile is not switched in instead (`.stagedChanged`).
    public func switchStaged(slot name: String, expecting: ModelIdentity? = nil) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in
            try Self.check(slot, stages: expecting)
            return try await manager.performSwitch(slot)
        }
    }

    /// Throws `.stagedChanged` unless `slot` stages the model `expected` names (its file, digest and version), if
    /// any is expected. A load of the same file, digest and version by another caller passes: it is the same model.
    private static func check(_ slot: ModelSlot, stages expected: ModelIdentity?) throws {
        guard let expected, let staged = slot.roles.staged?.identity else { return }
        if staged.sha256 != expected.sha256 || staged.path != expected.path || staged.version != expected.version {
            throw ControlError.stagedChanged(slot: slot.name,
                expected: "\(expected.path) (\(expected.sha256.prefix(12)))")
        }
    }

    /// Promotes the staged model (a release's candidate): it becomes active and the previous active model the warm
    /// standby, whatever the standby retention, so that an instant manual rollback stays possible.
    /// - Parameter expecting: the staged model the caller means (a release's candidate); another one staged meanwhile
    ///   is not promoted (`.stagedChanged`).
    /// - Throws: `ControlError.nothingStaged` when nothing is staged.
    public func promoteStaged(slot name: String, expecting: ModelIdentity? = nil) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in
            try Self.check(slot, stages: expecting)
            return try await manager.performSwitch(slot, keepStandby: true)
        }
    }

    /// Records an event that another module's operation produced (a release's steps): stored, streamed, logged like
    /// the manager's own.
    @discardableResult
    public func record(_ event: SwapEvent) async -> SwapEvent { await emit(event) }

    /// Rolls back: flips the warm standby in (microseconds), or, without one, reloads the previous model from its
    /// recorded path and digest through the full pipeline.
    public func rollback(slot name: String) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in try await manager.performRollback(slot) }
    }

    /// Discards the staged model.
    /// - Parameter expecting: the staged model the caller means; another one staged meanwhile is left staged
    ///   (`.stagedChanged`).
    public func discardStaged(slot name: String, expecting: ModelIdentity? = nil) async throws -> SwapEvent {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return try await serialized(name) { manager in
            try Self.check(slot, stages: expecting)
            guard let identity = slot.discardStaged() else { throw ControlError.nothingStaged(slot: name) }
            return await manager.emit(SwapEvent(slot: name, operation: .discard, result: .succeeded, from: identity))
        }
    }

    /// Restores every committed slot from the store (or those `only` names), each through its operation queue like
    /// any other operation: the active model re-verified against its recorded digest; then, queued behind every active
    /// model, the standby (best effort).
    /// - Parameters:
    ///   - only: the slots to restore; nil restores all. The others' committed state is left as it is.
    ///   - standbysInBackground: return once the active models are back (a service is ready then), leaving the
    ///     standbys to come back in their slots' queues; else return once they are back too.
    ///   - refusal: why a committed model may not be loaded (e.g. its path now lies outside the model repository),
    ///     or nil when it may: a refused active model leaves its slot empty, a refused standby is dropped.
    /// - Returns: one event per slot (the active model's restore).
    /// - Throws: `ControlError.stateUnreadable` when the store cannot be read: nothing is restored, and the caller
    ///   must not take that for a store with nothing committed (loading other models would overwrite the state).
    public func restore(only: Set<String>? = nil, standbysInBackground: Bool = false,
                        refusal: @Sendable (ModelRecord) -> String? = { _ in nil }) async throws(ControlError)
        -> [SwapEvent]
    {
        guard let store else { return [] }
        let committed: [CommittedSlot]
        do { committed = try await ioQueue.run { try store.committedSlots() } } catch {
            logger.error("cannot read committed state", metadata: ["error": "\(error)"])
            throw .stateUnreadable(reason: "\(error)")
        }
        var events: [SwapEvent] = []
        var standbys: [(ModelSlot, ModelRecord)] = []
        for entry in committed where !isShuttingDown && only.map({ $0.contains(entry.slot) }) ?? true {
            guard let slot = self.slot(entry.slot) ?? (try? createSlot(entry.slot)) else { continue }
            if let reason = refusal(entry.active) {
                // Generations stay monotone across restarts: the next activation follows the committed one.
                slot.setGeneration(entry.generation)
                events.append(await emit(SwapEvent(slot: entry.slot, operation: .restore, result: .failed,
                    reason: "committed model \(entry.active.path) refused: \(reason)")))
                continue
            }
            let event = await serialized(entry.slot) { manager in await manager.performRestore(entry, slot: slot) }
            events.append(event)
            if event.result == .succeeded, let standby = entry.standby, refusal(standby) == nil {
                standbys.append((slot, standby))
            }
        }
        for (slot, standby) in standbys {
            if standbysInBackground {
                enqueue(slot.name) { manager in await manager.performRestoreStandby(standby, slot: slot) }
            } else {
                await serialized(slot.name) { manager in await manager.performRestoreStandby(standby, slot: slot) }
            }
        }
        return events
    }

    // MARK: Events

    /// A stream of every event from now on.
    public nonisolated func events() -> AsyncStream<SwapEvent> { eventLog.subscribe() }

    /// The most recent events (up to 1000 are kept), newest first.
    public nonisolated func recentEvents(slot: String? = nil, limit: Int = 100) -> [SwapEvent] {
        eventLog.recent(slot: slot, limit: limit)
    }

    /// Cancels every load and restore in progress (a load already switching its model in completes), and keeps new
    /// loads and restores from starting.
    /// - Parameter keepingRestores: a failed resource-preserving load still brings its previous model back, and one
    ///   under way goes on (as a shutdown begins: the slot serves through the requests' drain; `shutdown()` cancels
    ///   them); every other restore — at a start, a rollback's reload — is cancelled.
    public func cancelLoads(reason: String, keepingRestores: Bool = false) {
        isShuttingDown = true
        currentLoad.values.forEach { $0.cancel(reason: reason) }
        if !keepingRestores { cancelsRestores = true }
        for (slot, op) in restoring where !(keepingRestores && bringingBack.contains(slot)) {
            op.cancel(reason: reason)
        }
    }

    /// Runs `body` unless a shutdown has begun (`cancelLoads`), in one step of the manager's: no shutdown begins in
    /// between.
    /// - Returns: whether it ran.
    @discardableResult
    public func unlessShuttingDown(_ body: @Sendable () -> Void) -> Bool {
        guard !isShuttingDown else { return false }
        body()
        return true
    }

    /// Cancels loads in progress, stops the slots' workers after their queued requests, and releases every model.
    public func shutdown() async {
        cancelLoads(reason: "shutting down")
        for task in tails.values { await task.value }
        for slot in registry.withLock({ Array($0.values) }) {
            await slot.executor.shutdown()
            slot.retireAll()
        }
        await loadExecutor.shutdown()
        releaser.shutdown()
        eventLog.finish()
    }

    // MARK: Serialization per slot

    func remember(_ op: LoadOperation) {
        operations[op.id] = op
        operationOrder.append(op.id)
        if operationOrder.count > 500 { operations[operationOrder.removeFirst()] = nil }
    }

    /// Runs `body` after every operation queued before it on the same slot, and returns its result.
    func serialized<T: Sendable>(_ slot: String, _ body: @escaping @Sendable (ModelManager) async throws -> T)
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

    func serialized<T: Sendable>(_ slot: String, _ body: @escaping @Sendable (ModelManager) async -> T) async -> T {
        let previous = tails[slot]
        let task = Task { [self] in
            await previous?.value
            return await body(self)
        }
        tails[slot] = Task { _ = await task.value }
        return await task.value
    }

    /// Queues `body` behind the slot's operations without waiting for it (`shutdown()` waits for the queue).
    private func enqueue(_ slot: String, _ body: @escaping @Sendable (ModelManager) async -> Void) {
        let previous = tails[slot]
        tails[slot] = Task { [self] in
            await previous?.value
            await body(self)
        }
    }
}

extension ModelSlot {
    /// Memory of the models this slot holds in any role, per device: each model's measured host cost, and a GPU
    /// model's estimated cost on its GPU.
    var memoryByDevice: [ComputeDevice: Int] {
        let roles = self.roles
        return Self.memory(of: [roles.active, roles.staged, roles.standby].compactMap { $0 })
    }

    /// Memory of the slot's active model alone, per device (empty without one).
    var activeMemoryByDevice: [ComputeDevice: Int] { Self.memory(of: roles.active.map { [$0] } ?? []) }

    /// Memory of the slot's standby alone, per device (empty without one).
    var standbyMemoryByDevice: [ComputeDevice: Int] { Self.memory(of: roles.standby.map { [$0] } ?? []) }

    private static func memory(of models: [ModelInstance]) -> [ComputeDevice: Int] {
        var bytes: [ComputeDevice: Int] = [:]
        for model in models {
            bytes[.host, default: 0] += model.memoryBytes
            let device = model.execution.target.device
            if device != .host { bytes[device, default: 0] += model.deviceMemoryBytes }
        }
        return bytes
    }
}

extension LoadFailure {
    var isCancellation: Bool { if case .cancelled = self { true } else { false } }
}
