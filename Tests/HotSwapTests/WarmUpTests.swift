import Foundation
@testable import HotSwap
import HotSwapTesting
import Primitives
import TestSupport
import Testing
import YOLO

extension HotSwapSuite {
    /// The warm-up's shape: `warmupRuns` Runs, the last as many at once as the slot has workers, on threads below the
    /// serving threads' priority.
    @Suite("Warm-up")
    struct WarmUpTests {
        /// Records every Run of the models it makes: how many overlapped at most, and each Run thread's nice value.
        /// The Runs after the first `sequential` wait (up to 30 s, or until the warm-up is cancelled) until
        /// `overlapping` have been in flight together, so that a slow thread start on a loaded machine cannot hide a
        /// round that was meant to run at once (a round that is not at once waits out the test's 20-second warm-up
        /// timeout and fails the load).
        final class ProbeLoader: ModelLoader {
            let sequential: Int
            let overlapping: Int
            private let state = Locked<(calls: Int, inFlight: Int, maxInFlight: Int, nice: [Int32])>((0, 0, 0, []))

            init(sequential: Int, overlapping: Int) {
                self.sequential = sequential
                self.overlapping = overlapping
            }

            var runs: Int { state.value.calls }
            var inFlight: Int { state.value.inFlight }
            var maxInFlight: Int { state.value.maxInFlight }
            var niceValues: [Int32] { state.value.nice }

            func makeBackend(for file: ModelFile, label: String, execution: ModelExecution) throws
                -> any InferenceBackend
            {
                ProbeBackend(inner: FakeBackend(), loader: self)
            }

            /// Runs `body` as one of the model's Runs; blocks (a load thread, not the test's) while it waits.
            func run(cancellation: RunCancellation?, _ body: () throws -> any OutputTensorView) rethrows
                -> any OutputTensorView
            {
                errno = 0
                let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
                let niceKnown = errno == 0
                let call = state.withLock { s -> Int in
                    s.calls += 1
                    s.inFlight += 1
                    s.maxInFlight = max(s.maxInFlight, s.inFlight)
                    s.nice.append(niceKnown ? nice : Int32.min)
                    return s.calls
                }
                defer { state.withLock { $0.inFlight -= 1 } }
                if call > sequential {
                    let deadline = ContinuousClock.now + .seconds(30)
                    // Until `overlapping` Runs have been in flight together (the first to arrive may finish first).
                    while state.value.maxInFlight < overlapping, ContinuousClock.now < deadline,
                        cancellation?.isCancelled != true {
                        Thread.sleep(forTimeInterval: 0.002)
                    }
                }
                return try body()
            }
        }

        struct ProbeBackend: InferenceBackend {
            let inner: FakeBackend
            let loader: ProbeLoader
            var inputs: [TensorSpec] { inner.inputs }
            var outputs: [TensorSpec] { inner.outputs }
            var metadata: [String: String] { inner.metadata }
            func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
                try loader.run(cancellation: cancellation) { try inner.run(input, cancellation: cancellation) }
            }
        }

        @Test("warmupRuns Runs, the last as many at once as the slot has workers, all at nice 10")
        func concurrentRound() async throws {
            let loader = ProbeLoader(sequential: 2, overlapping: 3)
            let manager = ModelManager(
                configuration: HotSwapConfiguration.testing(servingThreads: 3, warmupRuns: 5), loader: loader)
            _ = try await manager.createSlot("default")
            let status = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            #expect(status.stage == .ready)
            #expect(loader.runs == 5, "the warm-up ran \(loader.runs) Runs")
            #expect(loader.maxInFlight == 3, "at most \(loader.maxInFlight) Runs overlapped")
            #if os(Linux)
                // The load executor runs at nice 10 (or above, in a process started at a higher one), and so do the
                // threads it starts for the round.
                let nice = loader.niceValues
                #expect(nice.count == 5 && Set(nice).count == 1 && nice[0] >= 10, "nice values \(nice)")
            #endif
            await manager.shutdown()
        }

        @Test("fewer Runs than workers: all at once; warmupConcurrency 1: one after another; warmupRuns 0: none",
              arguments: [(runs: 2, concurrency: nil as Int?, overlapping: 2), (3, 1, 1), (1, nil, 1), (0, nil, 0)])
        func otherShapes(runs: Int, concurrency: Int?, overlapping: Int) async throws {
            var configuration = HotSwapConfiguration.testing(servingThreads: 3, warmupRuns: runs)
            configuration.warmupConcurrency = concurrency
            let loader = ProbeLoader(sequential: runs - overlapping, overlapping: overlapping)
            let manager = ModelManager(configuration: configuration, loader: loader)
            _ = try await manager.createSlot("default")
            let status = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            #expect(status.stage == .ready)
            #expect(loader.runs == runs && loader.maxInFlight == overlapping,
                "\(loader.runs) Runs, \(loader.maxInFlight) at once")
            await manager.shutdown()
        }

        @Test("a round that cannot finish is aborted by the warm-up timeout: the load fails as timed out, no Run is left")
        func roundTimesOut() async throws {
            // The probe waits for 4 Runs at once; the round has 3, so each waits until the timeout cancels it.
            let loader = ProbeLoader(sequential: 0, overlapping: 4)
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(servingThreads: 3, warmupRuns: 3,
                warmupTimeout: .seconds(1)), loader: loader)
            _ = try await manager.createSlot("default")
            let started = ContinuousClock.now
            let status = await (try manager.load(LoadRequest(slot: "default", path: Fixtures.identity416,
                activate: true))).wait()
            #expect(status.failure == .warmupTimeout(path: Fixtures.identity416, after: .seconds(1)), "\(status)")
            // The load ends once every Run of the round has (the probe would hold them for 30 s).
            #expect(ContinuousClock.now - started < .seconds(20))
            #expect(loader.runs == 3 && loader.inFlight == 0, "\(loader.runs) Runs, \(loader.inFlight) in flight")
            await manager.shutdown()
        }
    
        @Test("the warm-up timeout counts from the warm-up's start, not from its wait for a load thread")
        func timeoutCountsFromStart() async throws {
            let gate = Gate(open: false)
            // A timeout a warm-up of the fake model keeps well within even at nice 10 on a busy machine, and a wait
            // in the queue twice as long.
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(warmupTimeout: .seconds(3)),
                loader: FakeLoader(gate: gate))
            try await manager.createSlot("default")
            let op = try await manager.load(LoadRequest(slot: "default", path: Fixtures.identity416, activate: true))
            #expect(await eventually { gate.waitingCount == 1 })  // the session's creation holds the load thread
            // Work queued on the load thread before the warm-up (another slot's long load): six seconds.
            let blocker = Task { try await manager.loadExecutor.run { Thread.sleep(forTimeInterval: 6) } }
            #expect(await eventually { manager.loadExecutor.queueDepth == 1 })
            gate.open()
            let status = await op.wait()
            #expect(status.stage == .ready, "\(String(describing: status.failure))")
            try await blocker.value
            await manager.shutdown()
        }
}
}
