import Foundation
import HotSwap
import ONNXRuntime
import Primitives
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

    /// A backend whose session runs where `execution` says, with its provider options; the other settings are
    /// `options`'.
    public func makeBackend(for file: ModelFile, label: String, execution: ModelExecution) throws
        -> any InferenceBackend
    {
        try makeBackend(for: file, label: label, execution: execution, cancellation: nil)
    }

    /// As `makeBackend(for:label:execution:)`; a child optimizer still running when `cancellation` is cancelled is
    /// killed (`ModelLoadError.optimizerCancelled`).
    public func makeBackend(for file: ModelFile, label: String, execution: ModelExecution,
                            cancellation: RunCancellation) throws -> any InferenceBackend {
        try makeBackend(for: file, label: label, execution: execution, cancellation: Optional(cancellation))
    }

    private func makeBackend(for file: ModelFile, label: String, execution: ModelExecution,
                             cancellation: RunCancellation?) throws -> any InferenceBackend
    {
        var options = self.options
        options.intraOpThreads = execution.intraOpThreads
        options.provider = ExecutionProvider(execution.target)
        options.providerOptions = Self.providerOptions(execution, sha256: file.sha256)
        if let folder = options.providerOptions["trt_engine_cache_path"] {
            try Self.makePrivateFolder(folder)
        }
        return try makeBackend(for: file, label: label, options: options, cancellation: cancellation)
    }

    /// Creates a model's engine folder (and those above it) readable by this user only, if missing, and checks
    /// that it and the cache folder above it are this user's alone: ORT loads any engine it finds there, unverified,
    /// and a model's digest — its folder's name — is no secret.
    /// - Throws: `FileCreationError`, or `ModelLoadError.engineCacheNotPrivate` naming the folder.
    static func makePrivateFolder(_ path: String) throws {
        try PrivateFiles.createDirectory(atPath: path)
        for folder in [path, (path as NSString).deletingLastPathComponent]
        where !PrivateFiles.isPrivateDirectory(atPath: folder) {
            throw ModelLoadError.engineCacheNotPrivate(folder: folder)
        }
    }

    /// A backend with `options` as given (provider included) and `intraOpThreads`: what the CLI loads with.
    public func makeBackend(for file: ModelFile, label: String, intraOpThreads: Int) throws -> any InferenceBackend {
        var options = self.options
        options.intraOpThreads = intraOpThreads
        return try makeBackend(for: file, label: label, options: options)
    }

    /// ORT's provider options for the settings that matter for swaps: the CUDA arena's cap (`gpu_mem_limit`, with
    /// `arena_extend_strategy` `kSameAsRequested` so that the arena does not round its growth up past what a model
    /// needs) and TensorRT's engine cache, which lets a swap back to a model reuse the engine built for it.
    ///
    /// The engine cache is a folder per model digest (`<trt_engine_cache>/<sha256>`): ORT names a cached engine by the
    /// graph's input and node names and the versions in use, not its weights, and a session made from bytes has no
    /// path to add — so a retrained model with the same graph would otherwise be served the engine built for the
    /// model before it, weights and all, under the new model's verified digest.
    static func providerOptions(_ execution: ModelExecution, sha256: String) -> [String: String] {
        var options: [String: String] = [:]
        switch execution.target.provider {
        case .cpu:
            break
        case .cuda:
            if let limit = execution.gpuMemoryLimitBytes {
                options["gpu_mem_limit"] = "\(limit)"
                options["arena_extend_strategy"] = "kSameAsRequested"
            }
        case .tensorrt:
            if let directory = execution.tensorRTEngineCacheDirectory {
                options["trt_engine_cache_enable"] = "1"
                options["trt_engine_cache_path"] = (directory as NSString).appendingPathComponent(sha256)
            }
        }
        return options
    }

    private func makeBackend(for file: ModelFile, label: String, options: SessionOptions,
                             cancellation: RunCancellation? = nil) throws -> any InferenceBackend
    {
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
                label: label, cancellation: cancellation)
            return ORTInferenceBackend(session: session, cacheOutcome: outcome)
        } catch .file(let error) {
            throw error  // the pipeline reports file problems (a changed file) as such
        }
    }
}

extension ExecutionProvider {
    /// The binding's provider for a hot-swap execution target.
    public init(_ target: ExecutionTarget) {
        switch target.provider {
        case .cpu: self = .cpu
        case .cuda: self = .cuda(deviceID: target.deviceID)
        case .tensorrt: self = .tensorRT(deviceID: target.deviceID)
        }
    }
}
