import ONNXRuntime
import ORTBackend
import YOLO

/// Makes an inference backend from a verified model file. The ORT implementation is `ORTModelLoader`; unit tests
/// use fakes.
public protocol ModelLoader: Sendable {
    /// Creates a backend (an isolated inference context) for the model.
    /// - Parameters:
    ///   - file: the verified model: path, digest, size. A loader that reads the bytes uses
    ///     `file.readVerifiedBytes()`, which refuses content that no longer has the verified digest.
    ///   - label: names the model in errors.
    ///   - intraOpThreads: threads inside one inference.
    func makeBackend(for file: ModelFile, label: String, intraOpThreads: Int) throws -> any InferenceBackend
}

/// Loads models into ONNX Runtime sessions, through the optimized-model cache when one is given.
public struct ORTModelLoader: ModelLoader {
    public let environment: ORTEnvironment
    public var options: SessionOptions
    /// Where optimized models are kept between loads (nil: every load optimizes from the original bytes).
    public var cache: OptimizedModelCache?

    public init(environment: ORTEnvironment, options: SessionOptions = .init(), cache: OptimizedModelCache? = nil) {
        self.environment = environment
        self.options = options
        self.cache = cache
    }

    public func makeBackend(for file: ModelFile, label: String, intraOpThreads: Int) throws -> any InferenceBackend {
        var options = self.options
        options.intraOpThreads = intraOpThreads
        guard let cache else {
            let bytes = try file.readVerifiedBytes()
            return ORTInferenceBackend(
                session: try ORTSession(bytes: bytes, environment: environment, options: options, label: label))
        }
        let (session, outcome) = try cache.session(for: file, environment: environment, options: options, label: label)
        return ORTInferenceBackend(session: session, cacheOutcome: outcome)
    }
}

/// Checks a model's authenticity in the verifying stage, before any ORT allocation (the serving layer plugs Ed25519
/// signatures in here).
public protocol ModelVerifier: Sendable {
    /// Throws to reject the model; returns the key id that vouched for it, or nil when no signature applies.
    /// - Parameters:
    ///   - path: the model file.
    ///   - sha256: lower-case hex SHA-256 of the file's content, as hashed by the pipeline (the bytes that will be
    ///     loaded must have this digest).
    ///   - version: the version label the load asks for.
    func verify(path: String, sha256: String, version: String?) throws -> String?
}
