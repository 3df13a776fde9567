import ImageCodecs
import Primitives
import TestSupport
import Testing

@testable import YOLO

/// Models whose metadata, declared shapes or outputs would trap or exhaust memory: each must fail with a typed error,
/// when its schema is made (so a hot-swap load fails before serving) or else when an output is decoded.
@Suite("Hostile models")
struct HostileModelTests {
    static let names3 = "{0: 'person', 1: 'bicycle', 2: 'car'}"

    func schema(
        input: [Int] = [1, 3, -1, -1], output: [Int] = [1, 7, -1], metadata: [String: String] = [:],
        imgsz: ImageSize? = nil, format: OutputFormat? = nil
    ) throws(ModelSchemaError) -> ModelSchema {
        try ModelSchema.make(
            inputs: [TensorSpec(name: "images", dataType: .float32, shape: input)],
            outputs: [TensorSpec(name: "output0", dataType: .float32, shape: output)],
            metadata: ["names": Self.names3].merging(metadata) { $1 }, imgsz: imgsz, format: format)
    }

    // MARK: - Names

    @Test("a class name past 256 bytes is refused, naming the class (every detection carried it: a 4 MB name made each answer gigabytes)")
    func longClassName() throws {
        let long = String(repeating: "n", count: 257)
        let error = #expect(throws: ModelSchemaError.self) {
            try schema(metadata: ["names": "{0: 'person', 1: '\(long)', 2: 'car'}"], imgsz: ImageSize(width: 64, height: 64))
        }
        #expect(error == .classNameTooLong(index: 1, bytes: 257, limit: 256), "\(String(describing: error))")
        let fits = String(repeating: "é", count: 128)  // 256 bytes
        #expect(try schema(metadata: ["names": "{0: 'person', 1: '\(fits)', 2: 'car'}"],
            imgsz: ImageSize(width: 64, height: 64)).classNames[1] == fits)
    }

    // MARK: - Input size

    @Test(
        "metadata imgsz that is not one or two sizes in 1...8192 is refused, naming it",
        arguments: [
            "0", "[0, 640]", "-640", "[640, -640]", "1e10", "[100000, 100000]", "[8193, 640]", "abc", "640.5",
            "99999999999999999999", "[640, 640, 3]", "",
        ])
    func badMetadataImgsz(_ text: String) {
        let error = #expect(throws: ModelSchemaError.self) { try schema(metadata: ["imgsz": text]) }
        #expect(error?.description.contains("imgsz '\(text)'") == true, "\(String(describing: error))")
    }

    @Test("a half-dynamic input keeps its declared side; imgsz gives only the other")
    func halfDynamicInput() throws {
        #expect(try schema(input: [1, 3, 640, -1], imgsz: ImageSize(width: 480, height: 480)).inputSize
            == ImageSize(width: 480, height: 640))
        #expect(try schema(input: [1, 3, -1, 320], metadata: ["imgsz": "[640, 640]"]).inputSize
            == ImageSize(width: 320, height: 640))
    }

    @Test("metadata imgsz within 1...8192 is taken as before")
    func goodMetadataImgsz() throws {
        #expect(try schema(metadata: ["imgsz": "[640, 480]"]).inputSize == ImageSize(width: 480, height: 640))
        #expect(try schema(metadata: ["imgsz": "(8192, 1)"]).inputSize == ImageSize(width: 1, height: 8192))
        #expect(try schema(metadata: ["imgsz": " 320 "]).inputSize == ImageSize(width: 320, height: 320))
    }

    @Test(
        "a declared input side outside 1...8192 is refused",
        arguments: [
            [1, 3, 0, 0], [1, 3, 640, 0], [1, 3, 100_000, 100_000], [1, 3, 8193, 640], [1, 3, Int.max, 640],
        ])
    func badStaticInput(_ shape: [Int]) {
        let error = #expect(throws: ModelSchemaError.self) { try schema(input: shape, metadata: ["imgsz": "640"]) }
        #expect(error?.description.contains("1...8192") == true, "\(String(describing: error))")
    }

    @Test("an input size passed by the caller is held to 1...8192 too")
    func badImgszArgument() throws {
        let sizes = [
            ImageSize(width: 0, height: 640), ImageSize(width: 640, height: -1),
            ImageSize(width: 100_000, height: 100_000),
        ]
        for size in sizes {
            let error = #expect(throws: ModelSchemaError.self) { try schema(imgsz: size) }
            #expect(error?.description.contains("\(size)") == true, "\(String(describing: error))")
        }
        #expect(try schema(input: [1, 3, 8192, 8192]).inputSize == ImageSize(width: 8192, height: 8192))
    }

    // MARK: - Output shape

    @Test("declared output dimensions that overflow a class count are refused")
    func hugeOutputDimensions() {
        // No names: the class count comes from the shape alone.
        #expect(throws: ModelSchemaError.self) {
            try ModelSchema.make(
                inputs: [TensorSpec(name: "images", dataType: .float32, shape: [1, 3, 640, 640])],
                outputs: [TensorSpec(name: "output0", dataType: .float32, shape: [1, Int.max - 1, Int.max])],
                metadata: [:])
        }
        #expect(throws: ModelSchemaError.self) { try schema(output: [1, 100, Int.min], format: .yolov5) }
        #expect(throws: ModelSchemaError.self) { try schema(output: [1, Int.min, 100], format: .yolov8) }
    }

    @Test("a batch other than 1, a non-float output and an output of 0 boxes are refused, naming the problem")
    func unusableSignatures() {
        var error = #expect(throws: ModelSchemaError.self) { try schema(input: [8, 3, 64, 64]) }
        #expect(error?.description.contains("[8, 3, 64, 64]") == true, "\(String(describing: error))")
        error = #expect(throws: ModelSchemaError.self) {
            try ModelSchema.make(
                inputs: [TensorSpec(name: "images", dataType: .float32, shape: [1, 3, 64, 64])],
                outputs: [TensorSpec(name: "output0", dataType: .other, shape: [1, 7, 100])],
                metadata: ["names": Self.names3])
        }
        #expect(error?.description.contains("float32 or float16") == true, "\(String(describing: error))")
        for (output, format) in [([1, 0, 8], OutputFormat.yolov5), ([1, 7, 0], .yolov8), ([1, 0, 6], .yolov10)] {
            error = #expect(throws: ModelSchemaError.self) {
                try schema(input: [1, 3, 64, 64], output: output, format: format)
            }
            #expect(error?.description.contains("no boxes") == true, "\(String(describing: error))")
        }
        // An output batch other than 1: every request's decoding would fail.
        for batch in [2, 0] {
            error = #expect(throws: ModelSchemaError.self) {
                try schema(input: [1, 3, 64, 64], output: [batch, 7, 100], format: .yolov8)
            }
            #expect(error?.description.contains("[\(batch), 7, 100]") == true, "\(String(describing: error))")
        }
        // Dynamic batch and box counts stay accepted.
        #expect(throws: Never.self) { try schema(input: [-1, 3, 64, 64], output: [1, 7, -1], format: .yolov8) }
        #expect(throws: Never.self) { try schema(input: [-1, 3, 64, 64], output: [-1, 7, -1], format: .yolov8) }
    }

    @Test("a bad model fails when the detector is made from its backend, before any run")
    func detectorRefusesBadModel() {
        let backend = ScriptedBackend(
            input: [1, 3, -1, -1], metadata: ["names": Self.names3, "imgsz": "[100000, 100000]"])
        #expect(throws: ModelSchemaError.self) { try Detector(backend: backend) }
        #expect(backend.runs.withLock { $0 } == 0)
    }

    // MARK: - Output values

    @Test(
        "a YOLOv10 class column that is no integer is an output error",
        arguments: [Float.nan, .infinity, -.infinity, 9.3e18, -9.3e18, 1e30])
    func yolov10BadClass(_ cls: Float) {
        let values: [Float] = [1, 2, 3, 4, 0.9, cls]
        let error = #expect(throws: OutputDecodeError.self) {
            try OutputDecoder.candidates(values.span, shape: [1, 1, 6], format: .yolov10, options: .init())
        }
        #expect(error?.reason.contains("class") == true, "\(String(describing: error))")
    }

    @Test("boxes or scores that are NaN or infinite give no candidate, in every layout; finite rows still do")
    func nonFiniteCandidates() throws {
        let nan = Float.nan, inf = Float.infinity
        // yolov5 [1, 5, 7]: cx, cy, w, h, obj, p0, p1
        let v5: [Float] = [
            nan, 10, 4, 4, 1, 0.9, 0,  // NaN centre
            10, 10, inf, 4, 1, 0.9, 0,  // infinite width
            10, 10, 4, 4, inf, 0.9, 0,  // infinite objectness: infinite score
            10, 10, 4, 4, inf, 0, 0,  // inf × 0 = NaN scores
            20, 20, 4, 4, 1, 0, 0.75,  // a real box
        ]
        let five = try OutputDecoder.candidates(v5.span, shape: [1, 5, 7], format: .yolov5, options: .init())
        #expect(five.map(\.classID) == [1] && five.allSatisfy(\.isFinite))
        // yolov8 [1, 6, 4]: rows cx, cy, w, h, s0, s1 over 4 anchors
        let v8: [Float] = [
            nan, 10, 10, 40,  // cx
            10, 10, 10, 40,  // cy
            4, -inf, 4, 4,  // w
            4, 4, 4, 4,  // h
            0.9, 0.9, inf, 0,  // s0
            0, 0, nan, 0.75,  // s1
        ]
        let eight = try OutputDecoder.candidates(v8.span, shape: [1, 6, 4], format: .yolov8, options: .init())
        #expect(eight.map(\.classID) == [1] && eight.allSatisfy(\.isFinite))
        let v10: [Float] = [nan, 1, 2, 3, 0.9, 0, 1, 2, 3, 4, inf, 1, 1, 2, 3, 4, 0.5, 2]
        let ten = try OutputDecoder.candidates(v10.span, shape: [1, 3, 6], format: .yolov10, options: .init())
        #expect(ten.map(\.classID) == [2])
        let kept = NonMaxSuppression.apply(five + eight + ten, iou: 0.7, maxDetections: 300, agnostic: false)
        #expect(kept.count == 3 && kept.allSatisfy(\.isFinite))
    }

    @Test("a YOLOv10 row below the threshold is skipped without reading its class")
    func yolov10BadClassBelowThreshold() throws {
        let values: [Float] = [1, 2, 3, 4, 0.1, .nan, 1, 2, 3, 4, 0.9, 2]
        let candidates = try OutputDecoder.candidates(
            values.span, shape: [1, 2, 6], format: .yolov10, options: .init())
        #expect(candidates.map(\.classID) == [2])
    }

    @Test(
        "output shapes that are negative or overflow are output errors",
        arguments: [[1, -1, -6], [1, Int.max, 2], [1, 1 << 62, 4]])
    func badOutputShape(_ shape: [Int]) {
        let values = [Float](repeating: 0, count: 6)
        for format in OutputFormat.allCases {
            #expect(throws: OutputDecodeError.self) {
                try OutputDecoder.candidates(values.span, shape: shape, format: format, options: .init())
            }
        }
    }

    @Test("a YOLOv8 output with no anchors yields nothing, whatever its channel count")
    func yolov8NoAnchors() throws {
        let values: [Float] = []
        #expect(
            try OutputDecoder.candidates(values.span, shape: [1, 1 << 40, 0], format: .yolov8, options: .init())
                .isEmpty)
    }

    @Test("a detector whose YOLOv10 model outputs a NaN class fails the detection, not the process")
    func detectorNaNClass() throws {
        let backend = ScriptedBackend(
            output: [1, 1, 6], metadata: ["names": Self.names3, "end2end": "True"],
            values: [10, 10, 20, 20, 0.9, .nan])
        let detector = try Detector(backend: backend)
        #expect(detector.schema.outputFormat == .yolov10)
        #expect {
            try detector.detect(image: RGBImage(width: 32, height: 32, fill: (1, 2, 3)))
        } throws: { error in
            guard case .output(let output) = error as? DetectionError else { return false }
            return output.reason.contains("class")
        }
    }

    // MARK: - Images

    @Test("an empty image is refused by the detector and letterboxes to padding")
    func emptyImage() throws {
        let detector = try Detector(backend: ScriptedBackend())
        for (width, height) in [(0, 0), (0, 5), (5, 0)] {
            #expect {
                try detector.detect(image: RGBImage(width: width, height: height, pixels: []))
            } throws: { error in
                guard case .decode(.invalidDimensions(width, height)) = error as? DetectionError else { return false }
                return true
            }
            let geometry = LetterboxGeometry(
                source: ImageSize(width: width, height: height), target: ImageSize(width: 64, height: 32))
            #expect(geometry.resized == ImageSize(width: 0, height: 0))
            #expect(geometry.left + geometry.right == 64 && geometry.top + geometry.bottom == 32)
        }
    }

    @Test("hostile image files reach the detector as decode errors")
    func hostileFiles() throws {
        let backend = ScriptedBackend()
        let detector = try Detector(backend: backend)
        for parallel in [true, false] {
            #expect {
                try detector.detect(
                    imageBytes: HostileImages.pngHeader(width: .max, height: .max), decodeInParallel: parallel)
            } throws: { error in
                guard case .decode(.tooLarge) = error as? DetectionError else { return false }
                return true
            }
            #expect {
                try detector.detect(
                    imageBytes: HostileImages.progressiveJPEG(scans: 10_000), decodeInParallel: parallel)
            } throws: { error in
                guard case .decode(.corrupt(.jpeg, let reason)) = error as? DetectionError else { return false }
                return reason.contains("scans")
            }
        }
        #expect(backend.runs.withLock { $0 } == 0)
    }
}

/// A backend with the tensors, metadata and output values it is given; counts its runs.
final class ScriptedBackend: InferenceBackend {
    let inputs: [TensorSpec]
    let outputs: [TensorSpec]
    let metadata: [String: String]
    let values: [Float]
    let runs = Locked(0)

    init(
        input: [Int] = [1, 3, 64, 64], output: [Int] = [1, 4, 8],
        metadata: [String: String] = ["names": "{0: 'person', 1: 'bicycle', 2: 'car'}"], values: [Float]? = nil
    ) {
        inputs = [TensorSpec(name: "images", dataType: .float32, shape: input)]
        outputs = [TensorSpec(name: "output0", dataType: .float32, shape: output)]
        self.metadata = metadata
        self.values = values ?? [Float](repeating: 0, count: output.reduce(1, *))
    }

    func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
        runs.withLock { $0 += 1 }
        return ArrayOutput(shape: outputs[0].shape, values: values)
    }
}
