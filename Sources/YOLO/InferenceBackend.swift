/// A model output the pipeline can read in place.
public protocol OutputTensorView: Sendable {
    var shape: [Int] { get }
    /// Calls `body` with the output's elements as float32 (in place when the output is float32).
    func withFloats<R>(_ body: (Span<Float>) throws -> R) throws -> R
}

/// An input tensor handed to a backend: planar float32, converted by the backend when the model wants float16.
public struct InputTensor: Sendable {
    public var values: [Float]
    public var shape: [Int]
    public init(values: [Float], shape: [Int]) {
        self.values = values
        self.shape = shape
    }
}

/// Something that runs a YOLO model: the ORT binding in production, a fake in unit tests.
///
/// Thread-safety: implementations must allow concurrent `run` calls.
public protocol InferenceBackend: Sendable {
    /// The model's input and output tensors and custom metadata.
    var inputs: [TensorSpec] { get }
    var outputs: [TensorSpec] { get }
    var metadata: [String: String] { get }
    /// Runs the model on one input tensor; returns its first output.
    func run(_ input: InputTensor) throws -> any OutputTensorView
}

/// An output held in a Swift array (fake backends, converted float16 outputs).
public struct ArrayOutput: OutputTensorView {
    public var shape: [Int]
    public var values: [Float]
    public init(shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }
    public func withFloats<R>(_ body: (Span<Float>) throws -> R) throws -> R { try body(values.span) }
}
