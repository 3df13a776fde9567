import ArgumentParser
import Evaluation
import Foundation
import Primitives
import YOLO

/// `yoloswap eval`: a model's COCO figures on a labelled data set, offline — what the golden-set gate of a release
/// computes before a candidate takes traffic.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model on a COCO-format data set (mAP@[.5:.95], mAP@.5, per-class AP, as pycocotools).",
        discussion: """
            The data set is a COCO instances file; its images are read from the file's folder (or --images). A model
            class counts as a data-set category of the same name; VOC's names (aeroplane, motorbike, sofa, tvmonitor,
            diningtable, pottedplant) and COCO's match each other, either way, and --class-map NAME=CATEGORY adds more. Detections use COCO's
            evaluation settings by default: confidence 0.001, at most 100 per image.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "COCO instances file (JSON) with the ground truth.") var dataset: String
    @Option(help: "Folder the images' file_name is relative to (default: the data set file's folder).")
    var images: String?
    @Option(help: "Confidence threshold.") var conf: Float = 0.001
    @Option(help: "NMS IoU threshold.") var iou: Float = 0.7
    @Option(help: "Maximum detections per image.") var maxDet: Int = 100
    @Option(
        parsing: .singleValue,
        help: ArgumentHelp("A model class name counted as a data-set category name.", valueName: "name=category"))
    var classMap: [String] = []
    @Option(help: "Write the detections in COCO's results format to this file.") var saveDetections: String?
    @Flag(help: "Print the figures as one JSON object.") var json = false

    func validate() throws {
        guard (0...1).contains(conf), (0...1).contains(iou) else {
            throw ValidationError("--conf and --iou lie in [0, 1]")
        }
        guard (1...DetectionOptions.maxDetectionsLimit).contains(maxDet) else {
            throw ValidationError("--max-det lies in 1...\(DetectionOptions.maxDetectionsLimit)")
        }
    }

    func run() throws {
        let golden: GoldenSet
        do { golden = try GoldenSet(contentsOf: dataset, imagesRoot: images) } catch {
            throw failure("\(error)")
        }
        let (file, detector, _) = try modelOptions.load()
        let result: GoldenSet.Result
        do {
            result = try golden.evaluate(
                detector, options: DetectionOptions(confidence: conf, iou: iou, maxDetections: maxDet),
                classMap: classMap)
        } catch { throw failure("\(error)") }
        if let saveDetections {
            let encoded = try JSONEncoder.yoloswap.encode(result.detections)
            guard FileManager.default.createFile(atPath: saveDetections, contents: encoded) else {
                throw failure("cannot write \(saveDetections)")
            }
        }
        let evaluation = result.evaluation
        let report = EvalReport(
            model: .init(path: file.path, sha256: file.sha256), dataset: dataset, images: golden.dataset.images.count,
            detections: result.detections.count, detectSeconds: result.seconds,
            figures: Dictionary(uniqueKeysWithValues: zip(COCOEvaluation.statNames, evaluation.stats)),
            perCategory: evaluation.perCategory, unmatchedClasses: result.unmatchedClasses.count,
            warnings: evaluation.warnings)
        if json {
            print(String(decoding: try JSONEncoder.yoloswap.encode(report), as: UTF8.self))
        } else {
            printText(report, evaluation)
        }
    }

    private func printText(_ report: EvalReport, _ evaluation: COCOEvaluation) {
        func figure(_ v: Double?) -> String { v.map { String(format: "%.4f", $0) } ?? "   n/a" }
        print("\(report.model.path) on \(report.dataset): \(report.images) images, \(report.detections) detections, "
            + String(format: "%.1f s", report.detectSeconds))
        for (name, value) in zip(COCOEvaluation.statNames, evaluation.stats) {
            print("  " + name.padding(toLength: 10, withPad: " ", startingAt: 0) + figure(value))
        }
        print("  per category (ground truth, detections, AP@[.5:.95], AP@.5):")
        for c in evaluation.perCategory where c.groundTruth > 0 || c.detections > 0 {
            print("    " + c.name.padding(toLength: max(14, c.name.count), withPad: " ", startingAt: 0)
                + String(format: " %4d %5d  ", c.groundTruth, c.detections) + figure(c.ap) + "  " + figure(c.ap50))
        }
        for warning in evaluation.warnings { printError("eval: warning: \(warning)") }
        if report.unmatchedClasses > 0 {
            printError("eval: warning: \(report.unmatchedClasses) of the model's classes match no category of the data "
                + "set (their detections are not counted; --class-map NAME=CATEGORY maps them)")
        }
    }
}

/// What `eval --json` prints.
struct EvalReport: Encodable {
    struct Model: Encodable { var path: String; var sha256: String }
    var model: Model
    var dataset: String
    var images: Int
    var detections: Int
    var detectSeconds: Double
    /// COCOeval's twelve figures by name (`AP`, `AP50`, ..., `AR_large`); null where undefined.
    var figures: [String: Double?]
    var perCategory: [COCOEvaluation.CategoryResult]
    var unmatchedClasses: Int
    var warnings: [String]

    enum CodingKeys: String, CodingKey {
        case model, dataset, images, detections, figures, warnings
        case detectSeconds = "detect_seconds"
        case perCategory = "per_category"
        case unmatchedClasses = "unmatched_classes"
    }
}
