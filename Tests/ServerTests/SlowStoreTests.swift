import Foundation
import HTTPTypes
import HotSwap
import HotSwapTesting
import Hummingbird
import HummingbirdTesting
import NIOCore
import Server
import TestSupport
import Testing

/// The state store's writes (SQLite, an fsync each) run on a thread of their own: while they crawl, requests and the
/// other slots go on as if nothing happened.
@Suite("A slow state store stalls nothing else", .serialized)
struct SlowStoreTests {
    typealias H = ServerHarness

    @Test("while rollbacks commit to a store taking 3 s a write, /healthz, /v1/detect and the manager do not wait")
    func requestsDuringSlowCommits() async throws {
        let store = SlowStateStore(try StateStore(inMemory: ()))
        let harness = try await ServerHarness(store: store)
        let manager = harness.control.manager
        // Every slot gets a standby, so that a rollback is a flip plus a commit.
        for (slot, model) in [("default", "synthetic/yolov5-nc80-320-identity.onnx"),
            ("line2", "synthetic/yolov5-nc80-416-identity.onnx")]
        {
            let path = harness.repository.appendingPathComponent(model).path
            _ = try await manager.loadAndActivate(LoadRequest(slot: slot, path: path, allowSchemaChange: true))
        }
        let clock = ContinuousClock()
        try await harness.test { client in
            func timed(_ uri: String, _ method: HTTPRequest.Method, body: ByteBuffer? = nil) async throws -> Duration {
                let start = clock.now
                try await client.execute(uri: uri, method: method,
                    headers: H.headers(token: "carol-token", contentType: body == nil ? nil : "image/jpeg"),
                    body: body) { #expect($0.status == .ok, "\(uri)") }
                return clock.now - start
            }
            store.commitDelay = .seconds(3)
            let started = clock.now
            let generationBefore = try #require(manager.slot("default")?.roles.generation)
            let slowRollback = Task { try await manager.rollback(slot: "default") }
            let otherRollback = Task { try await manager.rollback(slot: "line2") }
            // Both commits are under way (the store's thread sleeps in the first); nothing is switched yet.
            #expect(await eventually { store.commitsInProgress == 1 })
            // The manager answers at once: its commits wait on their own thread, not in the actor.
            let actorStart = clock.now
            _ = await manager.latestOperation(slot: "line2")
            let actorWait = clock.now - actorStart
            // Requests are answered while the commits are still under way, not after them.
            var slowest: Duration = .zero
            var answeredDuringCommits = true
            for _ in 0..<3 {
                for (uri, method, body) in [("/healthz", HTTPRequest.Method.get, nil), ("/v1/detect", .post, H.busJPEG)] {
                    slowest = max(slowest, try await timed(uri, method, body: body))
                    answeredDuringCommits = answeredDuringCommits && store.commitsInProgress > 0
                }
            }
            _ = try await slowRollback.value
            _ = try await otherRollback.value
            let operations = clock.now - started
            print("slow store: the manager answered in \(actorWait), the slowest request took \(slowest) while the",
                "commits ran; the two rollbacks took \(operations)")
            #expect(manager.slot("default")?.roles.generation == generationBefore + 1)
            #expect(operations >= .seconds(6), "the two commits were not slowed down")
            #expect(answeredDuringCommits, "a request waited for the commits to end")
            // Waiting for the commit would take most of its 3 s (it did, before commits left the actor).
            #expect(actorWait < .milliseconds(1500), "the manager waited \(actorWait) for a commit")
        }
        await harness.cleanUp()
    }
}
