import AuditLog
import Foundation
import HTTPTypes
import HotSwap
import HotSwapTesting
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Primitives
import Releases
@testable import Server
import Streams
import TestSupport
import Testing
import YOLO

/// A backend that answers like `FakeBackend` until `failing` is set, then throws on every run (a candidate that breaks
/// in production after passing its warm-up).
struct FlakyBackend: InferenceBackend {
    struct Injected: Error, CustomStringConvertible { var description: String { "injected failure" } }
    let inner = FakeBackend(inputSize: 416)
    let failing: Locked<Bool>
    var inputs: [TensorSpec] { inner.inputs }
    var outputs: [TensorSpec] { inner.outputs }
    var metadata: [String: String] { inner.metadata }
    func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
        if failing.value { throw Injected() }
        return try inner.run(input, cancellation: cancellation)
    }
}

/// The harness's models plus `synthetic/flaky.onnx`.
struct ReleaseLoader: ModelLoader {
    let failing = Locked(false)
    func makeBackend(for file: ModelFile, label: String, execution: ModelExecution) throws -> any InferenceBackend {
        if label.hasSuffix("/synthetic/flaky.onnx") { return FlakyBackend(failing: failing) }
        return try ServerHarness.loader.makeBackend(for: file, label: label, execution: execution)
    }
}

@Suite("Releases over HTTP (in-process, fake inference backends)", .serialized)
struct ReleaseAPITests {
    typealias H = ServerHarness
    static let operatorToken = "alice-token"

    static func body(_ object: [String: Any]) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object))
    }

    static func post(_ client: any TestClientProtocol, _ uri: String, _ object: [String: Any]? = nil) async throws
        -> (HTTPResponse.Status, [String: Any])
    {
        try await client.execute(uri: uri, method: .post,
            headers: H.headers(token: operatorToken, contentType: "application/json"),
            body: try object.map(body)) { response in
            (response.status, (try? H.json(response)) ?? [:])
        }
    }

    static func status(_ client: any TestClientProtocol, _ slot: String = "default") async throws -> [String: Any] {
        try await client.execute(uri: "/v1/slots/\(slot)/release", method: .get,
            headers: H.headers(token: operatorToken)) { try H.json($0) }
    }

    /// One detection request; its status and variant.
    static func detect(_ client: any TestClientProtocol, key: String? = nil) async throws
        -> (HTTPResponse.Status, String?)
    {
        var headers = H.headers(token: operatorToken, contentType: "image/jpeg")
        if let key { headers[HTTPField.Name("X-Camera-Id")!] = key }
        return try await client.execute(uri: "/v1/detect", method: .post, headers: headers, body: H.busJPEG) {
            ($0.status, (try? H.json($0))?["variant"] as? String)
        }
    }

    /// What a restart of the service builds: a fresh manager (over `store`, if any) and control plane over the
    /// harness's repository and the state directory `state`, its slots brought up and its releases resumed.
    static func boot(_ harness: ServerHarness, state: String, store: (any SlotStateStore)? = nil,
                     audit: AuditTrail? = nil) async throws -> ControlPlane
    {
        let manager = ModelManager(configuration: harness.configuration.hotSwap, loader: ServerHarness.loader,
            store: store)
        let control = ControlPlane(manager: manager,
            repository: ModelRepository(root: harness.repository.path, stateDirectory: state), routes: [:],
            audit: audit, logger: Logger(label: "test"))
        try await YOLOSwapServer.startSlots(control: control, configuration: harness.configuration,
            logger: Logger(label: "t"))
        return control
    }

    /// Serves `control`'s API in process to `body`.
    static func serve(_ harness: ServerHarness, _ control: ControlPlane,
                      _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await YOLOSwapServer.makeApplication(control: control, configuration: harness.configuration,
            metricsText: nil, logger: Logger(label: "test")).test(.router, body)
    }

    @Test("shadow with the same model: answers from the baseline, agreement 1.0, no disagreement; abort ends it")
    func shadowSameModel() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let (code, started) = try await Self.post(client, "/v1/slots/default/release?wait=true",
                ["model": "synthetic/yolov5-nc80-416-identity.onnx", "strategy": "shadow", "mirror_percent": 100])
            #expect(code == .ok)
            #expect(started["phase"] as? String == "running")
            #expect(started["strategy"] as? String == "shadow")
            for _ in 0..<12 {
                let (status, variant) = try await Self.detect(client)
                #expect(status == .ok)
                #expect(variant == "baseline")
            }
            var release: [String: Any] = [:]
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                release = try await Self.status(client)
                let mirror = release["mirror"] as? [String: Int] ?? [:]
                if mirror.values.reduce(0, +) >= 12 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let mirror = try #require(release["mirror"] as? [String: Int])
            #expect(mirror.values.reduce(0, +) == 12, "\(mirror)")
            #expect((mirror["mirrored"] ?? 0) >= 1)
            let agreement = try #require(release["agreement"] as? [String: Any])
            #expect(agreement["f1"] as? Double == 1)
            #expect(agreement["precision"] as? Double == 1)
            #expect(agreement["disagreeing"] as? Int == 0)
            #expect((release["disagreements"] as? [String])?.isEmpty == true)
            let variants = try #require(release["variants"] as? [String: [String: Any]])
            #expect(variants["baseline"]?["requests"] as? Int == 12)
            #expect(variants["candidate"]?["requests"] as? Int == mirror["mirrored"])

            // Ground-truth feedback on an answer given during the release.
            let answer = try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: Self.operatorToken, contentType: "image/jpeg"), body: H.busJPEG) {
                try H.json($0)
            }
            let requestID = try #require(answer["request_id"] as? String)
            // The answer's detections as they are (`class_id` and `confidence` too): an inspector's copy is taken.
            let boxes = try #require(answer["detections"] as? [[String: Any]])
            #expect(boxes.first?["confidence"] != nil)
            let (feedbackCode, outcome) = try await Self.post(client, "/v1/feedback",
                ["request_id": requestID, "boxes": boxes])
            #expect(feedbackCode == .ok)
            #expect(outcome["variant"] as? String == "baseline")
            #expect(outcome["false_positives"] as? Int == 0 && outcome["false_negatives"] as? Int == 0)
            #expect(try await Self.post(client, "/v1/feedback", ["request_id": requestID, "boxes": boxes]).0
                == .notFound)
            let judged = try await Self.status(client)
            let feedback = (judged["feedback"] as? [String: [String: Any]])?["baseline"]
            #expect(feedback?["images"] as? Int == 1)
            #expect(feedback?["map50"] as? Double == 1)

            let (abortCode, aborted) = try await Self.post(client, "/v1/slots/default/release/abort")
            #expect(abortCode == .ok)
            #expect(aborted["phase"] as? String == "aborted")
            #expect(harness.control.manager.slot("default")?.roles.staged == nil)
            let (after, variant) = try await Self.detect(client)
            #expect(after == .ok && variant == nil)
        }
        let entries = try await harness.auditEntries().filter { $0.action.hasPrefix("release.") }
        #expect(entries.map { "\($0.action):\($0.result)" } == ["release.start:intent", "release.start:succeeded",
            "release.abort:intent", "release.abort:succeeded"])
        #expect(entries.allSatisfy { $0.actor == "alice" })
        #expect(entries[1].sha256?.count == 64)
        let events = harness.control.manager.recentEvents(slot: "default").map(\.operation)
        #expect(events.contains(.releaseStart) && events.contains(.releaseAbort))
    }

    @Test("a video stream's frames count in the release: a canary takes the stream as one unit, a shadow mirrors its frames")
    func streamFramesCountInRelease() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        var configuration = harness.configuration
        configuration.streamPolicy = SourcePolicy(
            mediaDirectory: URL(fileURLWithPath: TestVideos.mjpeg).deletingLastPathComponent().path)
        let streams = YOLOSwapServer.makeStreamRegistry(control: harness.control, configuration: configuration,
            logger: Logger(label: "test"))
        /// Runs the 60-frame video to its end; the model that answered its last frame, and its switches.
        @Sendable func runStream() async throws -> (model: String?, switches: Int) {
            let stream = try streams.create(.init(source: "pan.avi", slot: "default"))
            await stream.waitUntilFinished()
            let status = stream.currentStatus
            #expect(status.state == .ended && status.frames_detected == 60, "\(status)")
            return (status.model?.id, status.switches.count)
        }
        try await harness.test { client in
            // A canary at 100 %: every frame of the stream goes to the candidate, and counts for it.
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                 "steps": [["percent": 100, "hold_s": 3600]]])
            #expect(code == .ok)
            let canaryRun = try await runStream()
            #expect(canaryRun.model?.hasPrefix("yolov5-nc80-320-identity") == true && canaryRun.switches == 0,
                "\(canaryRun)")
            let canary = try #require(try await Self.status(client)["variants"] as? [String: [String: Any]])
            #expect(canary["candidate"]?["requests"] as? Int == 60, "\(canary)")
            #expect(canary["baseline"]?["requests"] as? Int ?? 0 == 0)
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .ok)

            // A shadow: the baseline answers every frame; each frame is mirrored to the candidate or shed, counted.
            #expect(try await Self.post(client, "/v1/slots/default/release?wait=true",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "shadow", "mirror_percent": 100])
                .0 == .ok)
            let shadowRun = try await runStream()
            #expect(shadowRun.model?.hasPrefix("yolov5-nc80-416-identity") == true && shadowRun.switches == 0,
                "\(shadowRun)")
            var release: [String: Any] = [:]
            #expect(await eventuallyAsync(timeout: .seconds(60)) {
                release = (try? await Self.status(client)) ?? [:]
                return (release["mirror"] as? [String: Int] ?? [:]).values.reduce(0, +) == 60
            }, "\(release)")
            let variants = try #require(release["variants"] as? [String: [String: Any]])
            #expect(variants["baseline"]?["requests"] as? Int == 60, "\(variants)")
            let mirrored = (release["mirror"] as? [String: Int])?["mirrored"] ?? 0
            #expect(mirrored >= 1 && variants["candidate"]?["requests"] as? Int == mirrored)
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .ok)
        }
    }

    @Test("/v2 during a canary: an image counts for the candidate that answered it; a raw tensor goes to the active model, whose shape it has")
    func openInferenceCountsInRelease() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            #expect(try await Self.post(client, "/v1/slots/default/release?wait=true",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                 "steps": [["percent": 100, "hold_s": 3600]]]).0 == .ok)
            let image = Data(H.busJPEG.readableBytesView).base64EncodedString()
            let request = try Self.body(["inputs": [["name": "image", "datatype": "BYTES", "shape": [1],
                "data": [image]]]])
            for _ in 0..<3 {
                try await client.execute(uri: "/v2/models/default/infer", method: .post,
                    headers: H.headers(token: Self.operatorToken, contentType: "application/json"), body: request) {
                    #expect($0.status == .ok, "\(String(buffer: $0.body))")
                    let parameters = (try? H.json($0))?["parameters"] as? [String: Any]
                    #expect((parameters?["model_id"] as? String)?.hasPrefix("yolov5-nc80-320-identity") == true)
                }
            }
            // The candidate takes 320 inputs; the model's metadata (and this tensor) are the active model's, 416.
            let (raw, headers) = OpenInferenceRoutesTests.rawRequest(size: 416)
            try await client.execute(uri: "/v2/models/default/infer", method: .post, headers: headers, body: raw) {
                #expect($0.status == .ok, "\(String(buffer: $0.body))")
            }
            let variants = try #require(try await Self.status(client)["variants"] as? [String: [String: Any]])
            #expect(variants["candidate"]?["requests"] as? Int == 3, "\(variants)")
            #expect(variants["baseline"]?["requests"] as? Int ?? 0 == 0)
        }
    }

    @Test("a shadow candidate with a bad class mapping is rolled back by agreement_f1, with the figures audited")
    func badClassMappingRolledBack() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let (code, _) = try await Self.post(client, "/v1/slots/line2/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-other-names.onnx", "strategy": "shadow",
                "allow_schema_change": true, "disagreements_kept": 3,
                "rules": ["window": 10, "min_samples": 4, "rollback_if": ["agreement_f1": 0.9]]])
            #expect(code == .ok)
            var phase = "running"
            var failed = 0
            for _ in 0..<200 where phase == "running" {
                let status = try await client.execute(uri: "/v1/detect", method: .post,
                    headers: [.authorization: "Bearer alice-token", .contentType: "image/jpeg",
                        HTTPField.Name("X-Product")!: "metal-case"], body: H.busJPEG) { $0.status }
                if status != .ok { failed += 1 }
                phase = try await Self.status(client, "line2")["phase"] as? String ?? "?"
                if phase == "running" { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(failed == 0)
            #expect(phase == "rolled_back")
            let release = try await Self.status(client, "line2")
            let breach = try #require(release["breach"] as? [String: Any])
            #expect(breach["rule"] as? String == "agreement_f1 < 0.9")
            #expect((breach["value"] as? Double ?? 1) < 0.9)
            let kept = try #require(release["disagreements"] as? [String])
            #expect((1...3).contains(kept.count))
            let id = try #require(kept.last)
            try await client.execute(uri: "/v1/slots/line2/release/disagreements/\(id)", method: .get,
                headers: H.headers(token: Self.operatorToken)) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                let d = try #require(body["disagreement"] as? [String: Any])
                #expect((d["baseline"] as? [Any])?.isEmpty == false)
                #expect(((d["candidate"] as? [[String: Any]])?.first?["class_name"] as? String)?.hasSuffix("-x")
                    == true)
                #expect((body["image_base64"] as? String).flatMap { Data(base64Encoded: $0) }?.count
                    == H.busJPEG.readableBytes)
            }
            try await client.execute(uri: "/v1/slots/line2/release/disagreements/\(id)?part=image", method: .get,
                headers: H.headers(token: Self.operatorToken)) { response in
                #expect(response.headers[.contentType] == "image/jpeg")
                #expect(response.body.readableBytes == H.busJPEG.readableBytes)
            }
        }
        // The flip comes first (the next request must see it); its audit entry is written right after.
        #expect(await eventuallyAsync(timeout: .seconds(30)) {
            (try? await harness.auditEntries().contains { $0.action == "release.rollback" }) == true
        })
        let rollback = try await harness.auditEntries().first { $0.action == "release.rollback" }
        #expect(rollback?.actor == "system")
        #expect(rollback?.reason?.contains("agreement_f1") == true)
        #expect(rollback?.reason?.contains("agreement_pairs=") == true)
        #expect(await eventually { harness.control.manager.slot("line2")?.roles.staged == nil })
    }

    @Test("a canary candidate that starts failing is rolled back with no failed client request")
    func failingCanaryRolledBack() async throws {
        let loader = ReleaseLoader()
        let harness = try await ServerHarness(loader: loader, extraModels: ["synthetic/flaky.onnx"])
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/flaky.onnx", "strategy": "canary", "steps": [["percent": 50]],
                "rules": ["window": 20, "min_samples": 5, "rollback_if": ["error_rate": 0.05]]])
            #expect(code == .ok)
            loader.failing.withLock { $0 = true }
            var variants: [String?] = []
            var phase = "running"
            for i in 0..<80 where phase == "running" {
                let (status, variant) = try await Self.detect(client, key: "order-\(i)")
                #expect(status == .ok)
                variants.append(variant)
                phase = try await Self.status(client)["phase"] as? String ?? "?"
            }
            // After the rollback the baseline answers everything.
            for i in 0..<5 {
                let (status, variant) = try await Self.detect(client, key: "after-\(i)")
                #expect(status == .ok && (variant == nil || variant == "baseline"))
            }
            // Every answer came from the baseline: the candidate's failures were answered by it.
            #expect(variants.allSatisfy { $0 == "baseline" || $0 == nil })
            let release = try await Self.status(client)
            #expect(release["phase"] as? String == "rolled_back")
            #expect((release["breach"] as? [String: Any])?["rule"] as? String == "error_rate > 0.05")
            let candidate = (release["variants"] as? [String: [String: Any]])?["candidate"]
            #expect((candidate?["errors"] as? Int ?? 0) >= 5)
        }
    }

    @Test("a good canary ramps through its steps (sticky by work order) and is promoted; the baseline stays warm")
    func goodCanaryPromoted() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let baseline = try #require(harness.control.manager.slot("default")?.roles.active?.identity)
        try await harness.test { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                "sticky_header": "X-Camera-Id",
                "steps": [["percent": 50, "min_requests": 3], ["percent": 100, "min_requests": 3]],
                "rules": ["min_samples": 3, "window": 50, "rollback_if": ["error_rate": 0.01],
                    "promote_after": ["steps_complete": true]]])
            #expect(code == .ok)
            // Sticky: a work order keeps its variant while the step is unchanged.
            let first = try await Self.detect(client, key: "WO-17").1
            #expect(try await Self.detect(client, key: "WO-17").1 == first)
            var phase = "running"
            for i in 0..<300 where phase != "promoted" {
                let (status, _) = try await Self.detect(client, key: "WO-\(i)")
                #expect(status == .ok)
                phase = try await Self.status(client)["phase"] as? String ?? "?"
            }
            #expect(phase == "promoted")
        }
        // The phase shows `promoted` before the promotion's event and audit outcome are written.
        #expect(await eventually(timeout: .seconds(30)) {
            harness.control.manager.recentEvents(slot: "default").contains { $0.operation == .releasePromote }
        })
        let roles = try #require(harness.control.manager.slot("default")?.roles)
        #expect(roles.active?.identity.path.hasSuffix("yolov5-nc80-320-identity.onnx") == true)
        #expect(roles.standby?.identity == baseline)
        #expect(roles.staged == nil)
        let events = harness.control.manager.recentEvents(slot: "default").map(\.operation)
        #expect(events.contains(.releaseStep) && events.contains(.releasePromote))
        // The outcome is written after the phase shows `promoted`.
        #expect(await eventuallyAsync(timeout: .seconds(30)) {
            let promote = try? await harness.auditEntries().last { $0.action == "release.promote" }
            return promote?.result == "succeeded" && promote?.actor == "system"
        })
    }

    @Test("a promotion that cannot be recorded answers 503 and leaves a paused release paused; a retry promotes it")
    func failedPromotionKeepsPhase() async throws {
        let store = SlowStateStore(try StateStore(inMemory: ()))
        let harness = try await ServerHarness(store: store)
        defer { Task { await harness.cleanUp() } }
        let baseline = try #require(harness.control.manager.slot("default")?.roles.active?.identity)
        try await harness.test { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                "steps": [["percent": 10, "hold_s": 3600]]])
            #expect(code == .ok)
            #expect(try await Self.post(client, "/v1/slots/default/release/pause").0 == .ok)

            store.failCommits = true  // a full disk: the flip cannot be committed
            let (failed, problem) = try await Self.post(client, "/v1/slots/default/release/promote")
            #expect(failed == .serviceUnavailable)
            let detail = problem["detail"] as? String ?? ""
            #expect(detail.contains("the promotion failed and the release went back to paused"), "\(detail)")
            #expect(!detail.contains(harness.repository.path), "\(detail)")
            let release = try await Self.status(client)
            #expect(release["phase"] as? String == "paused")
            let history = (release["history"] as? [[String: Any]] ?? []).compactMap { $0["action"] as? String }
            #expect(Array(history.suffix(3)) == ["pause", "promote", "promote-failed"], "\(history)")
            #expect(harness.control.manager.slot("default")?.roles.active?.identity == baseline)
            let event = harness.control.manager.recentEvents(slot: "default").last { $0.operation == .releasePromote }
            #expect(event?.result == .failed)
            let audited = try await harness.auditEntries().last { $0.action == "release.promote" }
            #expect(audited?.result == "failed")

            // Once the disk is back, the same promotion from the paused phase goes through.
            store.failCommits = false
            #expect(try await Self.post(client, "/v1/slots/default/release/promote").0 == .ok)
            #expect(try await Self.status(client)["phase"] as? String == "promoted")
        }
        let roles = try #require(harness.control.manager.slot("default")?.roles)
        #expect(roles.active?.identity.path.hasSuffix("yolov5-nc80-320-identity.onnx") == true)
        #expect(roles.standby?.identity == baseline)
    }

    @Test("an automatic promotion that cannot be recorded is retried after a backoff, and promotes once it can")
    func failedAutomaticPromotionRetried() async throws {
        let store = SlowStateStore(try StateStore(inMemory: ()))
        let harness = try await ServerHarness(store: store)
        defer { Task { await harness.cleanUp() } }
        let manager = harness.control.manager
        @Sendable func failedPromotions() -> [SwapEvent] {
            manager.recentEvents(slot: "default").filter { $0.operation == .releasePromote && $0.result == .failed }
        }
        try await harness.test { client in
            store.failCommits = true
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "shadow",
                "rules": ["min_samples": 2, "promote_after": ["min_requests": 2]]])
            #expect(code == .ok)
            for _ in 0..<4 { #expect(try await Self.detect(client).0 == .ok) }
            #expect(await eventually(timeout: .seconds(30)) { !failedPromotions().isEmpty })
            let first = try #require(failedPromotions().first)
            #expect(first.reason?.contains("the next automatic promotion in 5 s") == true, "\(first.reason ?? "")")
            // The rules are judged every second: without the backoff, three more would fail in these 3 s.
            try await Task.sleep(for: .seconds(3))
            #expect(failedPromotions().count == 1)
            #expect(try await Self.status(client)["phase"] as? String == "running")
            store.failCommits = false
            #expect(await eventuallyAsync {
                (try? await Self.status(client)["phase"] as? String) == "promoted"
            })
        }
        #expect(manager.slot("default")?.roles.active?.identity.path.hasSuffix("320-identity.onnx") == true)
    }

    /// A harness whose model `synthetic/held.onnx` loads only once `gate` opens.
    static func heldHarness() async throws -> (ServerHarness, Gate) {
        let gate = Gate(open: false)
        let loader = FakeLoader(backend: { label in
            if label.hasSuffix("/synthetic/held.onnx") { gate.pass() }
            return ServerHarness.models.first { label.hasSuffix("/" + $0.key) }?.value ?? FakeBackend()
        })
        return (try await ServerHarness(loader: loader, extraModels: ["synthetic/held.onnx"]), gate)
    }

    @Test("a release aborted while its candidate loads leaves nothing staged; the next release can start")
    func abortWhileLoading() async throws {
        let (harness, gate) = try await Self.heldHarness()
        defer { Task { await harness.cleanUp() } }
        defer { gate.open() }
        try await harness.test { client in
            let (code, started) = try await Self.post(client, "/v1/slots/default/release",
                ["model": "synthetic/held.onnx", "strategy": "shadow"])
            #expect(code == .accepted && started["phase"] as? String == "loading", "\(started)")
            #expect(await eventually(timeout: .seconds(30)) { gate.waitingCount == 1 })
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .ok)
            gate.open()
            // Before, the candidate stayed staged once its load finished, and every later release answered 409.
            let load = try #require(await harness.control.manager.latestOperation(slot: "default"))
            #expect(await load.wait().stage == .ready)
            // The slot is the release's until its bring-up has ended (the candidate discarded).
            let slot = try #require(harness.control.manager.slot("default"))
            #expect(await eventually(timeout: .seconds(10)) {
                slot.roles.staged == nil && harness.control.releaseRun("default")?.isOver == true
            })
            let (next, body) = try await Self.post(client, "/v1/slots/default/release?wait=true",
                ["model": "synthetic/yolov5-nc80-416-identity.onnx", "strategy": "shadow"])
            #expect(next == .ok, "\(body)")
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .ok)
            // The aborted start's intent has its outcome (before, it stayed open until a restart closed it as
            // `interrupted`).
            let heldStart = try await harness.auditEntries().filter {
                $0.action == "release.start" && $0.modelPath == "synthetic/held.onnx"
            }
            #expect(heldStart.map(\.result) == ["intent", "aborted"], "\(heldStart)")
            #expect(heldStart.last?.reason == "aborted by alice before the candidate took traffic")
        }
    }

    @Test("an ended release's write that comes after the next release started leaves the next one's record")
    func lateWriteOfEndedRelease() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let state = try TemporaryDirectory(prefix: "release-store")
        let control = ControlPlane(manager: harness.control.manager, repository: ModelRepository(
            root: harness.repository.path, stateDirectory: state.path), routes: [:], audit: nil,
            logger: Logger(label: "test"))
        control.markStarted()
        let spec = ReleaseSpec(model: "synthetic/yolov5-nc80-416-identity.onnx", strategy: .shadow)
        _ = try await control.startRelease(slot: "default", spec: spec, actor: "test")
        let first = try #require(control.releaseRun("default"))
        _ = try await control.abortRelease(slot: "default", actor: "test")
        let second = try await control.startRelease(slot: "default", spec: spec, actor: "test")
        // The first run's last write, its turn come late (a slow disk): before, it replaced the second's record, and
        // a restart then found only the aborted release — the running one never resumed.
        await control.persist(first)
        #expect(control.releaseStore.load().records.map(\.id) == [second.record.id])
        _ = try await control.abortRelease(slot: "default", actor: "test")
    }

    /// A candidate gate that scores until it is told to stop (or a minute passes), and says whether it was told.
    final class EndlessGate: CandidateGate {
        let scoring = Locked(false)
        let cutShort = Locked<Bool?>(nil)
        func refusal(candidate: ModelInstance, baseline: ModelInstance?, spec: ReleaseSpec,
                     isCancelled: @escaping @Sendable () -> Bool) async -> String? {
            scoring.withLock { $0 = true }
            let deadline = ContinuousClock.now + .seconds(60)
            while !isCancelled() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            cutShort.withLock { $0 = isCancelled() }
            return nil
        }
    }

    @Test("a shutdown cuts the candidate gate's scoring short and leaves the release loading, to be resumed")
    func shutdownStopsGate() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let gate = EndlessGate()
        harness.control.setCandidateGate(gate)
        let control = harness.control
        let starting = Task {
            try await control.startRelease(slot: "default",
                spec: ReleaseSpec(model: "synthetic/yolov5-nc80-320-identity.onnx", strategy: .shadow), actor: "alice")
        }
        #expect(await eventually(timeout: .seconds(30)) { gate.scoring.withLock { $0 } })
        // The server's shutdown order: loads cancelled, then the releases stopped (before, the gate scored on).
        await harness.control.manager.cancelLoads(reason: "shutting down")
        await harness.control.stopReleases()
        #expect(gate.cutShort.withLock { $0 } == true)
        #expect(try await starting.value.record.phase == .loading)
        let start = try await harness.auditEntries().filter { $0.action == "release.start" }.map(\.result)
        #expect(start == ["intent"], "the next start closes it: \(start)")
    }

    @Test("a release start leaves an operator's load in progress alone (409, audited); during a release a rollback is refused and audited; a release's version and sha256 are bounded as a load's")
    func releaseBesideOperatorChanges() async throws {
        let (harness, gate) = try await Self.heldHarness()
        defer { Task { await harness.cleanUp() } }
        defer { gate.open() }
        let candidate = "synthetic/yolov5-nc80-320-identity.onnx"
        try await harness.test { client in
            #expect(try await Self.post(client, "/v1/slots/default/load", ["model": "synthetic/held.onnx"]).0
                == .accepted)
            #expect(await eventually(timeout: .seconds(30)) { gate.waitingCount == 1 })
            let (refused, problem) = try await Self.post(client, "/v1/slots/default/release",
                ["model": candidate, "strategy": "shadow"])
            #expect(refused == .conflict && "\(problem)".contains("held.onnx in progress"), "\(problem)")
            gate.open()
            // Before, the release's candidate load cancelled it as superseded.
            let load = try #require(await harness.control.manager.latestOperation(slot: "default"))
            #expect(await load.wait().stage == .ready)
            #expect(load.request.path.hasSuffix("held.onnx"))
            #expect(try await client.execute(uri: "/v1/slots/default/staged", method: .delete,
                headers: H.headers(token: Self.operatorToken)) { $0.status } == .ok)

            for (field, value) in [("version", String(repeating: "v", count: 300)), ("sha256", "ABC"),
                                   ("model", String(repeating: "m", count: 2000) + ".onnx")] {
                var body: [String: Any] = ["model": candidate, "strategy": "shadow"]
                body[field] = value
                let (code, problem) = try await Self.post(client, "/v1/slots/default/release", body)
                #expect(code == .badRequest && "\(problem)".contains(field), "\(field): \(problem)")
            }
            let (started, body) = try await Self.post(client, "/v1/slots/default/release?wait=true",
                ["model": candidate, "strategy": "shadow"])
            #expect(started == .ok, "\(body)")
            #expect(try await Self.post(client, "/v1/slots/default/rollback").0 == .conflict)
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .ok)
        }
        let entries = try await harness.auditEntries()
        let starts = entries.filter { $0.action == "release.start" && $0.result == "rejected" }
        #expect(starts.count == 4, "\(starts.map { "\($0.reason ?? "")" })")
        #expect(starts.allSatisfy { ($0.version?.utf8.count ?? 0) <= 128 && ($0.modelPath?.utf8.count ?? 0) <= 1024 })
        #expect(entries.contains { $0.action == "rollback default" && $0.result == "refused" && $0.actor == "alice" },
            "\(entries.map(\.action))")
        #expect(!entries.contains { $0.action == "rollback" && $0.result == "intent" })
    }

    @Test("conflicts and refusals: a second release, loads during a release, unknown slots, bad bodies")
    func conflicts() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            #expect(try await client.execute(uri: "/v1/slots/default/release", method: .get,
                headers: H.headers(token: Self.operatorToken)) { $0.status } == .notFound)
            #expect(try await Self.post(client, "/v1/slots/default/release",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                 "steps": [["percent": 150]]]).0 == .badRequest)
            #expect(try await Self.post(client, "/v1/slots/nope/release",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "shadow"]).0 == .notFound)
            #expect(try await Self.post(client, "/v1/slots/default/release",
                ["model": "escape.onnx", "strategy": "shadow"]).0 != .accepted)
            // A misspelt key is refused, naming it: the gate it meant was dropped without a word.
            let (typo, refusal) = try await Self.post(client, "/v1/slots/default/release",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                 "rules": ["rollbackIf": ["error_rate": 0.01], "promote_after": ["min_s": 600]]])
            #expect(typo == .badRequest)
            #expect(refusal["detail"] as? String == "invalid JSON body: unknown key: rules.rollbackIf")
            #expect(try await Self.post(client, "/v1/slots/default/load",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "activate": false, "alow_schema_change": true])
                .0 == .badRequest)
            // A class name is bounded: the figures keep every name they see and every status shows them.
            #expect(try await Self.post(client, "/v1/feedback", ["request_id": "r", "boxes": [["class_name":
                String(repeating: "c", count: 257), "box": ["x1": 0, "y1": 0, "x2": 1, "y2": 1]]]]).0 == .badRequest)
            let (code, started) = try await Self.post(client, "/v1/slots/default/release",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "shadow"])
            #expect(code == .accepted)
            #expect(["loading", "running"].contains(started["phase"] as? String ?? ""))
            #expect(try await Self.post(client, "/v1/slots/default/release",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "shadow"]).0 == .conflict)
            #expect(try await Self.post(client, "/v1/slots/default/load",
                ["model": "synthetic/yolov5-nc80-320-identity.onnx"]).0 == .conflict)
            // Not even forced: the release's candidate and baseline would go with the slot's models.
            #expect(try await Self.post(client, "/v2/repository/models/default/unload?force=true").0 == .conflict)
            #expect(try await client.execute(uri: "/v1/slots/default/release/pause", method: .post,
                headers: H.headers(token: "carol-token")) { $0.status } == .forbidden)
            #expect(await eventually(timeout: .seconds(30)) {
                harness.control.manager.slot("default")?.roles.staged != nil
            })
            #expect(try await Self.post(client, "/v1/slots/default/release/resume").0 == .conflict)
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .ok)
            #expect(try await Self.post(client, "/v1/slots/default/release/abort").0 == .conflict)
        }
    }

    @Test("a restart after a promotion was committed, before the release's end was recorded, records it as promoted")
    func promotionCommittedBeforeRestart() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let state = harness.repository.appendingPathComponent("state").path
        let file = URL(fileURLWithPath: state + "/releases/default.json")
        // The flip's commit waits at the gate: what the release record says then is what a process killed right
        // after that commit leaves behind.
        let gate = Gate()
        let first = try await Self.boot(harness, state: state,
            store: SlowStateStore(try StateStore(directory: state), commitGate: gate), audit: harness.audit)
        let baseline = try #require(first.manager.slot("default")?.roles.active?.identity)
        let atFlip = Locked<Data?>(nil)
        try await Self.serve(harness, first) { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                "steps": [["percent": 10, "hold_s": 3600]]])
            #expect(code == .ok)
            gate.close()
            async let promoted = Self.post(client, "/v1/slots/default/release/promote")
            #expect(await eventually { gate.waitingCount == 1 })
            atFlip.withLock { $0 = try? Data(contentsOf: file) }
            gate.open()
            #expect(try await promoted.0 == .ok)
        }
        await first.stopReleases()
        await first.manager.shutdown()
        // As if the process had died between the flip's commit and the release record's update.
        let record = try #require(atFlip.value)
        #expect(String(decoding: record, as: UTF8.self).contains("\"phase\":\"promoting\""))
        try record.write(to: file)

        let second = try await Self.boot(harness, state: state, store: try StateStore(directory: state),
            audit: harness.audit)
        defer { Task { await second.manager.shutdown() } }
        try await Self.serve(harness, second) { client in
            let release = try await Self.status(client)
            #expect(release["phase"] as? String == "promoted")
            let last = (release["history"] as? [[String: Any]])?.last
            #expect(last?["action"] as? String == "promoted" && last?["by"] as? String == "system")
            #expect((last?["detail"] as? String)?.contains("before a restart") == true, "\(String(describing: last))")
        }
        let roles = try #require(second.manager.slot("default")?.roles)
        #expect(roles.active?.identity.path.hasSuffix("yolov5-nc80-320-identity.onnx") == true)
        #expect(roles.active?.identity.sha256 != baseline.sha256)
        #expect(roles.staged == nil, "the candidate was loaded again as if the release still ran")
        let event = second.manager.recentEvents(slot: "default").first { $0.operation == .releasePromote }
        #expect(event?.result == .succeeded)
        await second.stopReleases()
        let audited = try await harness.auditEntries().last { $0.action == "release.promote" }
        #expect(audited?.actor == "system" && audited?.result == "succeeded")
        #expect(audited?.reason?.contains("before a restart") == true)
    }

    @Test("a release whose baseline was replaced while the service was down is not resumed: failed, saying which model is active (the candidate too)",
          arguments: ["synthetic/yolov5-nc80-320-identity.onnx", "synthetic/yolov5-nc80-320-other-names.onnx"])
    func baselineChangedWhileDown(activeModel: String) async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let state = harness.repository.appendingPathComponent("state").path
        let first = try await Self.boot(harness, state: state, store: try StateStore(directory: state),
            audit: harness.audit)
        try await Self.serve(harness, first) { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                "steps": [["percent": 10, "hold_s": 3600]]])
            #expect(code == .ok)
        }
        await first.stopReleases()
        await first.manager.shutdown()
        // What an offline `yoloswap swap` commits (or a failed restore's fallback to a configuration naming the file):
        // here the candidate's file, which the release never promoted, or a third model.
        let path = harness.repository.appendingPathComponent(activeModel).path
        let sha256 = try Fixtures.sha256(path)
        let store = try StateStore(directory: state)
        var committed = try #require(try store.committedSlots().first { $0.slot == "default" })
        committed.standby = committed.active
        committed.active = ModelRecord(path: path, sha256: sha256)
        committed.generation += 1
        try store.commit(committed)

        let second = try await Self.boot(harness, state: state, store: store, audit: harness.audit)
        defer { Task { await second.manager.shutdown() } }
        try await Self.serve(harness, second) { client in
            let release = try await Self.status(client)
            #expect(release["phase"] as? String == "failed")
            let last = (release["history"] as? [[String: Any]])?.last
            #expect(last?["action"] as? String == "failed" && last?["by"] as? String == "system")
            let detail = last?["detail"] as? String ?? ""
            let which = activeModel.hasSuffix("320-identity.onnx")
                ? "the release's candidate, though no promotion of it was recorded"
                : "not the release's candidate either"
            #expect(detail.contains("not resumed") && detail.contains(which) && detail.contains(sha256), "\(detail)")
        }
        let roles = try #require(second.manager.slot("default")?.roles)
        #expect(roles.active?.identity.sha256 == sha256)
        #expect(roles.staged == nil, "the candidate was loaded again")
        let events = second.manager.recentEvents(slot: "default")
        #expect(!events.contains { $0.operation == .releasePromote })
        #expect(events.first { $0.operation == .releaseStart }?.result == .failed)
        await second.stopReleases()
        // The resume's intent is closed by its outcome (a restart would otherwise mark it interrupted).
        let resumes = try await harness.auditEntries().filter { $0.action == "release.resume" }
        #expect(resumes.map(\.result) == ["intent", "failed"] && resumes.allSatisfy { $0.actor == "system" })
    }

    @Test("a promotion whose release record cannot be written first answers 503 and flips nothing")
    func promotionNotRecordedFirst() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let state = harness.repository.appendingPathComponent("state").path
        let control = try await Self.boot(harness, state: state)
        defer { Task { await control.manager.shutdown() } }
        let baseline = try #require(control.manager.slot("default")?.roles.active?.identity)
        let file = state + "/releases/default.json"
        try await Self.serve(harness, control) { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                "steps": [["percent": 10, "hold_s": 3600]]])
            #expect(code == .ok)
            // A folder where the record goes: its replacement fails (also for root, whom permissions do not stop).
            try FileManager.default.removeItem(atPath: file)
            try FileManager.default.createDirectory(atPath: file, withIntermediateDirectories: false)
            let (refused, problem) = try await Self.post(client, "/v1/slots/default/release/promote")
            #expect(refused == .serviceUnavailable)
            #expect((problem["detail"] as? String)?.contains("could not be written before the flip") == true,
                "\(problem)")
            #expect(control.manager.slot("default")?.roles.active?.identity == baseline)
            let release = try await Self.status(client)
            #expect(release["phase"] as? String == "running")
            #expect((release["history"] as? [[String: Any]])?.last?["action"] as? String == "promote-failed")

            try FileManager.default.removeItem(atPath: file)
            #expect(try await Self.post(client, "/v1/slots/default/release/promote").0 == .ok)
            #expect(control.manager.slot("default")?.roles.active?.identity.path.hasSuffix("320-identity.onnx")
                == true)
        }
        await control.stopReleases()
    }

    @Test("a restart resumes the release in its phase and step (one cut off while promoting, in the phase it was promoted from): the candidate is verified, loaded and routed again")
    func resumeAfterRestart() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let state = harness.repository.appendingPathComponent("state").path
        let first = try await Self.boot(harness, state: state, audit: harness.audit)
        try await Self.serve(harness, first) { client in
            let (code, _) = try await Self.post(client, "/v1/slots/default/release?wait=true", [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary",
                "sticky_header": "X-Camera-Id",
                "steps": [["percent": 10], ["percent": 40, "hold_s": 3600]]])
            #expect(code == .ok)
            var step = 0
            let deadline = ContinuousClock.now + .seconds(30)
            while step == 0, ContinuousClock.now < deadline {
                step = (try await Self.status(client)["step"] as? [String: Any])?["index"] as? Int ?? 0
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(step == 1)
            #expect(try await Self.post(client, "/v1/slots/default/release/pause").0 == .ok)
        }
        await first.stopReleases()
        await first.manager.shutdown()
        // As if the process died while an operator's promotion of the paused release was being committed.
        let file = URL(fileURLWithPath: state + "/releases/default.json")
        var persisted = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        #expect(persisted["phase"] as? String == "paused")
        persisted["phase"] = "promoting"
        persisted["promotedFrom"] = "paused"
        try JSONSerialization.data(withJSONObject: persisted).write(to: file)

        let second = try await Self.boot(harness, state: state, audit: harness.audit)
        defer { Task { await second.manager.shutdown() } }
        try await Self.serve(harness, second) { client in
            var release: [String: Any] = [:]
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                release = try await Self.status(client)
                if second.manager.slot("default")?.roles.staged != nil,
                   (release["history"] as? [[String: Any]])?.last?["action"] as? String == "resumed-after-restart" {
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(release["phase"] as? String == "paused")
            #expect((release["step"] as? [String: Any])?["index"] as? Int == 1)
            #expect(release["candidate_percent"] as? Double == 40)
            #expect(second.manager.slot("default")?.roles.staged?.identity.path.hasSuffix("320-identity.onnx")
                == true)
            var answers: [String?] = []
            for i in 0..<30 { answers.append(try await Self.detect(client, key: "order-\(i)").1) }
            #expect(answers.contains("candidate") && answers.contains("baseline"))
        }
        await second.stopReleases()
        let resumes = try await harness.auditEntries().filter { $0.action == "release.resume" && $0.actor == "system" }
        #expect(resumes.map(\.result) == ["intent", "succeeded"], "the resume's outcome closes its intent")
    }
}
