import Foundation
import HotSwap
import ONNXRuntime
import YOLO

/// YOLO's `InferenceBackend` over an ONNX Runtime session.
///
/// Thread-safety: `run` may be called concurrently (ORT sessions allow concurrent Run); everything else is immutable.
public final class ORTInferenceBackend: InferenceBackend {
    public let session: ORTSession
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]
    public var metadata: [String: String] { session.metadata.custom }
    /// How the session was made when the optimized-model cache was involved (nil: loaded without it).
    public let cacheOutcome: OptimizedModelCache.Outcome?
    private let inputIsHalf: Bool

    public init(session: ORTSession, cacheOutcome: OptimizedModelCache.Outcome? = nil) {
        self.session = session
        self.cacheOutcome = cacheOutcome
        inputs = session.inputs.map(TensorSpec.init)
        outputs = session.outputs.map(TensorSpec.init)
        inputIsHalf = session.inputs.first?.elementType == .float16
    }

    public func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
        let tensor: TensorInput =
            inputIsHalf
            ? .float16(input.values.map(Float16.init), shape: input.shape)
            : .float(input.values, shape: input.shape)
        var terminator: RunTerminator?
        if let cancellation {
            let t = try RunTerminator(library: session.environment.library)
            cancellation.onCancel { t.terminate() }
            terminator = t
        }
        let results = try session.run(tensor, terminator: terminator)
        guard let first = results.first else {
            throw ORTError(.invalidTensor, operation: "running the model", message: "the model returned no output")
        }
        if first.elementType == .float { return ORTOutput(tensor: first) }
        return ArrayOutput(shape: first.shape, values: try first.floats())
    }
}

/// A float32 ORT output read in place.
struct ORTOutput: OutputTensorView {
    let tensor: TensorOutput
    var shape: [Int] { tensor.shape }
    func withFloats<R>(_ body: (Span<Float>) throws -> R) throws -> R { try tensor.withFloats(body) }
}

extension TensorSpec {
    init(_ info: TensorInfo) {
        let type: TensorDataType =
            switch info.elementType {
            case .float: .float32
            case .float16: .float16
            default: .other
            }
        self.init(name: info.name, dataType: type, shape: info.shape)
    }
}

/// Why a model could not be loaded.
public enum ModelLoadError: Error, CustomStringConvertible {
    /// The model file could not be read, or no longer has its verified content.
    case file(ModelFileError)
    case runtime(path: String, ORTError)
    /// The child process optimizing the model's graph was killed by `signal` (ORT crashed on the model, or the
    /// kernel ran out of memory); `detail` is the end of its stderr.
    case optimizerCrashed(path: String, signal: Int32, detail: String)
    /// The child process optimizing the model's graph ran longer than `timeout` and was killed.
    case optimizerTimedOut(path: String, timeout: Duration, detail: String)
    /// The load was cancelled while a child process optimized the model's graph; the child was killed.
    case optimizerCancelled(path: String)
    /// TensorRT's engine cache folder (`folder`: the configured one or a model's inside it) is not this user's
    /// alone: an engine planted there would be served under the model's verified digest.
    case engineCacheNotPrivate(folder: String)

    public var description: String {
        switch self {
        case .optimizerCrashed(let path, let signal, let detail):
            "ONNX Runtime's graph optimizer was killed by signal \(signal) on model \(path)"
                + (signal == 9 ? " (out of memory?)" : "") + " and the model was not loaded"
                + (detail.isEmpty ? "" : ": \(detail)")
        case .optimizerTimedOut(let path, let timeout, let detail):
            "ONNX Runtime's graph optimizer ran longer than \(timeout) on model \(path) and was killed; the model was "
                + "not loaded" + (detail.isEmpty ? "" : ": \(detail)")
        case .optimizerCancelled(let path):
            "the load of model \(path) was cancelled while ONNX Runtime's graph optimizer ran; the optimizer was killed"
        case .engineCacheNotPrivate(let folder):
            "TensorRT's engine cache folder \(folder) is not private (a folder, not a link, owned by this user and "
                + "writable by no one else): an engine put there would run in place of the verified model; fix its "
                + "owner and mode or name another trt_engine_cache"
        case .file(let error): error.description
        case .runtime(let path, let error): "cannot load model \(path): \(error)"
        }
    }
}
