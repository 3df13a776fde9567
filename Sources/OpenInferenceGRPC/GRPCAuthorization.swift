import GRPCCore
import GRPCProtobuf

/// Authorizes every RPC from its metadata before its message is read: a caller without the token a method needs is
/// refused before a byte of its message is decoded (decoding is lazy, after the interceptors), and methods that are
/// not served are refused before theirs is.
///
/// Thread-safety: a value over the service's thread-safe references.
struct AuthorizingInterceptor: ServerInterceptor {
    let service: InferenceService

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        try await service.authorize(context.descriptor, metadata: request.metadata, context: context)
        return try await next(request, context)
    }
}

/// `InferenceService` with the messages that carry repeated fields decoded behind `WireBounds`.
///
/// Thread-safety: a value over the service.
struct BoundedInferenceService: RegistrableRPCService {
    let service: InferenceService

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        service.registerMethods(with: &router)
        // Registered again: the router keeps the last handler for a method.
        let service = self.service
        typealias Methods = Inference_GRPCInferenceService.Method
        router.registerHandler(forMethod: Methods.ModelInfer.descriptor,
            deserializer: BoundedDeserializer<Inference_ModelInferRequest>(bounds: .modelInfer, method: "ModelInfer"),
            serializer: ProtobufSerializer<Inference_ModelInferResponse>()
        ) { request, context in
            // Called as the RPC begins, before its message has arrived: a message sent slowly over the stream's read
            // limit (a minute) got a fresh deadline once it was in, where HTTP counts the upload.
            let arrived = ContinuousClock.now
            return StreamingServerResponse(single: try await service.modelInfer(
                request: ServerRequest(stream: request), context: context, arrived: arrived))
        }
        router.registerHandler(forMethod: Methods.RepositoryModelLoad.descriptor,
            deserializer: BoundedDeserializer<Inference_RepositoryModelLoadRequest>(bounds: .repositoryModel,
                method: "RepositoryModelLoad"),
            serializer: ProtobufSerializer<Inference_RepositoryModelLoadResponse>()
        ) { request, context in try await service.repositoryModelLoad(request: request, context: context) }
        router.registerHandler(forMethod: Methods.RepositoryModelUnload.descriptor,
            deserializer: BoundedDeserializer<Inference_RepositoryModelUnloadRequest>(bounds: .repositoryModel,
                method: "RepositoryModelUnload"),
            serializer: ProtobufSerializer<Inference_RepositoryModelUnloadResponse>()
        ) { request, context in try await service.repositoryModelUnload(request: request, context: context) }
    }
}
