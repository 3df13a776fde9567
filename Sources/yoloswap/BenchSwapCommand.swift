import ArgumentParser
import Foundation
import HotSwap
import ORTBackend
import ONNXRuntime
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
    @Option(help: "Runs at once in the warm-up's last round (default: --serving-threads; 1: none).")
    var warmupConcurrency: Int?
    @Option(help: "Memory budget in MiB (for --policy auto).") var memoryBudgetMb: Int?
    @Option(help: "Path to libonnxruntime.so.") var ortLibrary: String?
    @Flag(inversion: .prefixedNo, help: "ORT's CPU memory arena (faster reuse; holds memory until release).")
    var arena = true
    @Option(help: """
        Folder of the optimized-model cache (default: a fresh temporary folder, removed at the end, so the first load \
        of each model is a cold miss).
        """)
    var cacheDir: String?
    @Flag(inversion: .prefixedNo, help: "Load through the optimized-model cache.") var optimizedCache = true
    @Flag(help: "Optimize cache misses in this process instead of a child process.") var optimizeInProcess = false
    @Flag(help: "Keep the standby until the flip instead of releasing it before the new session is created.")
    var keepStandbyDuringLoad = false
    @Flag(help: "Print one JSON object at the end.") var json = false

    /// `hotswap.memory_budget_mb`'s bound in the service's configuration.
    static let memoryBudgetRange = 1...1_048_576

    /// The most clients at once: each is a task with an image in flight.
    static let maxConcurrency = 4096

    func validate() throws {
        guard concurrency > 0, (0...10_000).contains(swaps), (0...10_000).contains(rollbacks), !image.isEmpty else {
            throw ValidationError("--concurrency must be positive, --swaps and --rollbacks lie in 0...10000")
        }
        // Rollbacks go between swaps: without one, none would be done (before, silently skipped).
        guard swaps > 0 || rollbacks == 0 else { throw ValidationError("--rollbacks needs --swaps (at least 1)") }
        guard (0...600_000).contains(intervalMs) else { throw ValidationError("--interval-ms lies in 0...600000") }
        if let memoryBudgetMb, !Self.memoryBudgetRange.contains(memoryBudgetMb) {
            throw ValidationError("--memory-budget-mb lies in \(Self.memoryBudgetRange) (the service's bound)")
        }
        let threadFlags = [("--threads", threads), ("--serving-threads", servingThreads)]
        for (flag, value) in threadFlags where !(1...ModelOptions.maxThreads).contains(value) {
            throw ValidationError("\(flag) lies in 1...\(ModelOptions.maxThreads)")
        }
        guard concurrency <= Self.maxConcurrency else {
            throw ValidationError("--concurrency lies in 1...\(Self.maxConcurrency)")
        }
        if let warmupConcurrency, !(1...256).contains(warmupConcurrency) {
            throw ValidationError("--warmup-concurrency lies in [1, 256]")
        }
        guard SwapPolicy(rawValue: policy) != nil else {
            let policies = SwapPolicy.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("--policy must be one of \(policies)")
        }
    }

    struct Sample: Sendable {
        var start: ContinuousClock.Instant
        var end: ContinuousClock.Instant
        var failed: Bool
        /// The request loop that sent it.
        var loop: Int
    }

    func run() async throws {
        let images = try image.map { path -> [UInt8] in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw failure("cannot read image \(path)")
            }
            return [UInt8](data)
        }
        let temporaryCache = optimizedCache && cacheDir == nil
            ? FileManager.default.temporaryDirectory.appendingPathComponent("yoloswap-bench-\(UUID().uuidString)").path
            : nil
        defer { if let temporaryCache { try? FileManager.default.removeItem(atPath: temporaryCache) } }
        let cache = optimizedCache ? try (cacheDir ?? temporaryCache).map {
            try OptimizedModelCache.yoloswap(directory: $0, inChild: !optimizeInProcess,
                persistentSecret: temporaryCache == nil)
        } : nil
        let manager = try makeManager(cache: cache)
        let slot = try await manager.createSlot("bench")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "bench", path: modelA))
        for bytes in images { _ = try await slot.detect(imageBytes: bytes) }
        ProcessMemory.trim()
        let rssBefore = ProcessMemory.residentBytes() ?? 0

        let shared = SharedCounters(rss: rssBefore)
        let sampler = Self.startSampler(shared)
        let loops = Self.startLoops(concurrency, slot: slot, images: images, shared: shared)
        let loopsStarted = ContinuousClock.now
        var driver = SwapDriver(modelA: modelA, modelB: modelB, swaps: swaps, rollbacks: rollbacks,
            interval: .milliseconds(intervalMs))
        try await driver.run(manager: manager, slot: slot, shared: shared)
        shared.stop.store(true, ordering: .relaxed)
        var samples: [Sample] = []
        for loop in loops { samples += await loop.value.samples }
        let duration = (ContinuousClock.now - loopsStarted).milliseconds / 1000
        await sampler.value
        while manager.releaser.pendingCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        ProcessMemory.trim()
        let rssAfter = ProcessMemory.residentBytes() ?? 0

        var result = report(samples: samples, driver: driver, duration: duration, shared: shared)
        let mb = BenchSwapCommand.megabytes
        result["rss_before_mb"] = mb(rssBefore)
        result["rss_first_cycle_mb"] = mb(driver.rssFirstCycle ?? rssAfter)
        result["rss_after_mb"] = mb(rssAfter)
        result["optimized_cache"] = cache != nil
        result["optimizer_child_runs"] = cache?.statistics.childRuns ?? 0
        result["optimizer_child_peak_mb"] = mb(cache?.statistics.childPeakBytes ?? 0)
        result["model_costs_mb"] = manager.memoryCosts.mapValues(mb).sorted { $0.key < $1.key }
            .map { "\($0.key.prefix(12)): \($0.value)" }
        result["models_released"] = manager.releaser.releasedCount
        await manager.shutdown()
        try print(result)
        driver.failures.forEach { printError("yoloswap: swap failed: \($0)") }
        if samples.contains(where: \.failed) || !driver.failures.isEmpty { throw ExitCode(1) }
    }

    private func makeManager(cache: OptimizedModelCache?) throws -> ModelManager {
        var configuration = HotSwapConfiguration(servingThreads: servingThreads, intraOpThreads: threads,
            policy: SwapPolicy(rawValue: policy)!)
        configuration.memoryBudgetBytes = memoryBudgetMb.map { $0 << 20 }
        configuration.queueCapacity = max(64, concurrency * 2)
        configuration.releaseStandbyBeforeLoad = !keepStandbyDuringLoad
        configuration.warmupConcurrency = warmupConcurrency
        let library = try ORTLibrary.load(explicitPath: ortLibrary)
        return ModelManager(configuration: configuration,
            loader: ORTModelLoader(environment: try ORTEnvironment(library: library),
                options: SessionOptions(cpuMemoryArena: arena), cache: cache))
    }

    /// Samples RSS every 5 ms into the shared maxima until the benchmark stops.
    private static func startSampler(_ shared: SharedCounters) -> Task<Void, Never> {
        Task.detached {
            while !shared.stop.load(ordering: .relaxed) {
                let rss = ProcessMemory.residentBytes() ?? 0
                shared.peak.max(rss, ordering: .relaxed)
                shared.windowPeak.max(rss, ordering: .relaxed)
                if shared.steadyWithPair.load(ordering: .relaxed) { shared.steadyPeak.max(rss, ordering: .relaxed) }
                shared.recordStagePeak(rss)
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// One request loop's records, in chunks of a fixed size that are allocated once and never copied or freed while
    /// the benchmark runs: their resident memory is the records written (counted in `recordBytes`; a chunk's pages
    /// become resident as they are filled), so that RSS by cycle can be told apart from it. A growing array would
    /// double and copy, its old buffers left to the allocator (whether a step in RSS was the benchmark's or the
    /// service's was not known).
    struct SampleLog: Sendable {
        private static let chunkSize = 16_384
        private var chunks: [[Sample]] = []

        /// Appends `sample`, counting its bytes in `shared.recordBytes`.
        mutating func append(_ sample: Sample, counting shared: SharedCounters) {
            if chunks.last.map({ $0.count == Self.chunkSize }) ?? true {
                var chunk: [Sample] = []
                chunk.reserveCapacity(Self.chunkSize)
                chunks.append(chunk)
            }
            chunks[chunks.count - 1].append(sample)
            shared.recordBytes.add(MemoryLayout<Sample>.stride, ordering: .relaxed)
        }

        var samples: [Sample] { chunks.flatMap { $0 } }
    }

    /// `count` request loops cycling through the images until the benchmark stops; each returns its samples.
    private static func startLoops(_ count: Int, slot: ModelSlot, images: [[UInt8]], shared: SharedCounters)
        -> [Task<SampleLog, Never>]
    {
        (0..<count).map { index in
            Task.detached { () -> SampleLog in
                var samples = SampleLog()
                var i = index
                while !shared.stop.load(ordering: .relaxed) {
                    let start = ContinuousClock.now
                    var failed = false
                    do { _ = try await slot.detect(imageBytes: images[i % images.count]) } catch {
                        failed = true
                        printError("yoloswap: request failed: \(error)")
                    }
                    samples.append(Sample(start: start, end: .now, failed: failed, loop: index),
                        counting: shared)
                    i += 1
                }
                return samples
            }
        }
    }

    /// The figures that come from the samples and the driver.
    private func report(samples: [Sample], driver: SwapDriver, duration: Double, shared: SharedCounters)
        -> [String: Any]
    {
        let windows = driver.windows
        let overlapping = samples.filter { s in windows.contains { s.start < $0.1 && s.end > $0.0 } }
        let steady = samples.filter { s in !windows.contains { s.start < $0.1 && s.end > $0.0 } }
        func ms(_ list: [Sample]) -> [Double] { list.map { ($0.end - $0.start).milliseconds } }
        // A subset with no request (no swap at all, `--swaps 0`; no request finished) has no figures: null, not the
        // whole run's passed off as its own, nor 0/0.
        func percentiles(_ list: [Sample]) -> Percentiles? { list.isEmpty ? nil : Percentiles(ms(list)) }
        func figure(_ value: Double?) -> Any { value.map { $0 as Any } ?? NSNull() }
        func quotient(_ a: Double?, _ b: Double?) -> Any {
            guard let a, let b, b > 0 else { return NSNull() }
            return a / b
        }
        let steadyP = percentiles(steady)
        // The new model's first requests: after each swap, each loop's first request to start (as many at once as
        // the loops keep in flight).
        let byStart = samples.sorted { $0.start < $1.start }
        var afterSwitch: [Sample] = []
        for (index, instant) in driver.switched.enumerated() {
            // From the first request to start at or after the switch (binary search) until the next switch: each
            // loop's first.
            var low = 0, high = byStart.count
            while low < high {
                let middle = (low + high) / 2
                if byStart[middle].start < instant { low = middle + 1 } else { high = middle }
            }
            let next = index + 1 < driver.switched.count ? driver.switched[index + 1] : nil
            var loops = Set<Int>()
            for sample in byStart[low...] {
                if loops.count == concurrency || next.map({ sample.start >= $0 }) == true { break }
                if loops.insert(sample.loop).inserted { afterSwitch.append(sample) }
            }
        }
        let afterP = percentiles(afterSwitch)
        let swapP = percentiles(overlapping)
        let flipP = Percentiles(driver.flips.isEmpty ? [0] : driver.flips)
        let steadyPeak = shared.steadyPeak.load(ordering: .relaxed)
        let mb = BenchSwapCommand.megabytes
        func ratio(_ a: Int, _ b: Int?) -> Any {
            guard let b, b > 0 else { return NSNull() }
            return Double(a) / Double(b)
        }
        return [
            "requests": samples.count, "failures": samples.filter(\.failed).count, "swaps": swaps,
            "duration_s": duration, "requests_per_second": Double(samples.count) / max(duration, 1e-9),
            "swap_failures": driver.failures.count, "rollbacks": driver.rollbacksDone, "concurrency": concurrency,
            "policy": policy, "model_a": modelA, "model_b": modelB,
            "steady_requests": steady.count, "swap_requests": overlapping.count,
            "steady_p50_ms": figure(steadyP?.median), "steady_p99_ms": figure(steadyP?.p99),
            "swap_p50_ms": figure(swapP?.median), "swap_p99_ms": figure(swapP?.p99),
            "swap_over_steady_p99": quotient(swapP?.p99, steadyP?.p99),
            "after_switch_requests": afterSwitch.count,
            "after_switch_p50_ms": figure(afterP?.median), "after_switch_p99_ms": figure(afterP?.p99),
            "after_switch_over_steady_p50": quotient(afterP?.median, steadyP?.median),
            "warmup_concurrency": min(HotSwapConfiguration().warmupRuns, warmupConcurrency ?? servingThreads),
            "flip_p99_us": flipP.p99, "flip_max_us": driver.flips.max() ?? 0,
            "rss_peak_mb": mb(shared.peak.load(ordering: .relaxed)),
            "rss_peak_cold_mb": mb(driver.coldPeak), "rss_peak_warm_mb": mb(driver.warmPeak),
            "rss_steady_pair_mb": mb(steadyPeak),
            "rss_peak_warm_by_stage_mb": driver.warmStagePeaks.mapValues(mb),
            "rss_peak_cold_by_stage_mb": driver.coldStagePeaks.mapValues(mb),
            "warm_peak_over_steady_pair": ratio(driver.warmPeak, steadyPeak),
            "cold_peak_over_steady_pair": ratio(driver.coldPeak, steadyPeak),
            "warm_peak_over_first_cycle": ratio(driver.warmPeak, driver.rssFirstCycle),
            "optimizer": optimizeInProcess ? "in-process" : "child",
            "standby_during_load": keepStandbyDuringLoad ? "keep" : "release",
            "rss_cycle_200_mb": driver.rssCycle200.map { mb($0) as Any } ?? NSNull(),
            // Every 100th cycle: whether RSS keeps growing or levels off. Part of it is the benchmark's own: one
            // record per request (the records' allocated bytes by cycle, below, and RSS less them) and the
            // manager's histories, bounded but filling (500 operations, 1000 events, 1000 releases).
            "rss_by_cycle_mb": Dictionary(uniqueKeysWithValues: driver.rssByCycle.map { ("\($0.key)", mb($0.value)) }),
            "request_records_by_cycle_mb": Dictionary(uniqueKeysWithValues: driver.recordsByCycle.map {
                ("\($0.key)", mb($0.value))
            }),
            "rss_less_records_by_cycle_mb": Dictionary(uniqueKeysWithValues: driver.rssByCycle.map {
                ("\($0.key)", mb($0.value - (driver.recordsByCycle[$0.key] ?? 0)))
            }),
            "request_records_mb": mb(shared.recordBytes.load(ordering: .relaxed)),
        ]
    }

    private func print(_ result: [String: Any]) throws {
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            Swift.print(String(decoding: data, as: UTF8.self))
        } else {
            for key in result.keys.sorted() {
                Swift.print("\(key.padding(toLength: 22, withPad: " ", startingAt: 0)) \(result[key]!)")
            }
        }
    }

    /// Bytes as MiB with one decimal.
    static func megabytes(_ bytes: Int) -> Double { (Double(bytes) / 1_048_576 * 10).rounded() / 10 }
}

