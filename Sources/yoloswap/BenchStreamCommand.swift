import ArgumentParser
import Foundation
import HotSwap
import ORTBackend
import Primitives
import Streams
import VideoDecoding

/// `yoloswap bench-stream`: a video end to end against the Python loop an integrator writes today, and the frame
/// latency around swaps against steady state.
struct BenchStreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-stream",
        abstract: "Measure a stream: fps vs a Python cv2 + ONNX Runtime loop, and frame latency around swaps.")

    @Option(help: "The video (make bench-stream generates one).") var video: String
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Swaps (loads that activate) during the swap run.") var swaps = 10
    @Option(help: "Rollbacks to the warm standby during the swap run.") var rollbacks = 5
    @Option(help: "Frames the stream detects at once, each on a worker thread of its own.") var framesInFlight = 1
    @Option(help: "Intra-op threads of the Python loop (default: --threads).") var pythonThreads: Int?
    @Option(help: ArgumentHelp("The latency runs pace the video at this frame rate, as a camera delivers it.",
        discussion: "0: as fast as the model answers (a file; the load of a swap then takes its cores from frames)."))
    var cameraFps: Double = 30
    @Option(help: ArgumentHelp("Pairs of latency runs (no swap, then swaps), their frames pooled.",
        discussion: """
            A p99 over one run's ~75 window frames is close to their maximum: one frame decides it. With \
            --camera-fps 0 every pair's no-swap run is the throughput run.
            """))
    var trials = 1
    @Option(help: ArgumentHelp(
        "Warm-up Runs of a swap's new model run at once, the last ones (default: --frames-in-flight).",
        discussion: """
            1...\(Self.warmupRuns), the Runs of a warm-up; the default is capped there too. 1: one after another, so a \
            swap's warm-up runs one Run beside the frames, never two.
            """))
    var warmupConcurrency: Int?
    @Option(help: "Python interpreter for the reference loop (empty: skip it).") var python = ".venv/bin/python"
    @Option(help: "The reference loop.") var reference = "tools/stream_reference.py"
    @Flag(help: "Print one JSON object.") var json = false

    /// The most swaps, and rollbacks, a run spreads over the video's frames (one every 8 frames at most anyway).
    static let maxOperations = 1000

    /// The warm-up Runs of every new model (the service's default), the bound of `--warmup-concurrency`.
    private static let warmupRuns = HotSwapConfiguration().warmupRuns

    func validate() throws {
        guard cameraFps >= 0, cameraFps <= 1000 else { throw ValidationError("--camera-fps lies in [0, 1000]") }
        guard (1...20).contains(trials) else { throw ValidationError("--trials lies in 1...20") }
        if let pythonThreads, !(0...ModelOptions.maxThreads).contains(pythonThreads) {
            throw ValidationError("--python-threads lies in 0...\(ModelOptions.maxThreads)")
        }
        guard (0...Self.maxOperations).contains(swaps), (0...Self.maxOperations).contains(rollbacks) else {
            throw ValidationError("--swaps and --rollbacks lie in 0...\(Self.maxOperations)")
        }
        // A rollback needs a model to go back to: only a swap leaves one (before, each failed, exit 1).
        guard swaps > 0 || rollbacks == 0 else { throw ValidationError("--rollbacks needs --swaps (at least 1)") }
        try modelOptions.refuseDetectorOverrides(command: "bench-stream")
        guard (1...StreamConfiguration.maxFramesInFlight).contains(framesInFlight) else {
            throw ValidationError("--frames-in-flight lies in 1...\(StreamConfiguration.maxFramesInFlight)")
        }
        if let warmupConcurrency, !(1...Self.warmupRuns).contains(warmupConcurrency) {
            throw ValidationError("--warmup-concurrency lies in 1...\(Self.warmupRuns) (a swap warms up with "
                + "\(Self.warmupRuns) Runs)")
        }
    }

    func run() async throws {
        // The Python loop first, then the two stream runs, in the same process run: the ratio compares like with like.
        let pythonThreads = self.pythonThreads ?? modelOptions.threads
        var result: [String: Any] = ["video": video, "model": modelOptions.model, "threads": modelOptions.threads,
            "frames_in_flight": framesInFlight, "python_threads": pythonThreads,
            "warmup_concurrency": min(Self.warmupRuns, warmupConcurrency ?? framesInFlight)]
        if !python.isEmpty {
            let python = try Self.runPython(python, [reference, "--model", modelOptions.model, "--threads",
                String(pythonThreads), video])
            result["python_fps"] = python["fps"]
            result["python_latency_p50_ms"] = python["latency_p50_ms"]
            result["python_latency_p99_ms"] = python["latency_p99_ms"]
        }
        // Throughput: the video as fast as it goes, no swap.
        let throughput = try await stream(withSwaps: false, frames: 300, fpsCap: nil)
        result["frames"] = throughput.frames
        result["fps"] = throughput.fps
        if let pythonFPS = result["python_fps"] as? Double, pythonFPS > 0 {
            result["fps_ratio"] = throughput.fps / pythonFPS
        }

        // Latency: at the camera's rate, with no swap, then through the swaps and rollbacks; `trials` such pairs, one
        // after the other (so drifts of the shared machine fall on both), their frames pooled.
        let cap = cameraFps > 0 ? cameraFps : nil
        result["camera_fps"] = cameraFps
        result["trials"] = trials
        var steadyRuns: [Run] = [], swapRuns: [Run] = []
        for _ in 0..<trials {
            steadyRuns.append(cap == nil ? throughput
                : try await stream(withSwaps: false, frames: throughput.frames, fpsCap: cap))
            swapRuns.append(try await stream(withSwaps: true, frames: throughput.frames, fpsCap: cap))
        }
        // CPU time the hypervisor gave to other guests while this one's vCPUs wanted to run (/proc/stat), from the
        // stream's start to its end: a frame that loses its vCPU for a few milliseconds is slower for reasons outside
        // the process. It accrues only while a vCPU has work, so busier runs (a load beside the frames) see more.
        if cap != nil { result["host_steal_ms_no_swap_runs"] = steadyRuns.map(\.stealMilliseconds).reduce(0, +) }
        result["host_steal_ms_swap_runs"] = swapRuns.map(\.stealMilliseconds).reduce(0, +)
        result["swap_run_fps"] = swapRuns.map(\.fps).reduce(0, +) / Double(trials)
        result["swap_run_switches"] = swapRuns.map(\.switchFrames.count).reduce(0, +)
        // Two measures per frame: `latency`, from the frame leaving FFmpeg to its answer (under `block` it includes the
        // wait in the hand-off while the decoder runs ahead), and `service`, from the detection taking the frame to
        // its answer (worker queue, pre-processing, inference, post-processing).
        for (name, values) in [("latency", \Run.latencies), ("service", \Run.services)] {
            let steadyValues = steadyRuns.flatMap { $0[keyPath: values] }
            let split = swapRuns.map { $0.aroundSwitches(values) }
            let (around, outside) = (split.flatMap(\.around), split.flatMap(\.outside))
            result["steady_\(name)_p50_ms"] = percentile(steadyValues, 50)
            result["steady_\(name)_p99_ms"] = percentile(steadyValues, 99)
            result["swap_run_steady_\(name)_p50_ms"] = percentile(outside, 50)
            result["swap_run_steady_\(name)_p99_ms"] = percentile(outside, 99)
            result["swap_window_\(name)_p50_ms"] = percentile(around, 50)
            result["swap_window_\(name)_p99_ms"] = percentile(around, 99)
            result["swap_window_\(name)_frames"] = around.count
            if percentile(outside, 99) > 0 {
                result["swap_window_\(name)_p99_vs_swap_run"] = percentile(around, 99) / percentile(outside, 99)
            }
            // Against the runs with no swap at all (no load in the background either): the goal's ratio, pooled and
            // for each pair of runs on its own.
            if percentile(steadyValues, 99) > 0 {
                result["swap_window_\(name)_p99_vs_steady"] = percentile(around, 99) / percentile(steadyValues, 99)
            }
            // Where in the window the time goes: the slowest frame at each offset from the switch points, -2...+2 (0:
            // the first frame of the new model; the frames before it run beside the load's warm-up and the flip). Two
            // switches less than 5 frames apart put a frame under two offsets.
            result["swap_window_\(name)_max_ms_by_offset"] = (-2...2).map { offset in
                swapRuns.flatMap { run in
                    let frames = run[keyPath: values]
                    return run.switchFrames.map { $0 + offset }.filter(frames.indices.contains).map { frames[$0] }
                }.max() ?? 0
            }
            if trials > 1 {
                // nil (JSON null) for a pair whose runs give no ratio (no frame, or no switch).
                result["swap_window_\(name)_p99_vs_steady_per_trial"] = zip(steadyRuns, split).map { steady, window in
                    let (around, base) = (percentile(window.around, 99), percentile(steady[keyPath: values], 99))
                    return around > 0 && base > 0 ? around / base : nil
                } as [Double?]
            }
        }
        let failures = swapRuns.flatMap(\.failures)
        result["swap_failures"] = failures
        result["swap_operations"] = swapRuns.flatMap(\.operations).map(\.json)
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (key, value) in result.sorted(by: { $0.key < $1.key }) { print("\(key): \(Self.text(value))") }
        }
        if !failures.isEmpty { throw ExitCode(1) }
    }

    /// A figure as text, an undefined ratio as `null` (as in the JSON) rather than Swift's `Optional(…)` wrapping.
    private static func text(_ value: Any) -> String {
        guard let values = value as? [Double?] else { return "\(value)" }
        return "[" + values.map { $0.map { "\($0)" } ?? "null" }.joined(separator: ", ") + "]"
    }

    private struct Run {
        var frames: Int
        var fps: Double
        /// Per frame, in frame order: decoded → answered, in milliseconds.
        var latencies: [Double]
        /// Per frame, in frame order: the detection's own time (queue, pre, inference, post), in milliseconds.
        var services: [Double]
        var switchFrames: [Int]
        var failures: [String]
        /// The swaps' and rollbacks' durations (`SwapSchedule.timings`).
        var operations: [SwapSchedule.OperationTiming]
        /// The host's steal time from the stream's start to its end (`HostSteal`).
        var stealMilliseconds: Double

        /// The frames' `values` split into the 5 frames around each switch point (the two before it, the first of the
        /// new model, the two after) and the others.
        func aroundSwitches(_ values: KeyPath<Run, [Double]>) -> (around: [Double], outside: [Double]) {
            let window = Set(switchFrames.flatMap { ($0 - 2)...($0 + 2) })
            let all = self[keyPath: values].enumerated()
            return (all.filter { window.contains($0.offset) }.map(\.element),
                all.filter { !window.contains($0.offset) }.map(\.element))
        }
    }

    /// Streams the video once (block back-pressure) and, with swaps, swaps and rolls back spread over its `frames`.
    private func stream(withSwaps: Bool, frames: Int, fpsCap: Double?) async throws -> Run {
        // The second model is a copy of the first: every swap loads a new session of the same cost. Loads go through
        // an optimized-model cache (a fresh one per run, its misses optimized in a child process), as the service's do.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("yoloswap-bench-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let cache = try OptimizedModelCache.yoloswap(directory: folder.appendingPathComponent("cache").path,
            persistentSecret: false)
        let manager = try StreamSlot.makeManager(modelOptions: modelOptions, servingThreads: framesInFlight,
            warmupConcurrency: warmupConcurrency, cache: cache)
        let slot = try await manager.createSlot("stream")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "stream", path: modelOptions.model))
        let copy = folder.appendingPathComponent("copy.onnx").path
        try FileManager.default.copyItem(atPath: modelOptions.model, toPath: copy)
        let operations = withSwaps ? swaps + rollbacks : 0
        let every = max(8, frames / (operations + 1))
        let driver = SwapSchedule(manager: manager, models: [modelOptions.model, copy], swaps: swaps,
            rollbacks: rollbacks)
        // Per frame, in order: latency, service time; and the frames where the generation changed (all of them: the
        // status keeps the last 100 switches only).
        let latencies = Locked<(end: [Double], service: [Double], generation: Int?, switches: [Int])>(([], [], nil, []))
        // Resolved as `stream --source` resolves it: the decoder opens a path with no symbolic link in it.
        let source: VideoSource
        do { source = try SourcePolicy.unrestricted.resolve(video) } catch { throw failure("\(error)") }
        let stream = VideoStream(id: "bench", configuration: StreamConfiguration(source: source,
            slot: "stream", backPressure: .block, fpsCap: fpsCap, framesInFlight: framesInFlight), slot: slot,
            sink: { result in
                let t = result.timings_ms
                latencies.withLock {
                    $0.end.append(t.latency)
                    $0.service.append(t.queue + t.preprocess + t.inference + t.postprocess)
                    if let previous = $0.generation, previous != result.model.generation {
                        $0.switches.append(result.frame)
                    }
                    $0.generation = result.model.generation
                }
                if operations > 0, result.frame > 0, result.frame % every == 0 { driver.startNext() }
            })
        let start = ContinuousClock.now
        let stealBefore = HostSteal.milliseconds()
        stream.start()
        await stream.waitUntilFinished()
        let steal = HostSteal.milliseconds() - stealBefore
        let elapsed = (ContinuousClock.now - start).seconds
        await driver.waitForAll()
        let status = stream.currentStatus
        await manager.shutdown()
        guard status.state == .ended else {
            throw failure("the stream ended \(status.state.rawValue): \(status.last_error ?? "")")
        }
        return Run(frames: status.frames_detected, fps: Double(status.frames_detected) / elapsed,
            latencies: latencies.value.end, services: latencies.value.service,
            switchFrames: latencies.value.switches, failures: driver.failures, operations: driver.timings,
            stealMilliseconds: steal)
    }

    private static func runPython(_ python: String, _ arguments: [String]) throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw failure("the Python loop failed (status \(process.terminationStatus))") }
        return object
    }
}

/// The host's steal time (`/proc/stat`, all CPUs), in milliseconds; 0 where it cannot be read. Read between runs
/// (a `/proc` file is generated in memory: the read does not wait on a disk).
enum HostSteal {
    static func milliseconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return 0 }
        // cpu user nice system idle iowait irq softirq steal …, in clock ticks (USER_HZ).
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count > 7 else { return 0 }
        return fields[7] * 1000 / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// The benchmarks' one percentile: nearest rank (`Percentiles.rank`).
private func percentile(_ values: [Double], _ p: Double) -> Double {
    Percentiles.rank(values.sorted(), p / 100)
}

/// Swaps (loads that activate, to whichever model is not active) and rollbacks, interleaved, one at a time; the next
/// is queued when the stream asks, and starts once the previous one has finished. Asking never waits: a stream that
/// waited for a load in its result sink would stall its own frames, and the stall would be measured as the swap's.
final class SwapSchedule: Sendable {
    private let manager: ModelManager
    private let models: [String]
    private let plan: [Bool]  // true: swap, false: rollback
    private let state = Locked<(next: Int, running: Task<Void, Never>?, failures: [String], timings: [OperationTiming])>(
        (0, nil, [], []))

    init(manager: ModelManager, models: [String], swaps: Int, rollbacks: Int) {
        self.manager = manager
        self.models = models
        // Rollbacks spread between the swaps; a rollback needs a standby, so none comes first.
        var plan: [Bool] = []
        var rollbacksLeft = rollbacks
        let every = max(1, swaps / max(1, rollbacks))
        for i in 0..<swaps {
            plan.append(true)
            if rollbacksLeft > 0, (i + 1) % every == 0 {
                plan.append(false)
                rollbacksLeft -= 1
            }
        }
        plan += Array(repeating: false, count: rollbacksLeft)
        self.plan = plan
    }

    var failures: [String] { state.value.failures }
    /// Per operation, in order: its kind, and how long it took from its start (`total_ms`; a swap's stages too).
    var timings: [OperationTiming] { state.value.timings }

    /// One operation's duration from its start, and a swap's load stages.
    struct OperationTiming: Sendable {
        var isSwap: Bool
        var totalMilliseconds: Double
        var stages: LoadTimings?

        var json: [String: Any] {
            var record: [String: Any] = ["operation": isSwap ? "swap" : "rollback", "total_ms": totalMilliseconds]
            for (key, value) in [("verify_ms", stages?.verify), ("load_ms", stages?.load),
                                 ("validate_ms", stages?.validate), ("warmup_ms", stages?.warmup)] {
                record[key] = value
            }
            return record
        }
    }

    func startNext() {
        state.withLock { s in
            guard s.next < plan.count else { return }
            let (index, previous) = (s.next, s.running)
            s.next += 1
            s.running = Task { [manager, models, plan] in
                await previous?.value
                await self.run(index, isSwap: plan[index], manager: manager, models: models)
            }
        }
    }

    private func run(_ index: Int, isSwap: Bool, manager: ModelManager, models: [String]) async {
        let start = ContinuousClock.now
        do {
            var stages: LoadTimings?
            if isSwap {
                let active = manager.slot("stream")?.roles.active?.identity.path
                let target = active == models[0] ? models[1] : models[0]
                let status = try await manager.loadAndActivate(LoadRequest(slot: "stream", path: target))
                if status.stage != .ready { self.fail("swap \(index): \(status.failure.map { "\($0)" } ?? "")") }
                stages = status.timings
            } else {
                _ = try await manager.rollback(slot: "stream")
            }
            let timing = OperationTiming(isSwap: isSwap, totalMilliseconds: (ContinuousClock.now - start).seconds * 1000,
                stages: stages)
            state.withLock { $0.timings.append(timing) }
        } catch {
            self.fail("operation \(index): \(error)")
        }
    }

    func waitForAll() async { await state.withLock { $0.running }?.value }

    private func fail(_ message: String) { state.withLock { $0.failures.append(message) } }
}
