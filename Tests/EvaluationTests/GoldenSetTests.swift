import Evaluation
import Foundation
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

    /// Writes an instances file of `images` entries and `boxes` annotations on the first, all naming `photo.jpg`.
    private static func write(_ folder: TemporaryDirectory, images: Int, boxes: Int) throws -> String {
        let path = folder.file("set.json")
        let entries = (1...images).map { #"{"id": \#($0), "file_name": "photo.jpg"}"# }.joined(separator: ",")
        let annotations = (0..<boxes).map {
            #"{"id": \#($0 + 1), "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}"#
        }.joined(separator: ",")
        try #"{"images": [\#(entries)], "annotations": [\#(annotations)], "categories": [{"id": 1, "name": "person"}]}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a set the service reads (confined) is bounded: at most 10 000 images and 1 000 boxes on one image; its images may not be links out of its folder")
    func confinedBounds() throws {
        let folder = try TemporaryDirectory()
        let many = try Self.write(folder, images: GoldenSet.maxConfinedImages + 1, boxes: 1)
        #expect(throws: COCODatasetError.self) { try GoldenSet(contentsOf: many, confined: true) }
        #expect(try GoldenSet(contentsOf: many).dataset.images.count == GoldenSet.maxConfinedImages + 1)
        let crowded = try Self.write(folder, images: 1, boxes: GoldenSet.maxConfinedAnnotationsPerImage + 1)
        let refusal = #expect(throws: COCODatasetError.self) { try GoldenSet(contentsOf: crowded, confined: true) }
        #expect("\(refusal.map { "\($0)" } ?? "")".contains("more than 1000 annotations"))
        // The photo a link to a file outside the set's folder: refused before it is read.
        let outside = try TemporaryDirectory()
        try Data(Repository.bytes("models/images/bus.jpg")).write(to: URL(fileURLWithPath: outside.file("bus.jpg")))
        try FileManager.default.createSymbolicLink(atPath: folder.file("photo.jpg"),
            withDestinationPath: outside.file("bus.jpg"))
        let linked = try GoldenSet(contentsOf: try Self.write(folder, images: 1, boxes: 1), confined: true)
        let detector = try Detector(backend: FakeBackend())
        #expect(throws: GoldenSetError.image(id: 1, path: "photo.jpg", reason: "it leads out of the data set's folder")) {
            try linked.evaluate(detector)
        }
    }
}
