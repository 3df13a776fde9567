import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension HotSwapSuite {
    /// Every result says which model produced it.
    @Suite("Model identity")
    struct ModelIdentityTests {
        @Test("a fake model's known output row comes back as one detection, stamped with its model")
        func fakeModelResult() async throws {
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: FakeLoader())
            let slot = try await manager.createSlot("default")
            let status = try await manager.loadAndActivate(
                LoadRequest(slot: "default", path: Fixtures.identity416, name: "fake", version: "3"))
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model.id == "fake@3")
            #expect(answer.model.generation == status.generation)
            #expect(answer.result.detections.count == 1)
            #expect(answer.result.detections.first?.className == "person")
            await manager.shutdown()
        }
    }
}
