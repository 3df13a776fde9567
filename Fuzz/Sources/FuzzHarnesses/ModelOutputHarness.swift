import YOLO

/// What a model file declares and what it outputs, both untrusted: its input and output tensors and its custom
/// metadata (`names`, `imgsz`, `stride`, `end2end`) go through `ModelSchema.make` (metadata parsing, input-size and
/// format detection), as a load does; a schema that is accepted then decodes an output of fuzzed shape and floats
/// (NaN, infinities, huge values) through `Detector.postprocess` (output decoding, NMS, mapping boxes back), as a
/// detect request does, with detection options in the ranges the HTTP API accepts.
///
/// Input layout (see `Fuzz/make_seeds.py`, which writes it): a flags byte; the input shape (4 × int16) and output
/// shape (rank byte, then int32s); four metadata strings, each a length byte and bytes; the options (confidence, IoU,
/// max detections, agnostic, class filter); the source image size; the output's runtime dynamic dimensions; then the
/// output values (float32, repeated to fill the shape).
public enum ModelOutputHarness {
    /// The most output elements built: a real output is at most a few million; more only slows the fuzzer.
    static let maxElements = 1 << 20

    public static func run(_ data: UnsafeBufferPointer<UInt8>) {
        var input = FuzzInput(data)
        let flags = input.byte()
        let inputType: TensorDataType = [.float32, .float16, .other][Int(flags % 3)]
        let inputShape = (0..<4).map { _ in Int(Int16(truncatingIfNeeded: input.integer(byteCount: 2))) }
        let outputRank = Int(input.byte() % 5)
        let outputShape = (0..<outputRank).map { _ in Int(Int32(truncatingIfNeeded: input.integer(byteCount: 4))) }
        var metadata: [String: String] = [:]
        for key in ["names", "imgsz", "stride", "end2end"] {
            let length = Int(input.byte())
            guard length > 0 else { continue }  // 0: the key is absent
            metadata[key] = String(decoding: input.bytes(length - 1), as: UTF8.self)
        }
        let forced: OutputFormat? = flags & 0x10 == 0 ? nil : OutputFormat.allCases[Int(flags >> 5) % 3]
        let imgsz: ImageSize? = flags & 0x08 == 0 ? nil
            : ImageSize(width: input.integer(in: -16...9000), height: input.integer(in: -16...9000))
        let schema: ModelSchema
        do {
            schema = try ModelSchema.make(
                inputs: [TensorSpec(name: "images", dataType: inputType, shape: inputShape)],
                outputs: outputRank == 0
                    ? [] : [TensorSpec(name: "output0", dataType: .float32, shape: outputShape)],
                metadata: metadata, imgsz: imgsz, format: forced)
        } catch { return }
        precondition(
            (1...ModelSchema.maxInputSide).contains(schema.inputSize.width)
                && (1...ModelSchema.maxInputSide).contains(schema.inputSize.height),
            "input size \(schema.inputSize)")
        precondition((1...ModelSchema.maxClassCount).contains(schema.classCount), "\(schema.classCount) classes")
        precondition(schema.classNames.count == schema.classCount || schema.outputFormat == .yolov10, "names")

        var options = DetectionOptions()
        options.confidence = Float(input.byte()) / 255
        options.iou = Float(input.byte()) / 255
        options.maxDetections = input.integer(in: 1...DetectionOptions.maxDetectionsLimit)
        options.agnostic = input.bool()
        let filter = Int(input.byte() % 4)
        if filter > 0 { options.classes = Set((0..<filter).map { _ in input.integer(in: -2...300) }) }
        let source = ImageSize(width: input.integer(in: 1...20_000), height: input.integer(in: 1...20_000))
        // The shape the run returns: the declared one, each dynamic dimension given a size (or, rarely, a shape
        // that disagrees with the schema, as a misbehaving model's could).
        var shape = schema.output.shape.map { $0 >= 0 ? $0 : input.integer(in: 0...1000) }
        if input.byte() == 0xFF { shape = (0..<Int(input.byte() % 4)).map { _ in input.integer(in: -2...600) } }
        let count = shape.reduce(Int?(1)) { product, dimension in
            product.flatMap { dimension < 0 ? nil : $0.multipliedReportingOverflow(by: dimension) }
                .flatMap { $0.overflow ? nil : $0.partialValue }
        }
        var pool: [Float] = []
        while input.remainingCount >= 4 { pool.append(input.float()) }
        if pool.isEmpty { pool = [0.5] }
        let values: [Float]
        if let count, count <= maxElements {
            values = (0..<count).map { pool[$0 % pool.count] }
        } else {
            values = pool
        }
        let detector = Detector(
            backend: OutputOnlyBackend(inputs: [schema.input], outputs: [schema.output], metadata: metadata),
            schema: schema)
        let detections: [Detection]
        do {
            detections = try detector.postprocess(
                ArrayOutput(shape: shape, values: values),
                geometry: LetterboxGeometry(source: source, target: schema.inputSize), options: options)
        } catch { return }
        precondition(detections.count <= options.maxDetections, "\(detections.count) detections")
        if let classes = options.classes {
            precondition(detections.allSatisfy { classes.contains($0.classID) }, "a class the filter excludes")
        }
    }
}

/// A backend that only declares tensors: the target calls `postprocess` with the output itself.
struct OutputOnlyBackend: InferenceBackend {
    struct NotRun: Error {}
    var inputs: [TensorSpec]
    var outputs: [TensorSpec]
    var metadata: [String: String]
    func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView { throw NotRun() }
}
