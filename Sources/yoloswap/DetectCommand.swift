import ArgumentParser
import Foundation
import HotSwap
import ImageCodecs
import Primitives
import YOLO

struct DetectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detect", abstract: "Detect objects in images and print the detections.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Confidence threshold.") var conf: Float = 0.25
    @Option(help: "NMS IoU threshold.") var iou: Float = 0.7
    @Option(help: "Maximum detections per image.") var maxDet: Int = 300
    @Option(help: "Keep only these class ids (comma-separated).") var classes: String?
    @Flag(help: "Class-agnostic NMS.") var agnostic = false
    @Option(help: "Output: json (one object per line) or text.") var format: OutputStyle = .text
    @Option(help: "Write annotated JPEGs into this folder.") var save: String?
    @Option(help: "Refuse images with more pixels than this.") var maxPixels: Int = 50_000_000
    @Flag(
        help: "Decode large JPEGs with libjpeg-turbo DCT scaling to about the model's input size (faster, not exact).")
    var dctScale = false

    @Argument(help: "JPEG or PNG images.") var images: [String]

    enum OutputStyle: String, ExpressibleByArgument { case json, text }

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        guard (0...1).contains(conf), (0...1).contains(iou) else {
            throw ValidationError("--conf and --iou lie in [0, 1]")
        }
        guard (1...DetectionOptions.maxDetectionsLimit).contains(maxDet) else {
            throw ValidationError("--max-det lies in 1...\(DetectionOptions.maxDetectionsLimit)")
        }
        guard maxPixels > 0 else { throw ValidationError("--max-pixels must be positive") }
    }

    func run() throws {
        let (file, loadedDetector, _) = try modelOptions.load()
        var detector = loadedDetector
        detector.decodeOptions.maxPixels = maxPixels
        if dctScale {
            let size = detector.schema.inputSize
            detector.decodeOptions.minimumDecodedSize = (size.width, size.height)
        }
        let options = DetectionOptions(
            confidence: conf, iou: iou, maxDetections: maxDet,
            classes: try classes.map(parseClasses), agnostic: agnostic)
        if let save { try FileManager.default.createDirectory(atPath: save, withIntermediateDirectories: true) }
        let encoder = JSONEncoder.yoloswap
        var failures = 0
        // Output names given this run: two images with one base name (a/1.jpg, b/1.png) get 1.jpg and 1-2.jpg.
        var savedNames = Set<String>()
        for path in images {
            do {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw ValidationError("cannot read image \(path)")
                }
                let bytes = [UInt8](data)
                let result = try detector.detect(imageBytes: bytes, options: options)
                switch format {
                case .json:
                    let record = DetectionRecord(path: path, result: result, file: file, schema: detector.schema)
                    print(String(decoding: try encoder.encode(record), as: UTF8.self))
                case .text:
                    printText(path: path, result: result)
                }
                if let save {
                    var full = DecodeOptions()
                    full.maxPixels = maxPixels
                    let image = try ImageDecoder.decode(bytes, options: full)
                    try saveAnnotated(image: image, result: result, path: path, folder: save, taken: &savedNames)
                }
            } catch {
                failures += 1
                printError("yoloswap: \(path): \(error)")
            }
        }
        if failures > 0 { throw ExitCode(1) }
    }

    private func parseClasses(_ text: String) throws -> Set<Int> {
        let ids = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !ids.isEmpty, ids.allSatisfy({ $0 != nil && $0! >= 0 }) else {
            throw ValidationError("--classes takes comma-separated class ids, got '\(text)'")
        }
        return Set(ids.compactMap { $0 })
    }

    private func printText(path: String, result: DetectionResult) {
        let t = result.timings
        print(
            "\(path): \(result.imageSize.width)x\(result.imageSize.height), \(result.detections.count) detections "
                + String(format: "(decode %.1f ms, preprocess %.1f ms, inference %.1f ms, postprocess %.1f ms)",
                    t.decode, t.preprocess, t.inference, t.postprocess))
        for d in result.detections {
            print("  " + d.className.padding(toLength: max(16, d.className.count), withPad: " ", startingAt: 0)
                + String(format: " %.3f  [%.1f, %.1f, %.1f, %.1f]",
                    d.confidence, d.box.x1, d.box.y1, d.box.x2, d.box.y2))
        }
    }

    private func saveAnnotated(image: RGBImage, result: DetectionResult, path: String, folder: String,
                               taken: inout Set<String>) throws {
        var canvas = image
        let annotations = result.detections.map {
            Annotation(
                x1: $0.box.x1, y1: $0.box.y1, x2: $0.box.x2, y2: $0.box.y2,
                label: String(format: "%@ %.2f", $0.className as NSString, $0.confidence), classID: $0.classID)
        }
        Annotator.draw(annotations, on: &canvas)
        let base = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let jpeg = try ImageEncoder.jpeg(canvas, quality: 90)
        // A new file, never one that exists (an input photo in the folder, an earlier run's output): NAME.jpg, else
        // NAME-2.jpg, NAME-3.jpg, ...
        for n in 1...10_000 {
            let name = n == 1 ? base + ".jpg" : "\(base)-\(n).jpg"
            guard !taken.contains(name) else { continue }
            let out = URL(fileURLWithPath: folder).appendingPathComponent(name).path
            let fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                if errno == EEXIST { continue }
                throw failure("cannot write \(out): \(String(cString: strerror(errno)))")
            }
            taken.insert(name)
            let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            do {
                try handle.write(contentsOf: jpeg)
                try handle.close()
            } catch {
                unlink(out)  // not left cut short, its name taken from the next run
                throw failure("cannot write \(out): \(error)")
            }
            return
        }
        throw failure("cannot write an annotated copy of \(path): \(base).jpg to \(base)-10000.jpg all exist in \(folder)")
    }
}

/// The JSON line printed per image by `detect --format json`; `detections` is the service's detection JSON.
struct DetectionRecord: Encodable {
    struct Image: Encodable { var path: String; var width: Int; var height: Int }
    struct Model: Encodable { var path: String; var sha256: String; var format: String; var nc: Int; var imgsz: [Int] }
    var image: Image
    var model: Model
    var detections: [Detection]
    var timings_ms: StageTimings

    init(path: String, result: DetectionResult, file: ModelFile, schema: ModelSchema) {
        image = Image(path: path, width: result.imageSize.width, height: result.imageSize.height)
        model = Model(
            path: file.path, sha256: file.sha256, format: schema.outputFormat.rawValue, nc: schema.classCount,
            imgsz: [schema.inputSize.height, schema.inputSize.width])
        detections = result.detections
        timings_ms = result.timings
    }
}
