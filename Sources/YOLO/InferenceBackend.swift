import Primitives

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
    /// - Parameter cancellation: when given and cancelled while the run is in flight, the run is aborted (if the
    ///   backend can) and throws.
    func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView
}

extension InferenceBackend {
    /// Runs the model on one input tensor; returns its first output.
    public func run(_ input: InputTensor) throws -> any OutputTensorView { try run(input, cancellation: nil) }
}

/// A cancellation signal for runs in flight (a warm-up past its deadline, a superseded load).
///
/// Thread-safety: all members may be used from any thread.
public final class RunCancellation: Sendable {
    private let state = Locked<(cancelled: Bool, handlers: [@Sendable () -> Void])>((false, []))

    public init() {}

    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// Cancels: runs every registered handler once.
    public func cancel() {
        let handlers = state.withLock { s -> [@Sendable () -> Void] in
            guard !s.cancelled else { return [] }
            s.cancelled = true
            defer { s.handlers = [] }
            return s.handlers
        }
        handlers.forEach { $0() }
    }

    /// Registers `handler` to run on cancellation (at once if already cancelled).
    public func onCancel(_ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { s -> Bool in
            if s.cancelled { return true }
            s.handlers.append(handler)
            return false
        }
        if runNow { handler() }
    }
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
