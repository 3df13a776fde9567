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

    @Test("metadata imgsz within 1...8192 is taken as before")
    func goodMetadataImgsz() throws {
        #expect(try schema(metadata: ["imgsz": "[640, 480]"]).inputSize == ImageSize(width: 480, height: 640))
        #expect(try schema(metadata: ["imgsz": "(8192, 1)"]).inputSize == ImageSize(width: 1, height: 8192))
        #expect(try schema(metadata: ["imgsz": " 320 "]).inputSize == ImageSize(width: 320, height: 320))
    }

    @Test(
        "a declared input side outside 1...8192 is refused",
        arguments: [[1, 3, 0, 0], [1, 3, 640, 0], [1, 3, 100_000, 100_000], [1, 3, 8193, 640], [1, 3, Int.max, 640]])
    func badStaticInput(_ shape: [Int]) {
        let error = #expect(throws: ModelSchemaError.self) { try schema(input: shape, metadata: ["imgsz": "640"]) }
        #expect(error?.description.contains("1...8192") == true, "\(String(describing: error))")
    }

    @Test("an input size passed by the caller is held to 1...8192 too")
    func badImgszArgument() throws {
        for size in [ImageSize(width: 0, height: 640), ImageSize(width: 640, height: -1),
            ImageSize(width: 100_000, height: 100_000)]
        {
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

    @Test("a bad model fails when the detector is made from its backend, before any run")
    func detectorRefusesBadModel() {
        let backend = ScriptedBackend(
            input: [1, 3, -1, -1], metadata: ["names": Self.names3, "imgsz": "[100000, 100000]"])
        #expect(throws: ModelSchemaError.self) { try Detector(backend: backend) }
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
