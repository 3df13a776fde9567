import HotSwap
import ONNXRuntime
import YOLO

/// Loads models into ONNX Runtime sessions, through the optimized-model cache when one is given.
///
/// Errors: `ModelFileError` when the file cannot be read or no longer has its verified digest, `ModelLoadError` when
/// ORT refuses the model (or a child optimizer crashed on it).
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
            do {
                return ORTInferenceBackend(
                    session: try ORTSession(bytes: bytes, environment: environment, options: options, label: label))
            } catch {
                throw ModelLoadError.runtime(path: file.path, error)
            }
        }
        do {
            let (session, outcome) = try cache.session(for: file, environment: environment, options: options,
                label: label)
            return ORTInferenceBackend(session: session, cacheOutcome: outcome)
        } catch .file(let error) {
            throw error  // the pipeline reports file problems (a changed file) as such
        }
    }
}
