import AuditLog
import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import HummingbirdTesting
import NIOCore
import Primitives
@testable import Server
import TestSupport
import Testing
import Yams

private typealias H = ServerHarness

/// The desired-state document: parsing and validation (untrusted input), and reconciling through the control plane
/// over `/v1/desired` (real slots over fake backends, the real audit log).
@Suite struct DesiredStateTests {
    static let m320 = "synthetic/yolov5-nc80-320-identity.onnx"
    static let m416 = "synthetic/yolov5-nc80-416-identity.onnx"
    /// The SHA-256 of a model file in the harness's repository.
    static func sha(_ model: String, in harness: ServerHarness) throws -> String {
        try FileDigest.sha256(ofFileAt: harness.repository.appendingPathComponent(model).path).sha256
    }

    static func document(_ model: String = m320, extra: String = "", routes: String = "") -> ByteBuffer {
        ByteBuffer(string: """
            apiVersion: yoloswap/v1
            kind: DesiredState
            slots:
              default:
                model: \(model)
            \(extra)
            \(routes)
            """)
    }

    // MARK: Parsing

    @Test("YAML and JSON forms parse to the same document")
    func parsesYAMLAndJSON() throws {
        let yaml = """
            apiVersion: yoloswap/v1
            kind: DesiredState
            metadata: {name: line-a, generation: 7}
            slots:
              default:
                {model: a.onnx, version: "1.2", sha256: \(String(repeating: "AB", count: 32)), require_signature: true}
            routes: {metal-case: default}
            """
        let json = """
            {"apiVersion": "yoloswap/v1", "kind": "DesiredState", "metadata": {"name": "line-a", "generation": 7},
             "slots": {"default": {"model": "a.onnx", "version": "1.2",
             "sha256": "\(String(repeating: "ab", count: 32))", "require_signature": true}},
             "routes": {"metal-case": "default"}}
            """
        let fromYAML = try DesiredState.parse(Array(yaml.utf8))
        #expect(fromYAML == (try DesiredState.parse(Array(json.utf8))))
        #expect(fromYAML.metadata?.generation == 7)
        #expect(fromYAML.slots["default"]?.sha256 == String(repeating: "ab", count: 32))
        #expect(fromYAML.slots["default"]?.require_signature == true)
        #expect(fromYAML.slots["default"]?.allow_schema_change == false)
        #expect(fromYAML.routes == ["metal-case": "default"])
    }

    @Test("a bad document is refused with the field named", arguments: [
        ("kind: DesiredState\nslots: {}", "apiVersion"),
        ("apiVersion: yoloswap/v2\nkind: DesiredState\nslots: {}", "apiVersion"),
        ("apiVersion: yoloswap/v1\nkind: Deployment\nslots: {}", "kind"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState", "slots"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {modle: a.onnx}}", "slots.default.modle"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: a.onnx}}\nextra: 1", "extra"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: /etc/passwd}}", "slots.default.model"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: ../x.onnx}}", "slots.default.model"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: a.onnx, sha256: abc}}",
         "slots.default.sha256"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: a.onnx, require_signature: maybe}}",
         "slots.default.require_signature"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {'a/b': {model: a.onnx}}", "slots.a/b"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: a.onnx}}\nroutes: {x: [1]}",
         "routes.x"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nslots: [a]", "slots"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nmetadata: {generation: -3}\nslots: {}", "metadata.generation"),
        // A base-60 number past Int (YAML 1.1): Yams' arithmetic trapped on it and killed the service.
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nmetadata: {generation: 1:0:0:0:0:0:0:0:0:0:0}\nslots: {}",
         "metadata.generation"),
        ("apiVersion: yoloswap/v1\nkind: DesiredState\nmetadata: {generation: --1:-9223372036854775748}\nslots: {}",
         "metadata.generation"),
    ])
    func refusesNamingTheField(text: String, field: String) {
        #expect(throws: DesiredStateError.self) { try DesiredState.parse(Array(text.utf8)) }
        do { _ = try DesiredState.parse(Array(text.utf8)) } catch { #expect(error.field == field, "\(error)") }
    }

    @Test("a refused key's control characters are escaped in the refusal (it goes into the log and the audit reason)")
    func refusalEscapesControlCharacters() throws {
        let text = "apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: a.onnx}}\n"
            + "routes: {\"x\\n2026-12-01T00:00:00Z info desired state applied\\u001B[2J\": [1]}"
        do {
            _ = try DesiredState.parse(Array(text.utf8))
            Issue.record("accepted")
        } catch {
            // Before, the newline went into the log as it was: a forged line of its own.
            #expect(!error.description.unicodeScalars.contains { $0.properties.generalCategory == .control },
                "\(error.description.debugDescription)")
            #expect(error.description.contains("x\\u{A}2026-12-01") && error.description.contains("\\u{1B}[2J"),
                "\(error.description)")
        }
    }

    @Test("hostile documents: too large, too many slots, deep nesting, not UTF-8, aliases — refused, no crash")
    func hostileDocuments() {
        let header = "apiVersion: yoloswap/v1\nkind: DesiredState\n"
        let huge = header + "slots: {default: {model: a.onnx}}\n#" + String(repeating: "x", count: 300 << 10)
        let many = header + "slots:\n" + (0..<100).map { "  s\($0): {model: a.onnx}" }.joined(separator: "\n")
        let deepFlow = header + "slots: " + String(repeating: "[", count: 100_000)
        let deepBlock = header + "slots:\n" + String(repeating: "- ", count: 50_000) + "x"
        // Lines broken by CR alone (or NEL, LS, PS): the bound counted a line's start after LF only.
        let deepByBreaks = ["\r", "\u{85}", "\u{2028}", "\u{2029}"].map { line in
            header.replacingOccurrences(of: "\n", with: line) + "slots:" + line
                + (1...400).map { String(repeating: " ", count: $0) + "-" }.joined(separator: line) + " x"
        }
        for text in deepByBreaks {
            #expect(DesiredState.nestingBound(text) > DesiredState.Limits.nesting)
            #expect(throws: DesiredStateError.self) { try DesiredState.parse(Array(text.utf8)) }
        }
        let aliases = header + "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nslots: {default: *b}"
        // Aliases of aliases: 16^6 values once expanded, refused before they are walked.
        let laughs = header + "a: &a [x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x]\n"
            + (1...6).map { "l\($0): &l\($0) [" + Array(repeating: $0 == 1 ? "*a" : "*l\($0 - 1)", count: 16)
                .joined(separator: ", ") + "]" }.joined(separator: "\n") + "\nslots: {}"
        // One long value aliased 200 times: 24 MB of values to read (and to check) from a 120 KB document; refused
        // as aliases now, before the walk that counted them.
        let long = header + "v: &v " + String(repeating: "x", count: 120_000) + "\n"
            + "l: [" + Array(repeating: "*v", count: 200).joined(separator: ", ") + "]\nslots: {}"
        let walked = #expect(throws: DesiredStateError.self) { try DesiredState.parse(Array(long.utf8)) }
        #expect(walked?.reason.contains("YAML aliases") == true, "\(String(describing: walked))")
        for text in [huge, many, deepFlow, deepBlock, aliases, laughs] {
            #expect(throws: DesiredStateError.self) { try DesiredState.parse(Array(text.utf8)) }
        }
        #expect(throws: DesiredStateError.self) { try DesiredState.parse([0xff, 0xfe, 0x00]) }
        #expect(throws: DesiredStateError.self) { try DesiredState.parse([]) }
        // A refusal names the document's own keys: what is shown of it is bounded.
        let longName = header + "slots: {'" + String(repeating: "n", count: 200_000) + "': {model: a.onnx}}"
        let refusal = #expect(throws: DesiredStateError.self) { try DesiredState.parse(Array(longName.utf8)) }
        #expect((refusal?.description.utf8.count ?? .max) <= 256 + 2 + 1024, "\(refusal?.description.count ?? 0)")
    }

    @Test("aliases are refused before Yams composes (hashing an aliased key took minutes and gigabytes), in every form the review found; collections as keys refused after")
    func aliasesRefused() throws {
        let header = "apiVersion: yoloswap/v1\nkind: DesiredState\nslots: {default: {model: a.onnx}}\n"
        // 10^7 values behind one key, in 400 bytes: Yams' duplicate-key check hashed them all.
        let levels = "routes:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + (1...6).map { level in
            "  l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]"
        }.joined(separator: "\n") + "\n"
        let clock = ContinuousClock()
        for key in ["  ? *l6\n  : default\n", "  *l6 : default\n", "  *l6: default\n", "x: {*l6}\n", "x: {a: 1, *l6}\n",
                    "x: {*l6:x}\n", "x: [*l6:x]\n", "x: {[*l6]:x}\n", "x: {?*l6: x}\n", "x: [?[*l6]]\n",
                    "x: {\n *l6\n}\n", "- a: |\n    text\n  *l6: x\n", "  a: rock 'n roll\n  *l6: default\n  b: end'\n",
                    // Line breaks libyaml takes that are not ASCII (NEL, LS, PS), and a byte-order mark.
                    "x: [\u{85}*l6]\n", "x: [\u{2028}*l6]\n", "x: [\u{2029}*l6]\n", "x: [\u{FEFF}*l6]\n"] {
            let started = clock.now
            let refusal = #expect(throws: DesiredStateError.self) {
                try DesiredState.parse(Array((header + levels + key).utf8))
            }
            #expect(refusal?.reason.contains("YAML aliases") == true, "\(key): \(String(describing: refusal))")
            #expect(clock.now - started < .seconds(5))
        }
        // Keys that are collections (no alias: as large as the text) are refused by the walk.
        for key in ["routes: {[a]: default}\n", "routes: {{a: b}: default}\n", "routes:\n  ? [a, b]\n  : default\n"] {
            let refusal = #expect(throws: DesiredStateError.self) { try DesiredState.parse(Array((header + key).utf8)) }
            #expect(refusal?.reason.contains("not a plain value") == true, "\(key): \(String(describing: refusal))")
        }
        // What is no alias: `*` inside a word, before a non-name character, JSON written compactly.
        let benign = "labels:\n  glob: /media/*.mp4\n  pass: pa*ss\n  note: 'is it ready ? yes ]: x'\n  text: |\n"
            + "    ? [a]: b\n  json: {\"a\":\"ready ? yes\",\"b\":\"[draft]: v2\"}\n"
        let node = try #require(try YAMLInput.compose(benign))
        try YAMLInput.check(node)
        #expect(node["labels"]?["pass"]?.string == "pa*ss")
        #expect(node["labels"]?["json"]?["b"]?.string == "[draft]: v2")
    }

    // MARK: Reconciling over HTTP

    @Test("PUT converges the slot through load + switch, audited as http:<token>; applying again changes nothing")
    func appliesAndIsIdempotent() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/desired", method: .put,
                headers: H.headers(token: "alice-token", contentType: "application/yaml"),
                body: Self.document(Self.m320)) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect(body["changed"] as? Bool == true)
                #expect(body["converged"] as? Bool == true)
                #expect(body["generation"] as? Int == 1)
                let plan = try #require(body["plan"] as? [[String: Any]])
                #expect(plan.count == 1)
                #expect(plan.first?["action"] as? String == "load+switch")
                let slot = try #require(((body["status"] as? [String: Any])?["slots"] as? [String: Any])?["default"]
                    as? [String: Any])
                let conditions = try #require(slot["conditions"] as? [[String: Any]])
                #expect(conditions.first { $0["status"] as? String == "True" }?["type"] as? String == "Converged")
            }
            let viewer = H.headers(token: "carol-token")
            try await client.execute(uri: "/v1/slots/default", method: .get, headers: viewer) { response in
                let active = try #require(try H.json(response)["active"] as? [String: Any])
                #expect(active["sha256"] as? String == (try Self.sha(Self.m320, in: harness)))
            }
            let entries = try await harness.auditEntries()
            let mine = entries.filter { $0.actor == "http:alice" }
            #expect(mine.map(\.action).contains("load"))
            #expect(mine.map(\.action).contains("switch"))
            #expect(mine.contains { $0.action == "desired.apply" && $0.result == "succeeded" })

            // Again: nothing to do, nothing recorded.
            try await client.execute(uri: "/v1/desired", method: .put,
                headers: H.headers(token: "alice-token", contentType: "application/yaml"),
                body: Self.document(Self.m320)) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect(body["changed"] as? Bool == false)
                #expect((body["plan"] as? [Any])?.isEmpty == true)
                #expect(body["generation"] as? Int == 1)
            }
            #expect(try await harness.auditEntries().count == entries.count)
            try await client.execute(uri: "/v1/desired", method: .get, headers: H.headers(token: "carol-token")) {
                response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect(body["source"] as? String == "http:alice")
                #expect((body["document"] as? [String: Any])?["kind"] as? String == "DesiredState")
            }
        }
    }

    @Test("dry run plans without changing anything; routes are part of the plan")
    func dryRun() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let before = try await harness.auditEntries().count
        try await harness.test { client in
            // As clients spell it (Python's requests sends `True`): a dry run each time, never an apply.
            for spelling in ["true", "True", "1"] {
                try await client.execute(uri: "/v1/desired?dry_run=\(spelling)", method: .put,
                    headers: H.headers(token: "alice-token"),
                    body: Self.document(Self.m320, routes: "routes: {metal-case: default}")) { response in
                    #expect(response.status == .ok)
                    let body = try H.json(response)
                    #expect(body["dry_run"] as? Bool == true, "\(spelling)")
                    let actions = (body["plan"] as? [[String: Any]])?.compactMap { $0["action"] as? String }
                    #expect(actions == ["load+switch", "routes.replace"])
                }
            }
            // Neither true nor false: refused, not taken as false.
            try await client.execute(uri: "/v1/desired?dry_run=yes", method: .put,
                headers: H.headers(token: "alice-token"),
                body: Self.document(Self.m320, routes: "routes: {metal-case: default}")) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains("dry_run must be true or false"))
            }
            let viewer = H.headers(token: "carol-token")
            try await client.execute(uri: "/v1/desired/status", method: .get, headers: viewer) { response in
                let body = try H.json(response)
                #expect(body["observed_generation"] as? Int == 0)
            }
            try await client.execute(uri: "/v1/desired", method: .get, headers: H.headers(token: "carol-token")) {
                #expect($0.status == .notFound)
            }
        }
        #expect(harness.control.routes == ["metal-case": "line2"])
        // Dry runs leave no entry; the malformed request is recorded as a refused call, as other changes' are.
        let after = try await harness.auditEntries()
        #expect(after.count == before + 1)
        #expect(after.filter { $0.result == "refused" }.map(\.action) == ["PUT /v1/desired"],
            "\(after.map { "\($0.action):\($0.result)" })")
    }

    @Test("routes in the document replace the routes")
    func routes() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                body: Self.document(Self.m416, routes: "routes: {metal-case: default, wood: line2}")) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect((body["status"] as? [String: Any])?["routes_converged"] as? Bool == true)
            }
            // Replaced by hand: the document's routes are no longer in force, which the status says (before, it
            // said converged until the next apply).
            try await client.execute(uri: "/v1/routes", method: .put, headers: H.headers(token: "alice-token"),
                body: ByteBuffer(string: #"{"routes": {"metal-case": "line2"}}"#)) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/v1/desired/status", method: .get,
                headers: H.headers(token: "alice-token")) { response in
                let status = try H.json(response)
                #expect(status["routes_converged"] as? Bool == false, "\(status)")
            }
            try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                body: Self.document(Self.m416, routes: "routes: {metal-case: default, wood: line2}")) { response in
                let body = try H.json(response)
                #expect((body["status"] as? [String: Any])?["routes_converged"] as? Bool == true, "\(body)")
            }
        }
        #expect(harness.control.routes == ["metal-case": "default", "wood": "line2"])
        #expect(try await harness.auditEntries().contains { $0.action == "routes.replace" && $0.actor == "http:alice" })
    }

    @Test("a refused document changes nothing: 422 naming the field, the rejection in the status")
    func refusedDocumentKeepsState() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let active = harness.control.manager.slot("default")?.roles.active?.identity
        try await harness.test { client in
            for (body, field) in [
                (Self.document("escape.onnx"), "slots.default.model"),
                (Self.document("missing.onnx"), "slots.default.model"),
                (Self.document(Self.m320, extra: "  nowhere:\n    model: \(Self.m320)"), "slots.nowhere"),
                (Self.document(Self.m320, routes: "routes: {metal-case: nowhere}"), "routes.metal-case"),
                (ByteBuffer(string: "{not yaml"), ""),
            ] {
                try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                    body: body) { response in
                    #expect(response.status == .unprocessableContent)
                    let detail = try H.json(response)["detail"] as? String ?? ""
                    #expect(detail.hasPrefix(field), "\(detail)")
                    #expect(!detail.contains(harness.repository.path))
                }
            }
            let viewer = H.headers(token: "carol-token")
            try await client.execute(uri: "/v1/desired/status", method: .get, headers: viewer) { response in
                let body = try H.json(response)
                let rejection = try #require(body["last_rejection"] as? [String: Any])
                #expect(rejection["source"] as? String == "http:alice")
                #expect(body["observed_generation"] as? Int == 0)
            }
        }
        #expect(harness.control.manager.slot("default")?.roles.active?.identity == active)
        #expect(harness.control.routes == ["metal-case": "line2"])
        #expect(try await harness.auditEntries().filter { $0.action == "desired.apply" && $0.result == "rejected" }
            .count == 5)
    }

    @Test("a slot whose load fails is Failed with the reason; the old model keeps serving")
    func failedLoad() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let active = harness.control.manager.slot("default")?.roles.active?.identity
        try await harness.test { client in
            let cases = [
                ("synthetic/nan.onnx", "", "LoadFailed"),
                (Self.m320, "    sha256: \(String(repeating: "0", count: 64))", "LoadFailed"),
                (Self.m320, "    require_signature: true", "SignatureRequired"),
            ]
            for (model, extra, reason) in cases {
                try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                    body: Self.document(model, extra: extra)) { response in
                    #expect(response.status == .ok)
                    let body = try H.json(response)
                    #expect(body["converged"] as? Bool == false)
                    let slot = try #require(((body["status"] as? [String: Any])?["slots"] as? [String: Any])?[
                        "default"] as? [String: Any])
                    let failed = (slot["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Failed" }
                    #expect(failed?["status"] as? String == "True")
                    #expect(failed?["reason"] as? String == reason)
                    #expect((slot["last_error"] as? String)?.isEmpty == false)
                }
            }
        }
        #expect(harness.control.manager.slot("default")?.roles.active?.identity == active)
        #expect(harness.control.manager.slot("default")?.roles.staged == nil)
        // The unsigned model was refused in its load's verifying stage: never staged, so nothing to discard.
        let entries = try await harness.auditEntries()
        #expect(!entries.contains { $0.action == "discard" })
        #expect(entries.contains { $0.action == "load" && $0.result == "failed"
            && $0.reason?.contains("requires a signature") == true })
    }

    @Test("a slot changed by hand since it converged is shown as not converged (ModelChanged) until the next apply")
    func driftShown() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let reconciler = DesiredStateReconciler(control: harness.control)
        let document = Array(Self.document(Self.m320).readableBytesView)
        #expect(await reconciler.applyFile(document, path: "/etc/yoloswap/desired.yaml"))
        func converged() -> DesiredConditionDTO? {
            reconciler.status.slots["default"]?.conditions.first { $0.type == "Converged" }
        }
        #expect(converged()?.status == "True")
        // Rolled back by hand: the slot no longer serves the document's model, and the status says so.
        _ = try await harness.control.manager.rollback(slot: "default")
        #expect(converged()?.status == "False" && converged()?.reason == "ModelChanged", "\(String(describing: converged()))")
        // The next apply brings it back.
        #expect(await reconciler.applyFile(document, path: "/etc/yoloswap/desired.yaml"))
        #expect(converged()?.status == "True" && converged()?.reason == "ModelActive")

        // The file under the document's path replaced, and loaded by hand: other bytes than it converged to.
        let path = harness.repository.appendingPathComponent(Self.m320).path
        try Data("a new build of \(Self.m320)".utf8).write(to: URL(fileURLWithPath: path))
        _ = try await harness.control.manager.loadAndActivate(LoadRequest(slot: "default", path: path))
        #expect(converged()?.reason == "ModelChanged")
        // The document names no sha256: the slot serves what it asks, and the apply (with nothing to do) says so —
        // before, the status stayed `ModelChanged` until another document came.
        #expect(await reconciler.applyFile(document, path: "/etc/yoloswap/desired.yaml"))
        #expect(converged()?.status == "True" && converged()?.reason == "ModelActive",
            "\(String(describing: converged()))")
    }

    @Test("with no room for two models, a resource-preserving or auto policy converges by unloading first; availability-preserving stays failed", arguments: [SwapPolicy.auto, .resourcePreserving, .availabilityPreserving])
    func tightBudget(policy: SwapPolicy) async throws {
        // Two models of 64 MiB each (sparse files), estimated at twice their size until measured and at least their
        // size once loaded: a 160 MiB budget holds one load's estimate, not the active model beside it. The slot
        // starts on the first, loaded into an empty slot.
        let size: UInt64 = 64 << 20
        let harness = try await H { config in
            // big-b, and a model as large that fails its warm-up (NaN outputs).
            for name in ["big-a.onnx", "big-b.onnx", "synthetic/nan.onnx"] {
                let path = config.modelRepository + "/" + name
                #expect(FileManager.default.createFile(atPath: path, contents: Data((name + "-big").utf8)))
                let file = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                try file.truncate(atOffset: size)
                try file.close()
            }
            config.slots = ["default": .init(model: "big-a.onnx")]
            config.routes = [:]
            config.hotSwap.memoryBudgetBytes = Int(size) * 5 / 2
            config.hotSwap.policy = policy
        }
        defer { Task { await harness.cleanUp() } }
        let reconciler = Self.withoutTimedRetries(harness)
        func phase() -> String? {
            reconciler.status.slots["default"]?.conditions.first { $0.status == "True" }?.type
        }
        #expect(harness.control.manager.slot("default")?.roles.active?.identity.path.hasSuffix("/big-a.onnx") == true)
        let second = Array(Self.document("big-b.onnx").readableBytesView)
        #expect(await reconciler.applyFile(second, path: "/etc/yoloswap/desired.yaml"))
        let active = harness.control.manager.slot("default")?.roles.active?.identity.path
        if policy == .availabilityPreserving {
            #expect(phase() == "Failed", "\(reconciler.status.slots)")
            #expect(reconciler.status.slots["default"]?.last_error?.contains("budget") == true)
            #expect(active?.hasSuffix("/big-a.onnx") == true, "\(String(describing: active))")
        } else {
            #expect(phase() == "Converged", "\(reconciler.status.slots)")
            #expect(active?.hasSuffix("/big-b.onnx") == true, "\(String(describing: active))")
            let entries = try await harness.auditEntries()
            let loads = entries.filter { $0.action == "load" && $0.modelPath == "big-b.onnx" }
            #expect(loads.map(\.result) == ["intent", "failed", "intent", "succeeded"],
                "\(loads.map { "\($0.result) \($0.reason ?? "")" })")

            // A model that fails its warm-up: the activating load unloads the slot's model, fails, brings it back —
            // once. The document's retries do not take the slot down again; the slot serves big-b throughout.
            let failing = Array(Self.document("synthetic/nan.onnx").readableBytesView)
            #expect(await reconciler.applyFile(failing, path: "/etc/yoloswap/desired.yaml"))
            #expect(phase() == "Failed", "\(reconciler.status.slots)")
            for attempt in 1...2 {
                _ = try? await reconciler.apply(failing, from: .configMap(path: "/etc/yoloswap/desired.yaml"),
                    attempt: attempt)
            }
            #expect(phase() == "Failed", "\(reconciler.status.slots)")
            #expect(harness.control.manager.slot("default")?.roles.active?.identity.path.hasSuffix("/big-b.onnx")
                == true)
            let activating = try await harness.auditEntries().filter {
                $0.action == "load" && $0.modelPath == "synthetic/nan.onnx" && $0.result == "intent"
                    && $0.reason == "activate"
            }
            #expect(activating.count == 1, "\(activating.count) activating loads")
            // The retries loaded nothing (no staging refused over budget either), and the reason shown is still why
            // the activating load failed.
            #expect(try await harness.auditEntries().filter { $0.action == "load" && $0.modelPath == "synthetic/nan.onnx"
                && $0.result == "intent" }.count == 2)
            let reason = reconciler.status.slots["default"]?.last_error ?? ""
            #expect(reason.contains("warm") && !reason.contains("budget"), "\(reason)")
        }
    }

    @Test("a document that left a slot failed is applied again, with growing delays, until it converges")
    func retryUntilConverged() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let reconciler = DesiredStateReconciler(
            control: harness.control, retryDelay: .milliseconds(100), maxRetryDelay: .milliseconds(400))
        // The document pins a digest the file does not have yet (a copy still under way): the load fails.
        let file = harness.repository.appendingPathComponent(Self.m320)
        let final = Data("the finished copy of \(Self.m320)".utf8)
        let finished = harness.repository.appendingPathComponent("finished.onnx")
        try final.write(to: finished)
        let digest = try Self.sha("finished.onnx", in: harness)
        let document = Array(Self.document(Self.m320, extra: "    sha256: \(digest)",
            routes: "routes: {new-product: default}").readableBytesView)
        let slot = try #require(harness.control.manager.slot("default"))
        let before = slot.roles.active?.identity
        #expect(await reconciler.applyFile(document, path: "/etc/yoloswap/desired.yaml"))
        #expect(slot.roles.active?.identity == before)
        // Its routes wait for the slot they point to: its requests would go to a slot serving something else.
        #expect(harness.control.routes["new-product"] == nil)
        #expect(reconciler.status.routes_converged == false)
        // Retries keep failing while the file is wrong, then converge once it is right; nobody applies again.
        #expect(await eventuallyAsync(timeout: .seconds(20)) {
            (try? await harness.auditEntries().contains { $0.reason?.hasPrefix("retry 2,") == true }) == true
        })
        try final.write(to: file)
        #expect(await eventually(timeout: .seconds(20)) { slot.roles.active?.identity.sha256 == digest })
        #expect(await eventually(timeout: .seconds(20)) { harness.control.routes["new-product"] == "default" })
        let retries = try await harness.auditEntries().filter {
            $0.action == "desired.apply" && $0.result == "intent" && $0.reason?.hasPrefix("retry") == true
        }
        #expect(retries.count >= 2)
        // Converged: no retry is pending, and a later change of the file is not picked up by one.
        try Data("changed again".utf8).write(to: file)
        try await Task.sleep(for: .seconds(1))
        #expect(slot.roles.active?.identity.sha256 == digest)
        #expect(try await harness.auditEntries().filter { $0.reason?.hasPrefix("retry") == true }.count == retries.count)
    }

    @Test("a new document cancels the retry of the one before")
    func newDocumentCancelsRetry() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let reconciler = DesiredStateReconciler(
            control: harness.control, retryDelay: .milliseconds(300), maxRetryDelay: .milliseconds(300))
        let slot = try #require(harness.control.manager.slot("default"))
        let before = slot.roles.active?.identity
        let failing = Array(Self.document("synthetic/nan.onnx").readableBytesView)
        #expect(await reconciler.applyFile(failing, path: "/etc/yoloswap/desired.yaml"))
        // The slot's own model: nothing to do, and the failing document's retry is dropped.
        let current = Array(Self.document(Self.m416).readableBytesView)
        #expect(await reconciler.applyFile(current, path: "/etc/yoloswap/desired.yaml"))
        try await Task.sleep(for: .seconds(1.5))
        let retries = try await harness.auditEntries().filter { $0.reason?.hasPrefix("retry") == true }
        #expect(retries.isEmpty, "\(retries)")
        #expect(slot.roles.active?.identity == before)
    }

    /// A reconciler whose retries come only when a test runs one (an hour away).
    static func withoutTimedRetries(_ harness: ServerHarness) -> DesiredStateReconciler {
        DesiredStateReconciler(control: harness.control, retryDelay: .seconds(3600), maxRetryDelay: .seconds(3600))
    }

    @Test("the status follows the document in force: a failed slot put right by hand is Converged at the next apply; slots an earlier document named are gone")
    func statusFollowsTheDocument() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let reconciler = Self.withoutTimedRetries(harness)
        func phase(_ slot: String) -> String? {
            reconciler.status.slots[slot]?.conditions.first { $0.status == "True" }?.type
        }
        // The file a document pins (the 320 model's digest) still holds the 416 model: the load fails.
        let file = harness.repository.appendingPathComponent("later.onnx")
        try FileManager.default.copyItem(at: harness.repository.appendingPathComponent(Self.m416), to: file)
        let sha320 = try Self.sha(Self.m320, in: harness)
        let pinned = Array(Self.document("later.onnx", extra: "    sha256: \(sha320)\n  line2:\n    model: \(Self.m416)")
            .readableBytesView)
        #expect(await reconciler.applyFile(pinned, path: "/etc/yoloswap/desired.yaml"))
        #expect(phase("default") == "Failed" && phase("line2") == "Converged")
        // Put right by hand: the right bytes, loaded by an operator.
        try FileManager.default.removeItem(at: file)
        try FileManager.default.copyItem(at: harness.repository.appendingPathComponent(Self.m320), to: file)
        _ = try await harness.control.manager.loadAndActivate(LoadRequest(slot: "default", path: file.path,
            expectedSHA256: sha320))
        #expect(await reconciler.applyFile(pinned, path: "/etc/yoloswap/desired.yaml"))
        #expect(phase("default") == "Converged")
        // A refusal over HTTP is recorded each time, the same document or not.
        let before = try await harness.auditEntries().filter { $0.result == "rejected" }.count
        for _ in 0..<2 {
            _ = try? await reconciler.apply(Array(Self.document("missing.onnx").readableBytesView),
                from: .http(token: "alice"))
        }
        #expect(try await harness.auditEntries().filter { $0.result == "rejected" }.count == before + 2)
        // A document naming only `default`: `line2` is no longer reported.
        let single = Array(Self.document(Self.m416).readableBytesView)
        #expect(await reconciler.applyFile(single, path: "/etc/yoloswap/desired.yaml"))
        #expect(reconciler.status.slots["line2"] == nil && phase("default") == "Converged")
    }

    @Test("a retry that comes after a newer document was accepted does not bring the older one back")
    func staleRetryDropped() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        let reconciler = Self.withoutTimedRetries(harness)
        let slot = try #require(harness.control.manager.slot("default"))
        let failing = Array(Self.document("synthetic/nan.onnx").readableBytesView)
        #expect(await reconciler.applyFile(failing, path: "/etc/yoloswap/desired.yaml"))
        let newer = Array(Self.document(Self.m320).readableBytesView)
        #expect(await reconciler.applyFile(newer, path: "/etc/yoloswap/desired.yaml"))
        let served = slot.roles.active?.identity
        let newerSHA = reconciler.status.content_sha256
        #expect(served?.path.hasSuffix("320-identity.onnx") == true)
        // The failing document's retry, as its timer would run it had it fired while the newer one was checked.
        _ = try? await reconciler.apply(failing, from: .configMap(path: "/etc/yoloswap/desired.yaml"), attempt: 1)
        #expect(slot.roles.active?.identity == served)
        #expect(reconciler.status.content_sha256 == newerSHA && newerSHA != nil)
        let retries = try await harness.auditEntries().filter { $0.reason?.hasPrefix("retry") == true }
        #expect(retries.isEmpty, "\(retries)")
    }

    @Test("refused documents go into the audit log at most 20 a second a source; the next one recorded says how many were not")
    func refusalsBounded() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let burst = ContinuousClock.now
            for _ in 0..<40 {
                try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                    body: Self.document(extra: "    replicas: 3")) { #expect($0.status == .unprocessableContent) }
            }
            let spent = ContinuousClock.now - burst
            try await Task.sleep(for: .milliseconds(1100))
            try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                body: Self.document(extra: "    replicas: 3")) { #expect($0.status == .unprocessableContent) }
            let refused = try await harness.auditEntries().filter {
                $0.action == "desired.apply" && $0.result == "rejected"
            }
            let windows = Int(spent / .seconds(1)) + 1
            #expect(refused.count <= RefusalLimiter.perSecond * windows + 1, "\(refused.count) in \(spent)")
            if windows == 1 {
                #expect(refused.count == RefusalLimiter.perSecond + 1)
                #expect(refused.last?.reason?.contains("20 http:alice's refusals before this one were not recorded")
                    == true, "\(refused.last?.reason ?? "")")
            }
        }
    }

    @Test("PUT needs the operator role; reading needs a viewer")
    func roles() async throws {
        let harness = try await H()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "carol-token"),
                body: Self.document()) { #expect($0.status == .forbidden) }
            try await client.execute(uri: "/v1/desired/status", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/v1/desired", method: .put, headers: H.headers(token: "alice-token"),
                body: ByteBuffer(repeating: UInt8(ascii: "#"), count: DesiredState.Limits.bytes + 1)) {
                #expect($0.status == .contentTooLarge)
            }
        }
    }
}
