import Foundation
import TestSupport
import Testing

/// A release's golden-set gate on the real binary: the candidate (yolov3-tiny at 320) is scored on the labelme set
/// (`models/datasets/labelme-coco`, inside the model repository) before it takes any traffic.
@Suite("Golden-set gate (real binary, real models)", .serialized)
struct GoldenSetGateTests {
    static let goldenSet = "datasets/labelme-coco/annotations.json"

    @Test("a candidate below min_map is refused before any traffic, with its figures; one above starts")
    func gate() async throws {
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots:
              default: { model: yolov3-tiny-coco-416.onnx }
            hotswap: { warmup_runs: 1 }
            """)
        defer { server.stop() }
        let (code, refused) = try await server.json("POST", "/v1/slots/default/release?wait=true",
            token: ServerProcess.operatorToken, body: [
                "model": "yolov3-tiny-coco-320.onnx", "strategy": "canary", "golden_set": Self.goldenSet,
                "golden_gate": ["min_map": 0.99],
            ])
        #expect(code == 422, "\(refused)")
        #expect(refused["phase"] as? String == "failed")
        let reason = try #require(refused["reason"] as? String)
        #expect(reason.contains("below min_map 0.9900") && reason.contains("candidate mAP 0."), "\(reason)")
        // It never took traffic: the slot still answers from the baseline, and nothing is staged.
        let (_, slot) = try await server.json("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
        #expect((slot["active"] as? [String: Any])?["path"] as? String == "yolov3-tiny-coco-416.onnx")
        #expect(slot["staged"] == nil || slot["staged"] is NSNull)

        // The baseline is scored too when the rule compares with it; a loose gate lets the release start.
        let (started, release) = try await server.json("POST", "/v1/slots/default/release?wait=true",
            token: ServerProcess.operatorToken, body: [
                "model": "yolov3-tiny-coco-320.onnx", "strategy": "canary", "golden_set": Self.goldenSet,
                "golden_gate": ["min_map": 0.05, "max_drop_vs_baseline": 0.5],
            ])
        #expect(started == 200, "\(release)")
        #expect(release["phase"] as? String == "running")
        // A set outside the repository is refused as a model path would be.
        _ = try await server.json("POST", "/v1/slots/default/release/abort", token: ServerProcess.operatorToken)
        let (_, outside) = try await server.json("POST", "/v1/slots/default/release?wait=true",
            token: ServerProcess.operatorToken, body: [
                "model": "yolov3-tiny-coco-320.onnx", "strategy": "canary", "golden_set": "../etc/passwd",
            ])
        #expect((outside["reason"] as? String)?.contains("may not contain '..'") == true, "\(outside)")
    }
}
