import Foundation
import ImageCodecs
import HotSwap
import ONNXRuntime
import ORTBackend
import TestSupport
import Testing
import YOLO

/// The optimized-model cache with its graph optimization in a child process (`yoloswap optimize-model`, the built
/// binary): the entry it writes gives the same outputs as a plain session; a child that crashes fails the load without
/// loading the model here; one that cannot start or fails falls back.
@Suite("Child-process graph optimizer")
struct ChildOptimizerTests {
    let model = Repo.model("yolov3-tiny-coco-320.onnx")
    let options = SessionOptions(intraOpThreads: 1)

    /// The model's raw output for bus.jpg.
    private func output(_ session: ORTSession) throws -> [Float] {
        let detector = try Detector(backend: ORTInferenceBackend(session: session))
        let (input, _) = detector.preprocess(try ImageDecoder.decode(Repository.bytes("models/images/bus.jpg")))
        return try session.run(.float(input.values, shape: input.shape))[0].floats()
    }

    private func cache(_ directory: TemporaryDirectory, command: [String]) -> OptimizedModelCache {
        var cache = OptimizedModelCache(directory: directory.path, secret: .random())
        cache.optimizer = .childProcess(command: command)
        return cache
    }

    @Test("a miss is optimized by `yoloswap optimize-model`; the next load hits; outputs equal a plain session's")
    func childMissThenHit() throws {
        let directory = try TemporaryDirectory()
        let cache = cache(directory, command: [Repo.binary, "optimize-model"])
        let file = try ModelFile(verifying: model)
        let (first, firstOutcome) = try cache.session(for: file, environment: Runtime.environment, options: options,
            label: model)
        #expect(firstOutcome == .miss)
        #expect(cache.statistics.childRuns == 1 && cache.statistics.inProcessRuns == 0)
        // The child reports its own peak: at least the model file it read.
        #expect(cache.statistics.childPeakBytes > file.byteCount)
        let (second, secondOutcome) = try cache.session(for: file, environment: Runtime.environment, options: options,
            label: model)
        #expect(secondOutcome == .hit && cache.statistics.childRuns == 1)

        let plain = try ORTSession(bytes: try file.readVerifiedBytes(), environment: Runtime.environment,
            options: options)
        let expected = try output(plain)
        #expect(try output(first) == expected)
        #expect(try output(second) == expected)
        // Only the entry and its manifest remain: no source copy, temporary or stderr file.
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(names.count == 2 && names.allSatisfy { $0.hasSuffix(".onnx") || $0.hasSuffix(".json") }, "\(names)")
    }

    @Test("a child killed by a signal fails the load with the signal and its stderr; nothing is cached")
    func crashedChildFailsTheLoad() throws {
        let directory = try TemporaryDirectory()
        // The child prints a message, then dies as ORT would on a segmentation fault.
        let cache = cache(directory, command: ["/bin/sh", "-c", "echo 'optimizer exploded' >&2; kill -SEGV $$", "sh"])
        let file = try ModelFile(verifying: model)
        let error = #expect(throws: ModelLoadError.self) {
            _ = try cache.session(for: file, environment: Runtime.environment, options: options, label: model)
        }
        if case .optimizerCrashed(let path, let signal, let detail)? = error {
            #expect(path == model && signal == SIGSEGV && detail.contains("optimizer exploded"))
        } else {
            Issue.record("expected optimizerCrashed, got \(String(describing: error))")
        }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains("signal 11") && message.contains("not loaded"))
        #expect(cache.statistics.inProcessRuns == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    @Test("a child that runs past its timeout is killed and fails the load; nothing is cached")
    func hungChildIsKilled() throws {
        let directory = try TemporaryDirectory()
        var cache = OptimizedModelCache(directory: directory.path, secret: .random())
        cache.optimizer = .childProcess(command: ["/bin/sh", "-c", "echo 'optimizing...' >&2; exec sleep 60", "sh"],
            timeout: .seconds(1))
        let file = try ModelFile(verifying: model)
        let clock = ContinuousClock()
        let start = clock.now
        let error = #expect(throws: ModelLoadError.self) {
            _ = try cache.session(for: file, environment: Runtime.environment, options: options, label: model)
        }
        #expect(clock.now - start < .seconds(30), "the child was not killed at its timeout")
        if case .optimizerTimedOut(let path, let timeout, let detail)? = error {
            #expect(path == model && timeout == .seconds(1) && detail.contains("optimizing..."))
        } else {
            Issue.record("expected optimizerTimedOut, got \(String(describing: error))")
        }
        #expect(cache.statistics.inProcessRuns == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    @Test("a load cancelled while its child optimizes kills the child: a shutdown does not wait out the timeout")
    func cancelledLoadKillsChild() async throws {
        let directory = try TemporaryDirectory(), scratch = try TemporaryDirectory()
        let pidFile = scratch.file("child.pid")
        var cache = OptimizedModelCache(directory: directory.path, secret: .random())
        cache.optimizer = .childProcess(command: ["/bin/sh", "-c", "echo $$ > '\(pidFile)'; exec sleep 300", "sh"])
        let manager = ModelManager(loader: ORTModelLoader(environment: Runtime.environment, cache: cache))
        try await manager.createSlot("s")
        let op = try await manager.load(LoadRequest(slot: "s", path: model, activate: true))
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(120)
        var pid: pid_t?
        while pid == nil, clock.now < deadline {
            pid = (try? String(contentsOfFile: pidFile, encoding: .utf8))
                .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if pid == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let child = try #require(pid, "the child optimizer never started")
        let start = clock.now
        await manager.shutdown()
        // Before the fix the shutdown waited for the child's 300 s (its timeout being 600 s).
        #expect(clock.now - start < .seconds(120), "the shutdown waited for the child optimizer")
        #expect(kill(child, 0) == -1 && errno == ESRCH, "the child optimizer still runs")
        #expect(op.status.stage == .cancelled)
        #expect(cache.statistics.inProcessRuns == 0)
    }

    @Test("a child that cannot start is replaced by an in-process optimization")
    func missingExecutableFallsBack() throws {
        let directory = try TemporaryDirectory()
        let cache = cache(directory, command: [directory.file("no-such-optimizer")])
        let (_, outcome) = try cache.session(for: try ModelFile(verifying: model), environment: Runtime.environment,
            options: options, label: model)
        #expect(outcome == .miss)
        #expect(cache.statistics.childRuns == 0 && cache.statistics.inProcessRuns == 1)
    }

    @Test("a child that exits with an error falls back to a plain load (ORT's own error, if any, comes from it)")
    func failingChildBypasses() throws {
        let directory = try TemporaryDirectory()
        let cache = cache(directory, command: ["/bin/sh", "-c", "exit 3", "sh"])
        let (session, outcome) = try cache.session(for: try ModelFile(verifying: model),
            environment: Runtime.environment, options: options, label: model)
        #expect(outcome == .bypassed)
        #expect(session.inputs.map(\.shape) == [[1, 3, 320, 320]])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    @Test("`yoloswap optimize-model` refuses an unknown level and a file that is not a model, exiting non-zero")
    func commandErrors() async throws {
        let directory = try TemporaryDirectory()
        let badLevel = try await runProcess(Repo.binary, ["optimize-model", "--input", model, "--output",
            directory.file("out.onnx"), "--optimization", "maximal"])
        #expect(badLevel.status != 0 && badLevel.stderr.contains("--optimization must be one of"))
        let notModel = directory.file("not-a-model.onnx")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: notModel))
        let refused = try await runProcess(Repo.binary, ["optimize-model", "--input", notModel, "--output",
            directory.file("out.onnx")])
        #expect(refused.status != 0 && refused.stderr.contains(notModel))
        #expect(!FileManager.default.fileExists(atPath: directory.file("out.onnx")))
    }
}
