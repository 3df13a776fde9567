import Foundation
import HTTPTypes
import HotSwap
import HotSwapTesting
import Hummingbird
import HummingbirdTesting
import NIOCore
import Primitives
import Server
import TestSupport
import Testing

/// The state store's writes (SQLite, an fsync each) run on a thread of their own: while they crawl, requests and the
/// other slots go on as if nothing happened.
@Suite("A slow state store stalls nothing else", .serialized)
struct SlowStoreTests {
    typealias H = ServerHarness

    @Test("while rollbacks' commits are held, /healthz, /v1/detect and the manager answer; the flip waits for them")
    func requestsDuringSlowCommits() async throws {
        // Open while the slots get their models; closed, it holds every commit on the store's thread, the way a
        // stalled disk would, for as long as the test needs: nothing here depends on how fast the machine is.
        let gate = Gate()
        let store = SlowStateStore(try StateStore(inMemory: ()), commitGate: gate)
        // The request deadline as long as the test's own: on a loaded machine a detect may wait seconds for a core,
        // and a 503 for that would hide what is tested here (waiting for a held commit).
        let harness = try await ServerHarness(requestTimeoutMilliseconds: 60_000, store: store)
        let manager = harness.control.manager
        // Every slot gets a standby, so that a rollback is a flip plus a commit.
        for (slot, model) in [("default", "synthetic/yolov5-nc80-320-identity.onnx"),
            ("line2", "synthetic/yolov5-nc80-416-identity.onnx")]
        {
            let path = harness.repository.appendingPathComponent(model).path
            _ = try await manager.loadAndActivate(LoadRequest(slot: slot, path: path, allowSchemaChange: true))
        }
        try await harness.test { client in
            gate.close()
            let generationBefore = try #require(manager.slot("default")?.roles.generation)
            let slowRollback = Task { try await manager.rollback(slot: "default") }
            let otherRollback = Task { try await manager.rollback(slot: "line2") }
            // Both commits are under way: the first is held at the gate, the second waits behind it.
            #expect(await eventually { store.commitsInProgress == 1 && gate.waitingCount == 1 })
            // While they are held: the manager answers, and so do requests. Anything that waited for a commit would
            // wait until the gate opens, that is, past the deadline.
            let answered = try? await withDeadline(.now + .seconds(60)) {
                _ = await manager.latestOperation(slot: "line2")
                for _ in 0..<3 {
                    for (uri, method, body) in [
                        ("/healthz", HTTPRequest.Method.get, nil), ("/v1/detect", .post, H.busJPEG),
                    ] {
                        try await client.execute(uri: uri, method: method,
                            headers: H.headers(token: "carol-token", contentType: body == nil ? nil : "image/jpeg"),
                            body: body) { #expect($0.status == .ok, "\(uri)") }
                    }
                }
                return store.commitsInProgress == 1 && manager.slot("default")?.roles.generation == generationBefore
            }
            #expect(answered == true, "a request or the manager waited for a held commit (or the flip came first)")
            gate.open()
            _ = try await slowRollback.value
            _ = try await otherRollback.value
            #expect(manager.slot("default")?.roles.generation == generationBefore + 1)
            #expect(store.commitsInProgress == 0)
        }
        await harness.cleanUp()
    }
}
