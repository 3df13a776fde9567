import Foundation
import HotSwap
import Hummingbird
import HummingbirdTesting
import NIOCore
import Server
import TestSupport
import Testing

private typealias H = ServerHarness

/// Execution providers in the configuration and the API: the slot's keys, `provider` / `allow_device_change` /
/// `policy` in a load, provider and device in the slot view, the stamp, the operation and the events.
@Suite("Execution providers in the service")
struct ProviderTests {
    @Test("slot execution keys, gpu budgets and ort_library parse; bad ones are refused with the key")
    func configuration() throws {
        let yaml = """
            ort_library: lib/libonnxruntime.so
            hotswap: { intra_op_threads: 2, gpu_memory_budget_mb: { 0: 8192, 1: 4096 } }
            slots:
              line: { model: a.onnx, provider: tensorrt:1, providers: [cpu, cuda:1], intra_op_threads: 4,
                      cuda_mem_limit_mb: 2048, trt_engine_cache: cache/trt }
              plain: { model: b.onnx }
            """
        let config = try ServerConfiguration.parse(yaml, base: "/srv")
        #expect(config.ortLibrary == "/srv/lib/libonnxruntime.so")
        #expect(config.hotSwap.gpuMemoryBudgets == [0: 8192 << 20, 1: 4096 << 20])
        let line = config.hotSwap.execution(forSlot: "line")
        #expect(line == SlotExecution(target: ExecutionTarget(provider: .tensorrt, deviceID: 1),
            allowedTargets: [.cpu, ExecutionTarget(provider: .cuda, deviceID: 1)], intraOpThreads: 4,
            gpuMemoryLimitBytes: 2048 << 20, tensorRTEngineCacheDirectory: "/srv/cache/trt"))
        #expect(config.hotSwap.execution(forSlot: "plain") == SlotExecution())

        for (bad, key) in [
            ("slots: { a: { model: a.onnx, provider: gpu } }", "slots.a.provider"),
            ("slots: { a: { model: a.onnx, providers: [cuda:x] } }", "slots.a.providers"),
            ("slots: { a: { model: a.onnx, intra_op_threads: 0 } }", "slots.a.intra_op_threads"),
            ("slots: { a: { model: a.onnx, cuda_mem_limit_mb: 17592186044416 } }", "slots.a.cuda_mem_limit_mb"),
            ("hotswap: { gpu_memory_budget_mb: { first: 10 } }", "hotswap.gpu_memory_budget_mb"),
            ("hotswap: { gpu_memory_budget_mb: { 0: 0 } }", "hotswap.gpu_memory_budget_mb.0"),
        ] {
            let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(bad, base: "/srv") }
            #expect(error?.message.contains(key) == true, "\(String(describing: error))")
        }
    }

    private static func body(_ object: [String: Any]) throws -> ByteBuffer {
        ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object))
    }

    @Test("the API shows provider and device; a device change needs allow_device_change; the policy is reported")
    func api() async throws {
        let harness = try await ServerHarness(slotExecution: [
            "default": SlotExecution(target: ExecutionTarget(provider: .cuda, deviceID: 0), allowedTargets: [.cpu],
                gpuMemoryLimitBytes: 64 << 20),
        ])
        defer { Task { await harness.cleanUp() } }
        let alice = H.headers(token: "alice-token", contentType: "application/json")
        let model320 = "synthetic/yolov5-nc80-320-identity.onnx"
        try await harness.test { client in
            try await client.execute(uri: "/v1/slots/default", method: .get, headers: alice) { response in
                let active = try #require(try H.json(response)["active"] as? [String: Any])
                #expect(active["provider"] as? String == "cuda:0" && active["device"] as? String == "gpu:0")
                #expect(active["device_memory_bytes"] as? Int == 64 << 20)
            }
            try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: "carol-token", contentType: "image/jpeg"), body: H.busJPEG) { response in
                let stamp = try #require(try H.json(response)["model"] as? [String: Any])
                #expect(stamp["provider"] as? String == "cuda:0" && stamp["device"] as? String == "gpu:0")
            }
            // Another device without allow_device_change: refused, the active model untouched.
            try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post, headers: alice,
                body: try Self.body(["model": model320, "activate": true, "provider": "cpu"])) { response in
                #expect(response.status == .unprocessableContent)
                let op = try H.json(response)
                #expect(op["state"] as? String == "failed")
                #expect((op["reason"] as? String)?.contains("allow_device_change") == true)
                #expect(op["provider"] as? String == "cpu")
            }
            try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post, headers: alice,
                body: try Self.body(["model": model320, "provider": "gpu"])) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post, headers: alice,
                body: try Self.body(["model": model320, "activate": true, "provider": "cpu",
                    "allow_device_change": true, "policy": "resource-preserving"])) { response in
                #expect(response.status == .ok)
                let op = try H.json(response)
                #expect(op["provider"] as? String == "cpu" && op["device"] as? String == "host")
                #expect(op["allow_device_change"] as? Bool == true)
                let policy = try #require(op["policy"] as? [String: Any])
                #expect(policy["policy"] as? String == "resource-preserving")
                #expect(policy["reason"] as? String == "the policy the load asked for")
            }
            try await client.execute(uri: "/v1/slots/default", method: .get, headers: alice) { response in
                let active = try #require(try H.json(response)["active"] as? [String: Any])
                #expect(active["provider"] as? String == "cpu" && active["device_memory_bytes"] as? Int == 0)
            }
            try await client.execute(uri: "/v1/events?slot=default&limit=10", method: .get,
                headers: alice) { response in
                let events = try #require(try H.json(response)["events"] as? [[String: Any]])
                let moved = try #require(events.first { $0["result"] as? String == "succeeded"
                    && $0["operation"] as? String == "activate" })
                #expect(moved["provider"] as? String == "cpu" && moved["device"] as? String == "host")
                #expect((moved["policy"] as? [String: Any])?["policy"] as? String == "resource-preserving")
            }
        }
    }
}
