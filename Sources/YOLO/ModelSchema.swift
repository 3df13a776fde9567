/// The element type of a model's input or output tensor.
public enum TensorDataType: String, Sendable, Equatable, Codable {
    case float32, float16, other
}

/// A tensor's name, element type and shape as the model declares it (`-1` marks a dynamic dimension).
public struct TensorSpec: Sendable, Equatable {
    public var name: String
    public var dataType: TensorDataType
    public var shape: [Int]

    public init(name: String, dataType: TensorDataType, shape: [Int]) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
    }
}

/// How a model's single output tensor is laid out.
public enum OutputFormat: String, Sendable, Equatable, Codable, CaseIterable {
    /// `[1, N, 5 + nc]`: cx, cy, w, h, objectness, class probabilities (score = objectness × class).
    case yolov5
    /// `[1, 4 + nc, N]`: cx, cy, w, h, class scores (YOLOv8 / YOLO11).
    case yolov8
    /// `[1, K, 6]`: x1, y1, x2, y2, score, class — end-to-end, no NMS (YOLOv10).
    case yolov10
}

/// Colour channel order the model expects.
public enum ChannelOrder: String, Sendable, Equatable, Codable { case rgb, bgr }

/// How pixel values are scaled before inference.
public enum Normalization: String, Sendable, Equatable, Codable {
    /// value / 255 → [0, 1] (Ultralytics).
    case unitScale = "divide-by-255"
}

/// Everything about a model that preprocessing, decoding and hot-swap compatibility depend on.
///
/// Built from a model's declared tensors and Ultralytics-style metadata (`names`, `stride`, `imgsz`, `task`).
public struct ModelSchema: Sendable, Equatable {
    /// The largest input height or width a schema takes. Every request is letterboxed into a float32 tensor of
    /// 3 × height × width (and a load warms up on an image of that size), so the input size a model declares is memory
    /// the service allocates per request: a model must not be able to make that gigabytes. YOLO exports use sides well
    /// under this bound.
    public static let maxInputSide = 8192
    /// The most classes a schema takes: it names every class (a default name when the metadata has none) and the
    /// output decoders go over every class of every box, so a declared output shape must not be able to make that
    /// unbounded. Detection vocabularies are far smaller.
    public static let maxClassCount = 65_536
    /// The longest class name accepted, in bytes: a detection carries its class's name into every answer (JSON,
    /// stream results, MQTT), so a model's names bound the answers' size. COCO's longest is 14; a sentence fits.
    public static let maxClassNameBytes = 256

    public var input: TensorSpec
    public var output: TensorSpec
    /// True when the input's height or width is dynamic; the size then comes from `imgsz`.
    public var dynamicInput: Bool
    /// The network input size used for letterboxing, (height, width).
    public var inputSize: ImageSize
    public var channelOrder: ChannelOrder
    public var normalization: Normalization
    public var outputFormat: OutputFormat
    /// Number of classes.
    public var classCount: Int
    public var classNames: [String]
    public var stride: Int
    public var task: String

    public init(
        input: TensorSpec, output: TensorSpec, dynamicInput: Bool, inputSize: ImageSize, channelOrder: ChannelOrder,
        normalization: Normalization, outputFormat: OutputFormat, classCount: Int, classNames: [String], stride: Int,
        task: String
    ) {
        self.input = input
        self.output = output
        self.dynamicInput = dynamicInput
        self.inputSize = inputSize
        self.channelOrder = channelOrder
        self.normalization = normalization
        self.outputFormat = outputFormat
        self.classCount = classCount
        self.classNames = classNames
        self.stride = stride
        self.task = task
    }

    /// Derives a schema from the model's tensors and custom metadata.
    /// - Parameters:
    ///   - inputs: the model's inputs (the first is the image).
    ///   - outputs: the model's outputs (the first is decoded).
    ///   - metadata: custom `metadata_props` (`names`, `imgsz`, `stride`, `task`, `end2end`).
    ///   - imgsz: input size for dynamic models when metadata has none (or to override it).
    ///   - format: forces an output format instead of detecting it.
    /// - Throws: `ModelSchemaError` naming what is missing or malformed (a batch other than 1, an output that is not
    ///   floating-point or declares 0 boxes), or out of the bounds above (an input side outside 1...``maxInputSide``,
    ///   more than ``maxClassCount`` classes).
    public static func make(
        inputs: [TensorSpec], outputs: [TensorSpec], metadata: [String: String], imgsz: ImageSize? = nil,
        format: OutputFormat? = nil
    ) throws(ModelSchemaError) -> ModelSchema {
        guard let input = inputs.first else { throw ModelSchemaError.noInput }
        guard let output = outputs.first else { throw ModelSchemaError.noOutput }
        // One image per request: a batch dimension other than 1 (or dynamic) would fail every run.
        guard input.shape.count == 4, input.shape[0] == 1 || input.shape[0] < 0, input.shape[1] == 3 || input.shape[1] < 0
        else {
            throw ModelSchemaError.unsupportedInput(shape: input.shape, reason: "expected NCHW [1, 3, H, W]")
        }
        guard input.dataType != .other else {
            throw ModelSchemaError.unsupportedInput(shape: input.shape, reason: "input must be float32 or float16")
        }
        let names = metadata["names"].flatMap(MetadataParser.names) ?? []
        if let index = names.firstIndex(where: { $0.utf8.count > Self.maxClassNameBytes }) {
            throw ModelSchemaError.classNameTooLong(index: index, bytes: names[index].utf8.count,
                limit: Self.maxClassNameBytes)
        }
        let dynamic = input.shape[2] < 0 || input.shape[3] < 0
        var size: ImageSize
        let origin: String
        if !dynamic {
            size = ImageSize(width: input.shape[3], height: input.shape[2])
            origin = "declared by input \(input.shape)"
        } else if let imgsz {
            size = imgsz
            origin = "passed as imgsz"
        } else if let text = metadata["imgsz"] {
            guard let parsed = MetadataParser.imageSize(text) else {
                throw ModelSchemaError.invalidInputSize(
                    reason: "metadata imgsz '\(text)' is not one or two whole numbers")
            }
            size = parsed
            origin = "from metadata imgsz '\(text)'"
        } else {
            throw ModelSchemaError.missingInputSize
        }
        // Half dynamic ([1, 3, 640, -1]): the declared side stands, every run would fail with another.
        if dynamic, input.shape[2] > 0 || input.shape[3] > 0 {
            size = ImageSize(width: input.shape[3] > 0 ? input.shape[3] : size.width,
                height: input.shape[2] > 0 ? input.shape[2] : size.height)
        }
        guard (1...maxInputSide).contains(size.width), (1...maxInputSide).contains(size.height) else {
            throw ModelSchemaError.invalidInputSize(
                reason: "\(size), \(origin): each side must lie in 1...\(maxInputSide)")
        }
        // One image's boxes: any other batch (a static 2, or 0) passed the warm-up's shape check and failed every
        // request's decoding.
        guard output.shape.count == 3, output.shape[0] == 1 || output.shape[0] < 0 else {
            throw ModelSchemaError.unsupportedOutput(shape: output.shape, reason: "expected a rank-3 output [1, A, B]")
        }
        guard output.dataType != .other else {
            throw ModelSchemaError.unsupportedOutput(
                shape: output.shape, reason: "the output's element type must be float32 or float16")
        }
        let detected: OutputFormat
        if let format {
            detected = format
        } else {
            detected = try detectFormat(shape: output.shape, classCount: names.isEmpty ? nil : names.count,
                endToEnd: metadata["end2end"].map { $0.lowercased() == "true" } ?? false)
        }
        let classCount: Int
        // A dynamic (negative) dimension holds no class: counted as 0, which also keeps the subtraction from
        // overflowing on a declared Int.min.
        switch detected {
        case .yolov5: classCount = max(output.shape[2], 0) - 5
        case .yolov8: classCount = max(output.shape[1], 0) - 4
        case .yolov10: classCount = names.isEmpty ? 80 : names.count
        }
        guard classCount > 0 else {
            throw ModelSchemaError.unsupportedOutput(shape: output.shape, reason: "no class scores for \(detected)")
        }
        guard classCount <= maxClassCount else {
            throw ModelSchemaError.unsupportedOutput(
                shape: output.shape, reason: "\(classCount) classes for \(detected), more than \(maxClassCount)")
        }
        // A static box count of 0: a detector that can never detect anything.
        guard (detected == .yolov8 ? output.shape[2] : output.shape[1]) != 0 else {
            throw ModelSchemaError.unsupportedOutput(shape: output.shape, reason: "no boxes: the output declares 0")
        }
        if !names.isEmpty, names.count != classCount, detected != .yolov10 {
            throw ModelSchemaError.classCountMismatch(names: names.count, output: classCount)
        }
        return ModelSchema(
            input: input, output: output, dynamicInput: dynamic, inputSize: size, channelOrder: .rgb,
            normalization: .unitScale, outputFormat: detected, classCount: classCount,
            classNames: names.isEmpty ? (0..<classCount).map { "class\($0)" } : names,
            stride: metadata["stride"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 32,
            task: metadata["task"] ?? "detect")
    }

    /// Detects the output layout from its shape `[1, A, B]`.
    static func detectFormat(shape: [Int], classCount: Int?, endToEnd: Bool) throws(ModelSchemaError) -> OutputFormat {
        let (a, b) = (shape[1], shape[2])
        // Six columns are an end-to-end head's (Ultralytics takes every `[…, 6]` output for one) unless the model
        // has one class and more rows than an end-to-end head keeps (`max_det`, 300), or a dynamic count of them:
        // YOLOv5's one-class layout (its `--dynamic` export too). A one-class end-to-end export without the `end2end`
        // key (older YOLOv10s) was read as YOLOv5, its class column (0) zeroing every score.
        let fewRows = a > 0 && a <= 300
        if b == 6, endToEnd || fewRows || (classCount.map { $0 != 1 } ?? (a <= 300)) { return .yolov10 }
        if let nc = classCount {
            if b == nc + 5 { return .yolov5 }
            if a == nc + 4 { return .yolov8 }
            throw ModelSchemaError.unsupportedOutput(shape: shape, reason: "does not fit \(nc) classes in any layout")
        }
        if a > 0, b > 0 { return a < b ? .yolov8 : .yolov5 }
        throw ModelSchemaError.unsupportedOutput(shape: shape, reason: "dynamic output shape without class names")
    }

    /// Every difference between this schema and `other`, by field.
    public func differences(from other: ModelSchema) -> [SchemaDifference] {
        var diffs: [SchemaDifference] = []
        func compare<T: Equatable>(_ field: SchemaDifference.Field, _ a: T, _ b: T) {
            if a != b { diffs.append(SchemaDifference(field: field, old: "\(a)", new: "\(b)")) }
        }
        compare(.inputName, other.input.name, input.name)
        compare(.inputDataType, other.input.dataType.rawValue, input.dataType.rawValue)
        compare(.inputSize, other.inputSize.description, inputSize.description)
        compare(.dynamicInput, other.dynamicInput, dynamicInput)
        compare(.channelOrder, other.channelOrder.rawValue, channelOrder.rawValue)
        compare(.normalization, other.normalization.rawValue, normalization.rawValue)
        compare(.outputFormat, other.outputFormat.rawValue, outputFormat.rawValue)
        compare(.classCount, other.classCount, classCount)
        if other.classNames != classNames {
            let changed = zip(other.classNames, classNames).enumerated().filter { $0.element.0 != $0.element.1 }
            let detail = changed.prefix(5).map { "\($0.offset): \($0.element.0) → \($0.element.1)" }
                .joined(separator: ", ")
            diffs.append(SchemaDifference(field: .classNames, old: "\(other.classNames.count) names",
                new: detail.isEmpty ? "\(classNames.count) names" : detail + (changed.count > 5 ? ", …" : "")))
        }
        compare(.stride, other.stride, stride)
        compare(.task, other.task, task)
        return diffs
    }

    /// The differences that make `self` unable to replace `active` in a slot: classes, task, output format, channel
    /// order, normalization. Input size, stride and dtype are per-model preprocessing, so they are compatible.
    public func incompatibilities(replacing active: ModelSchema) -> [SchemaDifference] {
        differences(from: active).filter(\.field.breaksCompatibility)
    }
}

/// One field that differs between two schemas.
public struct SchemaDifference: Sendable, Equatable, CustomStringConvertible {
    public enum Field: String, Sendable, Equatable, CaseIterable {
        case inputName = "input name", inputDataType = "input dtype", inputSize = "input size",
            dynamicInput = "dynamic input", channelOrder = "channel order", normalization,
            outputFormat = "output format", classCount = "class count", classNames = "class names", stride, task

        /// Whether a difference in this field makes a model an incompatible replacement.
        public var breaksCompatibility: Bool {
            switch self {
            case .channelOrder, .normalization, .outputFormat, .classCount, .classNames, .task: true
            case .inputName, .inputDataType, .inputSize, .dynamicInput, .stride: false
            }
        }
    }

    public var field: Field
    public var old: String
    public var new: String

    public var description: String { "\(field.rawValue): \(old) → \(new)" }
}

/// Why a model's schema could not be derived.
public enum ModelSchemaError: Error, Equatable, CustomStringConvertible {
    case noInput, noOutput
    case unsupportedInput(shape: [Int], reason: String)
    case unsupportedOutput(shape: [Int], reason: String)
    case missingInputSize
    /// The input size (declared, from metadata `imgsz`, or passed as `imgsz`) is malformed or out of bounds; `reason`
    /// says which and why.
    case invalidInputSize(reason: String)
    case classCountMismatch(names: Int, output: Int)
    /// A class name in the metadata is longer than `limit` bytes: each detection carries its class's name, so one
    /// long name made every answer that long times its detections.
    case classNameTooLong(index: Int, bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case .noInput: "the model has no input"
        case .noOutput: "the model has no output"
        case .unsupportedInput(let shape, let reason): "unsupported input shape \(shape): \(reason)"
        case .unsupportedOutput(let shape, let reason): "unsupported output shape \(shape): \(reason)"
        case .missingInputSize:
            "the model's input size is dynamic and its metadata has no imgsz: pass an input size (--imgsz)"
        case .invalidInputSize(let reason): "unusable input size: \(reason)"
        case .classCountMismatch(let names, let output):
            "metadata names \(names) classes but the output holds \(output)"
        case .classNameTooLong(let index, let bytes, let limit):
            "metadata names class \(index) with \(bytes) bytes; a class name may have at most \(limit)"
        }
    }
}

import Foundation
