import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import NIOCore
import OpenInference
import Primitives

/// The Open Inference Protocol (KServe v2 / Triton) over HTTP/REST, what `tritonclient.http` speaks: health, server
/// and model metadata, Triton's model configuration and statistics, inference (JSON and the binary tensor data
/// extension), and Triton's model repository extension mapped to slots. A model is a slot; see `OpenInferenceEngine`.
///
/// Tokens and roles as for `/v1`: health and server metadata are open; model metadata, readiness and inference follow
/// `/v1/detect` (a viewer's token, none with `anonymous_detect`); statistics and the repository index need a viewer;
/// load and unload need an operator and are audited. Errors are answered as the protocol has them: `{"error": "…"}`
/// (see `Problem.response`).
struct V2Routes: Sendable {
    let api: APIRoutes
    let engine: OpenInferenceEngine
    var control: ControlPlane { api.control }
    var configuration: ServerConfiguration { api.configuration }
    var repository: OpenInferenceRepository { OpenInferenceRepository(control: control, configuration: configuration) }

    static let extensions = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]

    /// Large inference bodies' JSON is parsed here, one at a time, off the cooperative pool: a body's JSON `data` is
    /// decoded to one value per element (20 MiB of `0,` are 10 million), which on the pool would stall every other
    /// request on its thread, and side by side would multiply the memory. JSON up to `inlineParseBytes` (a binary
    /// tensor's header, whatever the binary data after it, an image) is parsed where it arrives: a binary request
    /// queued behind someone's 20 MiB of JSON waited seconds for what is a copy.
    private static let parsing = BlockingQueue(label: "yoloswap.v2-parse")
    private static let inlineParseBytes = 256 * 1024

    func register(on router: Router<YOLOSwapRequestContext>) {
        let v2 = router.group("v2")
        v2.get { _, _ in
            try api.json(ServerMetadata(name: "yoloswap", version: "2", extensions: Self.extensions), status: .ok)
        }
        v2.get("health/live") { _, _ in Response(status: .ok) }
        // Not ready is 400 as Triton answers it (clients look for 200 only).
        v2.get("health/ready") { _, _ in Response(status: serverReady ? .ok : .badRequest) }
        v2.get("models/stats") { _, context in
            _ = try api.require(.viewer, context)
            return try api.json(StatisticsList(model_stats: try engine.statistics(nil, version: nil)), status: .ok)
        }
        for prefix in ["models/:model", "models/:model/versions/:version"] {
            registerModel(on: v2, prefix)
        }
        registerRepository(on: v2)
    }

    /// Every configured slot has an active model (what `/readyz` answers).
    private var serverReady: Bool {
        control.hasStarted && configuration.slots.keys.allSatisfy { control.manager.slot($0)?.roles.active != nil }
    }

    /// Metadata, readiness, configuration, statistics and inference of one model, at `prefix` (with or without a
    /// version).
    private func registerModel(on v2: RouterGroup<YOLOSwapRequestContext>, _ prefix: String) {
        v2.get(RouterPath(prefix)) { _, context in
            try requireInferencePermission(context)
            let (model, version) = try names(context)
            return try api.json(try engine.metadata(model, version: version), status: .ok)
        }
        v2.get(RouterPath(prefix + "/ready")) { _, context in
            try requireInferencePermission(context)
            let (model, version) = try names(context)
            _ = try engine.slot(model)
            return Response(status: engine.isReady(model, version: version) ? .ok : .badRequest)
        }
        v2.get(RouterPath(prefix + "/config")) { _, context in
            try requireInferencePermission(context)
            let (model, version) = try names(context)
            return try api.json(try engine.config(model, version: version), status: .ok)
        }
        v2.get(RouterPath(prefix + "/stats")) { _, context in
            _ = try api.require(.viewer, context)
            let (model, version) = try names(context)
            return try api.json(StatisticsList(model_stats: try engine.statistics(model, version: version)),
                status: .ok)
        }
        v2.post(RouterPath(prefix + "/infer")) { request, context in
            try await infer(request, context)
        }
    }

    private func infer(_ request: Request, _ context: YOLOSwapRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        // Labelled by the slot only when there is one: a name from the URL would add a series per name sent.
        var slotLabel = "unknown"
        do {
            try requireInferencePermission(context)
            let (model, version) = try names(context)
            // An unknown model is answered before its body is read.
            _ = try engine.slot(model)
            slotLabel = model
            // The deadline counts from the request's arrival: reading the body spends it too.
            let deadline = started + .milliseconds(configuration.requestTimeoutMilliseconds)
            let body = try await readBody(by: deadline, timeoutMilliseconds: configuration.requestTimeoutMilliseconds) {
                [self] in try await collect(request)
            }
            let parsed = try await parse(body, headers: request.headers, deadline: deadline)
            let (response, modelID) = try await engine.infer(model: model, version: version, parsed.request,
                arrived: started) { result in
                (try await Self.encode(result, for: parsed),
                 result.parameters.first { $0.key == "model_id" }?.value.text)
            }
            api.control.recordRequest(slot: model, model: modelID, status: 200,
                milliseconds: (ContinuousClock.now - started).milliseconds)
            return response
        } catch {
            api.control.recordRequest(slot: slotLabel, model: nil, status: Int(Problem.from(error).status.code),
                milliseconds: (ContinuousClock.now - started).milliseconds)
            throw error
        }
    }

    /// The answer's body: encoded inline when what goes into JSON is small (binary outputs are copied, not encoded),
    /// else on a queue of its own — a raw output in JSON is one formatted number per element (yolov8's 84 × 8400),
    /// which on the pool would stall other requests.
    private static func encode(_ result: InferResponse, for parsed: V2InferCodec.Parsed) async throws -> Response {
        if V2InferCodec.jsonOutputBytes(result, for: parsed) <= inlineParseBytes {
            return try V2InferCodec.response(result, for: parsed)
        }
        return try await encoding.run { try V2InferCodec.response(result, for: parsed) }
    }
    private static let encoding = BlockingQueue(label: "yoloswap.v2-encode")

    /// Parses a body inline when its JSON part is small, else on the parse queue, where one whose deadline passed
    /// while it waited is answered 503 unparsed (its client has given up).
    private func parse(_ body: [UInt8], headers: HTTPFields, deadline: ContinuousClock.Instant) async throws
        -> V2InferCodec.Parsed
    {
        let timeout = configuration.requestTimeoutMilliseconds
        func queued(_ work: @escaping @Sendable () throws -> V2InferCodec.Parsed) async throws -> V2InferCodec.Parsed {
            try await Self.parsing.run {
                guard ContinuousClock.now < deadline else {
                    throw Problem(.serviceUnavailable, "Service Unavailable", detail: "the request waited past its "
                        + "deadline (\(timeout) ms) for other large bodies to be parsed")
                }
                return try work()
            }
        }
        let jsonBytes = headers[V2InferCodec.headerLength]
            .flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.map { min(max($0, 0), body.count) } ?? body.count
        guard jsonBytes <= Self.inlineParseBytes else {
            return try await queued {
                var parsed = try V2InferCodec.parse(body: body, headers: headers)
                parsed.request = parsed.request.decodingImageText()
                return parsed
            }
        }
        let parsed = try V2InferCodec.parse(body: body, headers: headers)
        // An image sent as base64 text in the binary part is decoded on the queue, as in a large JSON body.
        guard body.count > Self.inlineParseBytes, parsed.request.carriesImageText else { return parsed }
        return try await queued {
            var decoded = parsed
            decoded.request = decoded.request.decodingImageText()
            return decoded
        }
    }

    private func collect(_ request: Request) async throws -> [UInt8] {
        var buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: configuration.maxBodyBytes) } catch is NIOTooManyBytesError {
            throw Problem(.contentTooLarge, "Content Too Large",
                detail: "the body is larger than the limit of \(configuration.maxBodyBytes) bytes")
        }
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }

    // MARK: Repository

    private func registerRepository(on v2: RouterGroup<YOLOSwapRequestContext>) {
        v2.post("repository/index") { request, context in
            _ = try api.require(.viewer, context)
            let body = try await parameters(request)
            return try api.json(repository.index(readyOnly: body.ready ?? false), status: .ok)
        }
        v2.post("repository/models/:model/load") { request, context in
            let principal = try await api.requireOperator(request, context)
            // A malformed body is refused and audited, as `/v1`'s are.
            let values = try await api.parsedChange(request, context) { try await parameters(request).values }
            try await repository.load(slot: try context.parameters.require("model"), parameters: values,
                by: principal, from: context.remoteAddress)
            return Response(status: .ok)
        }
        v2.post("repository/models/:model/unload") { request, context in
            let principal = try await api.requireOperator(request, context)
            let force = try await api.parsedChange(request, context) {
                let body = try await parameters(request)
                return try api.boolParameter(request, "force") || body.values["force"]?.flag == true
            }
            try await repository.unload(slot: try context.parameters.require("model"), force: force, by: principal,
                from: context.remoteAddress)
            return Response(status: .ok)
        }
    }

    // MARK: Helpers

    /// Model metadata, readiness and inference are allowed to whoever may call `/v1/detect`.
    private func requireInferencePermission(_ context: YOLOSwapRequestContext) throws {
        if context.principal == nil, !configuration.anonymousDetect { _ = try api.require(.viewer, context) }
    }

    private func names(_ context: YOLOSwapRequestContext) throws -> (model: String, version: String?) {
        (try context.parameters.require("model"), context.parameters.get("version"))
    }

    /// A repository request's body: `{"parameters": {...}}` (and `ready` for the index); an empty body is none.
    private func parameters(_ request: Request) async throws -> ParameterBody {
        var buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: APIRoutes.maxJSONBytes) } catch is NIOTooManyBytesError {
            throw Problem(.contentTooLarge, "Content Too Large",
                detail: "a JSON body may have at most \(APIRoutes.maxJSONBytes) bytes")
        }
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        guard bytes.contains(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) else {
            return ParameterBody()
        }
        do { return try JSONNumbers.decode(ParameterBody.self, from: Data(bytes)) } catch {
            throw Problem.badRequest("invalid JSON body: \(Problem.describe(error))")
        }
    }
}

// MARK: Bodies

struct ServerMetadata: Encodable {
    var name: String
    var version: String
    var extensions: [String]
}

struct StatisticsList: Encodable { var model_stats: [ModelStatistics] }

/// `{"ready"?: bool, "parameters"?: {name: bool | number | string}}`.
struct ParameterBody: Decodable {
    var ready: Bool?
    var parameters: [String: V2Scalar?]?

    /// The parameters that have a value.
    var values: [String: InferParameter] { (parameters ?? [:]).compactMapValues { $0?.parameter } }
}
