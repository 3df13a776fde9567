import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension ORTSwapSuite {
    /// Every result says which model produced it, with real models.
    @Suite("Model identity with ONNX Runtime")
    struct ORTModelIdentityTests {
        @Test("every result carries slot, name@version, sha256 and generation; slots count generations apart")
        func resultsCarryTheirModel() async throws {
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: ortLoader)
            let line = try await manager.createSlot("metal-case")
            let other = try await manager.createSlot("pill-bottle")

            let named = try await manager.loadAndActivate(
                LoadRequest(slot: "metal-case", path: Fixtures.yolov3Tiny416, name: "coco", version: "7"))
            let first = try await line.detect(imageBytes: Fixtures.busJPEG)
            let shaTiny = try Fixtures.sha256(Fixtures.yolov3Tiny416)
            #expect(first.model == ModelStamp(slot: "metal-case",
                identity: ModelIdentity(name: "coco", version: "7", sha256: shaTiny, path: Fixtures.yolov3Tiny416),
                generation: 1))
            #expect(first.model.id == "coco@7")
            #expect(named.identity?.id == "coco@7")
            // A real model on a real photo: the bus is found.
            #expect(first.result.detections.contains { $0.className == "bus" })

            // Without a name and version: the file name and the digest's first 12 hex digits.
            _ = try await manager.loadAndActivate(LoadRequest(slot: "metal-case", path: Fixtures.identity320))
            let shaB = try Fixtures.sha256(Fixtures.identity320)
            let second = try await line.detect(imageBytes: Fixtures.busJPEG)
            #expect(second.model.slot == "metal-case")
            #expect(second.model.id == "yolov5-nc80-320-identity@\(shaB.prefix(12))")
            #expect(second.model.version == String(shaB.prefix(12)))
            #expect(second.model.sha256 == shaB)
            #expect(second.model.generation == 2)

            // Another slot keeps its own generations.
            _ = try await manager.loadAndActivate(LoadRequest(slot: "pill-bottle", path: Fixtures.identity416))
            let elsewhere = try await other.detect(imageBytes: Fixtures.busJPEG)
            #expect(elsewhere.model.slot == "pill-bottle")
            #expect(elsewhere.model.generation == 1)
            #expect(elsewhere.model.sha256 == (try Fixtures.sha256(Fixtures.identity416)))
            await manager.shutdown()
        }
    }
}
