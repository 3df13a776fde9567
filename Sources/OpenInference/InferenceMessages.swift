/// An inference request in the protocol's terms, whichever transport carried it.
///
/// Thread-safety: a value.
public struct InferRequest: Sendable {
    /// An output the client asks for, with its parameters (the HTTP transport reads `binary_data`).
    public struct RequestedOutput: Sendable {
        public var name: String
        public var parameters: [String: InferParameter]
        public init(name: String, parameters: [String: InferParameter] = [:]) {
            self.name = name
            self.parameters = parameters
        }
    }

    public var id: String?
    public var inputs: [InferTensor]
    /// The outputs asked for; empty: all of them.
    public var outputs: [RequestedOutput]
    /// `conf`, `iou`, `max_det` for the image convention; others are ignored.
    public var parameters: [String: InferParameter]
    /// Set by `decodingImageText()`: the image input is as the engine takes it, not to be decoded again (the text of
    /// a text would be, on the cooperative pool, and an image sent base64-encoded twice detected in a large body only).
    var imageTextDecoded = false

    /// The most inputs, outputs asked for, and parameters (of the request, of an input, of an output) a request may
    /// carry: what the service can use (one input holding one image, a few outputs and parameters) with room to spare.
    /// Each transport refuses more before the request reaches the engine.
    public static let maxInputs = 4, maxOutputs = 16, maxParameters = 32

    public init(id: String? = nil, inputs: [InferTensor], outputs: [RequestedOutput] = [],
                parameters: [String: InferParameter] = [:]) {
        self.id = id
        self.inputs = inputs
        self.outputs = outputs
        self.parameters = parameters
    }

    /// Whether the one input is an encoded image (a `BYTES` input named `image`, one element) sent as text to decode
    /// (base64) rather than as the file itself (JPEG, PNG), and not decoded yet.
    public var carriesImageText: Bool {
        guard !imageTextDecoded, inputs.count == 1, let input = inputs.first, input.datatype == .bytes,
              input.name == OpenInferenceEngine.imageInput, let element = input.onlyByteElementRange
        else { return false }
        // The first bytes only: the element may be 20 MiB.
        return !OpenInferenceEngine.isImageFile(input.raw[element.prefix(4)])
    }

    /// The request with an image sent as base64 text (the one element of a `BYTES` input named `image`) decoded to
    /// its bytes, as the engine would decode it: for a transport that parses large bodies off the cooperative pool to
    /// do this there too (decoding a 20 MiB text would hold a thread of the pool for a long while). Anything else is
    /// left as it is.
    public func decodingImageText() -> InferRequest {
        guard carriesImageText, let input = inputs.first, let text = input.onlyByteElement else { return self }
        var request = self
        let bytes = OpenInferenceEngine.decodedImage(text)
        if bytes == text {
            request.imageTextDecoded = true
            return request
        }
        guard let count = UInt32(exactly: bytes.count),
              let decoded = try? InferTensor(name: input.name, datatype: .bytes, shape: input.shape,
                  raw: withUnsafeBytes(of: count.littleEndian, Array.init) + bytes)
        else { return self }
        request.inputs = [decoded]
        request.imageTextDecoded = true
        return request
    }
}

/// An inference response: the model (slot) and version that ran, the model stamp as parameters, the outputs.
///
/// Thread-safety: a value.
public struct InferResponse: Sendable {
    public var modelName: String
    public var modelVersion: String
    public var id: String?
    /// The model stamp: `slot`, `model_id`, `sha256`, `generation`, `provider`, `device`, and `queue_ms`.
    public var parameters: [(key: String, value: InferParameter)]
    public var outputs: [InferTensor]
}

/// A model's metadata (`GET /v2/models/{model}`, gRPC `ModelMetadata`).
///
/// Thread-safety: a value.
public struct ModelMetadata: Sendable, Encodable {
    public struct Tensor: Sendable, Encodable {
        public var name: String
        public var datatype: String
        public var shape: [Int]
    }
    public var name: String
    public var versions: [String]
    public var platform: String
    public var inputs: [Tensor]
    public var outputs: [Tensor]
}

/// The subset of Triton's model configuration a client reads (`GET /v2/models/{model}/config`): tensors with their
/// `TYPE_*` names and dims, both input conventions marked optional, and the model stamp as parameters.
///
/// Thread-safety: a value.
public struct ModelConfig: Sendable, Encodable {
    public struct Tensor: Sendable, Encodable {
        public var name: String
        public var data_type: String
        public var dims: [Int]
        public var optional: Bool?
    }
    public struct Parameter: Sendable, Encodable { public var string_value: String }
    public struct VersionPolicy: Sendable, Encodable {
        public struct Specific: Sendable, Encodable { public var versions: [String] }
        public var specific: Specific
    }
    public var name: String
    public var platform: String
    public var backend: String
    public var max_batch_size: Int
    public var input: [Tensor]
    public var output: [Tensor]
    public var parameters: [String: Parameter]
    public var version_policy: VersionPolicy
}

/// Triton's per-model statistics (`GET /v2/models/{model}/stats`), counted since the service started.
///
/// Thread-safety: a value.
public struct ModelStatistics: Sendable, Encodable {
    public struct Duration: Sendable, Encodable {
        public var count: Int = 0
        public var ns: Int = 0
        mutating func add(_ nanoseconds: Int) {
            count += 1
            ns += nanoseconds
        }
    }
    public struct InferenceStats: Sendable, Encodable {
        public var success = Duration()
        public var fail = Duration()
        public var queue = Duration()
        public var compute_input = Duration()
        public var compute_infer = Duration()
        public var compute_output = Duration()
        public var cache_hit = Duration()
        public var cache_miss = Duration()
    }
    public var name: String
    public var version: String
    /// Milliseconds since the epoch of the last inference (0: none).
    public var last_inference: Int = 0
    public var inference_count: Int = 0
    public var execution_count: Int = 0
    public var inference_stats = InferenceStats()
    public var batch_stats: [String] = []
}
