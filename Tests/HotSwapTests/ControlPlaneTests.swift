import Foundation
@testable import HotSwap
import HotSwapTesting
import Primitives
import TestSupport
import Testing

extension HotSwapSuite {
    /// Load sharing, superseding, per-slot serialization, events, switch and rollback.
    @Suite("Control plane")
    struct ControlPlaneTests {
        private static let pathA = Fixtures.identity416
        private static let pathB = Fixtures.identity320

        private func makeManager(_ configuration: HotSwapConfiguration = HotSwapConfiguration.testing(),
                                 loader: FakeLoader = FakeLoader(), releases: ReleaseRecorder = ReleaseRecorder())
            async throws -> (ModelManager, ModelSlot)
        {
            let manager = ModelManager(configuration: configuration, loader: loader, releaseObserver: releases.observer)
            return (manager, try await manager.createSlot("default"))
        }

        // MARK: Sharing, superseding, serialization

        @Test("concurrent loads of the same model share one operation")
        func concurrentIdenticalLoadsShare() async throws {
            // The session creation is held until all five loads were asked for.
            let gate = Gate(open: false)
            defer { gate.open() }
            let loader = FakeLoader(gate: gate)
            let (manager, slot) = try await makeManager(loader: loader)
            let request = LoadRequest(slot: "default", path: Self.pathA, activate: true)
            let operations = try await withThrowingTaskGroup(of: LoadOperation.self) { group in
                for _ in 0..<5 { group.addTask { try await manager.load(request) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            gate.open()
            #expect(Set(operations.map(\.id)).count == 1)
            #expect(operations.allSatisfy { $0 === operations[0] })
            let status = await operations[0].wait()
            #expect(status.stage == .ready)
            #expect(loader.makeBackendCalls == 1)
            #expect(slot.roles.generation == 1)
            await manager.shutdown()
        }

        @Test("loads of one file that ask for different things do not share: a schema change allowed, a policy, a version")
        func differingLoadsDoNotShare() async throws {
            let gate = Gate(open: false)
            defer { gate.open() }
            let (manager, _) = try await makeManager(loader: FakeLoader(gate: gate))
            let base = LoadRequest(slot: "default", path: Self.pathA, activate: true)
            let first = try await manager.load(base)
            #expect(try await manager.load(base) === first)
            var variants = [base, base, base]
            variants[0].allowSchemaChange = true
            variants[1].policy = .resourcePreserving
            variants[2].version = "2"
            var previous = first
            for variant in variants {
                let next = try await manager.load(variant)
                #expect(next !== previous, "\(variant)")
                previous = next
            }
            gate.open()
            #expect(await first.wait().stage == .cancelled)
            // A field's text passing for another's: two different loads, two keys.
            var left = LoadRequest(slot: "default", path: "/m/x|", version: "v")
            var right = LoadRequest(slot: "default", path: "/m/x", version: "|v")
            #expect(left.sharingKey != right.sharingKey)
            (left.path, right.path) = ("/m/x", "/m/x")
            (left.version, right.version) = ("v", "v")
            #expect(left.sharingKey == right.sharingKey)
            await manager.shutdown()
        }

        @Test("a switch that expects the model its load staged refuses one another load staged meanwhile")
        func switchExpectingStaged() async throws {
            let (manager, slot) = try await makeManager()
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathA))
            let mine = try #require(await manager.load(LoadRequest(slot: "default", path: Self.pathB)).wait().identity)
            // Another caller stages a model of its own before the switch.
            let theirs = try #require(await manager.load(LoadRequest(slot: "default", path: Self.pathA, version: "x"))
                .wait().identity)
            #expect(slot.roles.staged?.identity == theirs)
            await #expect(throws: ControlError.stagedChanged(slot: "default",
                expected: "\(mine.path) (\(mine.sha256.prefix(12)))")) {
                _ = try await manager.switchStaged(slot: "default", expecting: mine)
            }
            #expect(slot.roles.active?.identity.path == Self.pathA && slot.roles.generation == 1)
            let event = try await manager.switchStaged(slot: "default", expecting: theirs)
            #expect(event.to == theirs && slot.roles.generation == 2)
            await manager.shutdown()
        }

        @Test("a newer load supersedes an older one still in progress")
        func newerLoadSupersedes() async throws {
            // The older load's session creation is held until the newer load was asked for.
            let gate = Gate(open: false)
            defer { gate.open() }
            let loader = FakeLoader(gate: gate)
            let (manager, slot) = try await makeManager(loader: loader)
            let events = EventRecorder(await manager.events())
            let older = try await manager.load(LoadRequest(slot: "default", path: Self.pathA))
            #expect(await eventually { gate.waitingCount == 1 && older.status.stage == .loading })
            let newer = try await manager.load(LoadRequest(slot: "default", path: Self.pathB))
            #expect(newer.id != older.id)
            gate.open()

            let olderStatus = await older.wait()
            #expect(olderStatus.stage == .cancelled)
            guard case .cancelled(let path, let reason) = olderStatus.failure else {
                Issue.record("expected a cancellation, got \(String(describing: olderStatus.failure))")
                return
            }
            #expect(path == Self.pathA)
            #expect(reason.contains("superseded"))
            #expect(await newer.wait().stage == .ready)
            #expect(await manager.latestOperation(slot: "default")?.id == newer.id)
            #expect(slot.roles.staged?.identity.path == Self.pathB, "the superseded model took a role")
            #expect(slot.roles.active == nil)

            let received = await events.waitFor(2)
            #expect(received.map(\.result) == [.cancelled, .succeeded])
            #expect(received.map(\.operationID) == [older.id, newer.id])
            await manager.shutdown()
        }

        @Test("operations on one slot run in order: a switch waits for the load queued before it")
        func operationsOnOneSlotSerialize() async throws {
            let gate = Gate()
            let (manager, slot) = try await makeManager(loader: FakeLoader(gate: gate))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathA))
            // B's session creation is held, then let go 300 ms later — meanwhile the switch below is issued.
            gate.close()
            let op = try await manager.load(LoadRequest(slot: "default", path: Self.pathB))
            Task {
                try await Task.sleep(for: .milliseconds(300))
                gate.open()
            }
            #expect(!op.status.stage.isTerminal)
            // Issued while the load is still in progress: without serialization there is nothing to switch to.
            let event = try await manager.switchStaged(slot: "default")
            #expect(op.status.stage == .ready)
            #expect(event.result == .succeeded)
            #expect(event.to?.path == Self.pathB)
            #expect(slot.roles.active?.identity.path == Self.pathB)
            #expect(slot.roles.standby?.identity.path == Self.pathA)
            await manager.shutdown()
        }

        // MARK: Events

        @Test("every completed operation emits an event; loads that activate carry every stage timing")
        func everyOperationEmitsAnEvent() async throws {
            let (manager, _) = try await makeManager()
            let events = EventRecorder(await manager.events())

            let first = try await manager.load(LoadRequest(slot: "default", path: Self.pathA, activate: true))
            _ = await first.wait()
            let staged = try await manager.load(LoadRequest(slot: "default", path: Self.pathB))
            _ = await staged.wait()
            _ = try await manager.switchStaged(slot: "default")
            _ = try await manager.rollback(slot: "default")
            let again = try await manager.load(LoadRequest(slot: "default", path: Self.pathB))
            _ = await again.wait()
            _ = try await manager.discardStaged(slot: "default")
            let rejected = try await manager.load(LoadRequest(slot: "default", path: Self.pathB,
                expectedSHA256: String(repeating: "0", count: 64), activate: true))
            _ = await rejected.wait()

            let received = await events.waitFor(7)
            #expect(received.map(\.operation) == [.activate, .load, .switch, .rollback, .load, .discard, .activate])
            #expect(received.map(\.result) == [.succeeded, .succeeded, .succeeded, .succeeded, .succeeded,
                .succeeded, .failed])
            #expect(received.allSatisfy { $0.slot == "default" })
            guard received.count == 7 else { return }
            let (activate, load, switched, rollback, discard, failed) =
                (received[0], received[1], received[2], received[3], received[5], received[6])

            #expect(activate.operationID == first.id)
            #expect(activate.to?.path == Self.pathA)
            #expect(activate.generation == 1)
            #expect(activate.timings.verify != nil && activate.timings.load != nil && activate.timings.warmup != nil
                && activate.timings.flipMicroseconds != nil && activate.timings.total != nil)

            #expect(load.operationID == staged.id)
            #expect(load.generation == nil)
            #expect(load.timings.flipMicroseconds == nil && load.timings.warmup != nil)

            #expect(switched.from?.path == Self.pathA && switched.to?.path == Self.pathB)
            #expect(switched.generation == 2 && switched.timings.flipMicroseconds != nil)
            #expect(rollback.from?.path == Self.pathB && rollback.to?.path == Self.pathA)
            #expect(rollback.generation == 3 && rollback.timings.flipMicroseconds != nil)
            #expect(discard.from?.path == Self.pathB)
            #expect(failed.operationID == rejected.id)
            #expect(failed.reason?.contains("sha256 mismatch") == true)

            // The same events, newest first, from the manager's memory.
            #expect(await manager.recentEvents(slot: "default") == Array(received.reversed()))
            await manager.shutdown()
        }

        // MARK: Switch and rollback

        @Test("switch with nothing staged and rollback with nothing to go back to throw")
        func nothingToSwitchOrRollBackTo() async throws {
            let (manager, slot) = try await makeManager()
            await #expect(throws: ControlError.nothingStaged(slot: "default")) {
                try await manager.switchStaged(slot: "default")
            }
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathA))
            await #expect(throws: ControlError.nothingStaged(slot: "default")) {
                try await manager.switchStaged(slot: "default")
            }
            await #expect(throws: ControlError.nothingToRollBackTo(slot: "default")) {
                try await manager.rollback(slot: "default")
            }
            await #expect(throws: ControlError.unknownSlot("elsewhere")) {
                try await manager.switchStaged(slot: "elsewhere")
            }
            #expect(slot.roles.active?.identity.path == Self.pathA)
            #expect(slot.roles.generation == 1)
            await manager.shutdown()
        }

        @Test("rollback flips the warm standby in without loading anything")
        func rollbackToStandby() async throws {
            let loader = FakeLoader()
            let (manager, slot) = try await makeManager(loader: loader)
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathA))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathB))
            let standby = try #require(slot.roles.standby.map(ObjectIdentifier.init))
            let active = try #require(slot.roles.active.map(ObjectIdentifier.init))

            let event = try await manager.rollback(slot: "default")
            #expect(event.operation == .rollback && event.result == .succeeded)
            #expect(event.to?.path == Self.pathA && event.from?.path == Self.pathB)
            #expect(event.timings.flipMicroseconds != nil)
            #expect(event.generation == 3)
            print("rollback to standby: flip took \(event.timings.flipMicroseconds ?? -1) µs")
            #expect(slot.roles.active.map(ObjectIdentifier.init) == standby, "the standby instance was not reused")
            #expect(slot.roles.standby.map(ObjectIdentifier.init) == active)
            #expect(loader.makeBackendCalls == 2)
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model.sha256 == (try Fixtures.sha256(Self.pathA)))
            #expect(answer.model.generation == 3)
            await manager.shutdown()
        }

        @Test("rollback without a standby reloads the previous model by its path and sha256")
        func rollbackReloadsThePrevious() async throws {
            let loader = FakeLoader()
            let releases = ReleaseRecorder()
            let (manager, slot) = try await makeManager(HotSwapConfiguration.testing(standbyRetention: .release),
                loader: loader, releases: releases)
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathA, version: "1"))
            let modelA = try #require(slot.roles.active?.identity)
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathB))
            #expect(slot.roles.standby == nil)
            #expect(await eventually { releases.all.contains { $0.identity == modelA } })

            let event = try await manager.rollback(slot: "default")
            #expect(event.operation == .rollback && event.result == .succeeded)
            #expect(event.to == modelA, "reloaded \(String(describing: event.to)) instead of \(modelA)")
            #expect(event.from?.path == Self.pathB)
            #expect(event.timings.verify != nil && event.timings.flipMicroseconds != nil)
            #expect(loader.makeBackendCalls == 3)
            #expect(loader.calls.last?.label == Self.pathA)
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model.sha256 == modelA.sha256 && answer.model.id == modelA.id)
            #expect(answer.model.generation == 3)

            // B left every role: released once drained, on the releaser thread like every release.
            #expect(await eventually { releases.all.count == 2 })
            #expect(releases.all.allSatisfy { $0.threadName == manager.releaser.threadName },
                "released on \(releases.all.map(\.threadName))")
            await manager.shutdown()
        }

        @Test("under release retention a switch also releases a standby a promotion kept: a rollback goes to the model just replaced")
        func releaseRetentionAfterPromotion() async throws {
            let (manager, slot) = try await makeManager(HotSwapConfiguration.testing(standbyRetention: .release))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathA, version: "a"))
            _ = try await manager.load(LoadRequest(slot: "default", path: Self.pathB, version: "b")).wait()
            _ = try await manager.promoteStaged(slot: "default")
            #expect(slot.roles.standby?.identity.version == "a", "a promotion keeps the baseline")
            _ = try await manager.load(LoadRequest(slot: "default", path: Self.pathA, version: "c")).wait()
            _ = try await manager.switchStaged(slot: "default")
            // Before, A stayed the standby for good, and the rollback went to it rather than to B.
            #expect(slot.roles.standby == nil, "\(String(describing: slot.roles.standby?.identity))")
            let event = try await manager.rollback(slot: "default")
            #expect(event.to?.version == "b", "\(String(describing: event.to))")
            await manager.shutdown()
        }

        @Test("a rollback reload re-verifies the previous model's sha256")
        func rollbackReloadVerifiesTheDigest() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let copyOfA = directory.appendingPathComponent("a.onnx").path
            try FileManager.default.copyItem(atPath: Self.pathA, toPath: copyOfA)
            let (manager, slot) = try await makeManager(HotSwapConfiguration.testing(standbyRetention: .release))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: copyOfA))
            let modelA = try #require(slot.roles.active?.identity)
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Self.pathB))
            let modelB = try #require(slot.roles.active?.identity)

            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: copyOfA))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data([0x0a]))
            try handle.close()

            do {
                _ = try await manager.rollback(slot: "default")
                Issue.record("rolled back to bytes that differ from the recorded ones")
            } catch ControlError.loadFailed(let slotName, .digestMismatch(let path, let expected, _)) {
                #expect(slotName == "default")
                #expect(path == copyOfA)
                #expect(expected == modelA.sha256)
            }
            #expect(slot.roles.active?.identity == modelB)
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model.sha256 == modelB.sha256)
            await manager.shutdown()
        }
    }
}

extension HotSwapSuite.ControlPlaneTests {
    @Test("auto judged by the file size, refused by the measured cost: the load goes on resource-preserving instead of failing")
    func autoFallsBackOnMeasuredCost() async throws {
        // Sparse files (a fake backend runs them): a loaded model costs at least its file's size.
        let folder = try TemporaryDirectory(prefix: "auto-measured")
        let mib = 1 << 20
        func sparse(_ name: String, _ bytes: Int) throws -> String {
            let path = folder.file(name)
            #expect(FileManager.default.createFile(atPath: path, contents: Data(name.utf8)))
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: UInt64(bytes))
            try handle.close()
            return path
        }
        let (old, new) = (try sparse("old.onnx", 40 * mib), try sparse("new.onnx", 32 * mib))
        let manager = ModelManager(configuration: .testing(memoryBudgetBytes: 150 * mib, policy: .auto),
            loader: FakeLoader())
        let slot = try await manager.createSlot("default")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: old))
        // Measured once before at 120 MiB: with the 40 MiB model it does not fit; alone it does. Without the digest
        // `auto` estimates twice the file (64 MiB), which fits beside it.
        let digest = try FileDigest.sha256(ofFileAt: new).sha256
        manager.ledger.record(sha256: digest, target: .cpu, bytes: 120 * mib)
        let status = try await manager.load(LoadRequest(slot: "default", path: new, activate: true)).wait()
        #expect(status.stage == .ready, "\(String(describing: status.failure))")
        #expect(status.policy?.policy == .resourcePreserving, "\(String(describing: status.policy))")
        #expect(status.policy?.reason.contains("measured cost") == true)
        #expect(slot.roles.active?.identity.path == new)
        await manager.shutdown()
    }
}

