import Foundation
import HotSwap
import Synchronization

/// The swap side of `bench-swap`: steady pauses between operations, swaps alternating between the two models,
/// rollbacks spread among them; records each operation's window, flip time and the RSS peaks around it.
struct SwapDriver {
    let modelA: String
    let modelB: String
    let swaps: Int
    let rollbacks: Int
    let interval: Duration

    /// When each operation ran: requests overlapping one of these count as "during a swap".
    private(set) var windows: [(ContinuousClock.Instant, ContinuousClock.Instant)] = []
    /// When each swap's load had switched (a failed one did not; a rollback's standby has served before: not
    /// counted). The requests that start next are the new model's first.
    private(set) var switched: [ContinuousClock.Instant] = []
    private(set) var flips: [Double] = []
    private(set) var failures: [String] = []
    private(set) var rollbacksDone = 0
    /// RSS after the first swap cycle (A → B → A) and after every 100th, once the retired model is released: cycle →
    /// bytes.
    private(set) var rssByCycle: [Int: Int] = [:]
    /// The bytes of the benchmark's own request records at the same moments (part of that RSS).
    private(set) var recordsByCycle: [Int: Int] = [:]
    var rssFirstCycle: Int? { rssByCycle[1] }
    var rssCycle200: Int? { rssByCycle[200] }
    /// Peak RSS within each swap, split by whether the model had been loaded before in this run (a warm
    /// optimized-model cache) or not (a cold miss: ORT optimizes the graph); overall and per load stage.
    private(set) var coldPeak = 0
    private(set) var warmPeak = 0
    private(set) var coldStagePeaks: [String: Int] = [:]
    private(set) var warmStagePeaks: [String: Int] = [:]

    init(modelA: String, modelB: String, swaps: Int, rollbacks: Int, interval: Duration) {
        self.modelA = modelA
        self.modelB = modelB
        self.swaps = swaps
        self.rollbacks = rollbacks
        self.interval = interval
    }

    mutating func run(manager: ModelManager, slot: ModelSlot, shared: SharedCounters) async throws {
        var loadedBefore: Set<String> = [modelA]
        let rollbackEvery = rollbacks > 0 ? max(1, swaps / (rollbacks + 1)) : Int.max
        try await Task.sleep(for: interval)
        for i in 0..<swaps {
            let target = slot.roles.active?.identity.path == modelA ? modelB : modelA
            let firstLoad = loadedBefore.insert(target).inserted
            try await swap(to: target, manager: manager, shared: shared, firstLoad: firstLoad)
            if i % 2 == 1, (i + 1) / 2 == 1 || (i + 1) / 2 % 100 == 0 {
                while manager.releaser.pendingCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
                ProcessMemory.trim()
                rssByCycle[(i + 1) / 2] = ProcessMemory.residentBytes()
                recordsByCycle[(i + 1) / 2] = shared.recordBytes.load(ordering: .relaxed)
            }
            // "Old + new": from the first cycle on, both models are resident between operations; the pauses (traffic,
            // no operation, freed memory trimmed when the load ended) give the RSS of the pair under the same load.
            shared.steadyWithPair.store(i >= 1, ordering: .relaxed)
            try await Task.sleep(for: interval)
            if rollbacksDone < rollbacks, (i + 1) % rollbackEvery == 0 {
                try await rollback(manager: manager, shared: shared)
                try await Task.sleep(for: interval)
            }
        }
    }

    private mutating func swap(to target: String, manager: ModelManager, shared: SharedCounters, firstLoad: Bool)
        async throws
    {
        let start = ContinuousClock.now
        shared.steadyWithPair.store(false, ordering: .relaxed)
        shared.windowPeak.store(ProcessMemory.residentBytes() ?? 0, ordering: .relaxed)
        let operation = try await manager.load(LoadRequest(slot: "bench", path: target, activate: true))
        shared.watch(operation)
        let status = await operation.wait()
        windows.append((start, .now))
        if status.failure == nil { switched.append(.now) }
        let windowPeak = max(shared.windowPeak.load(ordering: .relaxed), ProcessMemory.residentBytes() ?? 0)
        let stagePeaks = shared.watch(nil)
        if firstLoad {
            coldPeak = max(coldPeak, windowPeak)
            coldStagePeaks.merge(stagePeaks, uniquingKeysWith: max)
        } else {
            warmPeak = max(warmPeak, windowPeak)
            warmStagePeaks.merge(stagePeaks, uniquingKeysWith: max)
        }
        if let failure = status.failure { failures.append(failure.description) }
        if let flip = status.timings.flipMicroseconds { flips.append(flip) }
    }

    private mutating func rollback(manager: ModelManager, shared: SharedCounters) async throws {
        let start = ContinuousClock.now
        shared.steadyWithPair.store(false, ordering: .relaxed)
        let event = try await manager.rollback(slot: "bench")
        windows.append((start, .now))
        shared.steadyWithPair.store(true, ordering: .relaxed)
        if let flip = event.timings.flipMicroseconds { flips.append(flip) }
        rollbacksDone += 1
    }
}

/// Flags and maxima shared by the benchmark's tasks.
final class SharedCounters: Sendable {
    let stop = Atomic<Bool>(false)
    let peak: Atomic<Int>
    /// The peak since the current swap began.
    let windowPeak: Atomic<Int>
    /// Whether both models (active and standby) are resident and no operation is running: the "old + new" steady
    /// state under the same traffic, and its peak.
    let steadyWithPair = Atomic<Bool>(false)
    let steadyPeak = Atomic<Int>(0)
    /// The bytes of the request loops' records written so far (`SampleLog`: never copied or freed during the run).
    let recordBytes = Atomic<Int>(0)
    /// The swap being watched and the peak RSS seen in each of its stages (where in a swap the peak happens).
    private let stages = Mutex<(operation: LoadOperation?, peaks: [String: Int])>((nil, [:]))

    /// Starts watching `operation` (nil: stops); returns the stage peaks of the one watched until now.
    @discardableResult
    func watch(_ operation: LoadOperation?) -> [String: Int] {
        stages.withLock { state in
            defer { state = (operation, [:]) }
            return state.peaks
        }
    }

    /// Records `rss` against the watched operation's current stage.
    func recordStagePeak(_ rss: Int) {
        stages.withLock { state in
            guard let stage = state.operation?.status.stage.rawValue else { return }
            state.peaks[stage] = max(state.peaks[stage] ?? 0, rss)
        }
    }

    init(rss: Int) {
        peak = Atomic(rss)
        windowPeak = Atomic(rss)
    }
}
