import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension HotSwapSuite {
    /// What the store holds is what a restart brings back: a flip whose commit never landed is not.
    @Suite("Commits")
    struct CommitTests {
        @Test("a process that dies after a flip but before its commit restarts into the previously committed model")
        func flipWithoutCommit() async throws {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let state = directory.appendingPathComponent("state").path
            let gate = Gate()
            let stalled = SlowStateStore(try StateStore(directory: state), commitGate: gate)
            let first = ModelManager(configuration: .testing(), loader: FakeLoader(), store: stalled)
            let slot = try await first.createSlot("line")
            let committed = try await first.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await (try await first.load(LoadRequest(slot: "line", path: Fixtures.identity320))).wait()

            // The switch flips at once; its commit then blocks on the gate, as a process killed right there would.
            gate.close()
            let switching = Task { try await first.switchStaged(slot: "line") }
            #expect(await eventually { slot.roles.active?.identity.path == Fixtures.identity320 })
            #expect(await eventually { gate.waitingCount == 1 })
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.sha256
                == (try Fixtures.sha256(Fixtures.identity320)))

            // A fresh process on the same state directory: the last committed model comes back.
            let restarted = ModelManager(configuration: .testing(), loader: FakeLoader(),
                store: try StateStore(directory: state))
            let events = await restarted.restore()
            #expect(events.map(\.result) == [.succeeded])
            let restored = try #require(restarted.slot("line")?.roles.active?.identity)
            #expect(restored == committed.identity)
            #expect(restarted.slot("line")?.roles.generation == 1)
            await restarted.shutdown()

            gate.open()
            _ = try await switching.value
            await first.shutdown()
        }

        @Test("a load whose model is being switched in ends ready, even when a newer load supersedes it meanwhile")
        func supersededWhileCommitting() async throws {
            let gate = Gate()
            let store = SlowStateStore(try StateStore(inMemory: ()), commitGate: gate)
            let manager = ModelManager(configuration: .testing(), loader: FakeLoader(), store: store)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))

            gate.close()
            let first = try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320, activate: true))
            // Flipped, now committing (held at the gate).
            #expect(await eventually { slot.roles.active?.identity.path == Fixtures.identity320 })
            #expect(await eventually { gate.waitingCount == 1 })
            // A newer load of the slot would cancel a load still in progress: not one past its flip.
            let second = try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity416, activate: true))
            gate.open()
            let status = await first.wait()
            #expect(status.stage == .ready, "\(String(describing: status.failure))")
            #expect(status.generation == 2)
            #expect(await second.wait().stage == .ready)
            #expect(slot.roles.active?.identity.path == Fixtures.identity416)
            await manager.shutdown()
        }
    }
}
