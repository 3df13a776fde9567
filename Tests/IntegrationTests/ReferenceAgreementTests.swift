import Foundation
import ImageCodecs
import TestSupport
import Testing
import YOLO

/// The Swift pipeline against the independent Python reference (tools/reference.py: cv2 letterbox, numpy decode and
/// NMS with Ultralytics' semantics) on real models and photos.
@Suite("Agreement with the Ultralytics-semantics reference", .serialized)
struct ReferenceAgreementTests {
    static let photos = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg",
        "kite.jpg"]

    struct Case: CustomTestStringConvertible, Sendable {
        var model: String
        var images: [String]
        var testDescription: String { model }
    }

    static let cases = [
        Case(model: "yolov3-tiny-coco-416.onnx", images: photos),
        Case(model: "yolov3-tiny-coco-608.onnx", images: ["bus.jpg", "zidane.jpg"]),
        Case(model: "nudenet-320n.onnx", images: ["bus.jpg", "zidane.jpg", "person.jpg"]),
        Case(model: "fall-detection-fp16.onnx", images: ["person.jpg", "bus.jpg", "zidane.jpg"]),
        Case(model: "yolov8n-doclaynet.onnx", images: ["tasn1-page-1.png", "tasn1-page-5.png"]),
    ]

    @Test("same detections as the reference: class, IoU ≥ 0.95, |Δconfidence| ≤ 0.01", arguments: cases)
    func agreement(_ testCase: Case) async throws {
        let conf = 0.25
        let model = try Runtime.load(testCase.model)
        let paths = testCase.images.map(Repo.image)
        let reference = try await runProcess(Repo.python, [Repository.path("tools/reference.py"), "--model", Repo.model(testCase.model),
            "--threads", "1"] + paths)
        try #require(reference.status == 0, "reference.py failed: \(reference.stderr)")
        let expected = try decodeJSONLines(reference.stdout)
        try #require(expected.count == paths.count)

        var compared = 0
        for (path, ref) in zip(paths, expected) {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let ours = try model.detect(imageBytes: bytes, options: DetectionOptions(confidence: Float(conf)))
            #expect(ours.imageSize == ImageSize(width: ref.image.width, height: ref.image.height), "\(path)")
            let name = URL(fileURLWithPath: path).lastPathComponent
            // Every reference detection clear of the threshold has a match in ours, and the other way round.
            for r in ref.detections where r.confidence >= conf + 0.01 {
                let match = ours.detections.first {
                    $0.classID == r.class_id && $0.box.iou(r.asBox) >= 0.95
                        && abs(Double($0.confidence) - r.confidence) <= 0.01
                }
                #expect(match != nil, "\(testCase.model) \(name): reference \(r.class_name) \(r.confidence) \(r.box) unmatched")
                compared += 1
            }
            for o in ours.detections where Double(o.confidence) >= conf + 0.01 {
                let match = ref.detections.first {
                    $0.class_id == o.classID && $0.asBox.iou(o.box) >= 0.95
                        && abs(Double(o.confidence) - $0.confidence) <= 0.01
                }
                #expect(match != nil, "\(testCase.model) \(name): our \(o.className) \(o.confidence) \(o.box) unmatched")
            }
        }
        #expect(compared > 0, "no detections to compare for \(testCase.model)")
    }

    @Test("bus.jpg with yolov3-tiny: a bus and at least three persons")
    func busSemantics() throws {
        let model = try Runtime.load("yolov3-tiny-coco-416.onnx")
        let bytes = Repository.bytes("models/images/bus.jpg")
        let result = try model.detect(imageBytes: bytes)
        let names = result.detections.map(\.className)
        #expect(names.contains("bus"))
        #expect(names.filter { $0 == "person" }.count >= 3)
    }

    @Test("letterboxed pixels equal OpenCV's cv2.resize(INTER_LINEAR) letterbox", arguments: [
        ("bus.jpg", 416), ("zidane.jpg", 640), ("kite.jpg", 320), ("giraffe.jpg", 608),
    ])
    func letterboxPixels(image: String, size: Int) throws {
        let path = Repo.image(image)
        let decoded = try ImageDecoder.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))))
        let ours = LetterboxTransform(target: ImageSize(width: size, height: size)).image(from: decoded)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("letterbox-\(UUID()).rgb").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let script = """
            import sys, cv2, numpy as np
            sys.path.insert(0, sys.argv[4])
            from reference import letterbox
            img = cv2.imread(sys.argv[1])
            lb = letterbox(img, (int(sys.argv[2]), int(sys.argv[2])))
            open(sys.argv[3], 'wb').write(np.ascontiguousarray(lb[..., ::-1]).tobytes())
            """
        let result = try runProcess(Repo.python, ["-c", script, path, "\(size)", out, Repository.path("tools")])
        try #require(result.status == 0, "python failed: \(result.stderr)")
        let theirs = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out)))
        try #require(theirs.count == ours.pixels.count)
        let differing = zip(theirs, ours.pixels).filter { $0 != $1 }.count
        let maxDiff = zip(theirs, ours.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
        let where_ = zip(theirs, ours.pixels).enumerated().filter { $0.element.0 != $0.element.1 }.prefix(12)
            .map { "(\($0.offset / 3 % size),\($0.offset / 3 / size),c\($0.offset % 3): \($0.element.0) vs \($0.element.1))" }
        #expect(differing == 0, "\(image)@\(size): \(differing) of \(theirs.count) bytes differ (max \(maxDiff)) \(where_)")
    }
}
