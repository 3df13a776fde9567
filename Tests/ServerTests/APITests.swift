import Foundation
import HTTPTypes
import HotSwap
import HotSwapTesting
import Hummingbird
import HummingbirdTesting
import NIOCore
import Server
import Testing

@Suite("HTTP API (in-process, fake inference backends)", .serialized)
struct APITests {
    typealias H = ServerHarness

    @Test("health and readiness")
    func health() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect((body["slots"] as? [String: String]) == ["default": "ready", "line2": "ready"])
            }
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .ok) }
        }
    }

    @Test("/readyz answers 503 \"starting\", and changes to the slots 503 too, until the slots have been brought up")
    func readinessWhileStarting() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        // A control plane whose slots were never started, in front of the same manager.
        let control = ControlPlane(manager: harness.control.manager, repository: harness.control.repository,
            routes: [:], audit: nil, logger: .init(label: "test"))
        let app = YOLOSwapServer.makeApplication(control: control, configuration: harness.configuration,
            metricsText: nil, logger: .init(label: "test"))
        try await app.test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try H.json(response)
                #expect(body["status"] as? String == "starting")
            }
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            // Changes wait until the committed models are back and the releases resumed (which slot belongs to a
            // release is not known before).
            let load = try JSONSerialization.data(withJSONObject: ["model": "synthetic/yolov5-nc80-320-identity.onnx"])
            for (uri, body) in [("/v1/slots/default/load", load), ("/v1/slots/default/rollback", nil),
                                ("/v1/slots/default/release", try JSONSerialization.data(withJSONObject: [
                                    "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "shadow"]))] {
                try await client.execute(uri: uri, method: .post,
                    headers: H.headers(token: "alice-token", contentType: "application/json"),
                    body: body.map { ByteBuffer(bytes: $0) }) { response in
                    #expect(response.status == .serviceUnavailable, "\(uri)")
                    #expect(response.headers[.retryAfter] == "1", "\(uri)")
                    let detail = try H.json(response)["detail"] as? String
                    #expect(detail?.contains("/readyz") == true, "\(uri)")
                }
            }
        }
        #expect(harness.control.manager.slot("default")?.roles.staged == nil)
    }

    @Test("detect: raw JPEG and multipart, stamped with the model; routing by product header")
    func detect() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: "carol-token", contentType: "image/jpeg"), body: H.busJPEG) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                let model = try #require(body["model"] as? [String: Any])
                #expect(model["slot"] as? String == "default")
                #expect((model["id"] as? String)?.hasPrefix("yolov5-nc80-416-identity@") == true)
                #expect((model["sha256"] as? String)?.count == 64)
                #expect(model["generation"] as? Int == 1)
                #expect((body["image"] as? [String: Int]) == ["width": 810, "height": 1080])
                #expect(body["detections"] is [[String: Any]])
                #expect(Set((body["timings_ms"] as? [String: Double])?.keys ?? [:].keys)
                    == ["queue", "decode", "preprocess", "inference", "postprocess", "total"])
            }
            var multipart = ByteBuffer()
            multipart.writeString("--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n")
            multipart.writeString("--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"bus.jpg\"\r\n")
            multipart.writeString("Content-Type: image/jpeg\r\n\r\n")
            var jpeg = H.busJPEG
            multipart.writeBuffer(&jpeg)
            multipart.writeString("\r\n--XyZ--\r\n")
            try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: "carol-token", contentType: "multipart/form-data; boundary=XyZ"),
                body: multipart) { response in
                #expect(response.status == .ok)
                let json = try H.json(response)
                #expect((json["image"] as? [String: Int])?["width"] == 810)
            }
            var routed = H.headers(token: "carol-token", contentType: "image/jpeg")
            routed[HTTPField.Name("X-Product")!] = "metal-case"
            try await client.execute(uri: "/v1/detect", method: .post, headers: routed, body: H.busJPEG) { response in
                #expect(response.status == .ok)
                let json = try H.json(response)
                #expect((json["model"] as? [String: Any])?["slot"] as? String == "line2")
            }
            routed[HTTPField.Name("X-Product")!] = "unknown-product"
            try await client.execute(uri: "/v1/detect", method: .post, headers: routed, body: H.busJPEG) {
                #expect($0.status == .notFound)
            }
        }
    }

    @Test("bad input gets problem details, never a crash")
    func badInput() async throws {
        let harness = try await ServerHarness(maxBodyBytes: 100_000)
        defer { Task { await harness.cleanUp() } }
        let hugePNG = ByteBuffer(bytes: PNGFixture.declaring(width: 100_000, height: 100_000))
        let cases: [(String, String?, ByteBuffer, HTTPResponse.Status)] = [
            ("/v1/detect", "image/jpeg", ByteBuffer(string: "definitely not a jpeg"), .badRequest),
            ("/v1/detect", "image/jpeg", ByteBuffer(), .badRequest),
            ("/v1/detect", "text/plain", ByteBuffer(string: "hello"), .unsupportedMediaType),
            ("/v1/detect", nil, ByteBuffer(string: "hello"), .unsupportedMediaType),
            ("/v1/detect", "image/jpeg", H.busJPEG, .contentTooLarge),  // 137 kB > 100 kB limit
            ("/v1/detect", "image/png", hugePNG, .unprocessableContent),
            ("/v1/detect?conf=2", "image/jpeg", ByteBuffer(string: "x"), .badRequest),
            ("/v1/detect?max_det=0", "image/jpeg", ByteBuffer(string: "x"), .badRequest),
            ("/v1/detect?classes=a,b", "image/jpeg", ByteBuffer(string: "x"), .badRequest),
            ("/v1/detect?slot=nope", "image/jpeg", ByteBuffer(string: "x"), .notFound),
            ("/v1/detect", "multipart/form-data; boundary=q", ByteBuffer(string: "--q\r\n\r\n--q--"), .badRequest),
        ]
        try await harness.test { client in
            for (uri, type, body, expected) in cases {
                try await client.execute(uri: uri, method: .post,
                    headers: H.headers(token: "carol-token", contentType: type), body: body) { response in
                    #expect(response.status == expected, "\(uri) \(type ?? "-")")
                    #expect(response.headers[.contentType] == "application/problem+json", "\(uri)")
                    let problem = try H.json(response)
                    #expect(problem["status"] as? Int == Int(expected.code))
                    #expect(!((problem["detail"] as? String) ?? "").isEmpty)
                }
            }
            try await client.execute(uri: "/v1/slots/default/load", method: .post,
                headers: H.headers(token: "alice-token", contentType: "application/json"),
                body: ByteBuffer(string: "{not json")) { #expect($0.status == .badRequest) }
            // No class id at all: refused (an empty filter answered 200 with no detections).
            try await client.execute(uri: "/v1/detect?classes=,", method: .post,
                headers: H.headers(token: "carol-token", contentType: "image/jpeg"), body: ByteBuffer(string: "x")) {
                response in
                let detail = try H.json(response)["detail"] as? String
                #expect(response.status == .badRequest && detail?.hasPrefix("classes must be") == true, "\(detail ?? "")")
            }
            try await client.execute(uri: "/v1/operations/nope", method: .get, headers: H.headers(token: "carol-token")) {
                #expect($0.status == .notFound)
            }
            try await client.execute(uri: "/v1/no-such-route", method: .get) { #expect($0.status == .notFound) }
        }
    }

    @Test("a JSON body over its limit is 413 with problem details, not 500")
    func jsonTooLarge() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let huge = ByteBuffer(string: "{\"routes\": {\"" + String(repeating: "x", count: 2 << 20) + "\": \"default\"}}")
            try await client.execute(uri: "/v1/routes", method: .put,
                headers: H.headers(token: "alice-token", contentType: "application/json"), body: huge) { response in
                #expect(response.status == .contentTooLarge)
                let problem = try H.json(response)
                #expect(problem["title"] as? String == "Content Too Large")
            }
        }
    }

    @Test("model paths cannot leave the repository", arguments: [
        ("../etc/passwd", HTTPResponse.Status.badRequest), ("/etc/passwd", .badRequest), ("escape.onnx", .badRequest),
        ("synthetic/../../x.onnx", .badRequest), ("missing.onnx", .notFound),
    ])
    func pathTraversal(path: String, expected: HTTPResponse.Status) async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let body = try JSONSerialization.data(withJSONObject: ["model": path])
            try await client.execute(uri: "/v1/slots/default/load", method: .post,
                headers: H.headers(token: "alice-token", contentType: "application/json"),
                body: ByteBuffer(bytes: body)) { #expect($0.status == expected, "\(path)") }
        }
        #expect(try await harness.auditEntries().contains { $0.action == "load" && $0.result == "rejected" && $0.actor == "alice" })
    }

    @Test("load (wait), switch, rollback, discard through the API, audited")
    func controlPlane() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let alice = H.headers(token: "alice-token", contentType: "application/json")
        try await harness.test { client in
            try await client.execute(uri: "/v1/slots/default/switch", method: .post, headers: alice) {
                #expect($0.status == .conflict)  // nothing staged
            }
            let load = try JSONSerialization.data(withJSONObject: ["model": "synthetic/yolov5-nc80-320-identity.onnx"])
            try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post, headers: alice,
                body: ByteBuffer(bytes: load)) { response in
                #expect(response.status == .ok)
                let op = try H.json(response)
                #expect(op["state"] as? String == "ready")
                #expect((op["timings"] as? [String: Double])?["warmup_ms"] != nil)
            }
            try await client.execute(uri: "/v1/slots/default", method: .get, headers: alice) { response in
                let slot = try H.json(response)
                #expect((slot["staged"] as? [String: Any])?["path"] as? String == "synthetic/yolov5-nc80-320-identity.onnx")
            }
            try await client.execute(uri: "/v1/slots/default/switch", method: .post, headers: alice) { response in
                #expect(response.status == .ok)
                let event = try H.json(response)
                #expect(event["generation"] as? Int == 2)
                #expect(event["operation"] as? String == "switch")
                #expect((event["timings"] as? [String: Double])?["flip_us"] != nil)
            }
            try await client.execute(uri: "/v1/slots/default/rollback", method: .post, headers: alice) { response in
                #expect(response.status == .ok)
                let json = try H.json(response)
                #expect(((json["to"] as? [String: Any])?["id"] as? String)?.hasPrefix("yolov5-nc80-416-identity") == true)
            }
            try await client.execute(uri: "/v1/slots/default/staged", method: .delete, headers: alice) {
                #expect($0.status == .conflict)
            }
            let incompatible = try JSONSerialization.data(withJSONObject: ["model": "synthetic/yolov5-nc80-320-other-names.onnx"])
            try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post, headers: alice,
                body: ByteBuffer(bytes: incompatible)) { response in
                #expect(response.status == .unprocessableContent)
                let json = try H.json(response)
                #expect((json["reason"] as? String)?.contains("class names") == true)
            }
            try await client.execute(uri: "/v1/slots/default", method: .get, headers: alice) { response in
                let slot = try H.json(response)
                #expect((slot["last_failure"] as? [String: Any])?["reason"] != nil)
                #expect((slot["active"] as? [String: Any])?["path"] as? String == "synthetic/yolov5-nc80-416-identity.onnx")
            }
            try await client.execute(uri: "/v1/events?slot=default&limit=10", method: .get, headers: alice) { response in
                let events = try #require(try H.json(response)["events"] as? [[String: Any]])
                #expect(events.count >= 4)
            }
        }
        let entries = try await harness.auditEntries()  // once the load's entry, written when it ended, is in
        let actions = entries.map { "\($0.action):\($0.result)" }
        #expect(actions.contains("switch:failed") && actions.contains("switch:succeeded"))
        #expect(actions.contains("rollback:succeeded") && actions.contains("load:succeeded"))
        #expect(actions.contains("load:failed"))
        // Alice's, and the configured models' loads at start (by system).
        #expect(entries.allSatisfy { $0.actor == "alice" || ($0.actor == "system" && $0.action == "load") })
        #expect(entries.count { $0.actor == "system" } == 4)
    }

    /// A harness whose state store, once it is up, takes 300 ms to store each event (an fsync on a slow disk), so that
    /// an answer given before a load's event is recorded shows.
    static func slowEventsHarness() async throws -> ServerHarness {
        let store = SlowStateStore(try StateStore(inMemory: ()))
        let harness = try await ServerHarness(store: store)
        store.appendDelay = .milliseconds(300)
        return harness
    }

    @Test("load?wait=true answers once the load's event is in /v1/events and its outcome in the audit log")
    func loadWaitAnswersAfterRecording() async throws {
        // An answer sent when the load ended, before its event was recorded, would find neither the event nor the
        // audit entry (written after it).
        let harness = try await Self.slowEventsHarness()
        defer { Task { await harness.cleanUp() } }
        let alice = H.headers(token: "alice-token", contentType: "application/json")
        try await harness.test { client in
            for (model, expected, result) in [
                ("synthetic/yolov5-nc80-320-identity.onnx", HTTPResponse.Status.ok, "succeeded"),
                ("synthetic/nan.onnx", .unprocessableContent, "failed"),  // fails its warm-up
            ] {
                let load = try JSONSerialization.data(withJSONObject: ["model": model, "activate": true])
                let id = try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post,
                    headers: alice, body: ByteBuffer(bytes: load)) { response in
                    #expect(response.status == expected, "\(model)")
                    return try #require(try H.json(response)["id"] as? String)
                }
                // The audit log read as it is, not after `drain()`.
                let entries = try await harness.audit.entries(slot: nil, since: nil, limit: 100)
                #expect(entries.contains { $0.action == "load" && $0.result == result && $0.modelPath == model },
                    "\(model): no audit outcome yet: \(entries.map { "\($0.action):\($0.result)" })")
                try await client.execute(uri: "/v1/events?slot=default&limit=50", method: .get, headers: alice) {
                    let events = try #require(try H.json($0)["events"] as? [[String: Any]])
                    #expect(events.contains { $0["operation_id"] as? String == id }, "\(model): no event yet")
                }
            }
        }
    }

    @Test("GET /v1/operations/{id} shows a load ended only once its event is recorded")
    func operationShownEndedAfterRecording() async throws {
        // A poller shown `ready` while the event was being stored would not find it.
        let harness = try await Self.slowEventsHarness()
        defer { Task { await harness.cleanUp() } }
        let alice = H.headers(token: "alice-token", contentType: "application/json")
        try await harness.test { client in
            for (model, final) in [
                ("synthetic/yolov5-nc80-320-identity.onnx", "ready"), ("synthetic/nan.onnx", "failed"),
            ] {
                let load = try JSONSerialization.data(withJSONObject: ["model": model, "activate": true])
                let id = try await client.execute(uri: "/v1/slots/default/load", method: .post, headers: alice,
                    body: ByteBuffer(bytes: load)) { response in
                    #expect(response.status == .accepted, "\(model)")
                    return try #require(try H.json(response)["id"] as? String)
                }
                var state = ""
                let deadline = ContinuousClock.now + .seconds(60)
                while !["ready", "failed", "cancelled"].contains(state), ContinuousClock.now < deadline {
                    state = try await client.execute(uri: "/v1/operations/\(id)", method: .get, headers: alice) {
                        try #require(try H.json($0)["state"] as? String)
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(state == final, "\(model)")
                try await client.execute(uri: "/v1/events?slot=default&limit=50", method: .get, headers: alice) {
                    let events = try #require(try H.json($0)["events"] as? [[String: Any]])
                    #expect(events.contains { $0["operation_id"] as? String == id }, "\(model): shown \(state), no event")
                }
            }
        }
    }

    @Test("a rollback whose reload fails answers with repository-relative paths, in the answer and the audit")
    func failedRollbackHidesRoot() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let alice = H.headers(token: "alice-token", contentType: "application/json")
        try await harness.test { client in
            for (model, expected) in [("synthetic/yolov5-nc80-320-identity.onnx", HTTPResponse.Status.ok),
                // Passes verification (so the standby is released), then fails its warm-up.
                ("synthetic/nan.onnx", .unprocessableContent)]
            {
                let load = try JSONSerialization.data(withJSONObject: ["model": model, "activate": true])
                try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post, headers: alice,
                    body: ByteBuffer(bytes: load)) { #expect($0.status == expected, "\(model)") }
            }
            // No standby now: a rollback reloads the previous model from disk, which is gone.
            try FileManager.default.removeItem(
                at: harness.repository.appendingPathComponent("synthetic/yolov5-nc80-416-identity.onnx"))
            try await client.execute(uri: "/v1/slots/default/rollback", method: .post, headers: alice) { response in
                #expect(response.status.code >= 400)
                let detail = try #require(try H.json(response)["detail"] as? String)
                #expect(detail.contains("synthetic/yolov5-nc80-416-identity.onnx"), "\(detail)")
                #expect(!detail.contains(harness.repository.path), "\(detail)")
            }
        }
        let rollback = try #require(try await harness.auditEntries().last { $0.action == "rollback" })
        #expect(rollback.result == "failed")
        #expect(rollback.reason?.contains(harness.repository.path) == false)
    }

    @Test("routes: read, replace, unknown slots and malformed products refused")
    func routes() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/routes", method: .get, headers: H.headers(token: "carol-token")) {
                let json = try H.json($0)
                #expect((json["routes"] as? [String: String]) == ["metal-case": "line2"])
            }
            let good = try JSONSerialization.data(withJSONObject: ["routes": ["pill-bottle": "default"]])
            try await client.execute(uri: "/v1/routes", method: .put,
                headers: H.headers(token: "alice-token", contentType: "application/json"), body: ByteBuffer(bytes: good)) {
                #expect($0.status == .ok)
            }
            let bad = try JSONSerialization.data(withJSONObject: ["routes": ["x": "no-such-slot"]])
            try await client.execute(uri: "/v1/routes", method: .put,
                headers: H.headers(token: "alice-token", contentType: "application/json"), body: ByteBuffer(bytes: bad)) {
                #expect($0.status == .notFound)
            }
            // Bounded as a desired-state document's routes: a product with a control character, or too long, or
            // more routes than a document takes, is 400 and changes nothing.
            var many: [String: String] = [:]
            for i in 0...4096 { many["product-\(i)"] = "default" }
            for routes in [["line\nbreak": "default"], [String(repeating: "p", count: 257): "default"], ["": "default"],
                           many] {
                let body = try JSONSerialization.data(withJSONObject: ["routes": routes])
                try await client.execute(uri: "/v1/routes", method: .put,
                    headers: H.headers(token: "alice-token", contentType: "application/json"),
                    body: ByteBuffer(bytes: body)) { response in
                    #expect(response.status == .badRequest, "\(routes.count) routes")
                    let detail = String(buffer: response.body)
                    #expect(detail.contains("product name") || detail.contains("at most 4096"), "\(detail)")
                }
            }
            try await client.execute(uri: "/v1/routes", method: .get, headers: H.headers(token: "carol-token")) {
                let json = try H.json($0)
                #expect((json["routes"] as? [String: String]) == ["pill-bottle": "default"])
            }
        }
    }
}

/// Builds a PNG whose header declares a size, with valid CRCs and no image data worth decoding.
enum PNGFixture {
    static func declaring(width: UInt32, height: UInt32) -> [UInt8] {
        var ihdr: [UInt8] = Array("IHDR".utf8)
        for value in [width, height] { ihdr += withUnsafeBytes(of: value.bigEndian, Array.init) }
        ihdr += [8, 2, 0, 0, 0]  // 8-bit RGB
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        png += withUnsafeBytes(of: UInt32(13).bigEndian, Array.init) + ihdr
        png += withUnsafeBytes(of: crc32(ihdr).bigEndian, Array.init)
        let iend: [UInt8] = Array("IEND".utf8)
        png += [0, 0, 0, 0] + iend + withUnsafeBytes(of: crc32(iend).bigEndian, Array.init)
        return png
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        return ~crc
    }
}
