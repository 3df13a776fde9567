import Foundation
import HotSwap
import TestSupport
import Testing

/// `serve --desired-state` against a folder laid out and updated exactly as kubelet updates a ConfigMap volume, and
/// `yoloswap apply` / `yoloswap diff` against the real server.
@Suite("Desired state: ConfigMap watcher and CLI against the real server", .serialized, .timeLimit(.minutes(5)))
struct DesiredStateTests {
    static let small = "yolov3-tiny-coco-320.onnx"
    static let large = "yolov3-tiny-coco-416.onnx"

    static func document(_ model: String, sha256: String? = nil, extra: String = "") -> String {
        """
        apiVersion: yoloswap/v1
        kind: DesiredState
        slots:
          default:
            model: \(model)
        \(sha256.map { "    sha256: \($0)" } ?? "")
        \(extra)
        """
    }

    static func sha(_ model: String) throws -> String { try ModelFile(verifying: Repo.model(model)).sha256 }

    /// A server whose configuration watches `volume`'s key.
    static func server(watching volume: ConfigMapVolume) async throws -> ServerProcess {
        try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots: {default: {model: \(large)}}
            desired_state: \(volume.keyPath)
            hotswap: {warmup_runs: 1, standby: release}
            """)
    }

    static func activeSHA(_ server: ServerProcess) async throws -> String? {
        let (_, slot) = try await server.json("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
        return (slot["active"] as? [String: Any])?["sha256"] as? String
    }

    static func status(_ server: ServerProcess) async throws -> [String: Any] {
        try await server.json("GET", "/v1/desired/status", token: ServerProcess.viewerToken).1
    }

    @Test("a ConfigMap swap converges the slot; a bad document is refused (old state kept); unrelated files do nothing")
    func configMapSwaps() async throws {
        let folder = try TemporaryDirectory(prefix: "configmap")
        let volume = ConfigMapVolume(directory: folder.path)
        try volume.publish(Self.document(Self.large))
        let server = try await Self.server(watching: volume)
        defer { server.stop() }
        let largeSHA = try Self.sha(Self.large)
        let smallSHA = try Self.sha(Self.small)
        #expect(await eventuallyAsync { (try? await Self.status(server))?["observed_generation"] as? Int == 1 })
        #expect(try await Self.activeSHA(server) == largeSHA)

        // Swap: the slot comes to serve the new model, pinned by its digest.
        try volume.publish(Self.document(Self.small, sha256: smallSHA))
        #expect(await eventuallyAsync(timeout: .seconds(60)) { (try? await Self.activeSHA(server)) == smallSHA })
        #expect(await eventuallyAsync { (try? await Self.status(server))?["observed_generation"] as? Int == 2 })
        let status = try await Self.status(server)
        let source = status["source"] as? String ?? ""
        #expect(source == "configmap:\(volume.keyPath)@\(status["content_sha256"] as? String ?? "?")")
        let (_, audit) = try await server.json("GET", "/v1/audit?limit=50", token: ServerProcess.operatorToken)
        let entries = audit["entries"] as? [[String: Any]] ?? []
        #expect(entries.contains { $0["actor"] as? String == source && $0["action"] as? String == "switch" })

        // A bad document: refused whole, the slot keeps serving, the refusal is in the status and the metrics.
        try volume.publish(Self.document(Self.large, extra: "    replicas: 3"))
        #expect(await eventuallyAsync {
            ((try? await Self.status(server))?["last_rejection"] as? [String: Any])?["reason"] as? String
                == "slots.default.replicas: unknown key (allowed: allow_schema_change, model, require_signature, "
                + "sha256, version)"
        })
        #expect(try await Self.activeSHA(server) == smallSHA)
        #expect(try await Self.status(server)["observed_generation"] as? Int == 2)
        let (_, metricsData) = try await server.request("GET", "/metrics")
        let metrics = String(decoding: metricsData, as: UTF8.self)
        #expect(metrics.contains("yoloswap_desired_rejected_total{source=\"configmap\"} 1"))
        #expect(metrics.contains("yoloswap_desired_observed_generation 2"))
        #expect(metrics.contains("yoloswap_desired_slot_condition{slot=\"default\",condition=\"Converged\"} 1"))

        // Changed by hand: no condition holds, in the status and the metric, until the slot serves the document's
        // model again.
        for (model, converged) in [(Self.large, 0), (Self.small, 1)] {
            let (status, body) = try await server.json("POST", "/v1/slots/default/load?wait=true",
                token: ServerProcess.operatorToken, body: ["model": model, "activate": true])
            try #require(status == 200, "\(body)")
            let (_, scraped) = try await server.request("GET", "/metrics")
            let text = String(decoding: scraped, as: UTF8.self)
            #expect(text.contains("yoloswap_desired_slot_condition{slot=\"default\",condition=\"Converged\"} \(converged)"))
            #expect(text.contains("yoloswap_desired_slot_condition{slot=\"default\",condition=\"Failed\"} 0"))
        }

        // Unrelated files in the volume's folder: no read, no apply, nothing audited.
        let (_, before) = try await server.json("GET", "/v1/audit/head", token: ServerProcess.viewerToken)
        try "x".write(toFile: folder.file("other.yaml"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: folder.file("..2026_01_01_00_00_00.1"),
            withIntermediateDirectories: false)
        try await Task.sleep(for: .seconds(2))
        let (_, after) = try await server.json("GET", "/v1/audit/head", token: ServerProcess.viewerToken)
        #expect(before["sequence"] as? Int == after["sequence"] as? Int)

        // Back to a good document: converges again.
        try volume.publish(Self.document(Self.large, sha256: largeSHA))
        #expect(await eventuallyAsync(timeout: .seconds(60)) { (try? await Self.activeSHA(server)) == largeSHA })

        // The whole folder moved aside and another put in its place (a deploy): the watch is set up again and the
        // new folder's document applied. Before, the watcher's end stopped the service, and the server with it.
        let aside = folder.path + "-aside"
        try FileManager.default.moveItem(atPath: folder.path, toPath: aside)
        defer { try? FileManager.default.removeItem(atPath: aside) }
        try FileManager.default.createDirectory(atPath: folder.path, withIntermediateDirectories: false)
        try ConfigMapVolume(directory: folder.path).publish(Self.document(Self.small, sha256: smallSHA))
        #expect(await eventuallyAsync(timeout: .seconds(60)) { (try? await Self.activeSHA(server)) == smallSHA })
        #expect(server.process.isRunning, "\(server.log.suffix(2000))")
    }

    @Test("a file another process still writes when the service starts is read once it is closed (the part written was applied as the whole document), or once its writer has been quiet for 30 s")
    func fileOpenForWritingAtStart() async throws {
        let folder = try TemporaryDirectory(prefix: "desired-write")
        let path = folder.file("desired.yaml")
        let head = Self.document(Self.large) + "\nroutes:\n  metal-case: default\n"
        try #require(FileManager.default.createFile(atPath: path, contents: Data(head.utf8)))
        // The writer holds the file open, the document's end still to come, while the service starts.
        let writer = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try writer.seekToEnd()
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots: {default: {model: \(Self.large)}}
            desired_state: \(path)
            hotswap: {warmup_runs: 1, standby: release}
            """)
        defer { server.stop() }
        #expect(await eventuallyAsync { server.log.contains("open for writing") }, "\(server.log.suffix(2000))")
        let (_, early) = try await server.json("GET", "/v1/routes", token: ServerProcess.viewerToken)
        #expect((early["routes"] as? [String: Any])?["metal-case"] == nil, "the part written was applied: \(early)")
        try writer.write(contentsOf: Data("  wood-case: default\n".utf8))
        try writer.close()
        #expect(await eventuallyAsync {
            let routes = (try? await server.json("GET", "/v1/routes", token: ServerProcess.viewerToken))?.1["routes"]
            return (routes as? [String: Any])?.keys.sorted() == ["metal-case", "wood-case"]
        })
        // A writer that holds the file open but leaves it as it is for 30 s of the service's time (or a network file
        // system that grants no lease, which answers the same) is taken to be done: the document is applied. The
        // file's mtime, stamped a minute back, counts for nothing (another host's clock may be anywhere).
        let next = folder.file("next.yaml")
        let document = Self.document(Self.large) + "\nroutes:\n  glass-case: default\n"
        try #require(FileManager.default.createFile(atPath: next, contents: Data(document.utf8)))
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-60)], ofItemAtPath: next)
        let holder = try FileHandle(forWritingTo: URL(fileURLWithPath: next))
        defer { try? holder.close() }
        try #require(rename(next, path) == 0)  // over the document: the held descriptor follows it
        let held = ContinuousClock.now
        #expect(await eventuallyAsync(timeout: .seconds(90)) {
            let routes = (try? await server.json("GET", "/v1/routes", token: ServerProcess.viewerToken))?.1["routes"]
            return (routes as? [String: Any])?.keys.sorted() == ["glass-case"]
        }, "a quiet writer's file was never read")
        #expect(ContinuousClock.now - held >= .seconds(29), "read before its writer had been quiet for 30 s")
    }

    @Test("a document refused because its model's file is not there yet is applied once the file is (the rescan), refused and audited once meanwhile")
    func modelArrivesLater() async throws {
        let folder = try TemporaryDirectory(prefix: "configmap")
        let models = try TemporaryDirectory(prefix: "models")
        try FileManager.default.copyItem(atPath: Repo.model(Self.large), toPath: models.file(Self.large))
        let volume = ConfigMapVolume(directory: folder.path)
        try volume.publish(Self.document(Self.large))
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            model_repository: \(models.path)
            slots: {default: {model: \(Self.large)}}
            desired_state: \(volume.keyPath)
            hotswap: {warmup_runs: 1, standby: release}
            """)
        defer { server.stop() }
        #expect(await eventuallyAsync { (try? await Self.status(server))?["observed_generation"] as? Int == 1 })
        // The ConfigMap names a model the deploy has not copied yet: refused.
        try volume.publish(Self.document("later.onnx"))
        #expect(await eventuallyAsync {
            let reason = ((try? await Self.status(server))?["last_rejection"] as? [String: Any])?["reason"] as? String
            return reason?.contains("later.onnx") == true
        })
        // Read again at the rescans meanwhile (every 10 s): the same refusal is audited once.
        try await Task.sleep(for: .seconds(12))
        let (_, audit) = try await server.json("GET", "/v1/audit?limit=100", token: ServerProcess.operatorToken)
        let refusals = (audit["entries"] as? [[String: Any]] ?? []).filter {
            $0["action"] as? String == "desired.apply" && $0["result"] as? String == "rejected"
        }
        #expect(refusals.count == 1, "\(refusals)")
        // The copy lands (written aside, then renamed, as rsync does): the next rescan applies the document.
        try FileManager.default.copyItem(atPath: Repo.model(Self.small), toPath: models.file(".later.onnx.tmp"))
        try FileManager.default.moveItem(atPath: models.file(".later.onnx.tmp"), toPath: models.file("later.onnx"))
        let smallSHA = try Self.sha(Self.small)
        #expect(await eventuallyAsync(timeout: .seconds(60)) { (try? await Self.activeSHA(server)) == smallSHA })
        #expect(await eventuallyAsync { (try? await Self.status(server))?["observed_generation"] as? Int == 2 })
        // Refused again (another missing model), then a document accepted over HTTP: the file, unchanged when its
        // model lands, no longer overrides what is in force.
        try volume.publish(Self.document("later2.onnx"))
        #expect(await eventuallyAsync {
            let reason = ((try? await Self.status(server))?["last_rejection"] as? [String: Any])?["reason"] as? String
            return reason?.contains("later2.onnx") == true
        })
        let largeSHA = try Self.sha(Self.large)
        let (put, _) = try await server.request("PUT", "/v1/desired", token: ServerProcess.operatorToken,
            body: Data(Self.document(Self.large, sha256: largeSHA).utf8), contentType: "application/yaml")
        #expect(put == 200)
        #expect(try await Self.activeSHA(server) == largeSHA)
        try FileManager.default.copyItem(atPath: Repo.model(Self.small), toPath: models.file("later2.onnx"))
        try await Task.sleep(for: .seconds(12))
        #expect(try await Self.activeSHA(server) == largeSHA, "the refused file overrode the document put since")
        // Nor after a read that failed in between (the volume's data briefly gone), the file back unchanged.
        let unchanged = try String(contentsOfFile: volume.keyPath, encoding: .utf8)
        try FileManager.default.removeItem(atPath: folder.file("..data"))
        #expect(await eventuallyAsync {
            let reason = ((try? await Self.status(server))?["last_rejection"] as? [String: Any])?["reason"] as? String
            return reason?.contains("later2.onnx") == false
        })
        try volume.publish(unchanged)
        try await Task.sleep(for: .seconds(12))
        #expect(try await Self.activeSHA(server) == largeSHA, "the file, unchanged after a failed read, overrode it")
    }

    @Test("two replicas watching one ConfigMap both converge and report the document's generation")
    func replicasConverge() async throws {
        let folder = try TemporaryDirectory(prefix: "configmap")
        let volume = ConfigMapVolume(directory: folder.path)
        try volume.publish(Self.document(Self.large))
        let replicas = [try await Self.server(watching: volume), try await Self.server(watching: volume)]
        defer { for replica in replicas { replica.stop() } }
        let smallSHA = try Self.sha(Self.small)
        try volume.publish("metadata: {name: fleet, generation: 5}\n" + Self.document(Self.small, sha256: smallSHA))
        for replica in replicas {
            #expect(await eventuallyAsync(timeout: .seconds(60)) { (try? await Self.activeSHA(replica)) == smallSHA })
            #expect(await eventuallyAsync {
                let (_, body) = (try? await replica.request("GET", "/metrics")) ?? (0, Data())
                return String(decoding: body, as: UTF8.self).contains("yoloswap_desired_observed_generation 5")
            })
        }
    }

    @Test("yoloswap diff shows what apply would change; apply converges; diff is empty afterwards")
    func cliApplyAndDiff() async throws {
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots: {default: {model: \(Self.large)}}
            hotswap: {warmup_runs: 1}
            """)
        defer { server.stop() }
        let folder = try TemporaryDirectory(prefix: "apply")
        let file = folder.file("desired.yaml")
        try Self.document(Self.small).write(toFile: file, atomically: true, encoding: .utf8)
        let connection = ["--server", server.base.absoluteString, "--token", ServerProcess.operatorToken]

        let diff = try await runProcess(Repo.binary, ["diff", "-f", file] + connection)
        #expect(diff.status == 1, "\(diff.stderr)")
        #expect(diff.stdout.contains("would load+switch default"))
        #expect(diff.stdout.contains("+ \(Self.small)"))
        #expect(try await Self.activeSHA(server) == (try Self.sha(Self.large)))

        let apply = try await runProcess(Repo.binary, ["apply", "-f", file] + connection)
        #expect(apply.status == 0, "\(apply.stdout)\(apply.stderr)")
        #expect(apply.stdout.contains("slot default: Converged"))
        #expect(try await Self.activeSHA(server) == (try Self.sha(Self.small)))

        let again = try await runProcess(Repo.binary, ["diff", "-f", file] + connection)
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        #expect(again.stdout.contains("no changes"))

        try Self.document("../etc/passwd").write(toFile: file, atomically: true, encoding: .utf8)
        let refused = try await runProcess(Repo.binary, ["apply", "-f", file] + connection)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("slots.default.model"))
    }
}
