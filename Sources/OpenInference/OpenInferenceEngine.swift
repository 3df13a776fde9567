import Foundation
import HotSwap
import Primitives
import YOLO

/// The Open Inference Protocol (KServe v2 / Triton) over the slots, independent of the transport: a model is a slot,
/// its versions are the versions of the slot's active, staged and standby models.
///
/// Two input conventions:
/// - the raw ONNX input tensor (the model's input name, `FP32` or `FP16` `[1, 3, H, W]`, letterboxed and scaled as
///   the model expects): the model's first output comes back as it is, as Triton returns it;
/// - an encoded image (JPEG or PNG) as the one element of a `BYTES` tensor named `image` (in JSON, the file's base64
///   text is accepted too): the slot's whole pipeline runs, and the detections come back as `boxes` (`FP32 [N, 4]`,
///   x1 y1 x2 y2 in the image's pixels), `scores` (`FP32 [N]`), `classes` (`INT32 [N]`) and `class_names`
///   (`BYTES [N]`); the request parameters `conf`, `iou` and `max_det` are `/v1/detect`'s query parameters.
///
/// Thread-safety: all members may be used concurrently; the statistics are behind a lock.
public final class OpenInferenceEngine: Sendable {
    public let manager: ModelManager
    /// How long a request may wait for a worker (or, during a resource-preserving swap, for a model).
    public let requestTimeout: Duration
    /// Told of every image detection routed during a release, and of a variant's failures (the release counts them).
    private let observer: (any DetectionObserver)?
    private let statistics = Locked<[String: ModelStatistics]>([:])

    public static let platform = "onnxruntime_onnx"
    public static let imageInput = "image"
    public static let detectionOutputs = ["boxes", "scores", "classes", "class_names"]

    public init(manager: ModelManager, requestTimeout: Duration, observer: (any DetectionObserver)? = nil) {
        self.manager = manager
        self.requestTimeout = requestTimeout
        self.observer = observer
    }

    // MARK: Models

    /// The slot a model name names.
    public func slot(_ name: String) throws(InferError) -> ModelSlot {
        guard let slot = manager.slot(name) else { throw InferError(.notFound, "unknown model (slot) '\(name)'") }
        return slot
    }

    /// The slot's model with `version` (active, staged or standby), or its active model.
    public func model(_ name: String, version: String?) throws(InferError) -> ModelInstance {
        let roles = try slot(name).roles
        if let version {
            guard let model = roles.model(version: version) else {
                throw InferError(.notFound, "model '\(name)' has no version '\(version)' (loaded: "
                    + "\(versions(roles).joined(separator: ", ")))")
            }
            return model
        }
        guard let active = roles.active else { throw InferError(.notFound, "model '\(name)' has no active version") }
        return active
    }

    /// Whether the model (at that version) can serve now.
    public func isReady(_ name: String, version: String?) -> Bool { (try? model(name, version: version)) != nil }

    /// The versions a slot holds: active first, then staged and standby.
    public func versions(_ roles: SlotRoles) -> [String] {
        var seen: [String] = []
        for model in [roles.active, roles.staged, roles.standby].compactMap({ $0 })
        where !seen.contains(model.identity.version) {
            seen.append(model.identity.version)
        }
        return seen
    }

    public func metadata(_ name: String, version: String?) throws(InferError) -> ModelMetadata {
        let model = try model(name, version: version)
        let (inputs, outputs) = Self.tensors(model)
        let all = versions(try slot(name).roles)
        return ModelMetadata(name: name, versions: version.map { [$0] } ?? all,
            platform: Self.platform,
            inputs: inputs.map { .init(name: $0.name, datatype: $0.type.rawValue, shape: $0.shape) },
            outputs: outputs.map { .init(name: $0.name, datatype: $0.type.rawValue, shape: $0.shape) })
    }

    public func config(_ name: String, version: String?) throws(InferError) -> ModelConfig {
        let model = try model(name, version: version)
        let (inputs, outputs) = Self.tensors(model)
        let id = model.identity
        return ModelConfig(
            name: name, platform: Self.platform, backend: "onnxruntime", max_batch_size: 0,
            input: inputs.map { .init(name: $0.name, data_type: $0.type.configName, dims: $0.shape, optional: true) },
            output: outputs.map { .init(name: $0.name, data_type: $0.type.configName, dims: $0.shape, optional: nil) },
            parameters: ["model_id": .init(string_value: id.id), "sha256": .init(string_value: id.sha256),
                "provider": .init(string_value: model.execution.target.description)],
            version_policy: .init(specific: .init(versions: versions(try slot(name).roles))))
    }

    /// Statistics of every model, or of one (and one version).
    public func statistics(_ name: String?, version: String?) throws(InferError) -> [ModelStatistics] {
        if let name { _ = try slot(name) }
        return statistics.value.values
            .filter { s in (name == nil || s.name == name) && (version == nil || s.version == version) }
            .sorted { ($0.name, $0.version) < ($1.name, $1.version) }
    }

    /// The inputs and outputs a model takes and gives, in both conventions.
    static func tensors(_ model: ModelInstance) -> (
        inputs: [(name: String, type: InferDataType, shape: [Int])],
        outputs: [(name: String, type: InferDataType, shape: [Int])]
    ) {
        let backend = model.detector.backend
        let size = model.schema.inputSize
        let input = backend.inputs.first
        let output = backend.outputs.first
        return (
            [(input?.name ?? "images", input?.dataType == .float16 ? .fp16 : .fp32, [1, 3, size.height, size.width]),
             (imageInput, .bytes, [1])],
            [(output?.name ?? "output0", output?.dataType == .float16 ? .fp16 : .fp32, output?.shape ?? [-1]),
             ("boxes", .fp32, [-1, 4]), ("scores", .fp32, [-1]), ("classes", .int32, [-1]), ("class_names", .bytes, [-1])]
        )
    }

    // MARK: Inference

    /// Runs one request on the slot's routed model, or on the model with `version`.
    /// - Throws: `InferError` (the request's mistakes, unknown model or version), `SlotError` (overloaded,
    ///   unavailable), `DetectionError` (an undecodable image, a failed run).
    /// - Parameter arrived: when the request arrived (default: now); its deadline, `requestTimeout` later, counts
    ///   from then — the time its body took to arrive and be parsed is spent.
    public func infer(model name: String, version: String?, _ request: InferRequest,
                      arrived: ContinuousClock.Instant? = nil) async throws -> InferResponse {
        try await infer(model: name, version: version, request, arrived: arrived) { $0 }
    }

    /// Runs one request and turns the response into the caller's answer (the HTTP body, say) before counting it: a
    /// response the answer cannot carry (a non-finite output value in JSON) is counted as a failure, not a success.
    /// - Throws: as `infer(model:version:_:)`, and what `answer` throws.
    public func infer<Answer>(model name: String, version: String?, _ request: InferRequest,
                              arrived: ContinuousClock.Instant? = nil,
                              answer: (InferResponse) async throws -> Answer) async throws -> Answer {
        // The statistics count from now (queue and compute, as Triton's); the deadline from the arrival.
        let started = ContinuousClock.now
        let slot = try slot(name)
        guard request.inputs.count == 1, let input = request.inputs.first else {
            throw InferError.invalid("send exactly one input: the model's input tensor (FP32 [1,3,H,W]) or "
                + "'\(Self.imageInput)' (BYTES, one encoded image); got \(request.inputs.count)")
        }
        // Each output named once: a name repeated would copy the tensor into the answer once per repeat (a 20 MiB body
        // can name one 340 000 times), and before the model runs.
        var named = Set<String>()
        if let repeated = request.outputs.first(where: { !named.insert($0.name).inserted }) {
            throw InferError.invalid("output '\(repeated.name)' is asked for more than once")
        }
        // Triton's classification extension answers scores as "score:index" strings; answered with the raw tensor
        // instead, a client expecting strings would break later, on data it cannot read.
        if let asked = request.outputs.first(where: { $0.parameters["classification"] != nil }) {
            throw InferError.invalid("output '\(asked.name)': the classification extension is not supported (ask "
                + "for the output without it)")
        }
        let deadline = (arrived ?? started) + requestTimeout
        var servedVersion: String?
        do {
            let (outputs, stamp, queue): ([InferTensor], ModelStamp, Double)
            if input.datatype == .bytes {
                let options = try Self.detectionOptions(request.parameters)
                let image = try Self.imageBytes(input, decoded: request.imageTextDecoded)
                try Self.checkRequested(request.outputs, produced: Self.detectionOutputs)
                let detection = try await detect(image, options: options, on: slot, version: version,
                    deadline: deadline)
                (outputs, stamp, queue) = (Self.detectionTensors(detection.result.detections), detection.model,
                    detection.queueMilliseconds)
            } else {
                // A raw tensor is shaped for the active model (its metadata): during a release it is not routed to a
                // candidate, whose input size may differ.
                let choice: ModelChoice = version.map { .version($0) } ?? .routed(RoutingContext(preferActive: true))
                let run = try await slot.withModel(choice, deadline: deadline) { model in
                    try Self.runRaw(input, on: model, requested: request.outputs)
                }
                (outputs, stamp, queue) = (run.value, run.model, run.queueMilliseconds)
            }
            servedVersion = stamp.version
            let selected = try Self.select(outputs, request.outputs)
            let answered = try await answer(InferResponse(
                modelName: name, modelVersion: stamp.version, id: request.id,
                parameters: [("slot", .string(stamp.slot)), ("model_id", .string(stamp.id)),
                    ("sha256", .string(stamp.sha256)), ("generation", .int(Int64(stamp.generation))),
                    ("provider", .string(stamp.provider)), ("device", .string(stamp.device)),
                    ("queue_ms", .double(queue))],
                outputs: selected))
            record(name, stamp.version, started: started, queueMilliseconds: queue, failed: false)
            return answered
        } catch {
            // Under a version the slot has; none for a version it does not have (a version from the request alone
            // would add an entry per string sent).
            let roles = slot.roles
            if let counted = servedVersion ?? (version == nil ? roles.active?.identity.version
                : version.flatMap { roles.model(version: $0)?.identity.version }) {
                record(name, counted, started: started, queueMilliseconds: nil, failed: true)
            }
            throw error
        }
    }

    /// Detects objects in an encoded image on the routed model (or the one with `version`). During a release the
    /// answer is counted for its variant (and mirrored to a shadow candidate) through the observer, and an image the
    /// candidate failed is detected again on the active model, as `POST /v1/detect` does.
    private func detect(_ image: [UInt8], options: DetectionOptions, on slot: ModelSlot, version: String?,
                        deadline: ContinuousClock.Instant) async throws -> SlotDetection {
        var context = RoutingContext()
        let executor = slot.executor
        while true {
            let choice: ModelChoice = version.map { .version($0) } ?? .routed(context)
            do {
                let run = try await slot.withModel(choice, deadline: deadline) { model in
                    try model.detector.detect(imageBytes: image, options: options,
                        decodeInParallel: !executor.hasWorkBesidesOne)
                }
                let detection = SlotDetection(result: run.value, model: run.model, variant: run.variant,
                    queueMilliseconds: run.queueMilliseconds)
                if run.variant != nil {
                    observer?.answered(slot: slot.name, input: .encoded(image), options: options, key: nil,
                        detection: detection)
                }
                return detection
            } catch let routed as RoutedDetectionError {
                // An image that cannot be decoded is the client's error, whichever variant saw it.
                if case .decode = routed.error { throw routed.error }
                let retry = observer?.failed(slot: slot.name, variant: routed.variant, error: routed.error) ?? false
                guard retry, !context.preferActive else { throw routed.error }
                context.preferActive = true
            }
        }
    }

    /// Runs the model on a raw input tensor; returns its first output.
    /// - Parameter requested: the outputs asked for, checked before the model runs.
    static func runRaw(_ input: InferTensor, on model: ModelInstance, requested: [InferRequest.RequestedOutput] = [])
        throws -> [InferTensor]
    {
        let backend = model.detector.backend
        let inputName = backend.inputs.first?.name ?? "images"
        guard input.name == inputName else {
            throw InferError.invalid("unknown input '\(input.name)': this model takes '\(inputName)' (its input "
                + "tensor) or '\(imageInput)' (BYTES, an encoded image)")
        }
        let outputSpec = backend.outputs.first
        try checkRequested(requested, produced: [outputSpec?.name ?? "output0"])
        let size = model.schema.inputSize
        let expected = [1, 3, size.height, size.width]
        guard input.shape == expected else {
            throw InferError.invalid("input '\(input.name)' must have shape \(expected), got \(input.shape)")
        }
        let values = try input.floats()
        // NaN or infinity in the input would come back in the outputs, which JSON cannot carry.
        if let index = values.firstIndex(where: { !$0.isFinite }) {
            throw InferError.invalid("input '\(input.name)': element \(index) is \(values[index]), not a finite number")
        }
        do {
            let output = try backend.run(InputTensor(values: values, shape: expected))
            let floats = try output.withFloats { span in span.withUnsafeBufferPointer { Array($0) } }
            return [InferTensor.floats(outputSpec?.name ?? "output0", floats, shape: output.shape,
                half: outputSpec?.dataType == .float16)]
        } catch {
            throw DetectionError.inference(error)
        }
    }

    /// The detection outputs. A class id past INT32's range (a YOLOv10 class column of 2^32, say) is clamped: wrapped,
    /// it would read as class 0.
    static func detectionTensors(_ detections: [Detection]) -> [InferTensor] {
        let n = detections.count
        return [
            .floats("boxes", detections.flatMap { d in [d.box.x1, d.box.y1, d.box.x2, d.box.y2].map { Float($0) } },
                shape: [n, 4]),
            .floats("scores", detections.map(\.confidence), shape: [n]),
            .int32s("classes", detections.map { Int32(clamping: $0.classID) }, shape: [n]),
            .strings("class_names", detections.map(\.className), shape: [n]),
        ]
    }

    /// The outputs asked for, in the order asked; all when none is named.
    static func select(_ outputs: [InferTensor], _ requested: [InferRequest.RequestedOutput]) throws(InferError)
        -> [InferTensor]
    {
        try checkRequested(requested, produced: outputs.map(\.name))
        guard !requested.isEmpty else { return outputs }
        return requested.compactMap { wanted in outputs.first { $0.name == wanted.name } }
    }

    /// Refuses an output asked for that the request does not produce — before the model runs (Triton's order): it
    /// would spend a worker's run, and count a failure against the model, for an answer refused anyway.
    static func checkRequested(_ requested: [InferRequest.RequestedOutput], produced: [String]) throws(InferError) {
        if let unknown = requested.first(where: { !produced.contains($0.name) }) {
            throw .invalid("unknown output '\(unknown.name)'; this request produces "
                + produced.map { "'\($0)'" }.joined(separator: ", "))
        }
    }

    /// The one image of a `BYTES` input named `image`: the file's bytes, or their base64 text (line breaks and
    /// other white space in it, as `base64` writes every 76 characters, are skipped).
    /// - Parameter decoded: the text was decoded already (`InferRequest.decodingImageText()`).
    static func imageBytes(_ input: InferTensor, decoded: Bool = false) throws(InferError) -> [UInt8] {
        guard input.name == imageInput else {
            throw .invalid("a BYTES input must be named '\(imageInput)' (an encoded image), got '\(input.name)'")
        }
        guard let bytes = input.onlyByteElement else {
            let count = (try? InferTensor.elementCount(input.shape, name: input.name)).map(String.init) ?? "more"
            throw .invalid("input '\(imageInput)' must hold exactly one encoded image, got \(count)")
        }
        return decoded ? bytes : decodedImage(bytes)
    }

    /// An image's bytes as sent: the file itself (JPEG, PNG), or its base64 text decoded (ASCII white space skipped,
    /// as `base64` writes a line break every 76 characters; base64 has no other).
    static func decodedImage(_ bytes: [UInt8]) -> [UInt8] {
        guard !isImageFile(bytes) else { return bytes }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || (0x09...0x0D).contains($0) }
        let text = bytes.contains(where: isSpace) ? bytes.filter { !isSpace($0) } : bytes
        return Data(base64Encoded: Data(text)).map { [UInt8]($0) } ?? bytes
    }

    /// Whether `bytes` start as a JPEG or PNG file does (base64 text cannot: neither starts with a base64 character).
    static func isImageFile(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.starts(with: [0xFF, 0xD8]) || bytes.starts(with: [0x89, 0x50, 0x4E, 0x47])
    }

    /// `conf`, `iou` and `max_det`, checked as `/v1/detect` checks them.
    static func detectionOptions(_ parameters: [String: InferParameter]) throws(InferError) -> DetectionOptions {
        var options = DetectionOptions()
        for (key, range) in [("conf", 0.0...1.0), ("iou", 0.0...1.0)] {
            guard let parameter = parameters[key] else { continue }
            guard let value = parameter.number, range.contains(value) else {
                throw .invalid("parameter '\(key)' must be a number in [0, 1], got \(parameter)")
            }
            if key == "conf" { options.confidence = Float(value) } else { options.iou = Float(value) }
        }
        if let parameter = parameters["max_det"] {
            let limit = DetectionOptions.maxDetectionsLimit
            guard let value = parameter.number, value == value.rounded(), (1...Double(limit)).contains(value) else {
                throw .invalid("parameter 'max_det' must be an integer in 1...\(limit), got \(parameter)")
            }
            options.maxDetections = Int(value)
        }
        return options
    }

    private func record(_ name: String, _ version: String, started: ContinuousClock.Instant,
                        queueMilliseconds: Double?, failed: Bool) {
        let nanoseconds = Int((ContinuousClock.now - started).milliseconds * 1e6)
        statistics.withLock { all in
            var s = all["\(name)\u{0}\(version)"] ?? ModelStatistics(name: name, version: version)
            if failed {
                s.inference_stats.fail.add(nanoseconds)
            } else {
                s.inference_stats.success.add(nanoseconds)
                let queue = Int((queueMilliseconds ?? 0) * 1e6)
                s.inference_stats.queue.add(queue)
                s.inference_stats.compute_infer.add(max(0, nanoseconds - queue))
                s.inference_count += 1
                s.execution_count += 1
                s.last_inference = Int(Date().timeIntervalSince1970 * 1000)
            }
            all["\(name)\u{0}\(version)"] = s
        }
    }
}
