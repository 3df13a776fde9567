import Foundation
import HotSwap
import HotSwapTesting
import Primitives
import TestSupport
import Testing

extension HotSwapSuite {
    /// What the store holds is what a restart brings back: a flip whose commit never landed is not.
    @Suite("Commits")
    struct CommitTests {
        @Test("nothing is switched before it is committed: a process that dies mid-commit restarts into the old model")
        func switchWaitsForItsCommit() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let state = directory.appendingPathComponent("state").path
            let gate = Gate()
            let stalled = SlowStateStore(try StateStore(directory: state), commitGate: gate)
            let first = ModelManager(configuration: .testing(), loader: FakeLoader(), store: stalled)
            let slot = try await first.createSlot("line")
            let committed = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await (try await first.load(LoadRequest(slot: "line", path: Fixtures.identity320))).wait()

            // The switch's commit blocks on the gate, as a disk that stalls, or a process killed right there, would.
            gate.close()
            let switching = Task { try await first.switchStaged(slot: "line") }
            #expect(await eventually { gate.waitingCount == 1 })
            // Until it is durable, the slot serves the committed model.
            #expect(slot.roles.active?.identity.path == Fixtures.identity416)
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.sha256 == committed.identity?.sha256)

            // A fresh process on the same state directory: the last committed model comes back.
            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            let events = try await restarted.restore()
            #expect(events.map(\.result) == [.succeeded])
            let restored = try #require(restarted.slot("line")?.roles.active?.identity)
            #expect(restored == committed.identity)
            #expect(restarted.slot("line")?.roles.generation == 1)
            await restarted.shutdown()

            // Once the commit lands, the switch is made.
            gate.open()
            let event = try await switching.value
            #expect(event.generation == 2)
            #expect(slot.roles.active?.identity.path == Fixtures.identity320)
            await first.shutdown()
        }

        @Test("a standby unloaded while the active model stays is committed gone: a restart does not bring it back")
        func unloadedStandbyCommitted() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let state = directory.appendingPathComponent("state").path
            let first = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            _ = try await first.createSlot("line")
            _ = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(first.slot("line")?.roles.standby?.identity.path == Fixtures.identity416)
            let result = try await first.unload(slot: "line", includingActive: false)
            #expect(result.standby?.path == Fixtures.identity416 && result.active == nil)
            await first.shutdown()

            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            _ = try await restarted.restore()
            #expect(restarted.slot("line")?.roles.active?.identity.path == Fixtures.identity320)
            #expect(restarted.slot("line")?.roles.standby == nil, "the unloaded standby came back")
            await restarted.shutdown()
        }

        @Test("a change the store cannot record is refused and changes nothing; once the store works, it goes through")
        func failedCommitsChangeNothing() async throws {
            let store = SlowStateStore(try StateStore(inMemory: ()))
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader(), store: store)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320))).wait()
            let before = try await slot.detect(imageBytes: Fixtures.busJPEG).model

            store.failCommits = true
            await #expect(throws: ControlError.self) { try await manager.switchStaged(slot: "line") }
            let load = await (try await manager.load(
                LoadRequest(slot: "line", path: Fixtures.identity320, version: "b", activate: true))).wait()
            guard case .notCommitted(_, let reason)? = load.failure else {
                Issue.record("expected notCommitted, got \(String(describing: load.failure))")
                return
            }
            #expect(reason.contains("disk full"))
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model == before)
            #expect(slot.roles.generation == before.generation)
            #expect(slot.roles.staged?.identity.path == Fixtures.identity320, "the staged model stays staged")
            let failures = manager.recentEvents(limit: 1)
            #expect(failures.first?.result == .failed)

            store.failCommits = false
            let event = try await manager.switchStaged(slot: "line")
            #expect(event.generation == before.generation + 1)
            #expect(try store.committedSlots().first?.generation == before.generation + 1)
            await manager.shutdown()
        }

        @Test("a load whose model is being committed ends ready, even when a newer load supersedes it meanwhile")
        func supersededWhileCommitting() async throws {
            let gate = Gate()
            let store = SlowStateStore(try StateStore(inMemory: ()), commitGate: gate)
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader(), store: store)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))

            gate.close()
            let first = try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320, activate: true))
            // Past the point of no return: committing (held at the gate), then it flips.
            #expect(await eventually { gate.waitingCount == 1 })
            // A newer load of the slot would cancel a load still in progress: not one that is switching its model in.
            let second = try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity416, activate: true))
            gate.open()
            let status = await first.wait()
            #expect(status.stage == .ready, "\(String(describing: status.failure))")
            #expect(status.generation == 2)
            #expect(await second.wait().stage == .ready)
            #expect(slot.roles.active?.identity.path == Fixtures.identity416)
            await manager.shutdown()
        }

        @Test("a standby whose retention ends while a rollback to it is being committed is rolled back to, then kept")
        func retentionEndsDuringRollback() async throws {
            let gate = Gate()
            let store = SlowStateStore(try StateStore(inMemory: ()), commitGate: gate)
            var configuration = HotSwapConfiguration.testing()
            configuration.standbyRetention = .keepFor(.milliseconds(300))
            let manager = ModelManager(configuration: configuration, loader: FakeLoader(), store: store)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(slot.roles.standby?.identity.path == Fixtures.identity416)

            // The rollback's commit is held past the standby's time: its drop must wait for the rollback.
            gate.close()
            let rollback = Task { try await manager.rollback(slot: "line") }
            #expect(await eventually { gate.waitingCount == 1 })
            try await Task.sleep(for: .milliseconds(600))
            gate.open()
            let event = try await rollback.value
            #expect(event.result == .succeeded && event.to?.path == Fixtures.identity416)
            #expect(slot.roles.active?.identity.path == Fixtures.identity416)
            #expect(try store.committedSlots().first?.active.path == Fixtures.identity416)
            await manager.shutdown()
        }

        @Test("a standby released by its retention is committed gone: a restart does not bring it back")
        func retentionCommitted() async throws {
            let store = try StateStore(inMemory: ())
            var configuration = HotSwapConfiguration.testing()
            configuration.standbyRetention = .keepFor(.milliseconds(200))
            let manager = ModelManager(configuration: configuration, loader: FakeLoader(), store: store)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(try store.committedSlots().first?.standby?.path == Fixtures.identity416)
            #expect(await eventually { slot.roles.standby == nil })
            // Before, the store still named it, and the next start restored it (its retention begun again).
            #expect(await eventually { (try? store.committedSlots().first?.standby) == nil },
                "\(String(describing: try? store.committedSlots()))")
            #expect(try store.committedSlots().first?.active.path == Fixtures.identity320)
            await manager.shutdown()
        }

        @Test("a switching load that released the standby before its session and then failed commits the standby gone")
        func failedLoadCommitsReleasedStandby() async throws {
            let store = try StateStore(inMemory: ())
            let loader = FakeLoader { label in
                label == Fixtures.yolov3Tiny416 ? FakeBackend(nonFinite: true) : FakeBackend()
            }
            let manager = ModelManager(configuration: .testing(), loader: loader, store: store)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(try store.committedSlots().first?.standby?.path == Fixtures.identity416)
            // Refused at its warm-up, after the standby was released to make room.
            let status = try await manager.load(LoadRequest(slot: "line", path: Fixtures.yolov3Tiny416,
                activate: true, allowSchemaChange: true)).wait()
            #expect(status.stage == .failed)
            #expect(slot.roles.standby == nil && slot.roles.active?.identity.path == Fixtures.identity320)
            // Before, the store still named it: a restart restored a standby the slot no longer had.
            #expect(try store.committedSlots().first?.standby == nil)
            await manager.shutdown()
        }

        @Test("a committed model that fails its restore (its file changed) leaves the committed generation: the next activation follows it")
        func failedRestoreKeepsGeneration() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let state = directory.appendingPathComponent("state").path
            let copy = directory.appendingPathComponent("model.onnx").path
            try FileManager.default.copyItem(atPath: Fixtures.identity416, toPath: copy)
            let first = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            try await first.createSlot("line")
            _ = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(try await first.loadAndActivate(LoadRequest(slot: "line", path: copy)).generation == 2)
            await first.shutdown()
            let handle = try #require(FileHandle(forWritingAtPath: copy))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data([0]))
            try handle.close()

            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            let events = try await restarted.restore()
            #expect(events.map(\.result) == [.failed], "\(events)")
            // Before, the next activation was stamped 2 again, for another model.
            let next = try await restarted.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(next.generation == 3)
            await restarted.shutdown()
        }

        /// A store whose committed state cannot be read (a damaged page, an I/O error).
        struct UnreadableStore: SlotStateStore {
            struct Damaged: Error {}
            func committedSlots() throws -> [CommittedSlot] { throw Damaged() }
            func commit(_ state: CommittedSlot) throws {}
            func append(_ event: SwapEvent) throws {}
        }

        @Test("a store that cannot be read is not taken for an empty one: restore throws, and nothing is loaded")
        func unreadableStore() async throws {
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader(), store: UnreadableStore())
            await #expect(throws: ControlError.self) { _ = try await manager.restore() }
            #expect(manager.slotNames.isEmpty)
            await manager.shutdown()
        }

        @Test("restore refuses a committed model the caller refuses (a path outside the repository): its slot stays empty")
        func restoreRefusal() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let state = directory.appendingPathComponent("state").path
            let first = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            try await first.createSlot("line")
            _ = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            await first.shutdown()

            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            let events = try await restarted.restore { record in
                record.path == Fixtures.identity416 ? "outside the model repository" : nil
            }
            #expect(events.map(\.result) == [.failed])
            #expect(events.first?.reason?.contains("outside the model repository") == true)
            #expect(restarted.slot("line")?.roles.active == nil)
            // The next activation's generation follows the committed one (1): generations never go back.
            let next = try await restarted.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(next.generation == 2)
            await restarted.shutdown()
        }
    
        @Test("a rollback to the standby records the model it flips out: once that standby is gone, a rollback reloads it")
        func rollbackRecordsTheDisplaced() async throws {
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader())
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            _ = try await manager.rollback(slot: "line")  // 416 active, 320 the standby
            #expect(slot.roles.standby?.identity.path == Fixtures.identity320)
            _ = try await manager.unload(slot: "line", includingActive: false)
            #expect(slot.roles.standby == nil)
            let event = try await manager.rollback(slot: "line")
            #expect(event.from?.path == Fixtures.identity416 && event.to?.path == Fixtures.identity320, "\(event)")
            await manager.shutdown()
        }

        @Test("keep_for counts from when a model became the standby, by a rollback too; an earlier term's timer leaves it")
        func retentionPerStandbyTerm() async throws {
            var configuration = HotSwapConfiguration.testing()
            configuration.standbyRetention = .keepFor(.seconds(3))
            let manager = ModelManager(configuration: configuration, loader: FakeLoader())
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            let clock = ContinuousClock()
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            let firstTerm = clock.now  // 416 the standby: its timer ends at about firstTerm + 3 s
            try await Task.sleep(for: .seconds(1))
            _ = try await manager.rollback(slot: "line")  // 320 the standby, by a rollback
            _ = try await manager.rollback(slot: "line")  // 416 the standby again, a new term
            let secondTerm = clock.now
            #expect(slot.roles.standby?.identity.path == Fixtures.identity416)
            // Past the first term's end, before the second's: the first term's timer must leave it.
            try await Task.sleep(until: firstTerm + .milliseconds(3400))
            let checked = clock.now
            if checked < secondTerm + .seconds(3) {
                #expect(slot.roles.standby?.identity.path == Fixtures.identity416)
            }
            // The second term's timer releases it.
            #expect(await eventually(timeout: .seconds(10)) { slot.roles.standby == nil })

            // A standby made by a rollback has a term of its own.
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416, version: "c"))
            _ = try await manager.rollback(slot: "line")
            #expect(slot.roles.standby?.identity.version == "c")
            #expect(await eventually(timeout: .seconds(10)) { slot.roles.standby == nil })
            await manager.shutdown()
        }

        /// A store whose slot `line` committed 320 active and 416 its standby, by a manager since shut down.
        static func committedWithStandby() async throws -> StateStore {
            let store = try StateStore(inMemory: ())
            let first = ModelManager(configuration: .testing(), loader: FakeLoader(), store: store)
            try await first.createSlot("line")
            _ = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            await first.shutdown()
            return store
        }

        @Test("after a restart, the restored standby is the model a rollback reloads once that standby is gone")
        func restoredStandbyStaysRollbackTarget() async throws {
            let store = try await Self.committedWithStandby()

            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader(), store: store)
            _ = try await restarted.restore()
            let slot = try #require(restarted.slot("line"))
            #expect(slot.roles.standby?.identity.path == Fixtures.identity416)
            _ = try await restarted.unload(slot: "line", includingActive: false)
            #expect(slot.roles.standby == nil)
            // It was nothingToRollBackTo: the restored standby was never recorded as the model before the active one.
            let event = try await restarted.rollback(slot: "line")
            #expect(event.from?.path == Fixtures.identity320 && event.to?.path == Fixtures.identity416, "\(event)")
            #expect(slot.roles.active?.identity.path == Fixtures.identity416)
            await restarted.shutdown()
        }

        @Test("a damaged generation in the store (Int.min, Int.max) neither traps the start nor the next swap")
        func damagedGeneration() async throws {
            for damaged in [Int.min, Int.max] {
                let store = try StateStore(inMemory: ())
                try store.commit(CommittedSlot(slot: "line", active: ModelRecord(path: Fixtures.identity416,
                    sha256: try Fixtures.sha256(Fixtures.identity416), version: nil), generation: damaged))
                let manager = ModelManager(configuration: .testing(), loader: FakeLoader(), store: store)
                let events = try await manager.restore()
                #expect(events.map(\.result) == [.succeeded], "\(events)")
                let restored = try #require(manager.slot("line")?.roles.generation)
                let next = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
                #expect(next.generation == restored + 1)
                #expect(manager.recentEvents(limit: -1).isEmpty)
                await manager.shutdown()
            }
        }

        @Test("a rollback's reload under way when the shutdown begins is cancelled, not run through its warm-up and switched in")
        func rollbackReloadCancelledByShutdown() async throws {
            let gate = Gate(open: true)
            let sessions = Locked(0)
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader { label in
                // The second session of 416 (the rollback's reload) is held until the shutdown has begun.
                if label == Fixtures.identity416, sessions.withLock({ $0 += 1; return $0 }) == 2 { gate.pass() }
                return FakeBackend()
            })
            try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            _ = try await manager.unload(slot: "line", includingActive: false)  // no standby: a rollback reloads 416
            gate.close()
            let rollback = Task { try await manager.rollback(slot: "line") }
            #expect(await eventually { gate.waitingCount == 1 })
            let shutdown = Task { await manager.shutdown() }
            #expect(await eventuallyAsync { await manager.isShuttingDown })
            gate.open()
            await shutdown.value
            let outcome = await rollback.result
            // It used to run on through its warm-up and switch 416 in during the shutdown.
            #expect(throws: ControlError.self) { try outcome.get() }
        }

        @Test("a standby restore cut off by a shutdown leaves the committed standby for the next start")
        func cancelledStandbyRestoreKeepsIt() async throws {
            let store = try await Self.committedWithStandby()
            #expect(try store.committedSlots().first?.standby?.path == Fixtures.identity416)

            // The standby's session creation is held until the shutdown has begun.
            let gate = Gate(open: false)
            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader { label in
                if label == Fixtures.identity416 { gate.pass() }
                return FakeBackend()
            }, store: store)
            _ = try await restarted.restore(standbysInBackground: true)
            #expect(await eventually { gate.waitingCount == 1 })
            let shutdown = Task { await restarted.shutdown() }
            #expect(await eventuallyAsync { await restarted.isShuttingDown })
            gate.open()
            await shutdown.value
            #expect(try store.committedSlots().first?.standby?.path == Fixtures.identity416)
            #expect(try store.committedSlots().first?.active.path == Fixtures.identity320)
        }
}
}
