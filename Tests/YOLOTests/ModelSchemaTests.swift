import Testing

@testable import YOLO

@Suite("Model schema")
struct SignatureTests {
    static let coco3 = "{0: 'person', 1: 'bicycle', 2: 'car'}"

    func make(output: [Int], names: String? = coco3, input: [Int] = [1, 3, 416, 416],
              extra: [String: String] = [:]) throws -> ModelSchema {
        var meta = extra
        if let names { meta["names"] = names }
        return try ModelSchema.make(
            inputs: [TensorSpec(name: "images", dataType: .float32, shape: input)],
            outputs: [TensorSpec(name: "output0", dataType: .float32, shape: output)], metadata: meta)
    }

    @Test("Ultralytics metadata: names dict, imgsz, stride, task")
    func metadata() throws {
        #expect(MetadataParser.names(Self.coco3) == ["person", "bicycle", "car"])
        #expect(MetadataParser.names("{0: \"it's\", 1: 'a, b'}") == ["it's", "a, b"])
        #expect(MetadataParser.names("['x', 'y']") == ["x", "y"])
        // A list without its closing bracket is not a list (its last name lost a character).
        #expect(MetadataParser.names("['x', 'y'") == nil)
        #expect(MetadataParser.names("[" + String(repeating: "'n', ", count: 1 << 20) + "]") == nil)
        #expect(MetadataParser.names("{1: 'gap'}") == nil)
        #expect(MetadataParser.imageSize("[640, 480]") == ImageSize(width: 480, height: 640))
        #expect(MetadataParser.imageSize("320") == ImageSize(width: 320, height: 320))
        let sig = try make(output: [1, 2535, 8], extra: ["stride": "32", "task": "detect"])
        #expect(sig.outputFormat == .yolov5 && sig.classCount == 3 && sig.stride == 32 && sig.task == "detect")
    }

    @Test("format detection from the output shape and class count")
    func formats() throws {
        #expect(try make(output: [1, 2535, 8]).outputFormat == .yolov5)
        #expect(try make(output: [1, 7, 8400]).outputFormat == .yolov8)
        #expect(try make(output: [1, 300, 6]).outputFormat == .yolov10)
        // One class: end-to-end at up to 300 rows (no `end2end` key: older YOLOv10 exports), YOLOv5 past them.
        #expect(try make(output: [1, 300, 6], names: "{0: 'person'}").outputFormat == .yolov10)
        #expect(try make(output: [1, 25200, 6], names: "{0: 'person'}").outputFormat == .yolov5)
        #expect(try make(output: [1, -1, 6], names: "{0: 'person'}").outputFormat == .yolov5)
        #expect(try make(output: [1, 84, 8400], names: nil).classCount == 80)
        #expect(try make(output: [1, 25200, 85], names: nil).outputFormat == .yolov5)
        #expect(throws: ModelSchemaError.self) { try make(output: [1, 10, 10]) }
        #expect(throws: ModelSchemaError.self) { try make(output: [1, 85]) }
    }

    @Test("dynamic input takes imgsz from metadata, else needs one")
    func dynamicInput() throws {
        let sig = try make(output: [1, 7, -1], input: [1, 3, -1, -1], extra: ["imgsz": "[320, 320]"])
        #expect(sig.dynamicInput && sig.inputSize == ImageSize(width: 320, height: 320))
        #expect(throws: ModelSchemaError.missingInputSize) { try make(output: [1, 7, -1], input: [1, 3, -1, -1]) }
    }

    @Test("differences list every field; input size alone stays compatible")
    func differences() throws {
        let a = try make(output: [1, 2535, 8])
        let b = try make(output: [1, 1000, 8], input: [1, 3, 320, 320])
        #expect(b.differences(from: a).map(\.field) == [.inputSize])
        #expect(b.incompatibilities(replacing: a).isEmpty)

        let c = try make(output: [1, 2535, 8], names: "{0: 'person', 1: 'bicycle', 2: 'truck'}")
        let diffs = c.incompatibilities(replacing: a)
        #expect(diffs.map(\.field) == [.classNames])
        #expect(diffs[0].new.contains("car → truck"))

        let d = try make(output: [1, 6, 1000], names: "{0: 'a', 1: 'b'}", extra: ["task": "segment"])
        #expect(Set(d.incompatibilities(replacing: a).map(\.field)) == [.outputFormat, .classCount, .classNames, .task])
    }
}
