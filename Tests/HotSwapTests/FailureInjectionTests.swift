import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension HotSwapSuite {
    /// Loads that must fail (digest, budget, unreadable), each with its reason, while the active model keeps serving.
    @Suite("Failure injection")
    struct FailureInjectionTests {
        /// Loads `path` with activate, expects it to fail as `matches` says, and checks the original model still
        /// answers with its original stamp.
        private func expectRejected(_ path: String, manager: ModelManager, slot: ModelSlot, original: ModelStamp,
                                    matches: (LoadFailure) -> Bool) async throws -> LoadOperation.Status {
            let op = try await manager.load(LoadRequest(slot: slot.name, path: path, activate: true))
            let status = await op.wait()
            #expect(status.stage == .failed, "\(path)")
            let failure = try #require(status.failure, "\(path) did not fail")
            #expect(matches(failure), "\(path) failed with \(failure)")
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model == original, "\(path): the active model changed")
            #expect(slot.roles.staged == nil)
            return status
        }

        @Test("a sha256 mismatch is rejected before any backend is made")
        func digestMismatch() async throws {
            let loader = FakeLoader()
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: loader)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            #expect(loader.makeBackendCalls == 1)

            let wrong = String(repeating: "0", count: 64)
            let op = try await manager.load(
                LoadRequest(slot: "default", path: Fixtures.identity320, expectedSHA256: wrong, activate: true))
            let status = await op.wait()
            #expect(status.stage == .failed)
            #expect(status.failure == .digestMismatch(path: Fixtures.identity320, expected: wrong,
                actual: try Fixtures.sha256(Fixtures.identity320)))
            #expect(loader.makeBackendCalls == 1, "a backend was made for bytes that failed verification")
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model == original)

            // The right digest (in upper case) is accepted.
            let right = try Fixtures.sha256(Fixtures.identity320).uppercased()
            let accepted = try await manager.loadAndActivate(
                LoadRequest(slot: "default", path: Fixtures.identity320, expectedSHA256: right))
            #expect(accepted.identity?.sha256 == right.lowercased())
            await manager.shutdown()
        }

        @Test("a model over the memory budget is rejected before loading")
        func overMemoryBudget() async throws {
            let loader = FakeLoader()
            let budget = 256 << 10
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(memoryBudgetBytes: budget), loader: loader)
            let slot = try await manager.createSlot("default")
            // 3.6 KB, assumed to cost twice its size: fits.
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            #expect(loader.makeBackendCalls == 1)

            // 35 MB: does not.
            let op = try await manager.load(
                LoadRequest(slot: "default", path: Fixtures.yolov3Tiny416, activate: true))
            let status = await op.wait()
            #expect(status.stage == .failed)
            guard case .overMemoryBudget(let path, let needed, let budgetBytes, _) = status.failure else {
                Issue.record("expected overMemoryBudget, got \(String(describing: status.failure))")
                return
            }
            #expect(path == Fixtures.yolov3Tiny416)
            #expect(budgetBytes == budget)
            #expect(needed >= 35_000_000)
            #expect(loader.makeBackendCalls == 1, "a backend was made for a model over the budget")
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model == original)
            await manager.shutdown()
        }

        @Test(
            "a model declaring an unusable input size fails in loading, before any warm-up run",
            arguments: [0, 100_000])
        func unusableInputSize(side: Int) async throws {
            let bad = Fixtures.identity320
            let loader = FakeLoader { $0 == bad ? FakeBackend(inputSize: side) : FakeBackend() }
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: loader)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            let status = try await expectRejected(bad, manager: manager, slot: slot, original: original) {
                if case .unsupportedModel(bad, let reason) = $0 { reason.contains("\(side)x\(side)") } else { false }
            }
            #expect(status.timings.warmup == nil, "a warm-up ran on the unusable model")
            await manager.shutdown()
        }

        @Test("an unreadable path fails as unreadable and leaves the active model serving")
        func unreadable() async throws {
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            _ = try await expectRejected("/nonexistent/model.onnx", manager: manager, slot: slot, original: original) {
                if case .unreadable = $0 { true } else { false }
            }
            await manager.shutdown()
        }

        @Test("a FIFO as the model fails at once as unreadable instead of blocking the load thread for ever")
        func fifo() async throws {
            let dir = try TemporaryDirectory()
            let fifo = dir.file("pipe.onnx")
            try makeFIFO(at: fifo)
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model

            let op = try await manager.load(LoadRequest(slot: "default", path: fifo, activate: true))
            let ended = await eventually(timeout: .seconds(20)) { op.status.stage.isTerminal }
            // Past the deadline, a writer lets the blocked open return so that the suite goes on.
            if !ended { releaseFIFOReaders(at: fifo) }
            #expect(ended, "the load of a FIFO was still \(op.status.stage) after 20 s")
            let status = await op.wait()
            guard case .unreadable(let path, let reason) = status.failure else {
                Issue.record("expected unreadable, got \(String(describing: status.failure))")
                await manager.shutdown()
                return
            }
            #expect(path == fifo)
            #expect(reason.contains("not a regular file"), "\(reason)")
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model == original)
            await manager.shutdown()
        }
    
        @Test("two loads in two slots at once cannot both pass the budget on memory that fits one: the first reserves it")
        func concurrentLoadsReserve() async throws {
            // An unmeasured model is estimated at twice its file's size: the budget holds one estimate, not two.
            let size = try #require(try FileManager.default.attributesOfItem(atPath: Fixtures.identity416)[.size] as? Int)
            var configuration = HotSwapConfiguration.testing(memoryBudgetBytes: size * 3)
            configuration.loadThreads = 2  // both loads verify while the first one's session is held
            let gate = Gate(open: false)
            let manager = ModelManager(configuration: configuration, loader: FakeLoader(gate: gate))
            try await manager.createSlot("a")
            try await manager.createSlot("b")
            let first = try await manager.load(LoadRequest(slot: "a", path: Fixtures.identity416, activate: true))
            #expect(await eventually { gate.waitingCount == 1 }, "the first load never reached its session")
            let second = try await manager.load(LoadRequest(slot: "b", path: Fixtures.identity416, activate: true))
            // Refused at its check, or (without the reservation) held at the gate beside the first.
            #expect(await eventually { second.status.stage == .failed || gate.waitingCount == 2 })
            #expect(gate.waitingCount == 1, "the second load passed the budget check")
            if gate.waitingCount == 2 { gate.open() }
            let refused = await second.wait()
            guard case .overMemoryBudget(_, let needed, let budget, let inUse) = refused.failure else {
                Issue.record("expected overMemoryBudget, got \(String(describing: refused.failure))")
                gate.open()
                await manager.shutdown()
                return
            }
            #expect(needed == size * 2 && budget == size * 3 && inUse >= size * 2, "\(needed) \(budget) \(inUse)")
            gate.open()
            #expect(await first.wait().stage == .ready)
            // The first load's reservation ended with it; what it holds is its model's own measured cost now.
            #expect(await eventually { manager.memoryReserved.isEmpty })
            await manager.shutdown()
        }

        @Test("a request that waited for a busy worker past its deadline says so, not that the slot has no model")
        func queueDeadline() async throws {
            let gate = Gate()
            let manager = ModelManager(configuration: .testing(servingThreads: 1),
                loader: FakeLoader { _ in FakeBackend(gate: gate) })
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            gate.close()
            let busy = Task { try await slot.detect(imageBytes: Fixtures.busJPEG) }
            #expect(await eventually { gate.waitingCount == 1 })
            // Queued behind the held request; the worker comes free only once its deadline has passed.
            let deadline = ContinuousClock.now + .milliseconds(100)
            let late = Task { try await slot.detect(imageBytes: Fixtures.busJPEG, deadline: deadline) }
            #expect(await eventually { slot.executor.queueDepth == 1 || ContinuousClock.now > deadline })
            try await Task.sleep(until: deadline + .milliseconds(100))
            gate.open()
            do {
                _ = try await late.value
                Issue.record("a request past its deadline was served")
            } catch let error as SlotError {
                guard case .timedOutInQueue(let name, _) = error else {
                    Issue.record("expected timedOutInQueue, got \(error)")
                    return
                }
                #expect(name == "default" && error.description.contains("for a worker"), "\(error)")
            }
            _ = try await busy.value
            await manager.shutdown()
        }

        @Test("a model's measured cost is never less than its file (RSS may read as no growth when others free memory)")
        func costAtLeastTheFile() async throws {
            let size = try #require(try FileManager.default.attributesOfItem(atPath: Fixtures.yolov3Tiny416)[.size] as? Int)
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            // A fake backend allocates next to nothing: without the floor its cost would read as about 0.
            let status = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.yolov3Tiny416))
            let sha = try #require(status.identity?.sha256)
            #expect((manager.memoryCosts[sha] ?? 0) >= size, "\(manager.memoryCosts)")
            #expect((slot.roles.active?.memoryBytes ?? 0) >= size)
            await manager.shutdown()
        }
}
}
