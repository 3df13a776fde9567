import ArgumentParser
import Foundation
import HotSwap
import Logging
import ONNXRuntime
import ORTBackend
import Primitives
import Releases
import Server
import YOLO

/// What a shadow release costs the answers: the baseline's latency with every request mirrored to a candidate, against
/// no release, at a load with headroom and under saturation (where the mirror must be shed).
struct BenchReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-release",
        abstract: "Measure the baseline's latency with a 100 % shadow release vs none (headroom and saturation).")

    @Option(help: "Baseline model (active).") var baseline = "models/yolov3-tiny-coco-416.onnx"
    @Option(help: "Shadow candidate.") var candidate = "models/yolov3-tiny-coco-320.onnx"
    @Option(help: "Photos the request loops cycle through (repeatable).") var image: [String] = [
        "models/images/bus.jpg", "models/images/zidane.jpg",
    ]
    @Option(help: "Requests per measured block.") var requests = 200
    @Option(help: "Blocks per condition; conditions alternate (off, shadow, off, shadow, ...).") var rounds = 2
    @Option(help: "Concurrent request loops under saturation.") var saturation = 6
    @Option(help: "Worker threads of the slot.") var servingThreads = 2
    @Option(help: "Intra-op threads per model.") var threads = 1
    @Option(help: "Path to libonnxruntime.so.") var ortLibrary: String?
    @Flag(help: "Print one JSON object at the end.") var json = false

    func validate() throws {
        guard requests > 0, rounds > 0, saturation > 0, servingThreads > 0, !image.isEmpty else {
            throw ValidationError("--requests, --rounds, --saturation and --serving-threads must be positive")
        }
        for (flag, value, most) in [("--requests", requests, 1_000_000), ("--rounds", rounds, 1000),
                                    ("--saturation", saturation, 4096)] where value > most {
            throw ValidationError("\(flag) lies in 1...\(most)")
        }
        for (flag, value) in [("--threads", threads), ("--serving-threads", servingThreads)]
        where !(1...ModelOptions.maxThreads).contains(value) {
            throw ValidationError("\(flag) lies in 1...\(ModelOptions.maxThreads)")
        }
    }

    /// The latencies of one condition, and what the mirror did.
    struct Block {
        var latencies: [Double] = []
        var mirrored = 0
        var shedQueueFull = 0
        var shedSaturated = 0
    }

    func run() async throws {
        let images = try image.map { path -> [UInt8] in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw failure("cannot read image \(path)")
            }
            return [UInt8](data)
        }
        let cwd = FileManager.default.currentDirectoryPath
        var configuration = HotSwapConfiguration(servingThreads: servingThreads, intraOpThreads: threads)
        configuration.queueCapacity = max(64, saturation * 4)
        configuration.warmupRuns = 2
        let library = try ORTLibrary.load(explicitPath: ortLibrary)
        let manager = ModelManager(configuration: configuration,
            loader: ORTModelLoader(environment: try ORTEnvironment(library: library)))
        let logger = Logger(label: "bench-release")
        // The candidate's own folder is the repository (the models folder may be a link elsewhere).
        let candidateFile = URL(fileURLWithPath: candidate, relativeTo: URL(fileURLWithPath: cwd + "/"))
            .standardizedFileURL.resolvingSymlinksInPath()
        let control = ControlPlane(manager: manager,
            repository: ModelRepository(root: candidateFile.deletingLastPathComponent().path), routes: [:],
            audit: nil, logger: logger)
        let slot = try await manager.createSlot("bench")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "bench", path: baseline))
        control.markStarted()
        var spec = ReleaseSpec(model: candidateFile.lastPathComponent, strategy: .shadow)
        spec.mirror_percent = 100
        spec.disagreements_kept = 0

        // Service time of one request alone: the headroom load waits that long between requests (one loop).
        var serial: [Double] = []
        for i in 0..<30 { serial.append(try await timed(control, slot, images[i % images.count])) }
        let service = Percentiles(serial).median
        printError(String(format: "bench-release: service time %.2f ms (median of 30 serial requests)", service))

        var results: [String: Any] = ["service_ms": service, "requests_per_block": requests, "rounds": rounds,
            "serving_threads": servingThreads, "saturation_loops": saturation]
        for (name, loops, pause) in [("headroom", 1, service), ("saturation", saturation, 0.0)] {
            var off = Block(), on = Block()
            for round in 0..<rounds {
                off.latencies += try await load(control, slot, images, loops: loops, pauseMs: pause)
                let status = try await control.startRelease(slot: "bench", spec: spec, actor: "bench-release")
                guard status.record.phase == .running else {
                    throw failure("the shadow release did not start: \(status.record.reason ?? "?")")
                }
                on.latencies += try await load(control, slot, images, loops: loops, pauseMs: pause)
                // Let the mirror finish what it queued before counting.
                try await Task.sleep(for: .milliseconds(Int(service * 4) + 50))
                let mirror = try control.releaseStatus(slot: "bench").mirror
                on.mirrored += mirror?.mirrored ?? 0
                on.shedQueueFull += mirror?.shed_queue_full ?? 0
                on.shedSaturated += mirror?.shed_saturated ?? 0
                try await control.abortRelease(slot: "bench", actor: "bench-release")
                // The candidate is freed in the background: the next round's "off" block starts once it is gone (its
                // session's teardown and the heap's trim would otherwise land in the baseline's figures).
                while control.manager.releaser.pendingCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
                ProcessMemory.trim()
                printError("bench-release: \(name) round \(round + 1) of \(rounds) done")
            }
            let a = Percentiles(off.latencies), b = Percentiles(on.latencies)
            results[name] = [
                "off_p50_ms": a.median, "off_p99_ms": a.p99, "shadow_p50_ms": b.median, "shadow_p99_ms": b.p99,
                "p99_ratio": b.p99 / a.p99, "p50_ratio": b.median / a.median, "mirrored": on.mirrored,
                "shed_queue_full": on.shedQueueFull, "shed_saturated": on.shedSaturated,
                "requests": on.latencies.count,
            ] as [String: Any]
        }
        await control.stopReleases()
        await manager.shutdown()
        if json {
            let data = try JSONSerialization.data(withJSONObject: results, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for key in results.keys.sorted() { print("\(key): \(results[key]!)") }
        }
    }

    /// `loops` closed loops sending `requests` in all, each waiting `pauseMs` after an answer; the latencies (ms).
    private func load(_ control: ControlPlane, _ slot: ModelSlot, _ images: [[UInt8]], loops: Int,
                      pauseMs: Double) async throws -> [Double] {
        let next = Locked(0)
        let total = requests
        return try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<loops {
                group.addTask {
                    var out: [Double] = []
                    while true {
                        let i = next.withLock { n -> Int in
                            defer { n += 1 }
                            return n
                        }
                        guard i < total else { return out }
                        out.append(try await timed(control, slot, images[i % images.count]))
                        if pauseMs > 0 { try await Task.sleep(for: .microseconds(Int(pauseMs * 1000))) }
                    }
                }
            }
            var all: [Double] = []
            for try await part in group { all += part }
            return all
        }
    }
}

/// One detection through the control plane (the HTTP handler's path, mirror included); its latency in ms.
private func timed(_ control: ControlPlane, _ slot: ModelSlot, _ bytes: [UInt8]) async throws -> Double {
    let start = ContinuousClock.now
    _ = try await control.detect(on: slot, bytes: bytes, options: DetectionOptions(), context: RoutingContext(),
        deadline: nil)
    return (ContinuousClock.now - start).milliseconds
}
