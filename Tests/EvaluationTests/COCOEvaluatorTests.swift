import Evaluation
import Foundation
import Primitives
import TestSupport
import Testing

/// The Swift COCO evaluator against pycocotools' COCOeval (tools/coco_eval.py, in the repository's venv) on the same
/// ground truth and detections: generated sets that reach every rule (crowd regions, the three area ranges, more
/// than 100 detections on an image, equal scores, categories without ground truth or without detections, images
/// without either) and the shipped labelme set.
@Suite("COCO evaluation")
struct COCOEvaluatorTests {
    static let tolerance = 1e-4

    /// pycocotools' figures for a data set and detections, written to files as the Swift types encode them.
    static func reference(_ dataset: COCODataset, _ detections: [COCODetection]) throws
        -> (stats: [Double], perCategory: [String: [Double]?])
    {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let gt = directory.appendingPathComponent("gt.json"), dt = directory.appendingPathComponent("dt.json")
        try JSONEncoder().encode(dataset).write(to: gt)
        try JSONEncoder().encode(detections).write(to: dt)
        let result = try runProcess(Repository.path(".venv/bin/python"), ["tools/coco_eval.py", gt.path, dt.path])
        try #require(result.status == 0, "coco_eval.py: \(result.stderr)")
        struct Output: Decodable {
            var stats: [Double]
            var per_category: [String: [Double]?]
        }
        let output = try JSONDecoder().decode(Output.self, from: Data(result.stdout.utf8))
        return (output.stats, output.per_category)
    }

    static func expectAgreement(_ dataset: COCODataset, _ detections: [COCODetection], _ label: String) throws {
        let ours = try COCOEvaluator.evaluate(detections, on: dataset)
        let theirs = try reference(dataset, detections)
        #expect(ours.stats.count == 12 && theirs.stats.count == 12)
        for (i, (mine, reference)) in zip(ours.stats, theirs.stats).enumerated() {
            let name = COCOEvaluation.statNames[i]
            if reference == -1 {
                #expect(mine == nil, "\(label) \(name): pycocotools -1, ours \(String(describing: mine))")
            } else {
                #expect(mine.map { abs($0 - reference) <= tolerance } == true,
                    "\(label) \(name): pycocotools \(reference), ours \(String(describing: mine))")
            }
        }
        for category in ours.perCategory {
            let reference = theirs.perCategory[String(category.id)] ?? nil
            #expect((category.ap == nil) == (reference == nil), "\(label) category \(category.id)")
            if let ap = category.ap, let ap50 = category.ap50, let reference {
                #expect(abs(ap - reference[0]) <= tolerance && abs(ap50 - reference[1]) <= tolerance,
                    "\(label) category \(category.id): ours \(ap), \(ap50); pycocotools \(reference)")
            }
        }
    }

    /// A random data set and detections: 6 images, 4 categories (category 4 has no ground truth), boxes of every
    /// area range, about one crowd region in ten; detections near the truth (shifted and scaled, so that they match
    /// at some IoU thresholds and not others), duplicates, random false positives, one image with 150 detections,
    /// scores on a coarse grid so that some are equal.
    static func generated(seed: UInt64) throws -> (COCODataset, [COCODetection]) {
        var random = SeededGenerator(seed: seed)
        func uniform(_ range: ClosedRange<Double>) -> Double { Double.random(in: range, using: &random) }
        let categories = (1...4).map { COCODataset.Category(id: $0, name: "c\($0)") }
        let images = (1...6).map { COCODataset.Image(id: $0 * 10, fileName: "\($0).jpg", width: 640, height: 480) }
        var annotations: [COCODataset.Annotation] = []
        var detections: [COCODetection] = []
        for image in images.dropLast() {  // the last image has neither truth nor (below) detections
            for _ in 0..<Int.random(in: 2...9, using: &random) {
                let side = [uniform(8...30), uniform(33...95), uniform(100...300)].randomElement(using: &random)!
                let box = COCOBox(x: uniform(0...300), y: uniform(0...200), width: side, height: side * uniform(0.5...1.5))
                let category = Int.random(in: 1...3, using: &random)
                annotations.append(.init(
                    id: annotations.count + 1, imageID: image.id, categoryID: category, bbox: box,
                    area: box.area * uniform(0.6...1.0), isCrowd: Int.random(in: 0..<10, using: &random) == 0))
                for _ in 0..<Int.random(in: 0...2, using: &random) {
                    let shifted = COCOBox(
                        x: box.x + uniform(-0.2...0.2) * box.width, y: box.y + uniform(-0.2...0.2) * box.height,
                        width: box.width * uniform(0.8...1.2), height: box.height * uniform(0.8...1.2))
                    let wrongClass = Int.random(in: 0..<8, using: &random) == 0
                    detections.append(.init(
                        imageID: image.id, categoryID: wrongClass ? Int.random(in: 1...4, using: &random) : category,
                        bbox: shifted, score: Double(Int.random(in: 1...20, using: &random)) / 20))
                }
            }
            for _ in 0..<Int.random(in: 0...6, using: &random) {
                let side = uniform(5...200)
                detections.append(.init(
                    imageID: image.id, categoryID: Int.random(in: 1...4, using: &random),
                    bbox: COCOBox(x: uniform(0...400), y: uniform(0...300), width: side, height: side),
                    score: Double(Int.random(in: 1...20, using: &random)) / 20))
            }
        }
        for i in 0..<150 {
            detections.append(.init(
                imageID: images[0].id, categoryID: 1 + i % 2,
                bbox: COCOBox(x: Double(i * 2), y: Double(i), width: 40, height: 40),
                score: Double(Int.random(in: 1...50, using: &random)) / 50))
        }
        detections.shuffle(using: &random)
        return (try COCODataset(images: images, annotations: annotations, categories: categories), detections)
    }

    @Test("random data sets: the same twelve figures and per-category AP as pycocotools",
        arguments: [1, 2, 3, 4, 5] as [UInt64])
    func agreesWithPycocotools(seed: UInt64) throws {
        let (dataset, detections) = try Self.generated(seed: seed)
        try Self.expectAgreement(dataset, detections, "seed \(seed)")
    }

    @Test("no detections, perfect detections, and an annotation id 0: as pycocotools")
    func edgeCases() throws {
        let (dataset, _) = try Self.generated(seed: 9)
        try Self.expectAgreement(dataset, [], "no detections")
        let perfect = dataset.annotations.filter { !$0.isCrowd }.map {
            COCODetection(imageID: $0.imageID, categoryID: $0.categoryID, bbox: $0.bbox, score: 1)
        }
        try Self.expectAgreement(dataset, perfect, "perfect")
        // 1 up to COCOeval's ε in the precision's denominator.
        #expect(try COCOEvaluator.evaluate(perfect, on: dataset).map.map { abs($0 - 1) < 1e-9 } == true)
        // pycocotools' quirk, followed on purpose: a match to annotation id 0 is stored as "no match".
        var zero = dataset
        zero.annotations[0].id = 0
        try Self.expectAgreement(zero, perfect, "annotation id 0")
        let evaluation = try COCOEvaluator.evaluate(perfect, on: zero)
        #expect(evaluation.map! < 1)
        #expect(evaluation.warnings.contains { $0.contains("id 0") })
    }

    @Test("the labelme set: 3 photos, 12 instances; its own boxes score 1, and agree with pycocotools")
    func labelmeFixture() throws {
        let path = Repository.path("models/datasets/labelme-coco/annotations.json")
        let dataset = try COCODataset.load(contentsOf: path)
        // A reader's own limit (the service's golden-set gate has one): a larger file is refused before it is read.
        #expect { _ = try GoldenSet(contentsOf: path, maxFileBytes: 1000) } throws: {
            "\($0)".contains("larger than the limit of 1000 bytes")
        }
        #expect(dataset.images.count == 3 && dataset.annotations.count == 12)
        #expect(Set(dataset.annotations.compactMap { a in dataset.categories.first { $0.id == a.categoryID }?.name })
            == ["person", "bus", "car", "bottle", "chair", "sofa"])
        let own = dataset.annotations.map {
            COCODetection(imageID: $0.imageID, categoryID: $0.categoryID, bbox: $0.bbox, score: 0.9)
        }
        #expect(try COCOEvaluator.evaluate(own, on: dataset).map.map { abs($0 - 1) < 1e-9 } == true)
        try Self.expectAgreement(dataset, own, "labelme, own boxes")
        // The file as shipped numbers annotations from 0: the person with id 0 is never counted as found.
        let shipped = try COCODataset.load(
            contentsOf: Repository.path("models/datasets/labelme-coco/annotations.as-shipped.json"))
        let shippedOwn = shipped.annotations.map {
            COCODetection(imageID: $0.imageID, categoryID: $0.categoryID, bbox: $0.bbox, score: 0.9)
        }
        try Self.expectAgreement(shipped, shippedOwn, "labelme as shipped")
    }

    @Test("hostile or broken input is a clear error, never a crash")
    func badInput() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        func load(_ json: String) -> COCODatasetError? {
            let path = directory.appendingPathComponent("d.json").path
            FileManager.default.createFile(atPath: path, contents: Data(json.utf8))
            do {
                _ = try COCODataset.load(contentsOf: path)
                return nil
            } catch { return error }
        }
        let image = #"{"id": 1, "file_name": "a.jpg"}"#, category = #"{"id": 1, "name": "a"}"#
        func annotation(_ bbox: String, image: Int = 1, category: Int = 1, id: Int = 1) -> String {
            #"{"id": \#(id), "image_id": \#(image), "category_id": \#(category), "bbox": \#(bbox), "iscrowd": 0}"#
        }
        func document(_ annotations: [String]) -> String {
            #"{"images": [\#(image)], "categories": [\#(category)], "annotations": [\#(annotations.joined(separator: ","))]}"#
        }
        #expect(load(document([annotation("[1, 2, 3, 4]")])) == nil)
        #expect("\(load("{not json") as Any)".contains("not a COCO instances file"))
        #expect("\(load(document([annotation("[1, 2, 3]")])) as Any)".contains(".annotations[0].bbox"))
        #expect("\(load(document([annotation("[1, 2, 3, 4, 5]")])) as Any)".contains("4 numbers"))
        #expect("\(load(document([annotation("[1, 2, -3, 4]")])) as Any)".contains("finite, non-negative"))
        #expect(load(document([annotation("[1, 2, 1e400, 4]")])) != nil)
        #expect("\(load(document([annotation("[1, 2, 3, 4]", image: 7)])) as Any)".contains("unknown image 7"))
        #expect("\(load(document([annotation("[1, 2, 3, 4]", category: 9)])) as Any)".contains("unknown category 9"))
        #expect("\(load(document([annotation("[1,2,3,4]"), annotation("[1,2,3,4]")])) as Any)".contains("id 1"))
        #expect("\(load(#"{"images": []}"#) as Any)".contains("categories"))
        // Detections: on an unknown image, an error; non-finite ones, left out with a warning.
        let dataset = try COCODataset(
            images: [.init(id: 1, fileName: "a.jpg")], annotations: [], categories: [.init(id: 1, name: "a")])
        #expect(throws: COCOEvaluationError.unknownImage(5)) {
            try COCOEvaluator.evaluate([.init(imageID: 5, categoryID: 1, bbox: .init(x: 0, y: 0, width: 1, height: 1),
                score: 1)], on: dataset)
        }
        let nan = try COCOEvaluator.evaluate(
            [.init(imageID: 1, categoryID: 1, bbox: .init(x: .nan, y: 0, width: 1, height: 1), score: 1)], on: dataset)
        #expect(nan.warnings.contains { $0.contains("non-finite") })
        #expect(nan.map == nil)  // no ground truth: nothing to average, as pycocotools' -1
        // 100 000 categories in a 2 MB file would take some 10 GB to evaluate: refused, saying why.
        let many = (0...COCODataset.maxCategories).map { COCODataset.Category(id: $0, name: "c\($0)") }
        #expect(throws: COCODatasetError.invalid("4097 categories: at most 4096 are evaluated")) {
            _ = try COCODataset(images: [], annotations: [], categories: many)
        }
        #expect(throws: Never.self) {
            _ = try COCODataset(images: [], annotations: [], categories: Array(many.dropLast()))
        }
    }
}

@Suite("Golden-set rules")
struct GoldenSetRulesTests {
    static func evaluation(map: Double?) -> COCOEvaluation {
        COCOEvaluation(stats: [map] + Array(repeating: nil, count: 11), perCategory: [], warnings: [])
    }

    @Test("min_map and max_drop_vs_baseline: a breach names the rule and the figures; absent rules pass")
    func rules() {
        let rules = GoldenSetRules(minMAP: 0.3, maxDropVsBaseline: 0.02)
        #expect(rules.breach(candidate: Self.evaluation(map: 0.40), baseline: Self.evaluation(map: 0.41)) == nil)
        #expect(rules.breach(candidate: Self.evaluation(map: 0.29), baseline: nil)?.contains("min_map 0.3000") == true)
        let drop = rules.breach(candidate: Self.evaluation(map: 0.35), baseline: Self.evaluation(map: 0.40))
        #expect(drop?.contains("0.0500 below the baseline's 0.4000") == true)
        #expect(rules.breach(candidate: Self.evaluation(map: nil), baseline: nil)?.contains("undefined") == true)
        #expect(GoldenSetRules().breach(candidate: Self.evaluation(map: 0.01), baseline: Self.evaluation(map: 0.9)) == nil)
        // Scored and logged only: an undefined mAP (no ground truth found) does not refuse the candidate either.
        #expect(GoldenSetRules().breach(candidate: Self.evaluation(map: nil), baseline: nil) == nil)
    }

    @Test("the rules' JSON uses the release API's names")
    func coding() throws {
        let rules = try JSONDecoder().decode(GoldenSetRules.self, from: Data(#"{"min_map": 0.2, "max_drop_vs_baseline": 0.01}"#.utf8))
        #expect(rules == GoldenSetRules(minMAP: 0.2, maxDropVsBaseline: 0.01))
    }
}

@Suite("Category matching")
struct CategoryMatcherTests {
    @Test("COCO's and VOC's names for a class match each other, either way; a user's map comes first; others stay unmatched")
    func aliasesBothWays() throws {
        let coco = try COCODataset(images: [], annotations: [], categories: [
            .init(id: 1, name: "motorcycle"), .init(id: 2, name: "airplane"), .init(id: 3, name: "couch"),
            .init(id: 4, name: "tv"), .init(id: 5, name: "dining table"), .init(id: 6, name: "person")])
        // Darknet's coco.names (the yolov3-tiny models) against COCO's categories.
        let darknet = try CategoryMatcher(dataset: coco,
            modelClasses: ["motorbike", "aeroplane", "sofa", "tvmonitor", "diningtable", "person", "zebra"])
        #expect((0..<6).map { darknet.category(forClass: $0) } == [1, 2, 3, 4, 5, 6])
        #expect(darknet.unmatchedModelClasses == ["zebra"])
        // COCO's names against VOC's categories.
        let voc = try COCODataset(images: [], annotations: [], categories: [
            .init(id: 7, name: "motorbike"), .init(id: 8, name: "tvmonitor"), .init(id: 9, name: "pottedplant")])
        let ultralytics = try CategoryMatcher(dataset: voc, modelClasses: ["motorcycle", "tv", "potted plant"],
            extra: ["tv=pottedplant"])
        #expect((0..<3).map { ultralytics.category(forClass: $0) } == [7, 9, 9])
    }
}
