import Foundation
import OpenInference

// Conversions between the generated gRPC messages (`Inference_*`, from Triton's grpc_service.proto) and the
// transport-neutral `OpenInference` values. Everything read from a request is checked as the HTTP side checks it.

extension InferRequest {
    /// The request a `ModelInfer` message carries: inputs from `raw_input_contents` (what tritonclient sends) or from
    /// each input's typed `contents`.
    /// - Throws: `InferError.invalidArgument` for a shape that does not fit, contents that do not match it, raw
    ///   contents that do not pair with the inputs.
    init(_ message: Inference_ModelInferRequest) throws(InferError) {
        let raw = message.rawInputContents
        guard raw.isEmpty || raw.count == message.inputs.count else {
            throw .invalid("raw_input_contents has \(raw.count) entries for \(message.inputs.count) inputs")
        }
        var inputs: [InferTensor] = []
        for (index, input) in message.inputs.enumerated() {
            guard let datatype = InferDataType(rawValue: input.datatype) else {
                throw .invalid("input '\(input.name)': unknown datatype '\(input.datatype)'")
            }
            var shape: [Int] = []
            for dim in input.shape {
                guard let value = Int(exactly: dim) else { throw .invalid("input '\(input.name)': bad shape") }
                shape.append(value)
            }
            let bytes = raw.isEmpty ? try input.contents.raw(datatype, name: input.name) : [UInt8](raw[index])
            inputs.append(try InferTensor(name: input.name, datatype: datatype, shape: shape, raw: bytes))
        }
        self.init(
            id: message.id.isEmpty ? nil : message.id, inputs: inputs,
            outputs: message.outputs.map { .init(name: $0.name, parameters: $0.parameters.mapValues(InferParameter.init)) },
            parameters: message.parameters.mapValues(InferParameter.init))
    }
}

extension InferParameter {
    init(_ p: Inference_InferParameter) {
        switch p.parameterChoice {
        case .boolParam(let v): self = .bool(v)
        case .int64Param(let v): self = .int(v)
        case .stringParam(let v): self = .string(v)
        case .doubleParam(let v): self = .double(v)
        case .uint64Param(let v): self = v <= UInt64(Int64.max) ? .int(Int64(v)) : .double(Double(v))
        case nil: self = .string("")
        }
    }

    init(_ p: Inference_ModelRepositoryParameter) {
        switch p.parameterChoice {
        case .boolParam(let v): self = .bool(v)
        case .int64Param(let v): self = .int(v)
        case .stringParam(let v): self = .string(v)
        case .bytesParam(let v): self = .string(String(decoding: v, as: UTF8.self))
        case nil: self = .string("")
        }
    }

    var message: Inference_InferParameter {
        var p = Inference_InferParameter()
        switch self {
        case .bool(let v): p.boolParam = v
        case .int(let v): p.int64Param = v
        case .double(let v): p.doubleParam = v
        case .string(let v): p.stringParam = v
        }
        return p
    }
}

extension Inference_InferTensorContents {
    /// The typed contents as raw little-endian bytes of `datatype`.
    func raw(_ datatype: InferDataType, name: String) throws(InferError) -> [UInt8] {
        func bytes<T: BitwiseCopyable>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        switch datatype {
        case .bool: return boolContents.map { $0 ? 1 : 0 }
        case .int32: return bytes(intContents)
        case .int64: return bytes(int64Contents)
        case .uint32: return bytes(uintContents)
        case .uint64: return bytes(uint64Contents)
        case .fp32: return bytes(fp32Contents)
        case .fp64: return bytes(fp64Contents)
        case .bytes: return InferTensor.joinBytes(bytesContents.map { [UInt8]($0) })
        default:
            throw .invalid("input '\(name)': \(datatype.rawValue) must be sent in raw_input_contents")
        }
    }
}

extension Inference_ModelInferResponse {
    /// The message for a response: outputs in `raw_output_contents`, as Triton answers tritonclient.
    init(_ response: InferResponse) {
        self.init()
        modelName = response.modelName
        modelVersion = response.modelVersion
        id = response.id ?? ""
        for (key, value) in response.parameters { parameters[key] = value.message }
        for output in response.outputs {
            var tensor = Inference_ModelInferResponse.InferOutputTensor()
            tensor.name = output.name
            tensor.datatype = output.datatype.rawValue
            tensor.shape = output.shape.map(Int64.init)
            outputs.append(tensor)
            rawOutputContents.append(Data(output.raw))
        }
    }
}

extension Inference_ModelMetadataResponse {
    init(_ metadata: ModelMetadata) {
        self.init()
        name = metadata.name
        versions = metadata.versions
        platform = metadata.platform
        func tensor(_ t: ModelMetadata.Tensor) -> TensorMetadata {
            var m = TensorMetadata()
            m.name = t.name
            m.datatype = t.datatype
            m.shape = t.shape.map(Int64.init)
            return m
        }
        inputs = metadata.inputs.map(tensor)
        outputs = metadata.outputs.map(tensor)
    }
}

extension Inference_ModelConfig {
    init(_ config: ModelConfig) {
        self.init()
        name = config.name
        platform = config.platform
        backend = config.backend
        maxBatchSize = Int32(config.max_batch_size)
        input = config.input.map { t in
            var m = Inference_ModelInput()
            m.name = t.name
            m.dataType = Self.dataType(t.data_type)
            m.dims = t.dims.map(Int64.init)
            m.optional = t.optional ?? false
            return m
        }
        output = config.output.map { t in
            var m = Inference_ModelOutput()
            m.name = t.name
            m.dataType = Self.dataType(t.data_type)
            m.dims = t.dims.map(Int64.init)
            return m
        }
        for (key, value) in config.parameters {
            var p = Inference_ModelParameter()
            p.stringValue = value.string_value
            parameters[key] = p
        }
        // The proto's versions are integers; a slot's are strings (by default a digest's first 12 hex digits). Named
        // specifically only when each is an integer written as one (`012` would name version 12); else all of the
        // slot's versions are served, and named in the `versions` parameter.
        let versions = config.version_policy.specific.versions
        let numbers = versions.compactMap { v in Int64(v).flatMap { String($0) == v ? $0 : nil } }
        var policy = Inference_ModelVersionPolicy()
        if numbers.count == versions.count {
            var specific = Inference_ModelVersionPolicy.Specific()
            specific.versions = numbers
            policy.specific = specific
        } else {
            policy.all = Inference_ModelVersionPolicy.All()
            var p = Inference_ModelParameter()
            p.stringValue = versions.joined(separator: ",")
            parameters["versions"] = p
        }
        versionPolicy = policy
    }

    /// `TYPE_FP32` → `.typeFp32`, as the proto's enum names them.
    static func dataType(_ name: String) -> Inference_DataType {
        switch name {
        case "TYPE_BOOL": .typeBool
        case "TYPE_UINT8": .typeUint8
        case "TYPE_UINT16": .typeUint16
        case "TYPE_UINT32": .typeUint32
        case "TYPE_UINT64": .typeUint64
        case "TYPE_INT8": .typeInt8
        case "TYPE_INT16": .typeInt16
        case "TYPE_INT32": .typeInt32
        case "TYPE_INT64": .typeInt64
        case "TYPE_FP16": .typeFp16
        case "TYPE_FP32": .typeFp32
        case "TYPE_FP64": .typeFp64
        case "TYPE_STRING": .typeString
        default: .typeInvalid
        }
    }
}

extension Inference_ModelStatistics {
    init(_ s: ModelStatistics) {
        self.init()
        name = s.name
        version = s.version
        lastInference = UInt64(max(0, s.last_inference))
        inferenceCount = UInt64(max(0, s.inference_count))
        executionCount = UInt64(max(0, s.execution_count))
        func duration(_ d: ModelStatistics.Duration) -> Inference_StatisticDuration {
            var m = Inference_StatisticDuration()
            m.count = UInt64(max(0, d.count))
            m.ns = UInt64(max(0, d.ns))
            return m
        }
        var stats = Inference_InferStatistics()
        let i = s.inference_stats
        stats.success = duration(i.success)
        stats.fail = duration(i.fail)
        stats.queue = duration(i.queue)
        stats.computeInput = duration(i.compute_input)
        stats.computeInfer = duration(i.compute_infer)
        stats.computeOutput = duration(i.compute_output)
        inferenceStats = stats
    }
}
