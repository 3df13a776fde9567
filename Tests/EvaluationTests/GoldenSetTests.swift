import Evaluation
import HotSwapTesting
import TestSupport
import Testing
import YOLO

@Suite("Golden set scoring")
struct GoldenSetTests {
    @Test("scoring stops before the next image once cancelled (a release aborted during its golden-set gate ran through every image)")
    func cancelledScoring() throws {
        let set = try GoldenSet(contentsOf: Repository.path("models/datasets/labelme-coco/annotations.json"))
        try #require(set.dataset.images.count == 3)
        let detector = try Detector(backend: FakeBackend())
        var asked = 0
        #expect(throws: GoldenSetError.cancelled(path: set.path, imagesScored: 2)) {
            try set.evaluate(detector, isCancelled: {
                asked += 1
                return asked > 2
            })
        }
        // Not cancelled: every image scored.
        let scored = try set.evaluate(detector)
        #expect(scored.evaluation.map != nil)
    }
}
