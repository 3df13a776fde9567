import Crypto
import Foundation
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

/// A model file read once into memory with its SHA-256: the bytes that are verified are the bytes that are loaded.
public struct ModelBytes: Sendable {
    public var path: String
    public var bytes: [UInt8]
    /// Lower-case hex SHA-256 of `bytes`.
    public var sha256: String

    /// Reads the whole file into one buffer, chunk by chunk (no second whole-file copy), hashing as it goes.
    /// - Throws: `ModelLoadError.unreadable` with the path and the system's reason.
    public init(contentsOf path: String) throws(ModelLoadError) {
        var bytes: [UInt8] = []
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        bytes.reserveCapacity(size)
        var hasher = SHA256()
        try ModelFile.readChunks(of: path) { chunk in
            hasher.update(data: chunk)
            bytes.append(contentsOf: chunk)
        }
        self.init(path: path, bytes: bytes, sha256: hasher.finalize().hexString)
    }

    public init(path: String, bytes: [UInt8]) {
        self.init(path: path, bytes: bytes, sha256: SHA256.hash(data: bytes).hexString)
    }

    private init(path: String, bytes: [UInt8], sha256: String) {
        self.path = path
        self.bytes = bytes
        self.sha256 = sha256
    }
}

/// Why a model could not be loaded.
public enum ModelLoadError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case runtime(path: String, ORTError)
    case signature(path: String, SignatureError)
    /// The file's content no longer has the digest it was verified with.
    case changedSinceVerification(path: String, verified: String, now: String)
    /// The child process optimizing the model's graph was killed by `signal` (ORT crashed on the model, or the
    /// kernel ran out of memory); `detail` is the end of its stderr.
    case optimizerCrashed(path: String, signal: Int32, detail: String)
    /// The child process optimizing the model's graph ran longer than `timeout` and was killed.
    case optimizerTimedOut(path: String, timeout: Duration, detail: String)

    public var description: String {
        switch self {
        case .optimizerCrashed(let path, let signal, let detail):
            "ONNX Runtime's graph optimizer was killed by signal \(signal) on model \(path)"
                + (signal == 9 ? " (out of memory?)" : "") + " and the model was not loaded"
                + (detail.isEmpty ? "" : ": \(detail)")
        case .optimizerTimedOut(let path, let timeout, let detail):
            "ONNX Runtime's graph optimizer ran longer than \(timeout) on model \(path) and was killed; the model was not "
                + "loaded" + (detail.isEmpty ? "" : ": \(detail)")
        case .unreadable(let path, let reason): "cannot read model \(path): \(reason)"
        case .changedSinceVerification(let path, let verified, let now):
            "model \(path) changed after it was verified (sha256 \(verified.prefix(12)) then, \(now.prefix(12)) now)"
        case .runtime(let path, let error): "cannot load model \(path): \(error)"
        case .signature(let path, let error): "model \(path) is not a supported YOLO detector: \(error)"
        }
    }
}

/// A loaded model: its bytes' digest, ORT session and YOLO detector.
///
/// Thread-safety: immutable; `detector.detect` may be called concurrently.
public final class LoadedModel: Sendable {
    public let path: String
    public let sha256: String
    public let byteCount: Int
    public let backend: ORTInferenceBackend
    public let detector: Detector
    public var signature: ModelSignature { detector.signature }

    /// Creates a session from verified bytes and derives the model's signature.
    public init(bytes: ModelBytes, environment: ORTEnvironment, options: SessionOptions = .init(),
                imgsz: ImageSize? = nil, format: OutputFormat? = nil) throws(ModelLoadError) {
        let session: ORTSession
        do {
            session = try ORTSession(bytes: bytes.bytes, environment: environment, options: options, label: bytes.path)
        } catch {
            throw .runtime(path: bytes.path, error)
        }
        let backend = ORTInferenceBackend(session: session)
        do {
            detector = try Detector(backend: backend, imgsz: imgsz, format: format)
        } catch {
            throw .signature(path: bytes.path, error)
        }
        self.backend = backend
        self.path = bytes.path
        self.sha256 = bytes.sha256
        self.byteCount = bytes.bytes.count
    }

    /// Reads and loads a model file.
    public convenience init(path: String, environment: ORTEnvironment, options: SessionOptions = .init(),
                            imgsz: ImageSize? = nil, format: OutputFormat? = nil) throws(ModelLoadError) {
        try self.init(bytes: ModelBytes(contentsOf: path), environment: environment, options: options, imgsz: imgsz,
            format: format)
    }
}
