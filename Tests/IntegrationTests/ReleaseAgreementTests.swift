import Foundation
import TestSupport
import Testing

/// A shadow release on the real binary with real models: yolov3-tiny at 320 as the candidate of yolov3-tiny at 416,
/// and its agreement figures against an independent Python re-computation (tools/release_agreement.py: both models
/// through onnxruntime and tools/reference.py, matched as the release documents it).
@Suite("Shadow release agreement (real binary, real models)", .serialized)
struct ReleaseAgreementTests {
    static let photos = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg",
        "kite.jpg"]

    @Test("yolov3-tiny 320 shadowing 416: agreement below 1 that matches the Python re-computation")
    func agreementMatchesPython() async throws {
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots:
              default: { model: yolov3-tiny-coco-416.onnx }
            hotswap: { warmup_runs: 1 }
            """)
        defer { server.stop() }
        let (code, started) = try await server.json("POST", "/v1/slots/default/release?wait=true",
            token: ServerProcess.operatorToken, body: ["model": "yolov3-tiny-coco-320.onnx", "strategy": "shadow",
                "disagreements_kept": 20])
        try #require(code == 200, "\(started)")
        for name in Self.photos {
            let (status, data) = try await server.request("POST", "/v1/detect", token: ServerProcess.viewerToken,
                body: Data(Repository.bytes("models/images/\(name)")), contentType: "image/jpeg")
            #expect(status == 200)
            let body = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            #expect(body?["variant"] as? String == "baseline")
            // One at a time: each copy is mirrored (none shed) before the next request.
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                let (_, release) = try await server.json("GET", "/v1/slots/default/release",
                    token: ServerProcess.viewerToken)
                let mirror = release["mirror"] as? [String: Int] ?? [:]
                if mirror.values.reduce(0, +) >= Self.photos.firstIndex(of: name)! + 1 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let (_, release) = try await server.json("GET", "/v1/slots/default/release", token: ServerProcess.viewerToken)
        let mirror = try #require(release["mirror"] as? [String: Int])
        try #require(mirror["mirrored"] == Self.photos.count, "\(mirror)")
        let ours = try #require(release["agreement"] as? [String: Any])

        let python = try await runProcess(Repo.python, [Repository.path("tools/release_agreement.py"),
            "--baseline", Repo.model("yolov3-tiny-coco-416.onnx"),
            "--candidate", Repo.model("yolov3-tiny-coco-320.onnx")] + Self.photos.map(Repo.image))
        try #require(python.status == 0, "\(python.stderr)")
        let theirs = try #require(try JSONSerialization.jsonObject(with: Data(python.stdout.utf8)) as? [String: Any])

        let f1 = try #require(ours["f1"] as? Double)
        #expect(f1 < 1)
        #expect(f1 > 0.3)
        #expect(ours["pairs"] as? Int == Self.photos.count)
        // The two pipelines agree to IoU ≥ 0.95 and |Δconfidence| ≤ 0.01 (ReferenceAgreementTests): the matching
        // decisions are the same, the continuous figures equal within those tolerances.
        for key in ["precision", "recall", "f1", "mean_count_delta"] {
            let a = try #require(ours[key] as? Double, "\(key)"), b = try #require(theirs[key] as? Double, "\(key)")
            #expect(abs(a - b) < 1e-9, "\(key): ours \(a), Python \(b)")
        }
        #expect(ours["disagreeing"] as? Int == theirs["disagreeing"] as? Int)
        let iou = try #require(ours["mean_iou"] as? Double), theirIoU = try #require(theirs["mean_iou"] as? Double)
        #expect(abs(iou - theirIoU) < 0.01)
        let dc = try #require(ours["mean_abs_confidence_delta"] as? Double)
        let theirDC = try #require(theirs["mean_abs_confidence_delta"] as? Double)
        #expect(abs(dc - theirDC) < 0.01)

        // Each kept disagreement re-computed exactly from its two detection sets.
        let kept = try #require(release["disagreements"] as? [String])
        #expect(kept.count == ours["disagreeing"] as? Int)
        var lines: [String] = []
        var matched: [Int] = []
        for id in kept {
            let (status, body) = try await server.json("GET", "/v1/slots/default/release/disagreements/\(id)",
                token: ServerProcess.operatorToken)
            #expect(status == 200)
            let d = try #require(body["disagreement"] as? [String: Any])
            let pair = ["baseline": d["baseline"] ?? [], "candidate": d["candidate"] ?? []]
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: pair), as: UTF8.self))
            matched.append(d["matched"] as? Int ?? -1)
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pairs-\(UUID()).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let exact = try await runProcess(Repo.python, [Repository.path("tools/release_agreement.py"), "--pairs", file])
        try #require(exact.status == 0, "\(exact.stderr)")
        let recomputed = try #require(try JSONSerialization.jsonObject(with: Data(exact.stdout.utf8))
            as? [String: Any])
        #expect(recomputed["matched"] as? Int == matched.reduce(0, +))
        #expect(recomputed["disagreeing"] as? Int == kept.count)

        // The CLI reads and ends the same release.
        let connection = ["--server", server.base.absoluteString]
        let status = try await runProcess(Repo.binary, ["models", "release", "status"] + connection
            + ["--token", ServerProcess.viewerToken, "default"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("\"running\""))
        let abort = try await runProcess(Repo.binary, ["models", "release", "abort"] + connection
            + ["--token", ServerProcess.operatorToken, "default"])
        #expect(abort.status == 0, "\(abort.stderr)")
        #expect(abort.stdout.contains("\"aborted\""))
        let again = try await runProcess(Repo.binary, ["models", "release", "abort"] + connection
            + ["--token", ServerProcess.operatorToken, "default"])
        #expect(again.status == 1)
        #expect(again.stderr.contains("409"))
    }
}
