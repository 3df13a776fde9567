import Foundation
import TestSupport
import Testing

/// `yoloswap eval` end to end: a real model on the labelme data set (three VOC photos, hand-drawn COCO boxes), its
/// figures checked against pycocotools on the detections the command saved.
@Suite("yoloswap eval")
struct EvalCommandTests {
    let dataset = Repository.path("models/datasets/labelme-coco/annotations.json")

    @Test("yolov3-tiny on the labelme set: the figures pycocotools gives for the same detections")
    func labelme() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let saved = directory.appendingPathComponent("detections.json").path
        let r = try await runProcess(Repo.binary, [
            "eval", "--model", Repo.model("yolov3-tiny-coco-416.onnx"), "--dataset", dataset, "--threads", "1",
            "--json", "--save-detections", saved,
        ])
        try #require(r.status == 0, "\(r.stderr)")
        struct Report: Decodable {
            var images: Int
            var detections: Int
            var figures: [String: Double?]
            struct Category: Decodable { var name: String; var ground_truth: Int; var ap50: Double? }
            var per_category: [Category]
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(r.stdout.utf8))
        #expect(report.images == 3 && report.detections > 0)
        // COCO's class names meet VOC's: sofa is couch; every labelled category is scored.
        let scored = report.per_category.filter { $0.ground_truth > 0 }
        #expect(Set(scored.map(\.name)) == ["person", "bus", "car", "bottle", "chair", "sofa"])
        #expect(scored.allSatisfy { $0.ap50 != nil })
        #expect((report.figures["AP50"] ?? nil).map { $0 > 0.2 } == true, "a real detector finds people and buses")

        let reference = try await runProcess(Repo.python, ["tools/coco_eval.py", dataset, saved])
        try #require(reference.status == 0, "\(reference.stderr)")
        struct Output: Decodable { var stats: [Double] }
        let stats = try JSONDecoder().decode(Output.self, from: Data(reference.stdout.utf8)).stats
        let names = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
            "AR_medium", "AR_large"]
        for (name, theirs) in zip(names, stats) {
            let ours = report.figures[name] ?? nil
            #expect(theirs == -1 ? ours == nil : ours.map { abs($0 - theirs) <= 1e-4 } == true,
                "\(name): ours \(String(describing: ours)), pycocotools \(theirs)")
        }
    }

    @Test("a broken data set or an unmatched class map is a clear error")
    func badInput() async throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let broken = directory.appendingPathComponent("broken.json").path
        FileManager.default.createFile(atPath: broken, contents: Data(#"{"images": [], "categories": 3}"#.utf8))
        let model = Repo.model("yolov3-tiny-coco-416.onnx")
        let r = try await runProcess(Repo.binary, ["eval", "--model", model, "--dataset", broken])
        #expect(r.status != 0 && r.stderr.contains("not a COCO instances file"), "\(r.stderr)")
        let m = try await runProcess(Repo.binary, ["eval", "--model", model, "--dataset", dataset, "--class-map", "cat=zebra"])
        #expect(m.status != 0 && m.stderr.contains("class map cat=zebra"), "\(m.stderr)")
    }
}
