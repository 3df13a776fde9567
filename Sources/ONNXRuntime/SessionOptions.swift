internal import CONNXRuntime
import Foundation

/// Where a session's graph runs. (The CLI and the service parse `cpu | cuda[:id] | tensorrt[:id]` as
/// `HotSwap.ExecutionTarget`; `ORTBackend` turns that into this.)
public enum ExecutionProvider: Sendable, Equatable, CustomStringConvertible {
    case cpu
    case cuda(deviceID: Int)
    case tensorRT(deviceID: Int)

    public var description: String {
        switch self {
        case .cpu: "cpu"
        case .cuda(let id): "cuda:\(id)"
        case .tensorRT(let id): "tensorrt:\(id)"
        }
    }

    /// The GPU's id (0 for `.cpu`).
    public var deviceID: Int {
        switch self {
        case .cpu: 0
        case .cuda(let id), .tensorRT(let id): id
        }
    }

    var ortName: String {
        switch self {
        case .cpu: "CPUExecutionProvider"
        case .cuda: "CUDAExecutionProvider"
        case .tensorRT: "TensorrtExecutionProvider"
        }
    }
}

/// How ORT optimizes the graph before running it.
public enum GraphOptimizationLevel: String, Sendable, CaseIterable {
    case disabled, basic, extended, all

    var ortValue: GraphOptimizationLevel_C {
        switch self {
        case .disabled: ORT_DISABLE_ALL
        case .basic: ORT_ENABLE_BASIC
        case .extended: ORT_ENABLE_EXTENDED
        case .all: ORT_ENABLE_ALL
        }
    }
}

typealias GraphOptimizationLevel_C = CONNXRuntime.GraphOptimizationLevel

/// When a session's idle intra-op threads spin-wait for work instead of sleeping. Matters only with more than one
/// intra-op thread.
///
/// A sleeping thread costs a wake-up at each of the Run's parallel sections; a spinning one holds a core.
public enum IntraOpSpinning: String, Sendable, Equatable, CaseIterable {
    /// Threads sleep as soon as they have no work.
    case never
    /// Threads spin between the parallel sections of a Run and stop when the last concurrent Run on the session returns
    /// (ORT's `session.force_spinning_stop`), leaving the cores to whatever runs between Runs (the next image's
    /// decoding): a Run's parallel sections pick up work without a wake-up, and nothing is taken from the decoding
    /// (README, Performance: the measured difference).
    case duringRun = "during-run"
    /// Threads spin whenever idle for a while (ORT's own default): the fastest Runs back to back, but the spinning
    /// threads take the cores from work between Runs.
    case always
}

/// Settings for one inference session (one isolated inference context).
///
/// Keys and defaults:
/// - `intraOpThreads`: threads inside one Run; `0` lets ORT choose (one per core). Default 0.
/// - `interOpThreads`: threads across independent graph nodes; default 1 (YOLO graphs are sequential).
/// - `optimization`: graph optimization level; default `.all`.
/// - `provider`: execution provider; default `.cpu`.
/// - `providerOptions`: more of the provider's own options, by ORT's key (`gpu_mem_limit`, `trt_engine_cache_path`,
///   …), set beside its `device_id`; ignored for `.cpu`. Default none.
/// - `spinning`: when idle intra-op threads spin-wait for work instead of sleeping (``IntraOpSpinning``); default
///   `.never`, for sessions that share the cores with other Runs.
/// - `memoryPattern`: ORT's memory-pattern optimisation for fixed shapes; default `true`.
/// - `cpuMemoryArena`: ORT's CPU arena allocator (keeps freed buffers for reuse; faster, but holds memory until the
///   session is released); default `true`.
/// - `optimizedModelPath`: where ORT writes the graph it optimized while creating the session (an ONNX file that
///   later sessions can load without optimizing again); default `nil` (nothing written).
///
/// Whatever the options, a session never reads external data: a model must hold all its tensors in its own file.
public struct SessionOptions: Sendable, Equatable {
    public var intraOpThreads: Int
    public var interOpThreads: Int
    public var optimization: GraphOptimizationLevel
    public var provider: ExecutionProvider
    public var providerOptions: [String: String]
    public var spinning: IntraOpSpinning
    public var memoryPattern: Bool
    public var cpuMemoryArena: Bool
    public var optimizedModelPath: String?

    public init(
        intraOpThreads: Int = 0, interOpThreads: Int = 1, optimization: GraphOptimizationLevel = .all,
        provider: ExecutionProvider = .cpu, spinning: IntraOpSpinning = .never, memoryPattern: Bool = true,
        cpuMemoryArena: Bool = true, optimizedModelPath: String? = nil, providerOptions: [String: String] = [:]
    ) {
        self.intraOpThreads = intraOpThreads
        self.interOpThreads = interOpThreads
        self.optimization = optimization
        self.provider = provider
        self.providerOptions = providerOptions
        self.spinning = spinning
        self.memoryPattern = memoryPattern
        self.cpuMemoryArena = cpuMemoryArena
        self.optimizedModelPath = optimizedModelPath
    }
}

/// Owns an `OrtSessionOptions` built from `SessionOptions`; used only while a session is created.
final class NativeSessionOptions {
    let library: ORTLibrary
    let handle: OpaquePointer

    init(_ options: SessionOptions, library: ORTLibrary) throws(ORTError) {
        self.library = library
        let api = library.api.pointee
        var handle: OpaquePointer?
        try library.check(api.CreateSessionOptions!(&handle), "creating session options")
        self.handle = handle!
        try library.check(api.SetIntraOpNumThreads!(handle, Int32(options.intraOpThreads)), "setting intra-op threads")
        try library.check(api.SetInterOpNumThreads!(handle, Int32(options.interOpThreads)), "setting inter-op threads")
        // Pool threads start at the process's normal priority, not the creating load worker's (`PoolThreads`).
        try library.check(api.SessionOptionsSetCustomCreateThreadFn!(handle, PoolThreads.create),
            "setting the pool threads' creation")
        try library.check(api.SessionOptionsSetCustomJoinThreadFn!(handle, PoolThreads.join),
            "setting the pool threads' join")
        try library.check(
            api.SetSessionGraphOptimizationLevel!(handle, options.optimization.ortValue), "setting optimization level")
        if !options.cpuMemoryArena {
            try library.check(api.DisableCpuMemArena!(handle), "disabling the CPU memory arena")
        }
        if !options.memoryPattern {
            try library.check(api.DisableMemPattern!(handle), "disabling the memory pattern")
        }
        try library.check(
            api.AddSessionConfigEntry!(
                handle, "session.intra_op.allow_spinning", options.spinning == .never ? "0" : "1"),
            "setting intra-op spinning")
        if options.spinning == .duringRun {
            try library.check(
                api.AddSessionConfigEntry!(handle, "session.force_spinning_stop", "1"),
                "stopping intra-op spinning after each Run")
        }
        // External data (an initializer whose bytes lie in another file, `location` relative to the model's folder,
        // or to the working directory for a model loaded from bytes) is never read: a digest or signature covers the
        // model file alone, and a hostile `location` would read what it names into the graph, and from there into
        // detections. ORT looks for every external file in this folder; nothing can lie under a path that is not a
        // folder, so each reference fails the session with ORT's "External data path validation failed" error.
        try library.check(
            api.AddSessionConfigEntry!(handle, "session.model_external_initializers_file_folder_path",
                Self.noExternalDataFolder),
            "refusing external data")
        if let path = options.optimizedModelPath {
            try library.check(api.SetOptimizedModelFilePath!(handle, path), "setting the optimized model path \(path)")
        }
        try appendProvider(options.provider, options: options.providerOptions)
    }

    /// The folder ORT is told external data files lie in: one that cannot hold any (a device, not a folder).
    static let noExternalDataFolder = "/dev/null"

    /// Appends the provider with its `device_id` and `options`. A provider this build lacks fails with ORT's own
    /// message, as kind `.providerUnavailable` listing the providers it has.
    private func appendProvider(_ provider: ExecutionProvider, options: [String: String]) throws(ORTError) {
        guard provider != .cpu else { return }
        let operation = "enabling execution provider \(provider)"
        do { try appendNonCPU(provider, options: options, operation: operation) } catch {
            let available = (try? library.availableProviders()) ?? []
            guard available.contains(provider.ortName) else {
                throw ORTError(
                    .providerUnavailable(requested: provider.description, available: available),
                    operation: operation, message: error.message)
            }
            throw error
        }
    }

    private func appendNonCPU(_ provider: ExecutionProvider, options: [String: String], operation: String)
        throws(ORTError)
    {
        let api = library.api.pointee
        let keys = ["device_id"] + options.keys.sorted()
        let values = keys.map { key in key == "device_id" ? "\(provider.deviceID)" : options[key]! }
        switch provider {
        case .cpu:
            return
        case .cuda:
            var cuda: OpaquePointer?
            try library.check(api.CreateCUDAProviderOptions!(&cuda), operation)
            defer { api.ReleaseCUDAProviderOptions!(cuda) }
            try updateOptions(keys: keys, values: values, operation: operation) { keys, values, n in
                api.UpdateCUDAProviderOptions!(cuda, keys, values, n)
            }
            try library.check(api.SessionOptionsAppendExecutionProvider_CUDA_V2!(handle, cuda), operation)
        case .tensorRT:
            var trt: OpaquePointer?
            try library.check(api.CreateTensorRTProviderOptions!(&trt), operation)
            defer { api.ReleaseTensorRTProviderOptions!(trt) }
            try updateOptions(keys: keys, values: values, operation: operation) { keys, values, n in
                api.UpdateTensorRTProviderOptions!(trt, keys, values, n)
            }
            try library.check(api.SessionOptionsAppendExecutionProvider_TensorRT_V2!(handle, trt), operation)
        }
    }

    private func updateOptions(
        keys: [String], values: [String], operation: String,
        _ update: (UnsafePointer<UnsafePointer<CChar>?>, UnsafePointer<UnsafePointer<CChar>?>, Int) -> OpaquePointer?
    ) throws(ORTError) {
        let cKeys = keys.map { UnsafePointer(strdup($0)) }
        let cValues = values.map { UnsafePointer(strdup($0)) }
        defer { (cKeys + cValues).forEach { free(UnsafeMutablePointer(mutating: $0)) } }
        let status = cKeys.withUnsafeBufferPointer { k in
            cValues.withUnsafeBufferPointer { v in update(k.baseAddress!, v.baseAddress!, keys.count) }
        }
        try library.check(status, operation)
    }

    deinit { library.api.pointee.ReleaseSessionOptions!(handle) }
}
