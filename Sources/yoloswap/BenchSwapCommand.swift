import ArgumentParser
import Foundation
import HotSwap
import ORTBackend
import ONNXRuntime
import Synchronization
import YOLO

/// Request loops against one slot while models are swapped and rolled back underneath them.
struct BenchSwapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-swap",
        abstract: "Measure hot-swap: latency of requests overlapping swaps vs steady state, flip time, memory.")

    @Option(help: "First model (active at start).") var modelA = "models/yolov3-tiny-coco-416.onnx"
    @Option(help: "Second model, compatible with the first.") var modelB = "models/yolov3-tiny-coco-320.onnx"
    @Option(help: "Photos the request loops cycle through (repeatable).") var image: [String] = [
        "models/images/bus.jpg", "models/images/zidane.jpg",
    ]
    @Option(help: "Concurrent request loops.") var concurrency = 4
    @Option(help: "Swaps (loads that activate), alternating between the two models.") var swaps = 20
    @Option(help: "Rollbacks to the warm standby, spread between the swaps.") var rollbacks = 5
    @Option(help: "Swap policy: availability-preserving, resource-preserving or auto.")
    var policy = SwapPolicy.availabilityPreserving.rawValue
    @Option(help: "Steady-state pause between operations, in milliseconds.") var intervalMs = 150
    @Option(help: "Worker threads of the slot.") var servingThreads = 2
    @Option(help: "Intra-op threads per model.") var threads = 1
    @Option(help: "Memory budget in MiB (for --policy auto).") var memoryBudgetMb: Int?
    @Option(help: "Path to libonnxruntime.so.") var ortLibrary: String?
    @Flag(inversion: .prefixedNo, help: "ORT's CPU memory arena (faster reuse; holds memory until release).")
    var arena = true
    @Option(help: "Folder of the optimized-model cache (default: a fresh temporary folder, removed at the end, so the first load of each model is a cold miss).")
    var cacheDir: String?
    @Flag(inversion: .prefixedNo, help: "Load through the optimized-model cache.") var optimizedCache = true
    @Flag(help: "Optimize cache misses in this process instead of a child process.") var optimizeInProcess = false
    @Flag(help: "Keep the standby until the flip instead of releasing it before the new session is created.")
    var keepStandbyDuringLoad = false
    @Flag(help: "Print one JSON object at the end.") var json = false

    func validate() throws {
        guard concurrency > 0, swaps >= 0, rollbacks >= 0, !image.isEmpty else {
            throw ValidationError("--concurrency must be positive, --swaps and --rollbacks non-negative")
        }
        guard SwapPolicy(rawValue: policy) != nil else {
            throw ValidationError("--policy must be one of \(SwapPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    struct Sample: Sendable {
        var start: ContinuousClock.Instant
        var end: ContinuousClock.Instant
        var failed: Bool
    }

    func run() async throws {
        let images = try image.map { path -> [UInt8] in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("cannot read image \(path)")
            }
            return [UInt8](data)
        }
        var configuration = HotSwapConfiguration(servingThreads: servingThreads, intraOpThreads: threads,
            policy: SwapPolicy(rawValue: policy)!)
        configuration.memoryBudgetBytes = memoryBudgetMb.map { $0 << 20 }
        configuration.queueCapacity = max(64, concurrency * 2)
        configuration.releaseStandbyBeforeLoad = !keepStandbyDuringLoad
        let library = try ORTLibrary.load(explicitPath: ortLibrary)
        let temporaryCache = optimizedCache && cacheDir == nil
            ? FileManager.default.temporaryDirectory.appendingPathComponent("yoloswap-bench-\(UUID().uuidString)").path
            : nil
        defer { if let temporaryCache { try? FileManager.default.removeItem(atPath: temporaryCache) } }
        let cache = optimizedCache ? (cacheDir ?? temporaryCache).map {
            OptimizedModelCache.yoloswap(directory: $0, inChild: !optimizeInProcess)
        } : nil
        let manager = ModelManager(configuration: configuration,
            loader: ORTModelLoader(environment: try ORTEnvironment(library: library),
                options: SessionOptions(cpuMemoryArena: arena), cache: cache))
        let slot = try await manager.createSlot("bench")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "bench", path: modelA))
        for bytes in images { _ = try await slot.detect(imageBytes: bytes) }
        ProcessMemory.trim()
        let rssBefore = ProcessMemory.residentBytes() ?? 0

        let shared = SharedCounters(rss: rssBefore)
        let sampler = Task.detached {
            while !shared.stop.load(ordering: .relaxed) {
                let rss = ProcessMemory.residentBytes() ?? 0
                shared.peak.max(rss, ordering: .relaxed)
                shared.windowPeak.max(rss, ordering: .relaxed)
                if shared.steadyWithPair.load(ordering: .relaxed) { shared.steadyPeak.max(rss, ordering: .relaxed) }
                shared.recordStagePeak(rss)
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        let loops = (0..<concurrency).map { index in
            Task.detached { () -> [Sample] in
                var samples: [Sample] = []
                var i = index
                while !shared.stop.load(ordering: .relaxed) {
                    let start = ContinuousClock.now
                    var failed = false
                    do { _ = try await slot.detect(imageBytes: images[i % images.count]) } catch {
                        failed = true
                        printError("yoloswap: request failed: \(error)")
                    }
                    samples.append(Sample(start: start, end: .now, failed: failed))
                    i += 1
                }
                return samples
            }
        }

        // The swap driver: steady pauses between operations, swaps alternating A/B, rollbacks spread among them.
        var windows: [(ContinuousClock.Instant, ContinuousClock.Instant)] = []
        var flips: [Double] = []
        var swapFailures: [String] = []
        var rssFirstCycle: Int?
        // Peak RSS within each swap, split by whether the model had been loaded before in this run (a warm
        // optimized-model cache) or not (a cold miss: ORT optimizes the graph).
        var loadedBefore: Set<String> = [modelA]
        var coldPeak = 0, warmPeak = 0
        var coldStagePeaks: [String: Int] = [:], warmStagePeaks: [String: Int] = [:]
        var rssCycle200: Int?
        let rollbackEvery = rollbacks > 0 ? max(1, swaps / (rollbacks + 1)) : Int.max
        var rollbacksDone = 0
        let interval = Duration.milliseconds(intervalMs)
        let loopsStarted = ContinuousClock.now
        try await Task.sleep(for: interval)
        for i in 0..<swaps {
            let target = slot.roles.active?.identity.path == modelA ? modelB : modelA
            let start = ContinuousClock.now
            shared.steadyWithPair.store(false, ordering: .relaxed)
            shared.windowPeak.store(ProcessMemory.residentBytes() ?? 0, ordering: .relaxed)
            let operation = try await manager.load(LoadRequest(slot: "bench", path: target, activate: true))
            shared.watch(operation)
            let status = await operation.wait()
            windows.append((start, .now))
            let windowPeak = max(shared.windowPeak.load(ordering: .relaxed), ProcessMemory.residentBytes() ?? 0)
            let stagePeaks = shared.watch(nil)
            if loadedBefore.insert(target).inserted {
                coldPeak = max(coldPeak, windowPeak)
                coldStagePeaks.merge(stagePeaks, uniquingKeysWith: max)
            } else {
                warmPeak = max(warmPeak, windowPeak)
                warmStagePeaks.merge(stagePeaks, uniquingKeysWith: max)
            }
            if let failure = status.failure { swapFailures.append(failure.description) }
            if let flip = status.timings.flipMicroseconds { flips.append(flip) }
            if i % 2 == 1, (i + 1) / 2 == 1 || (i + 1) / 2 == 200 {
                // RSS after the first and the 200th swap cycle (A → B → A), once the retired model is released.
                while manager.releaser.pendingCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
                ProcessMemory.trim()
                let rss = ProcessMemory.residentBytes()
                if (i + 1) / 2 == 1 { rssFirstCycle = rss } else { rssCycle200 = rss }
            }
            // "Old + new": from the first cycle on, both models are resident between operations; the pauses (traffic,
            // no operation, freed memory trimmed when the load ended) give the RSS of the pair under the same load.
            shared.steadyWithPair.store(i >= 1, ordering: .relaxed)
            try await Task.sleep(for: interval)
            if rollbacksDone < rollbacks, (i + 1) % rollbackEvery == 0 {
                let start = ContinuousClock.now
                shared.steadyWithPair.store(false, ordering: .relaxed)
                let event = try await manager.rollback(slot: "bench")
                windows.append((start, .now))
                shared.steadyWithPair.store(true, ordering: .relaxed)
                if let flip = event.timings.flipMicroseconds { flips.append(flip) }
                rollbacksDone += 1
                try await Task.sleep(for: interval)
            }
        }
        shared.stop.store(true, ordering: .relaxed)
        var samples: [Sample] = []
        for loop in loops { samples += await loop.value }
        let duration = (ContinuousClock.now - loopsStarted).milliseconds / 1000
        await sampler.value
        while manager.releaser.pendingCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        ProcessMemory.trim()
        let rssAfter = ProcessMemory.residentBytes() ?? 0

        let overlapping = samples.filter { s in windows.contains { s.start < $0.1 && s.end > $0.0 } }
        let steady = samples.filter { s in !windows.contains { s.start < $0.1 && s.end > $0.0 } }
        func ms(_ list: [Sample]) -> [Double] { list.map { ($0.end - $0.start).milliseconds } }
        let steadyP = Percentiles(ms(steady.isEmpty ? samples : steady))
        let swapP = Percentiles(ms(overlapping.isEmpty ? samples : overlapping))
        let flipP = Percentiles(flips.isEmpty ? [0] : flips)
        let steadyPeak = shared.steadyPeak.load(ordering: .relaxed)
        let mb = { (bytes: Int) in (Double(bytes) / 1_048_576 * 10).rounded() / 10 }
        let costs = manager.memoryCosts
        let result: [String: Any] = [
            "requests": samples.count, "failures": samples.filter(\.failed).count, "swaps": swaps,
            "duration_s": duration, "requests_per_second": Double(samples.count) / max(duration, 1e-9),
            "swap_failures": swapFailures.count, "rollbacks": rollbacksDone, "concurrency": concurrency,
            "policy": policy, "model_a": modelA, "model_b": modelB,
            "steady_requests": steady.count, "swap_requests": overlapping.count,
            "steady_p50_ms": steadyP.median, "steady_p99_ms": steadyP.p99,
            "swap_p50_ms": swapP.median, "swap_p99_ms": swapP.p99,
            "swap_over_steady_p99": swapP.p99 / steadyP.p99,
            "flip_p99_us": flipP.p99, "flip_max_us": flips.max() ?? 0,
            "rss_before_mb": mb(rssBefore), "rss_peak_mb": mb(shared.peak.load(ordering: .relaxed)),
            "rss_first_cycle_mb": mb(rssFirstCycle ?? rssAfter), "rss_after_mb": mb(rssAfter),
            "rss_peak_cold_mb": mb(coldPeak), "rss_peak_warm_mb": mb(warmPeak),
            "rss_steady_pair_mb": mb(steadyPeak),
            "rss_peak_warm_by_stage_mb": warmStagePeaks.mapValues(mb),
            "rss_peak_cold_by_stage_mb": coldStagePeaks.mapValues(mb),
            "warm_peak_over_steady_pair": steadyPeak > 0 ? Double(warmPeak) / Double(steadyPeak) as Any : NSNull(),
            "cold_peak_over_steady_pair": steadyPeak > 0 ? Double(coldPeak) / Double(steadyPeak) as Any : NSNull(),
            "warm_peak_over_first_cycle": rssFirstCycle.map { Double(warmPeak) / Double($0) as Any } ?? NSNull(),
            "optimized_cache": cache != nil, "optimizer": optimizeInProcess ? "in-process" : "child",
            "optimizer_child_runs": cache?.statistics.childRuns ?? 0,
            "optimizer_child_peak_mb": mb(cache?.statistics.childPeakBytes ?? 0), "standby_during_load": keepStandbyDuringLoad ? "keep" : "release",
            "rss_cycle_200_mb": rssCycle200.map { mb($0) as Any } ?? NSNull(),
            "model_costs_mb": costs.mapValues(mb).sorted { $0.key < $1.key }.map { "\($0.key.prefix(12)): \($0.value)" },
            "models_released": manager.releaser.releasedCount,
        ]
        await manager.shutdown()
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for key in result.keys.sorted() { print("\(key.padding(toLength: 22, withPad: " ", startingAt: 0)) \(result[key]!)") }
        }
        swapFailures.forEach { printError("yoloswap: swap failed: \($0)") }
        if samples.contains(where: \.failed) || !swapFailures.isEmpty { throw ExitCode(1) }
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
