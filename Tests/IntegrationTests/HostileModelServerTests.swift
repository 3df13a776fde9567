import Foundation
import HotSwap
import TestSupport
import Testing

/// The hostile models of tools/make_hostile_models.py against the real binary: loaded into a serving slot while a
/// client keeps detecting on it, and opened by the CLI. No model may crash the process, hang a load or take a slot:
/// each load the manifest says is refused fails with a reason naming the problem, the active model answers every
/// request meanwhile, and the models only a real photo can turn hostile serve without crashing or emitting NaN.
@Suite("Hostile models (real binary)", .serialized)
struct HostileModelServerTests {
    struct Manifest: Decodable, Sendable {
        struct Entry: Decodable, Sendable, CustomStringConvertible {
            var file: String
            var attack: String?
            /// "baseline", "refused" or "served".
            var expect: String
            /// "load" or "warmup" (refused models).
            var refused_at: String?
            /// "clean", "empty" or "output_error" (served models).
            var on_traffic: String?
            var reason_contains: [String]?
            var description: String { file }
        }
        var models: [Entry]
    }

    /// The generated models: a temporary model repository holding them and their manifest, made once per run.
    static let generated: Result<(directory: TemporaryDirectory, manifest: Manifest), any Error> = Result {
        let directory = try TemporaryDirectory(prefix: "hostile-models")
        let result = try runProcess(Repo.python, [
            Repository.path("tools/make_hostile_models.py"), "--output", directory.path,
        ])
        guard result.status == 0 else {
            throw ServerProcess.ServerError("make_hostile_models.py failed: \(result.stderr)")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: directory.file("manifest.json")))
        return (directory, try JSONDecoder().decode(Manifest.self, from: data))
    }

    static var entries: [Manifest.Entry] { (try? generated.get().manifest.models) ?? [] }
    static var refused: [Manifest.Entry] { entries.filter { $0.expect == "refused" } }
    static var served: [Manifest.Entry] { entries.filter { $0.expect == "served" } }
    static let bus = Data(Repository.bytes("models/images/bus.jpg"))

    /// Whether `text` holds every string the manifest names for `entry`, ignoring case.
    static func names(_ entry: Manifest.Entry, in text: String) -> Bool {
        (entry.reason_contains ?? []).allSatisfy { text.localizedCaseInsensitiveContains($0) }
    }

    @Test("the generator writes at least 40 hostile models, each refused or served, every refusal with its reasons")
    func manifest() throws {
        let manifest = try Self.generated.get().manifest
        #expect(manifest.models.first?.file == "baseline.onnx")
        #expect(Self.refused.count >= 40)
        #expect(!Self.served.isEmpty)
        for entry in Self.refused {
            #expect(entry.reason_contains?.isEmpty == false, "\(entry.file) names no reason")
            #expect(["load", "warmup"].contains(entry.refused_at), "\(entry.file)")
        }
        #expect(Self.served.allSatisfy { ["clean", "empty", "output_error"].contains($0.on_traffic) })
    }

    @Test("loads of hostile models under traffic: each fails naming its problem; the active model answers all")
    func loadsUnderTraffic() async throws {
        let (directory, _) = try Self.generated.get()
        let baselineSHA = try ModelFile(verifying: directory.file("baseline.onnx")).sha256
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            model_repository: \(directory.path)
            slots:
              default: { model: baseline.onnx }
              probe: { model: baseline.onnx }
            hotswap: { warmup_runs: 1, warmup_timeout_s: 30 }
            """)
        defer { server.stop() }
        let pid = server.process.processIdentifier
        let (_, before) = try await server.json("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
        let generation = try #require(before["generation"] as? Int)
        #expect((before["active"] as? [String: Any])?["sha256"] as? String == baselineSHA)

        // A client detecting on the slot all along: (status, sha256 of the model that answered).
        let stop = ManagedFlag()
        let client = Task { () -> [(Int, String)] in
            var seen: [(Int, String)] = []
            while !stop.value {
                let (status, data) = (try? await server.request("POST", "/v1/detect?slot=default",
                    token: ServerProcess.viewerToken, body: Self.bus, contentType: "image/jpeg")) ?? (0, Data())
                let body = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
                seen.append((status, (body?["model"] as? [String: Any])?["sha256"] as? String ?? ""))
            }
            return seen
        }

        for entry in Self.refused {
            let (status, operation) = try await server.json("POST", "/v1/slots/default/load?wait=true",
                token: ServerProcess.operatorToken,
                body: ["model": entry.file, "activate": true, "allow_schema_change": true])
            let reason = operation["reason"] as? String ?? ""
            #expect(status == 422 && operation["state"] as? String == "failed", "\(entry.file): \(status) \(operation)")
            #expect(Self.names(entry, in: reason), "\(entry.file): reason '\(reason)' lacks \(entry.reason_contains!)")
            #expect(!reason.contains(directory.path), "\(entry.file): the reason shows the repository's path")
            try #require(server.process.isRunning, "the server died loading \(entry.file): \(server.log.suffix(3000))")
        }

        // Models that only a photo turns hostile load; what they answer on a photo is decided per model.
        for entry in Self.served {
            let (status, operation) = try await server.json("POST", "/v1/slots/probe/load?wait=true",
                token: ServerProcess.operatorToken,
                body: ["model": entry.file, "activate": true, "allow_schema_change": true])
            try #require(status == 200, "\(entry.file): \(status) \(operation)")
            let (detectStatus, data) = try await server.request("POST", "/v1/detect?slot=probe",
                token: ServerProcess.viewerToken, body: Self.bus, contentType: "image/jpeg")
            let text = String(decoding: data, as: UTF8.self)
            let body = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            switch entry.on_traffic {
            case "clean":
                // 200 means the answer encoded: JSON has no NaN or infinity, so none reached a detection.
                #expect(detectStatus == 200, "\(entry.file): \(text)")
                let detections = body["detections"] as? [[String: Any]] ?? []
                #expect(detections.compactMap { $0["class_name"] as? String } == ["person", "bus", "dog"],
                    "\(entry.file): \(text)")
            case "empty":
                #expect(detectStatus == 200, "\(entry.file): \(text)")
                #expect((body["detections"] as? [[String: Any]])?.isEmpty == true, "\(entry.file): \(text)")
            default:
                #expect(detectStatus == 500, "\(entry.file): \(detectStatus) \(text)")
                #expect(Self.names(entry, in: body["detail"] as? String ?? ""), "\(entry.file): \(text)")
            }
            try #require(server.process.isRunning, "the server died serving \(entry.file): \(server.log.suffix(3000))")
        }

        stop.set()
        let answers = await client.value
        #expect(answers.count > 0)
        #expect(answers.allSatisfy { $0.0 == 200 }, "failed: \(answers.filter { $0.0 != 200 }.prefix(5))")
        #expect(answers.allSatisfy { $0.1 == baselineSHA }, "answered by another model")
        let (_, after) = try await server.json("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
        #expect(after["generation"] as? Int == generation)
        #expect((after["active"] as? [String: Any])?["sha256"] as? String == baselineSHA)
        let (health, _) = try await server.request("GET", "/healthz")
        #expect(health == 200)
        #expect(server.process.isRunning && server.process.processIdentifier == pid)
    }

    @Test("the CLI on each hostile model exits with a message naming the problem, never by a signal",
        arguments: entries.filter { $0.expect != "baseline" })
    func cli(_ entry: Manifest.Entry) throws {
        let (directory, _) = try Self.generated.get()
        let model = directory.file(entry.file)
        let inspect = try runProcess(Repo.binary, ["inspect", "--model", model])
        #expect(!inspect.killedBySignal, "inspect \(entry.file): signal \(inspect.status)")
        if entry.refused_at == "load" {
            #expect(inspect.status != 0, "inspect \(entry.file) succeeded")
            #expect(Self.names(entry, in: inspect.stderr), "inspect \(entry.file): \(inspect.stderr)")
        } else {
            // Only a run shows what is wrong: the schema is fine.
            #expect(inspect.status == 0, "inspect \(entry.file): \(inspect.stderr)")
            let detect = try runProcess(Repo.binary, ["detect", "--model", model, Repo.image("bus.jpg")])
            #expect(!detect.killedBySignal, "detect \(entry.file): signal \(detect.status): \(detect.stderr)")
            #expect(detect.status == 0 || !detect.stderr.isEmpty, "detect \(entry.file) failed silently")
        }
    }
}
