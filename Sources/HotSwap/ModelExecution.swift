/// The memory a model's session takes lives on one device besides the host: the host's RAM, or one GPU's memory.
///
/// Codable as a string: `host`, `gpu:0`, `gpu:1`, …
///
/// Thread-safety: a value.
public enum ComputeDevice: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    case host
    case gpu(Int)

    public var description: String {
        switch self {
        case .host: "host"
        case .gpu(let id): "gpu:\(id)"
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        if text == "host" {
            self = .host
        } else if text.hasPrefix("gpu:"), let id = Int(text.dropFirst(4)), id >= 0 {
            self = .gpu(id)
        } else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "device must be host or gpu:N, got '\(text)'"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Where a model's session runs: an ONNX Runtime execution provider and its device.
///
/// Written `cpu`, `cuda[:id]` or `tensorrt[:id]` (the device id defaults to 0), as the CLI's `--provider` is; the
/// ORT backend turns it into the binding's `ExecutionProvider`, which appends the provider to the session options.
///
/// Thread-safety: a value.
public struct ExecutionTarget: Sendable, Hashable, CustomStringConvertible {
    public enum Provider: String, Sendable, Hashable, CaseIterable {
        case cpu, cuda, tensorrt
    }

    public var provider: Provider
    /// The GPU's id for `cuda` and `tensorrt`; 0 for `cpu`.
    public var deviceID: Int

    public static let cpu = ExecutionTarget(provider: .cpu, deviceID: 0)

    public init(provider: Provider, deviceID: Int = 0) {
        self.provider = provider
        self.deviceID = provider == .cpu ? 0 : deviceID
    }

    /// Parses `cpu`, `cuda`, `cuda:1`, `tensorrt`, `tensorrt:0` (`trt` for short; case-insensitive); nil for anything
    /// else.
    public init?(parsing text: String) {
        let parts = text.lowercased().split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first.map({ $0 == "trt" ? "tensorrt" : String($0) }),
            let provider = Provider(rawValue: first)
        else { return nil }
        guard parts.count == 2 else {
            self.init(provider: provider)
            return
        }
        guard provider != .cpu, let id = Int(parts[1]), (0...1023).contains(id) else { return nil }
        self.init(provider: provider, deviceID: id)
    }

    /// `cpu`, `cuda:0`, `tensorrt:1`.
    public var description: String { provider == .cpu ? "cpu" : "\(provider.rawValue):\(deviceID)" }

    /// The device whose memory the session's buffers take (a GPU session also takes host memory).
    public var device: ComputeDevice { provider == .cpu ? .host : .gpu(deviceID) }
}

/// How one slot's models may run: the provider a load gets unless it asks for another, the providers it may ask for,
/// and the session settings that matter for swaps.
///
/// Keys (`slots.<name>` in the service's YAML) and defaults:
/// - `provider` (`target`): what a load into an empty slot runs on, and what a restore after a restart runs on (`cpu`).
/// - `providers` (`allowedTargets`): what a load request may ask for; `target` is always allowed (only `target`).
/// - `intra_op_threads` (`intraOpThreads`): ORT threads inside one inference; nil = `hotswap.intra_op_threads`.
/// - `cuda_mem_limit_mb` (`gpuMemoryLimitBytes`): with `cuda`, the cap on the CUDA provider's arena (ORT's
///   `gpu_mem_limit`); with `cuda` or `tensorrt`, the ledger's estimate of what a model takes on its GPU (nil: no cap,
///   and the estimate is `MemoryLedger.unknownCostFactor` × the file's size).
/// - `trt_engine_cache` (`tensorRTEngineCacheDirectory`): where TensorRT keeps the engines it builds, so that a swap
///   back to a model it has seen does not rebuild its engine (ORT's `trt_engine_cache_enable`/`trt_engine_cache_path`;
///   nil: no cache).
///
/// Thread-safety: a value.
public struct SlotExecution: Sendable, Equatable {
    public var target: ExecutionTarget
    public var allowedTargets: [ExecutionTarget]
    public var intraOpThreads: Int?
    public var gpuMemoryLimitBytes: Int?
    public var tensorRTEngineCacheDirectory: String?

    public init(target: ExecutionTarget = .cpu, allowedTargets: [ExecutionTarget] = [], intraOpThreads: Int? = nil,
                gpuMemoryLimitBytes: Int? = nil, tensorRTEngineCacheDirectory: String? = nil) {
        self.target = target
        self.allowedTargets = allowedTargets
        self.intraOpThreads = intraOpThreads
        self.gpuMemoryLimitBytes = gpuMemoryLimitBytes
        self.tensorRTEngineCacheDirectory = tensorRTEngineCacheDirectory
    }

    /// Every target a load may ask for: `target`, then `allowedTargets`.
    public var permittedTargets: [ExecutionTarget] {
        [target] + allowedTargets.filter { $0 != target }
    }

    /// The settings one load runs with.
    /// - Parameters:
    ///   - requested: what the load asks for (nil: `current`, else `target`).
    ///   - current: the target of the slot's active model, if any: a load that names no provider stays on it.
    ///   - defaultThreads: intra-op threads when the slot sets none.
    /// - Throws: `LoadFailure.providerNotAllowed` when the slot does not permit the requested target.
    func resolve(requested: ExecutionTarget?, current: ExecutionTarget?, defaultThreads: Int, path: String)
        throws(LoadFailure) -> ModelExecution
    {
        let chosen = requested ?? current ?? target
        let permitted = permittedTargets
        // A model already running on a target the configuration no longer lists (a restart with a changed
        // configuration) may still be reloaded where it is; anything else must be listed.
        guard permitted.contains(chosen) || (requested == nil && chosen == current) else {
            throw .providerNotAllowed(path: path, requested: chosen.description,
                allowed: permitted.map(\.description))
        }
        return ModelExecution(target: chosen, intraOpThreads: intraOpThreads ?? defaultThreads,
            gpuMemoryLimitBytes: gpuMemoryLimitBytes, tensorRTEngineCacheDirectory: tensorRTEngineCacheDirectory)
    }
}

/// The execution settings one model's session is created with: what the pipeline hands a `ModelLoader`.
///
/// Thread-safety: a value.
public struct ModelExecution: Sendable, Equatable {
    public var target: ExecutionTarget
    public var intraOpThreads: Int
    /// The CUDA arena's cap, in bytes (nil: none).
    public var gpuMemoryLimitBytes: Int?
    /// TensorRT's engine cache folder (nil: no cache).
    public var tensorRTEngineCacheDirectory: String?

    public init(target: ExecutionTarget = .cpu, intraOpThreads: Int = 1, gpuMemoryLimitBytes: Int? = nil,
                tensorRTEngineCacheDirectory: String? = nil) {
        self.target = target
        self.intraOpThreads = intraOpThreads
        self.gpuMemoryLimitBytes = gpuMemoryLimitBytes
        self.tensorRTEngineCacheDirectory = tensorRTEngineCacheDirectory
    }
}
