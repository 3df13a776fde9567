/// How a switch trades memory against availability.
public enum SwapPolicy: String, Sendable, Equatable, Codable, CaseIterable {
    /// Load the new model, then switch: no gap in service, old + new memory for a while (default).
    case availabilityPreserving = "availability-preserving"
    /// Drain and release the old model, then load the new one: never two models in memory; requests arriving in the
    /// gap wait up to their deadline and are then answered "unavailable".
    case resourcePreserving = "resource-preserving"
    /// Resource-preserving when the memory budget cannot hold both models, otherwise availability-preserving.
    case auto
}

/// What happens to the previous active model after a switch.
public enum StandbyRetention: Sendable, Equatable {
    /// Keep it warm as the standby until the next switch replaces it (default: instant rollback).
    case keep
    /// Keep it for this long, then release it.
    case keepFor(Duration)
    /// Release it once drained.
    case release
}

/// Settings of the hot-swap manager.
///
/// Keys and defaults:
/// - `servingThreads`: worker threads per slot running inference (2).
/// - `queueCapacity`: requests waiting per slot before new ones fail fast as overloaded (64).
/// - `intraOpThreads`: ORT threads inside one inference, per model (1: parallelism comes from the workers).
/// - `loadThreads`: background threads for verify/load/warm-up, shared by all slots, at lowered OS priority (1).
/// - `warmupRuns`: inferences a new model must pass before it is ready (3). With 1, the first request on a new model
///   was at times much slower than the rest (README → Performance, video streams).
/// - `warmupConcurrency`: how many of those run at once, the last ones, as the slot's workers will run them (nil:
///   `servingThreads`; 1: one after another). A session grows its memory for Runs that overlap at the first ones
///   that do.
/// - `warmupTimeout`: a warm-up that takes longer aborts the load (30 s).
/// - `warmupImage`: encoded image bytes to warm up on; nil = a synthetic grey image of the model's input size.
/// - `standbyRetention`: what happens to the previous model after a switch (`.keep`).
/// - `releaseStandbyBeforeLoad`: a load that will switch releases the slot's standby — the model the switch would
///   displace — once the new model has passed verification and before its session is created, so that a swap holds
///   two models (old + new), not three (`true`). With `false` the standby stays until the flip: a rollback during the
///   load is still a flip, at the cost of a third model in memory. If such a load fails, rollback reloads from disk.
/// - `memoryBudgetBytes`: models may not grow RSS past this (nil = no budget).
/// - `gpuMemoryBudgets`: per GPU id, the bytes its models may take (none: GPUs are not limited).
/// - `policy`: swap policy (`.availabilityPreserving`).
/// - `slotExecution`: per slot name, the providers its models may run on and their session settings; a slot not
///   listed runs on the CPU with `intraOpThreads` (`[:]`).
public struct HotSwapConfiguration: Sendable, Equatable {
    public var servingThreads: Int
    public var queueCapacity: Int
    public var intraOpThreads: Int
    public var loadThreads: Int
    public var warmupRuns: Int
    public var warmupConcurrency: Int?
    public var warmupTimeout: Duration
    public var warmupImage: [UInt8]?
    public var standbyRetention: StandbyRetention
    public var releaseStandbyBeforeLoad: Bool
    public var memoryBudgetBytes: Int?
    public var policy: SwapPolicy
    public var gpuMemoryBudgets: [Int: Int]
    public var slotExecution: [String: SlotExecution]

    public init(
        servingThreads: Int = 2, queueCapacity: Int = 64, intraOpThreads: Int = 1, loadThreads: Int = 1,
        warmupRuns: Int = 3, warmupConcurrency: Int? = nil, warmupTimeout: Duration = .seconds(30),
        warmupImage: [UInt8]? = nil,
        standbyRetention: StandbyRetention = .keep, releaseStandbyBeforeLoad: Bool = true,
        memoryBudgetBytes: Int? = nil, policy: SwapPolicy = .availabilityPreserving,
        gpuMemoryBudgets: [Int: Int] = [:], slotExecution: [String: SlotExecution] = [:]
    ) {
        self.servingThreads = servingThreads
        self.queueCapacity = queueCapacity
        self.intraOpThreads = intraOpThreads
        self.loadThreads = loadThreads
        self.warmupRuns = warmupRuns
        self.warmupConcurrency = warmupConcurrency
        self.warmupTimeout = warmupTimeout
        self.warmupImage = warmupImage
        self.standbyRetention = standbyRetention
        self.releaseStandbyBeforeLoad = releaseStandbyBeforeLoad
        self.memoryBudgetBytes = memoryBudgetBytes
        self.policy = policy
        self.gpuMemoryBudgets = gpuMemoryBudgets
        self.slotExecution = slotExecution
    }

    /// The execution settings of the slot named `slot`.
    public func execution(forSlot slot: String) -> SlotExecution { slotExecution[slot] ?? SlotExecution() }
}
