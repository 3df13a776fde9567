import Foundation
import GRPCCore
import HotSwap
import Logging
import OpenInference
import Primitives
import Server

/// The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, wire-compatible with Triton's
/// grpc_service.proto, so that `tritonclient.grpc` works unchanged. The same engine as `/v2` over HTTP (one set of
/// statistics), the same tokens, roles and audit: the bearer token comes in the `authorization` metadata.
///
/// Health, metadata, configuration, statistics, `ModelInfer` (raw tensors and BYTES images, inputs in
/// `raw_input_contents` or typed contents, outputs in `raw_output_contents`), the repository index, load and unload
/// (`force` as a bool parameter, or the `x-yoloswap-force: true` metadata, which tritonclient can send). Streaming
/// inference, shared memory, trace and log settings answer UNIMPLEMENTED.
///
/// Thread-safety: a value over thread-safe references; every RPC may run concurrently.
public struct InferenceService: Inference_GRPCInferenceService.ServiceProtocol {
    let engine: OpenInferenceEngine
    let control: ControlPlane
    let configuration: ServerConfiguration
    let authenticator: TokenAuthenticator
    let repository: OpenInferenceRepository
    let logger: Logger

    public init(engine: OpenInferenceEngine, control: ControlPlane, configuration: ServerConfiguration,
                logger: Logger = Logger(label: "yoloswap.grpc")) {
        self.logger = logger
        self.engine = engine
        self.control = control
        self.configuration = configuration
        self.authenticator = TokenAuthenticator(configuration.tokens)
        self.repository = OpenInferenceRepository(control: control, configuration: configuration)
    }

    // MARK: Health and metadata

    public func serverLive(request: ServerRequest<Inference_ServerLiveRequest>, context: ServerContext) async throws
        -> ServerResponse<Inference_ServerLiveResponse>
    {
        var m = Inference_ServerLiveResponse()
        m.live = true
        return ServerResponse(message: m)
    }

    public func serverReady(request: ServerRequest<Inference_ServerReadyRequest>, context: ServerContext) async throws
        -> ServerResponse<Inference_ServerReadyResponse>
    {
        var m = Inference_ServerReadyResponse()
        m.ready = control.hasStarted
            && configuration.slots.keys.allSatisfy { control.manager.slot($0)?.roles.active != nil }
        return ServerResponse(message: m)
    }

    public func modelReady(request: ServerRequest<Inference_ModelReadyRequest>, context: ServerContext) async throws
        -> ServerResponse<Inference_ModelReadyResponse>
    {
        try await rpc {
            try requireInference(request.metadata)
            // A model that is not there is not ready (as Triton answers: clients poll this until a model is).
            var m = Inference_ModelReadyResponse()
            m.ready = engine.isReady(request.message.name, version: version(request.message.version))
            return m
        }
    }

    public func serverMetadata(request: ServerRequest<Inference_ServerMetadataRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_ServerMetadataResponse>
    {
        var m = Inference_ServerMetadataResponse()
        m.name = "yoloswap"
        m.version = "2"
        m.extensions = ["model_repository", "model_configuration", "statistics"]
        return ServerResponse(message: m)
    }

    public func modelMetadata(request: ServerRequest<Inference_ModelMetadataRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_ModelMetadataResponse>
    {
        try await rpc {
            try requireInference(request.metadata)
            let r = request.message
            return Inference_ModelMetadataResponse(try engine.metadata(r.name, version: version(r.version)))
        }
    }

    public func modelConfig(request: ServerRequest<Inference_ModelConfigRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_ModelConfigResponse>
    {
        try await rpc {
            try requireInference(request.metadata)
            var m = Inference_ModelConfigResponse()
            m.config = Inference_ModelConfig(try engine.config(request.message.name,
                version: version(request.message.version)))
            return m
        }
    }

    public func modelStatistics(request: ServerRequest<Inference_ModelStatisticsRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_ModelStatisticsResponse>
    {
        try await rpc {
            _ = try principal(request.metadata, needs: .viewer)
            let r = request.message
            var m = Inference_ModelStatisticsResponse()
            m.modelStats = try engine.statistics(r.name.isEmpty ? nil : r.name, version: version(r.version))
                .map(Inference_ModelStatistics.init)
            return m
        }
    }

    // MARK: Inference

    public func modelInfer(request: ServerRequest<Inference_ModelInferRequest>, context: ServerContext) async throws
        -> ServerResponse<Inference_ModelInferResponse>
    {
        try await modelInfer(request: request, context: context, arrived: .now)
    }

    /// - Parameter arrived: when the RPC began (its deadline counts from then, as over HTTP from a request's arrival:
    ///   the message's own upload spends it).
    func modelInfer(request: ServerRequest<Inference_ModelInferRequest>, context: ServerContext,
                    arrived: ContinuousClock.Instant) async throws -> ServerResponse<Inference_ModelInferResponse>
    {
        try await rpc {
            try requireInference(request.metadata)
            let message = request.message
            // Counted as `/v1/detect` and `/v2` count theirs (the request metrics, the console's request panel).
            let slot = engine.manager.slot(message.modelName) == nil ? "unknown" : message.modelName
            do {
                let response = try await engine.infer(model: message.modelName,
                    version: version(message.modelVersion), try await inferRequest(message, arrived: arrived),
                    arrived: arrived)
                control.recordRequest(slot: slot, model: response.parameters.first { $0.key == "model_id" }?.value.text,
                    status: 200, milliseconds: (ContinuousClock.now - arrived).milliseconds)
                return Inference_ModelInferResponse(response)
            } catch {
                control.recordRequest(slot: slot, model: nil, status: Int(Problem.from(error).status.code),
                    milliseconds: (ContinuousClock.now - arrived).milliseconds)
                throw error
            }
        }
    }

    /// What typed contents hold once converted to raw bytes.
    private static func tensorBytes(_ c: Inference_InferTensorContents) -> Int {
        let elements: Int = c.bytesContents.reduce(0) { $0 + $1.count } + c.boolContents.count
        let narrow: Int = 4 * (c.intContents.count + c.uintContents.count + c.fp32Contents.count)
        let wide: Int = 8 * (c.int64Contents.count + c.uint64Contents.count + c.fp64Contents.count)
        return elements + narrow + wide
    }

    /// Messages whose tensors hold more than this are converted (and a base64 image decoded) on `parsing`.
    static let inlineTensorBytes = 256 * 1024
    /// Converts large messages one at a time, off the cooperative pool (decoding a 20 MiB base64 image would hold a
    /// pool thread for long), as `/v2` parses its large bodies: side by side they would multiply the memory.
    private static let parsing = BlockingQueue(label: "yoloswap.grpc-parse")

    /// The request a message carries, with a base64 image decoded; a large message converted on `parsing`, where one
    /// whose deadline passed while it waited is refused unconverted (its client has given up).
    private func inferRequest(_ message: Inference_ModelInferRequest, arrived: ContinuousClock.Instant) async throws
        -> InferRequest
    {
        // Raw contents, BYTES elements, and typed numbers (at their decoded width: converted to raw bytes here).
        let tensorBytes = message.rawInputContents.reduce(0) { $0 + $1.count }
            + message.inputs.reduce(0) { $0 + Self.tensorBytes($1.contents) }
        guard tensorBytes > Self.inlineTensorBytes else { return try InferRequest(message) }
        let timeout = configuration.requestTimeoutMilliseconds
        let deadline = arrived + .milliseconds(timeout)
        return try await Self.parsing.run {
            guard ContinuousClock.now < deadline else {
                // A Problem (503), as `/v2` answers: counted as 503 in the request metrics, UNAVAILABLE to the client.
                throw Problem(.serviceUnavailable, "Service Unavailable", detail: "the request's deadline (\(timeout) "
                    + "ms, from the call's start) passed while its message arrived or waited for other large messages "
                    + "to be converted")
            }
            return try InferRequest(message).decodingImageText()
        }
    }

    public func modelStreamInfer(
        request: StreamingServerRequest<Inference_ModelInferRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<Inference_ModelStreamInferResponse> {
        throw Self.streamingUnimplemented
    }

    static let streamingUnimplemented = RPCError(code: .unimplemented,
        message: "streaming inference is not served; use ModelInfer")

    // MARK: Repository

    public func repositoryIndex(request: ServerRequest<Inference_RepositoryIndexRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_RepositoryIndexResponse>
    {
        try await rpc {
            _ = try principal(request.metadata, needs: .viewer)
            var m = Inference_RepositoryIndexResponse()
            m.models = repository.index(readyOnly: request.message.ready).map { entry in
                var model = Inference_RepositoryIndexResponse.ModelIndex()
                model.name = entry.name
                model.version = entry.version ?? ""
                model.state = entry.state
                model.reason = entry.reason
                return model
            }
            return m
        }
    }

    public func repositoryModelLoad(
        request: ServerRequest<Inference_RepositoryModelLoadRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_RepositoryModelLoadResponse> {
        try await rpc {
            let principal = try await requireOperator(request.metadata, action: "load", context: context)
            try await repository.load(slot: request.message.modelName,
                parameters: request.message.parameters.mapValues(InferParameter.init), by: principal,
                from: remote(context))
            return Inference_RepositoryModelLoadResponse()
        }
    }

    public func repositoryModelUnload(
        request: ServerRequest<Inference_RepositoryModelUnloadRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_RepositoryModelUnloadResponse> {
        try await rpc {
            let principal = try await requireOperator(request.metadata, action: "unload", context: context)
            let parameters = request.message.parameters.mapValues(InferParameter.init)
            let force = parameters["force"]?.flag == true
                || request.metadata[stringValues: "x-yoloswap-force"].contains("true")
            try await repository.unload(slot: request.message.modelName, force: force, by: principal,
                from: remote(context))
            return Inference_RepositoryModelUnloadResponse()
        }
    }

    // MARK: Not served

    public func systemSharedMemoryStatus(
        request: ServerRequest<Inference_SystemSharedMemoryStatusRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_SystemSharedMemoryStatusResponse> { throw Self.unimplemented }

    public func systemSharedMemoryRegister(
        request: ServerRequest<Inference_SystemSharedMemoryRegisterRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_SystemSharedMemoryRegisterResponse> { throw Self.unimplemented }

    public func systemSharedMemoryUnregister(
        request: ServerRequest<Inference_SystemSharedMemoryUnregisterRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_SystemSharedMemoryUnregisterResponse> { throw Self.unimplemented }

    public func cudaSharedMemoryStatus(
        request: ServerRequest<Inference_CudaSharedMemoryStatusRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_CudaSharedMemoryStatusResponse> { throw Self.unimplemented }

    public func cudaSharedMemoryRegister(
        request: ServerRequest<Inference_CudaSharedMemoryRegisterRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_CudaSharedMemoryRegisterResponse> { throw Self.unimplemented }

    public func cudaSharedMemoryUnregister(
        request: ServerRequest<Inference_CudaSharedMemoryUnregisterRequest>, context: ServerContext
    ) async throws -> ServerResponse<Inference_CudaSharedMemoryUnregisterResponse> { throw Self.unimplemented }

    public func traceSetting(request: ServerRequest<Inference_TraceSettingRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_TraceSettingResponse> { throw Self.unimplemented }

    public func logSettings(request: ServerRequest<Inference_LogSettingsRequest>, context: ServerContext)
        async throws -> ServerResponse<Inference_LogSettingsResponse> { throw Self.unimplemented }

    static let unimplemented = RPCError(code: .unimplemented,
        message: "shared memory, trace and log settings are not served by yoloswap")

    // MARK: Authorization

    /// What each method needs, checked from the metadata before the message is read (`AuthorizingInterceptor`);
    /// the handlers check again, for the caller's name. Methods not served are refused here, unread.
    func authorize(_ method: MethodDescriptor, metadata: Metadata, context: ServerContext) async throws {
        guard method.service == Inference_GRPCInferenceService.descriptor else { return }
        switch method.method {
        case "ServerLive", "ServerReady", "ServerMetadata": return
        case "ModelReady", "ModelMetadata", "ModelConfig", "ModelInfer": try requireInference(metadata)
        case "ModelStatistics", "RepositoryIndex": _ = try principal(metadata, needs: .viewer)
        case "RepositoryModelLoad": _ = try await requireOperator(metadata, action: "load", context: context)
        case "RepositoryModelUnload": _ = try await requireOperator(metadata, action: "unload", context: context)
        case "ModelStreamInfer": throw Self.streamingUnimplemented
        default: throw Self.unimplemented
        }
    }

    // MARK: Helpers

    /// Runs an RPC's body; its errors become gRPC statuses (`GRPCStatusMapping`), and an internal one is logged
    /// (its status tells the client the log has the details).
    private func rpc<M: Sendable>(_ body: () async throws -> M) async throws -> ServerResponse<M> {
        do { return ServerResponse(message: try await body()) } catch {
            let mapped = GRPCStatusMapping.rpcError(error)
            if mapped.code == .internalError {
                let described = String(describing: error).prefix(utf8Bytes: 4096)
                logger.error("gRPC call failed", metadata: ["error": "\(described)"])
            }
            throw mapped
        }
    }

    /// An empty version is none (the active model).
    private func version(_ text: String) -> String? { text.isEmpty ? nil : text }

    private func remote(_ context: ServerContext) -> String { context.remotePeer }

    /// Metadata, readiness and inference: whoever may call `/v1/detect`.
    private func requireInference(_ metadata: Metadata) throws {
        _ = try principal(metadata, needs: configuration.anonymousDetect ? nil : .viewer)
    }

    /// The caller, authenticated from `authorization: Bearer <token>`, with at least `role` (none needed: nil).
    private func principal(_ metadata: Metadata, needs role: Role?) throws -> Principal? {
        let principal = try authenticated(metadata, needs: role)
        if let role, let principal, principal.role < role {
            throw RPCError(code: .permissionDenied,
                message: "'\(principal.name)' has role \(principal.role.rawValue); this needs \(role.rawValue)")
        }
        return principal
    }

    /// The caller named by a valid bearer token, whatever its role; nil without a token when none is needed.
    private func authenticated(_ metadata: Metadata, needs role: Role?) throws -> Principal? {
        guard let header = metadata[stringValues: "authorization"].first(where: { _ in true }) else {
            guard let role else { return nil }
            if authenticator.isEmpty {
                throw RPCError(code: .permissionDenied, message: "no tokens are configured: this call is disabled "
                    + "(add tokens to the configuration); it needs \(role.rawValue)")
            }
            throw RPCError(code: .unauthenticated, message: "this call needs a bearer token")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer",
            let principal = authenticator.authenticate(token: parts[1].trimmingCharacters(in: .whitespaces))
        else { throw RPCError(code: .unauthenticated, message: "unknown or malformed bearer token") }
        return principal
    }

    /// An operator's call that changes the service; a refusal is recorded in the audit log, as over HTTP.
    private func requireOperator(_ metadata: Metadata, action: String, context: ServerContext) async throws
        -> Principal
    {
        do {
            guard let principal = try principal(metadata, needs: .operator) else {
                throw RPCError(code: .unauthenticated, message: "this call needs a bearer token")
            }
            return principal
        } catch let error as RPCError {
            // Recorded under the caller's name when its token is valid (a viewer's), as over HTTP.
            await control.auditRefusal((try? authenticated(metadata, needs: nil)) ?? nil, remote(context),
                action: "gRPC \(action)", reason: "\(error.code) \(error.message)")
            throw error
        }
    }
}
