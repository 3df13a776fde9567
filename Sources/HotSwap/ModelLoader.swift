import ONNXRuntime
import ORTBackend
import YOLO

/// Makes an inference backend from verified model bytes. The ORT implementation is `ORTModelLoader`; unit tests
/// use fakes.
public protocol ModelLoader: Sendable {
    /// Creates a backend (an isolated inference context) from the model's bytes.
    /// - Parameters:
    ///   - bytes: the exact bytes that were hashed and verified.
    ///   - label: names the model in errors.
    ///   - intraOpThreads: threads inside one inference.
    func makeBackend(bytes: [UInt8], label: String, intraOpThreads: Int) throws -> any InferenceBackend
}

/// Loads models into ONNX Runtime sessions.
public struct ORTModelLoader: ModelLoader {
    public let environment: ORTEnvironment
    public var options: SessionOptions

    public init(environment: ORTEnvironment, options: SessionOptions = .init()) {
        self.environment = environment
        self.options = options
    }

    public func makeBackend(bytes: [UInt8], label: String, intraOpThreads: Int) throws -> any InferenceBackend {
        var options = self.options
        options.intraOpThreads = intraOpThreads
        return ORTInferenceBackend(
            session: try ORTSession(bytes: bytes, environment: environment, options: options, label: label))
    }
}

/// Checks a model's authenticity in the verifying stage, before any ORT allocation (the serving layer plugs Ed25519
/// signatures in here).
public protocol ModelVerifier: Sendable {
    /// Throws to reject the model; returns the key id that vouched for it, or nil when no signature applies.
    func verify(path: String, bytes: [UInt8], sha256: String, version: String?) throws -> String?
}
