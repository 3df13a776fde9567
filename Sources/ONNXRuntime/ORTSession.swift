internal import CONNXRuntime
import Foundation

/// A model's custom metadata (`metadata_props`) and descriptive fields.
public struct ModelMetadata: Sendable, Equatable {
    public var producer: String
    public var graphName: String
    public var description: String
    public var version: Int64
    /// The custom key/value map, e.g. Ultralytics' `names`, `stride`, `imgsz`, `task`.
    public var custom: [String: String]

    public init(producer: String = "", graphName: String = "", description: String = "", version: Int64 = 0,
                custom: [String: String] = [:]) {
        self.producer = producer
        self.graphName = graphName
        self.description = description
        self.version = version
        self.custom = custom
    }
}

/// An ONNX Runtime inference session: one loaded model with its own thread pool and memory.
///
/// Created from an in-memory byte buffer, so a checksum or signature verified on those bytes covers exactly what is
/// loaded (ORT copies the bytes; the caller may free them afterwards), or from a file this process wrote itself.
///
/// Thread-safety: ORT allows concurrent `Run` calls on one session, so `run` may be called from many threads at once.
/// Everything else is immutable after init. The session is released in `deinit`, which therefore must not run while a
/// `run` is in flight — callers guarantee that by holding a strong reference for the duration of each call.
public final class ORTSession: @unchecked Sendable {
    // @unchecked: the OrtSession handle is thread-safe for Run (ORT's documented contract) and read-only otherwise;
    // all stored properties are immutable.
    public let environment: ORTEnvironment
    public let options: SessionOptions
    public let inputs: [TensorInfo]
    public let outputs: [TensorInfo]
    public let metadata: ModelMetadata
    let handle: OpaquePointer
    private let memoryInfo: OpaquePointer
    private let outputNames: [String]
    private var library: ORTLibrary { environment.library }

    /// Creates a session from model bytes.
    /// - Parameters:
    ///   - bytes: the complete ONNX file.
    ///   - environment: the ORT environment.
    ///   - options: threads, optimization level, execution provider.
    ///   - label: names the model in error messages (a path or id).
    /// - Throws: `ORTError` with ORT's message (invalid model, unsupported operator, provider not available, tensor
    ///   data in external files, ...).
    public convenience init(bytes: some ContiguousBytes, environment: ORTEnvironment,
                            options: SessionOptions = .init(), label: String = "model") throws(ORTError) {
        let count = bytes.withUnsafeBytes { $0.count }
        try self.init(environment: environment, options: options, label: label,
            operation: "creating a session for \(label) from \(count) bytes") { api, env, native, session in
            bytes.withUnsafeBytes { raw in
                api.CreateSessionFromArray!(env, raw.baseAddress, raw.count, native, &session)
            }
        }
    }

    /// Creates a session from a model file that ORT reads itself (streamed, without a whole-file buffer).
    ///
    /// For files this process wrote and checked, such as optimized models (see `SessionOptions.optimizedModelPath`):
    /// unlike `init(bytes:)`, nothing ties what ORT reads to bytes the caller verified.
    /// - Throws: `ORTError` with ORT's message (missing file, invalid model, ...).
    public convenience init(path: String, environment: ORTEnvironment, options: SessionOptions = .init(),
                            label: String? = nil) throws(ORTError) {
        try self.init(environment: environment, options: options, label: label ?? path,
            operation: "creating a session from \(path)") { api, env, native, session in
            api.CreateSession!(env, path, native, &session)
        }
    }

    private init(
        environment: ORTEnvironment, options: SessionOptions, label: String, operation: String,
        create: (OrtApi, OpaquePointer, OpaquePointer, inout OpaquePointer?) -> OpaquePointer?
    ) throws(ORTError) {
        self.environment = environment
        self.options = options
        let library = environment.library
        let api = library.api.pointee
        let native = try NativeSessionOptions(options, library: library)
        var session: OpaquePointer?
        // Alive until ORT has read it: its last Swift use is reading the handle.
        let status = withExtendedLifetime(native) { create(api, environment.handle, native.handle, &session) }
        do { try library.check(status, operation) } catch {
            throw Self.explainingExternalData(error)
        }
        self.handle = session!

        var memoryInfo: OpaquePointer?
        do {
            try library.check(
                api.CreateCpuMemoryInfo!(OrtArenaAllocator, OrtMemTypeDefault, &memoryInfo), "creating CPU memory info")
            let introspection = try Introspection(library: library, session: session!, label: label)
            self.inputs = introspection.inputs
            self.outputs = introspection.outputs
            self.metadata = introspection.metadata
        } catch {
            if let memoryInfo { api.ReleaseMemoryInfo!(memoryInfo) }
            api.ReleaseSession!(session)
            throw error
        }
        self.memoryInfo = memoryInfo!
        self.outputNames = outputs.map(\.name)
    }

    /// ORT's refusal of a model with external data (see `NativeSessionOptions`), with why it is refused in front.
    private static func explainingExternalData(_ error: ORTError) -> ORTError {
        guard error.message.contains("External data") else { return error }
        var explained = error
        explained.message = "the model keeps tensor data in external files, which are never read (a model must hold "
            + "all its tensors in the file that was verified): " + error.message
        return explained
    }

    deinit {
        library.api.pointee.ReleaseMemoryInfo!(memoryInfo)
        library.api.pointee.ReleaseSession!(handle)
    }

    /// Runs the model on one input tensor and returns every output.
    /// - Parameters:
    ///   - input: the tensor; its shape must fit the model's input.
    ///   - name: the input's name; defaults to the model's first input.
    /// - Throws: `ORTError` with ORT's message (wrong shape, wrong type, ...).
    public func run(_ input: TensorInput, name: String? = nil, terminator: RunTerminator? = nil) throws(ORTError)
        -> [TensorOutput]
    {
        let inputName = name ?? inputs.first?.name ?? "images"
        let api = library.api.pointee
        var value: OpaquePointer?
        let shape = input.shape.map(Int64.init)
        var outputValues = [OpaquePointer?](repeating: nil, count: outputNames.count)
        let status: OpaquePointer? = withCStrings([inputName] + outputNames) { cNames in
            let runWith: (UnsafeMutableRawPointer, Int, ONNXTensorElementDataType) -> OpaquePointer? = {
                data, byteCount, type in
                if let status = api.CreateTensorWithDataAsOrtValue!(
                    self.memoryInfo, data, byteCount, shape, shape.count, type, &value)
                {
                    return status
                }
                defer { api.ReleaseValue!(value) }
                var inputValue: OpaquePointer? = value
                return cNames.withUnsafeBufferPointer { names in
                    api.Run!(
                        self.handle, terminator?.handle, names.baseAddress, &inputValue, 1, names.baseAddress! + 1,
                        self.outputNames.count, &outputValues)
                }
            }
            switch input {
            case .float(let floats, _):
                return floats.withUnsafeBytes { raw in
                    runWith(UnsafeMutableRawPointer(mutating: raw.baseAddress!), raw.count,
                        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
                }
            case .float16(let halves, _):
                return halves.withUnsafeBytes { raw in
                    runWith(UnsafeMutableRawPointer(mutating: raw.baseAddress!), raw.count,
                        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)
                }
            }
        }
        do {
            try library.check(status, "running the session (input '\(inputName)' shape \(input.shape))")
        } catch {
            outputValues.forEach { if let v = $0 { api.ReleaseValue!(v) } }
            throw error
        }
        var results: [TensorOutput] = []
        results.reserveCapacity(outputValues.count)
        for (index, value) in outputValues.enumerated() {
            // TensorOutput releases its value even when it throws; release the rest here.
            do {
                results.append(try TensorOutput(library: library, value: value!, name: outputNames[index]))
            } catch {
                outputValues[(index + 1)...].forEach { if let v = $0 { api.ReleaseValue!(v) } }
                throw error
            }
        }
        return results
    }
}

/// Lets another thread abort a `run` in flight (ORT's `RunOptionsSetTerminate`): the run then fails with an error.
///
/// Thread-safety: `terminate()` may be called from any thread, before or during the run it is passed to.
public final class RunTerminator: @unchecked Sendable {
    // @unchecked: OrtRunOptions' terminate flag is designed to be set from another thread while Run reads it; the
    // handle itself is immutable and released in deinit, after the run that holds this object has returned.
    let library: ORTLibrary
    let handle: OpaquePointer

    public init(library: ORTLibrary) throws(ORTError) {
        self.library = library
        var options: OpaquePointer?
        try library.check(library.api.pointee.CreateRunOptions!(&options), "creating run options")
        self.handle = options!
    }

    /// Asks the run using this terminator to stop as soon as possible.
    public func terminate() {
        library.ignore(library.api.pointee.RunOptionsSetTerminate!(handle))
    }

    deinit { library.api.pointee.ReleaseRunOptions!(handle) }
}

/// Calls `body` with C strings for `strings`, freed afterwards.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let pointers = strings.map { UnsafePointer(strdup($0)) }
    defer { pointers.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    return body(pointers)
}

// MARK: - Introspection

/// Reads a session's inputs, outputs and metadata once, at creation.
private struct Introspection {
    var inputs: [TensorInfo] = []
    var outputs: [TensorInfo] = []
    var metadata = ModelMetadata()

    init(library: ORTLibrary, session: OpaquePointer, label: String) throws(ORTError) {
        let api = library.api.pointee
        var allocator: UnsafeMutablePointer<OrtAllocator>?
        try library.check(api.GetAllocatorWithDefaultOptions!(&allocator), "getting the default allocator")
        func take(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
            guard let pointer else { return "" }
            defer { library.ignore(api.AllocatorFree!(allocator, pointer)) }
            return String(cString: pointer)
        }

        for isInput in [true, false] {
            var count = 0
            try library.check(
                isInput ? api.SessionGetInputCount!(session, &count) : api.SessionGetOutputCount!(session, &count),
                "counting the model's \(isInput ? "inputs" : "outputs") (\(label))")
            for index in 0..<count {
                var rawName: UnsafeMutablePointer<CChar>?
                var typeInfo: OpaquePointer?
                try library.check(
                    isInput ? api.SessionGetInputName!(session, index, allocator, &rawName)
                        : api.SessionGetOutputName!(session, index, allocator, &rawName), "reading a tensor name")
                let name = take(rawName)
                try library.check(
                    isInput ? api.SessionGetInputTypeInfo!(session, index, &typeInfo)
                        : api.SessionGetOutputTypeInfo!(session, index, &typeInfo), "reading '\(name)' type info")
                defer { api.ReleaseTypeInfo!(typeInfo) }
                var tensorInfo: OpaquePointer?
                try library.check(api.CastTypeInfoToTensorInfo!(typeInfo, &tensorInfo), "reading '\(name)' tensor info")
                guard let tensorInfo else {
                    throw ORTError(.invalidTensor, operation: "reading '\(name)' of \(label)", message: "not a tensor")
                }
                var type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                var dimCount = 0
                let reading = "reading '\(name)' tensor info (\(label))"
                try library.check(api.GetTensorElementType!(tensorInfo, &type), reading)
                try library.check(api.GetDimensionsCount!(tensorInfo, &dimCount), reading)
                var dims = [Int64](repeating: 0, count: dimCount)
                try library.check(api.GetDimensions!(tensorInfo, &dims, dimCount), reading)
                var symbolic = [UnsafePointer<CChar>?](repeating: nil, count: dimCount)
                try library.check(api.GetSymbolicDimensions!(tensorInfo, &symbolic, dimCount), reading)
                let info = TensorInfo(
                    name: name, elementType: TensorElementType(type), shape: dims.map { Int($0) },
                    symbolicShape: symbolic.map { $0.map { String(cString: $0) } ?? "" })
                if isInput { inputs.append(info) } else { outputs.append(info) }
            }
        }

        var meta: OpaquePointer?
        try library.check(api.SessionGetModelMetadata!(session, &meta), "reading model metadata (\(label))")
        defer { api.ReleaseModelMetadata!(meta) }
        // Optional fields: one that cannot be read is left empty (its status released, not leaked).
        func succeeded(_ status: OpaquePointer?) -> Bool {
            guard let status else { return true }
            api.ReleaseStatus!(status)
            return false
        }
        var text: UnsafeMutablePointer<CChar>?
        if succeeded(api.ModelMetadataGetProducerName!(meta, allocator, &text)) { metadata.producer = take(text) }
        if succeeded(api.ModelMetadataGetGraphName!(meta, allocator, &text)) { metadata.graphName = take(text) }
        if succeeded(api.ModelMetadataGetDescription!(meta, allocator, &text)) { metadata.description = take(text) }
        if !succeeded(api.ModelMetadataGetVersion!(meta, &metadata.version)) { metadata.version = 0 }
        var keys: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        var keyCount: Int64 = 0
        try library.check(
            api.ModelMetadataGetCustomMetadataMapKeys!(meta, allocator, &keys, &keyCount), "reading metadata keys")
        if let keys {
            for i in 0..<Int(keyCount) {
                let key = take(keys[i])
                var value: UnsafeMutablePointer<CChar>?
                if succeeded(api.ModelMetadataLookupCustomMetadataMap!(meta, allocator, key, &value)) {
                    metadata.custom[key] = take(value)
                }
            }
            library.ignore(api.AllocatorFree!(allocator, keys))
        }
    }
}
