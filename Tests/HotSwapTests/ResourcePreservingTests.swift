import Foundation
import HotSwap
import HotSwapTesting
import Primitives
import TestSupport
import Testing

extension HotSwapSuite {
    /// The resource-preserving policy: release the old model first, then load; requests in the gap wait.
    @Suite("Resource-preserving policy")
    struct ResourcePreservingTests {
        /// Starts a resource-preserving load of the 320 model whose session is held at `gate`, and returns once the
        /// old model has left (the gap), with a task that opens the gate after 30 s (cancel it once done).
        static func openGap(_ manager: ModelManager, _ slot: ModelSlot, _ gate: Gate) async throws
            -> (LoadOperation, Task<Void, Never>)
        {
            gate.close()
            let safety = Task {
                try? await Task.sleep(for: .seconds(30))
                gate.open()
            }
            let op = try await manager.load(LoadRequest(slot: "default", path: Fixtures.identity320, activate: true,
                policy: .resourcePreserving))
            #expect(await eventually { slot.roles.active == nil && gate.waitingCount == 1 },
                "the old model was never taken out")
            return (op, safety)
        }

        @Test("requests in the gap wait for the new model up to their deadline; a short deadline ends unavailable")
        func requestsWaitInTheGap() async throws {
            // The new session's creation is held at a gate: the gap between the old model's release and the new one's
            // flip lasts until the requests below were made and the hasty one has failed.
            let gate = Gate()
            let loader = FakeLoader(gate: gate)
            let releases = ReleaseRecorder()
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(queueCapacity: 16), loader: loader, releaseObserver: releases.observer)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let modelA = try #require(slot.roles.active?.identity)

            // Should the hasty request wait for the new model (the bug this test is for), the gate opens after 30 s
            // and the test fails below rather than hanging.
            let (op, safety) = try await Self.openGap(manager, slot, gate)
            defer { safety.cancel() }

            // Requests arriving in the gap.
            let patient = (0..<4).map { _ in
                Task { () -> Result<SlotDetection, any Error> in
                    let deadline = ContinuousClock.now + .seconds(60)
                    do { return .success(try await slot.detect(imageBytes: Fixtures.busJPEG, deadline: deadline)) } catch {
                        return .failure(error)
                    }
                }
            }
            let shortDeadline = ContinuousClock.now + .milliseconds(50)
            let hasty = Task { () -> (any Error)? in
                do {
                    _ = try await slot.detect(imageBytes: Fixtures.busJPEG, deadline: shortDeadline)
                    return nil
                } catch { return error }
            }

            let error = await hasty.value
            let failedAt = ContinuousClock.now
            gate.open()
            let status = await op.wait()
            #expect(status.stage == .ready)
            let modelB = try #require(status.identity)
            for task in patient {
                switch await task.value {
                case .success(let answer):
                    #expect(answer.model.sha256 == modelB.sha256)
                    #expect(answer.model.generation == status.generation)
                case .failure(let error):
                    Issue.record("a request in the gap failed before its deadline: \(error)")
                }
            }
            guard case .unavailable(let slotName, _) = error as? SlotError else {
                Issue.record("expected SlotError.unavailable, got \(String(describing: error))")
                return
            }
            #expect(slotName == "default")
            #expect(failedAt >= shortDeadline)

            // A was drained and released before B's session was created: never two models in memory.
            let releaseOfA = try #require(releases.all.first { $0.identity == modelA })
            let loadOfB = try #require(loader.calls.last)
            #expect(loadOfB.label == Fixtures.identity320)
            #expect(releaseOfA.releasedAt <= loadOfB.startedAt)
            #expect(slot.roles.standby == nil)
            await manager.shutdown()
        }

        @Test("requests waiting for a model when the slot shuts down fail with shutDown, as does one made after")
        func waitersLearnOfShutdown() async throws {
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(queueCapacity: 16),
                loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            // No model was ever loaded: with no deadline these would wait for one for ever.
            let waiting = (0..<3).map { _ in
                Task { () -> (any Error)? in
                    do {
                        _ = try await slot.detect(imageBytes: Fixtures.busJPEG)
                        return nil
                    } catch { return error }
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            await manager.shutdown()
            for task in waiting {
                let error = await task.value
                #expect(error as? SlotError == .shutDown(slot: "default"), "\(String(describing: error))")
            }
            await #expect(throws: SlotError.shutDown(slot: "default")) {
                _ = try await slot.detect(imageBytes: Fixtures.busJPEG)
            }
        }

        @Test("a resource-preserving load that fails after the old model left brings it back (a model that fails its warm-up)")
        func failedLoadRestoresThePrevious() async throws {
            let releases = ReleaseRecorder()
            // The 320 model's outputs are NaN: refused at its warm-up, after the old model was released.
            let loader = FakeLoader { label in
                label == Fixtures.identity320 ? FakeBackend(inputSize: 320, nonFinite: true) : FakeBackend()
            }
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(policy: .resourcePreserving),
                loader: loader, releaseObserver: releases.observer)
            let slot = try await manager.createSlot("default")
            let events = EventRecorder(await manager.events())
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let modelA = try #require(slot.roles.active?.identity)
            // A staged model, which the load discards to make room, saying so.
            let staged = try #require(await manager.load(LoadRequest(slot: "default", path: Fixtures.identity416,
                version: "staged")).wait().identity)
            let op = try await manager.load(LoadRequest(slot: "default", path: Fixtures.identity320, activate: true))
            let status = await op.wait()
            #expect(status.stage == .failed, "\(String(describing: status.failure))")
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model.sha256 == modelA.sha256)
            #expect(slot.roles.generation == 2, "released, then restored")
            #expect(await eventually { events.events.contains { $0.operation == .discard && $0.from == staged } })
            let discard = events.events.first { $0.operation == .discard }
            #expect(discard?.reason?.contains("resource-preserving load of \(Fixtures.identity320)") == true)
            await manager.shutdown()
        }

        @Test("a resource-preserving load whose file fails its digest check leaves the old model serving, and its staged model")
        func refusedFileLeavesTheOldModel() async throws {
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(policy: .resourcePreserving),
                loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let staged = try #require(await manager.load(LoadRequest(slot: "default", path: Fixtures.identity320))
                .wait().identity)
            // Identities only: a test holding the instances would hold up their release.
            let (activeBefore, generationBefore) = (slot.roles.active?.identity, slot.roles.generation)
            let wrong = String(repeating: "f", count: 64)
            let status = try await manager.load(LoadRequest(slot: "default", path: Fixtures.identity320,
                expectedSHA256: wrong, activate: true)).wait()
            guard case .digestMismatch = status.failure else {
                Issue.record("expected digestMismatch, got \(String(describing: status.failure))")
                return
            }
            // Never out of service: the same model, the same generation, the staged model still there.
            #expect(slot.roles.active?.identity == activeBefore)
            #expect(slot.roles.generation == generationBefore)
            #expect(slot.roles.staged?.identity == staged)

            // A model that would not fit the budget even with this slot's models gone: refused before they go.
            let budgeted = ModelManager(configuration: HotSwapConfiguration.testing(memoryBudgetBytes: 256 << 10,
                policy: .resourcePreserving), loader: FakeLoader())
            let small = try await budgeted.createSlot("default")
            _ = try await budgeted.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            // Staged if it fits: the budget counts the active model's measured growth of the process's RSS, which
            // other suites running beside this one can swell. Whatever the slot holds, it must hold it after.
            _ = try await budgeted.load(LoadRequest(slot: "default", path: Fixtures.identity320)).wait()
            let kept = small.roles.staged?.identity
            let over = try await budgeted.load(LoadRequest(slot: "default", path: Fixtures.yolov3Tiny416,
                activate: true)).wait()
            guard case .overMemoryBudget = over.failure else {
                Issue.record("expected overMemoryBudget, got \(String(describing: over.failure))")
                return
            }
            #expect(small.roles.generation == 1 && small.roles.staged?.identity == kept)
            #expect(small.roles.active?.identity.path == Fixtures.identity416)
            await budgeted.shutdown()
            await manager.shutdown()
        }
    
        @Test("a rollback after a resource-preserving swap reloads the model it replaced (also after a mixed history)")
        func rollbackAfterResourcePreserving() async throws {
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            func load(_ path: String, version: String? = nil, _ policy: SwapPolicy) async throws {
                _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: path, version: version,
                    activate: true, policy: policy))
            }
            try await load(Fixtures.identity416, .availabilityPreserving)
            try await load(Fixtures.identity320, .resourcePreserving)
            #expect(slot.roles.standby == nil)
            let back = try await manager.rollback(slot: "default")
            #expect(back.to?.path == Fixtures.identity416, "\(back)")
            #expect(slot.roles.active?.identity.path == Fixtures.identity416)

            // A (416, active) → B (320, availability-preserving: A is the standby) → C (resource-preserving: A and B
            // leave). The rollback goes to B, the model C replaced, not to A.
            try await load(Fixtures.identity320, version: "b", .availabilityPreserving)
            try await load(Fixtures.identity416, version: "c", .resourcePreserving)
            let toB = try await manager.rollback(slot: "default")
            #expect(toB.to?.path == Fixtures.identity320 && toB.to?.version == "b", "\(toB)")
            await manager.shutdown()
        }

        @Test("requests waiting in the gap are bounded by the queue's capacity: past it, overloaded at once")
        func waitersBounded() async throws {
            let gate = Gate()
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(queueCapacity: 2),
                loader: FakeLoader(gate: gate))
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let (op, safety) = try await Self.openGap(manager, slot, gate)
            defer { safety.cancel() }
            let deadline = ContinuousClock.now + .seconds(60)
            let waiting = (0..<2).map { _ in
                Task { try await slot.detect(imageBytes: Fixtures.busJPEG, deadline: deadline) }
            }
            #expect(await eventually { slot.waitingForModel == 2 })
            await #expect(throws: SlotError.overloaded(slot: "default", queueDepth: 2, retryAfter: .seconds(1))) {
                _ = try await slot.detect(imageBytes: Fixtures.busJPEG, deadline: deadline)
            }
            gate.open()
            #expect(await op.wait().stage == .ready)
            for task in waiting { _ = try await task.value }
            await manager.shutdown()
        }

        @Test("a resource-preserving load makes its session only once the standby is freed, after a request it serves")
        func standbyFreedFirst() async throws {
            let gate = Gate()
            let loader = FakeLoader { label in label == Fixtures.identity416 ? FakeBackend(gate: gate) : FakeBackend() }
            let releases = ReleaseRecorder()
            let manager = ModelManager(configuration: .testing(), loader: loader, releaseObserver: releases.observer)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416, version: "a"))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity320))
            #expect(slot.roles.standby?.identity.version == "a")
            // A request by version runs on the standby and is held there.
            gate.close()
            let held = Task {
                try await slot.withModel(.version("a")) { model in
                    try model.detector.detect(imageBytes: Fixtures.busJPEG, options: .init(), decodeInParallel: false)
                }
            }
            #expect(await eventually { gate.waitingCount == 1 })
            let op = try await manager.load(LoadRequest(slot: "default", path: Fixtures.yolov3Tiny416, activate: true,
                policy: .resourcePreserving))
            try await Task.sleep(for: .milliseconds(500))
            #expect(!loader.calls.contains { $0.label == Fixtures.yolov3Tiny416 },
                "the new session was made while the standby still held memory")
            gate.open()
            _ = try await held.value
            #expect(await op.wait().stage == .ready)
            let standbyFreed = try #require(releases.all.first { $0.identity.version == "a" })
            let newSession = try #require(loader.calls.last { $0.label == Fixtures.yolov3Tiny416 })
            #expect(standbyFreed.releasedAt <= newSession.startedAt)
            await manager.shutdown()
        }
}
}

extension HotSwapSuite.ResourcePreservingTests {
    /// Verifies every file, holding the `from`-th verification of `path` (and those after it) at `gate`.
    final class GatedVerifier: ModelVerifier {
        let path: String, from: Int, gate: Gate
        private let count = Locked(0)

        init(path: String, from: Int, gate: Gate) {
            (self.path, self.from, self.gate) = (path, from, gate)
        }

        func verify(path: String, sha256: String, version: String?) throws -> String? {
            guard path == self.path else { return nil }
            if count.withLock({ $0 += 1; return $0 }) >= from { gate.pass() }
            return nil
        }
    }

    @Test("while a resource-preserving load makes its session, only the new model's estimate is reserved: the old model's memory is not counted twice")
    func noDoubleCountDuringLoad() async throws {
        let gate = Gate()
        let manager = ModelManager(configuration: .testing(memoryBudgetBytes: 1 << 30, policy: .resourcePreserving),
            loader: FakeLoader(gate: gate))
        let slot = try await manager.createSlot("a")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "a", path: Fixtures.identity416))
        let old = try #require(slot.roles.active?.memoryBytes)
        gate.close()
        defer { gate.open() }
        let op = try await manager.load(LoadRequest(slot: "a", path: Fixtures.identity320, activate: true))
        #expect(await eventually { gate.waitingCount == 1 && slot.roles.active == nil })
        // The new model's estimate (not measured yet: twice the file), raised to what the old model held — its
        // restore's, should the new one fail — not the two added (a version that held the old model's memory beside
        // made the budget look full to every other slot's load for the whole load).
        let size = try #require(FileManager.default.attributesOfItem(atPath: Fixtures.identity320)[.size] as? Int)
        #expect(manager.memoryReserved[.host] == max(2 * size, old), "\(manager.memoryReserved), old \(old)")
        gate.open()
        #expect(await op.wait().stage == .ready)
        #expect(manager.memoryReserved.values.allSatisfy { $0 == 0 }, "\(manager.memoryReserved)")
        await manager.shutdown()
    }

    @Test("a resource-preserving load that fails keeps the memory of the model it restores: another slot cannot take it meanwhile")
    func restoreKeepsItsMemory() async throws {
        let gate = Gate()
        // The second verification of the 416 model is the restore's: held while another slot loads.
        let verifier = GatedVerifier(path: Fixtures.identity416, from: 2, gate: gate)
        let loader = FakeLoader { label in
            label == Fixtures.identity320 ? FakeBackend(inputSize: 320, nonFinite: true) : FakeBackend()
        }
        // Room for the other slot's model (not measured yet: twice its file) and half the 416 model's file, which
        // its measured cost is never below: the two do not fit together.
        let other = Fixtures.synthetic("slow.onnx")
        func size(_ path: String) throws -> Int {
            try #require(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        }
        let budget = 2 * (try size(other)) + (try size(Fixtures.identity416)) / 2
        var configuration = HotSwapConfiguration.testing(memoryBudgetBytes: budget, policy: .resourcePreserving)
        // Two load threads: the other slot's load runs beside the held restore (with one, it runs in the window
        // when its verification was queued behind the failing warm-up).
        configuration.loadThreads = 2
        let manager = ModelManager(configuration: configuration, loader: loader, verifier: verifier)
        let slot = try await manager.createSlot("a")
        _ = try await manager.createSlot("b")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "a", path: Fixtures.identity416))
        let original = try #require(slot.roles.active?.identity)
        gate.close()
        let safety = Task {
            try? await Task.sleep(for: .seconds(30))
            gate.open()
        }
        defer { safety.cancel() }
        // Refused at its warm-up once the 416 model has left: the restore begins, and waits at its verification.
        let op = try await manager.load(LoadRequest(slot: "a", path: Fixtures.identity320, activate: true))
        #expect(await eventually { gate.waitingCount == 1 }, "the restore never began")
        // Before, nothing was reserved for the restore until its digest was checked: this load took the memory, and
        // the restore could then be refused over the budget, the slot left with no model.
        let taking = try await manager.load(LoadRequest(slot: "b", path: other, activate: true)).wait()
        if case .overMemoryBudget = taking.failure {} else {
            Issue.record("expected overMemoryBudget, got \(taking.stage) \(String(describing: taking.failure))")
        }
        gate.open()
        let status = await op.wait()
        #expect(status.stage == .failed)
        #expect(slot.roles.active?.identity == original)
        // The hold ended once the restored model took its role.
        #expect(manager.memoryReserved.values.allSatisfy { $0 == 0 }, "\(manager.memoryReserved)")
        await manager.shutdown()
    }
}

extension HotSwapSuite.ResourcePreservingTests {
    @Test("a resource-preserving load cancelled while the standby drains leaves the old model serving, never unloaded and reloaded; the released standby is committed gone")
    func cancelledWhileDraining() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try StateStore(directory: directory.appendingPathComponent("state").path)
        let gate = Gate()
        let loader = FakeLoader { label in label == Fixtures.identity416 ? FakeBackend(gate: gate) : FakeBackend() }
        let manager = ModelManager(configuration: .testing(), loader: loader, store: store)
        let slot = try await manager.createSlot("default")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416, version: "a"))
        _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity320))
        #expect(try store.committedSlot("default")?.standby?.version == "a")
        // A request by version holds the standby, so the load's hook waits for it to drain.
        gate.close()
        let held = Task {
            try await slot.withModel(.version("a")) { model in
                try model.detector.detect(imageBytes: Fixtures.busJPEG, options: .init(), decodeInParallel: false)
            }
        }
        #expect(await eventually { gate.waitingCount == 1 })
        let eventsBefore = manager.recentEvents(slot: "default").count
        let op = try await manager.load(LoadRequest(slot: "default", path: Fixtures.yolov3Tiny416, activate: true,
            policy: .resourcePreserving))
        #expect(await eventually { slot.roles.standby == nil }, "the hook never took the standby out")
        op.cancel(reason: "superseded in the test")
        gate.open()
        _ = try await held.value
        #expect(await eventually { manager.recentEvents(slot: "default").count > eventsBefore },
            "the cancelled load's event never came")
        // The old model served throughout: it was neither taken out nor loaded again.
        #expect(slot.roles.active?.identity.path == Fixtures.identity320)
        #expect(loader.calls.filter { $0.label == Fixtures.identity320 }.count == 1)
        #expect(!loader.calls.contains { $0.label == Fixtures.yolov3Tiny416 })
        let committed = try #require(try store.committedSlot("default"))
        #expect(committed.active.path == Fixtures.identity320 && committed.standby == nil)
        await manager.shutdown()
    }
}
