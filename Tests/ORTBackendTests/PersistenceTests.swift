import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension ORTSwapSuite {
    /// The committed state survives a restart, re-verified by sha256 (real ORT, state in a temp directory).
    @Suite("Persistence")
    struct PersistenceTests {
        /// A state directory and copies of two compatible models, all in a fresh temp directory.
        struct Setup {
            let directory: URL
            let pathA: String
            let pathB: String

            init() throws {
                directory = try Fixtures.temporaryDirectory()
                pathA = directory.appendingPathComponent("a.onnx").path
                pathB = directory.appendingPathComponent("b.onnx").path
                try FileManager.default.copyItem(atPath: Fixtures.identity416, toPath: pathA)
                try FileManager.default.copyItem(atPath: Fixtures.identity320, toPath: pathB)
            }

            var stateDirectory: String { directory.appendingPathComponent("state").path }

            /// A manager as a fresh process would make it, on the same state directory.
            func makeManager() throws -> ModelManager {
                ModelManager(configuration: HotSwapConfiguration.testing(), loader: ortLoader,
                    store: try StateStore(directory: stateDirectory))
            }

            /// Loads A, then B, both activated; returns their identities.
            func commitAThenB() async throws -> (ModelIdentity, ModelIdentity) {
                let manager = try makeManager()
                try await manager.createSlot("line")
                let a = try await manager.loadAndActivate(LoadRequest(slot: "line", path: pathA, version: "1"))
                let b = try await manager.loadAndActivate(LoadRequest(slot: "line", path: pathB, version: "2"))
                await manager.shutdown()
                return (try #require(a.identity), try #require(b.identity))
            }
        }

        @Test("restore brings back the committed active model and its standby, re-verified by sha256")
        func restoreCommittedState() async throws {
            let setup = try Setup()
            defer { try? FileManager.default.removeItem(at: setup.directory) }
            let (a, b) = try await setup.commitAThenB()

            let restarted = try setup.makeManager()
            let events = try await restarted.restore()
            #expect(events.map(\.operation) == [.restore])
            #expect(events.map(\.result) == [.succeeded])
            let slot = try #require(restarted.slot("line"))
            #expect(slot.roles.active?.identity == b)
            #expect(slot.roles.standby?.identity == a)
            #expect(slot.roles.generation == 2)
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model == ModelStamp(slot: "line", identity: b, generation: 2))

            // The restored standby is a real warm standby: rollback flips to it.
            let rollback = try await restarted.rollback(slot: "line")
            #expect(rollback.to == a)
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.sha256 == a.sha256)
            await restarted.shutdown()
        }

        @Test("restore refuses an active model whose file changed on disk")
        func restoreRejectsChangedBytes() async throws {
            let setup = try Setup()
            defer { try? FileManager.default.removeItem(at: setup.directory) }
            let (_, b) = try await setup.commitAThenB()

            // Same size, one byte different.
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: setup.pathB)))
            bytes[bytes.count - 1] ^= 0xff
            try Data(bytes).write(to: URL(fileURLWithPath: setup.pathB))

            let restarted = try setup.makeManager()
            let events = try await restarted.restore()
            #expect(events.map(\.result) == [.failed])
            let event = try #require(events.first)
            let operationID = try #require(event.operationID)
            let op = try #require(await restarted.operation(operationID))
            guard case .digestMismatch(let path, let expected, let actual) = op.status.failure else {
                Issue.record("expected digestMismatch, got \(String(describing: op.status.failure))")
                return
            }
            #expect(path == setup.pathB)
            #expect(expected == b.sha256)
            #expect(actual != b.sha256)
            let slot = try #require(restarted.slot("line"))
            #expect(slot.roles.active == nil, "different bytes were loaded silently")
            await #expect(throws: SlotError.self) {
                try await slot.detect(imageBytes: Fixtures.busJPEG, deadline: .now + .milliseconds(20))
            }
            await restarted.shutdown()
        }
    }
}
