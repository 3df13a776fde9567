import Foundation
import HotSwap
import HotSwapTesting
import ONNXRuntime
import ORTBackend
import TestSupport
import Testing

extension ORTSwapSuite {
    /// GPU providers asked of the ORT library this machine has (the PyPI CPU wheel: no CUDA, no TensorRT).
    @Suite("Execution providers with ONNX Runtime")
    struct ProviderTests {
        /// ORT's own message when asked for `provider` in a session of the library the tests use.
        static func ortMessage(_ provider: ExecutionProvider) throws -> String {
            do {
                _ = try ORTSession(bytes: Repository.bytes("models/synthetic/yolov5-nc80-416-identity.onnx"),
                    environment: ortLoader.environment, options: SessionOptions(provider: provider))
            } catch {
                return error.message
            }
            throw CancellationError()  // the library has the provider: the test does not apply
        }

        @Test("a GPU load on a CPU-only ORT fails in the loading stage with ORT's message; the active model serves on",
            arguments: ["cuda:0", "tensorrt:0"])
        func unavailableProvider(provider: String) async throws {
            let available = try ortLoader.environment.library.availableProviders()
            let target = try #require(ExecutionTarget(parsing: provider))
            try #require(!available.contains(target.provider == .cuda ? "CUDAExecutionProvider"
                : "TensorrtExecutionProvider"), "this test assumes a CPU-only ONNX Runtime")
            let message = try Self.ortMessage(ExecutionProvider(target))
            #expect(!message.isEmpty)

            var configuration = HotSwapConfiguration.testing()
            let engines = try TemporaryDirectory()
            configuration.slotExecution["default"] = SlotExecution(target: .cpu, allowedTargets: [target],
                gpuMemoryLimitBytes: 256 << 20, tensorRTEngineCacheDirectory: engines.path)
            let manager = ModelManager(configuration: configuration, loader: ortLoader)
            let events = EventRecorder(manager.events())
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            #expect(original.provider == "cpu")

            for policy in [SwapPolicy.availabilityPreserving, .resourcePreserving] {
                let status = await (try await manager.load(LoadRequest(slot: "default", path: Fixtures.identity320,
                    activate: true, policy: policy, target: target, allowDeviceChange: true))).wait()
                #expect(status.stage == .failed)
                guard case .runtime(let path, let reason) = status.failure else {
                    Issue.record("expected a runtime failure, got \(String(describing: status.failure))")
                    continue
                }
                #expect(path == Fixtures.identity320)
                #expect(reason.contains(message), "ORT's message is missing: \(reason)")
                // Verified, then failed while the session was being created: no validation, no warm-up.
                #expect(status.timings.verify != nil && status.timings.validate == nil && status.timings.warmup == nil)
                #expect(status.execution?.target == target)
                #expect(status.policy?.policy == policy)
                let answer = try await slot.detect(imageBytes: Fixtures.busJPEG).model
                #expect(answer.sha256 == original.sha256 && answer.provider == "cpu")
            }
            // TensorRT's engines are kept per model digest, in a folder of this user's only: ORT names an engine by
            // the graph's names, not its weights, and would serve a retrained model the engine of the one before.
            let folders = try FileManager.default.contentsOfDirectory(atPath: engines.path)
            if target.provider == .tensorrt {
                #expect(folders == [try Fixtures.sha256(Fixtures.identity320)])
                let mode = try FileManager.default.attributesOfItem(atPath: engines.file(folders.first ?? "-"))[
                    .posixPermissions] as? Int
                #expect(mode == 0o700)
            } else {
                #expect(folders.isEmpty)
            }
            let failed = await events.waitFor(3).filter { $0.result == .failed }
            #expect(failed.count == 2)
            #expect(failed.allSatisfy { $0.provider == provider && $0.reason?.contains(message) == true })
            // The resource-preserving load had unloaded the CPU model first: it was brought back.
            #expect(failed.last?.reason?.contains("restored") == true)
            if target.provider == .tensorrt, let folder = folders.first {
                // A model's folder others can write (made before, by someone else perhaps: digests are no secret)
                // is refused before ORT could read an engine from it.
                try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: engines.file(folder))
                let refused = await (try await manager.load(LoadRequest(slot: "default", path: Fixtures.identity320,
                    activate: false, target: target, allowDeviceChange: true))).wait()
                #expect(refused.failure?.description.contains("engine cache folder \(engines.file(folder)) is "
                    + "not private") == true, "\(String(describing: refused.failure))")
            }
            await manager.shutdown()
        }
    }
}
