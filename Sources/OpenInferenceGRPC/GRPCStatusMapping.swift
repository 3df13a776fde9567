import GRPCCore
import Primitives
import Server

/// The one place errors become gRPC statuses: every error is first described as the HTTP API would
/// (`Problem.from`, with its client-facing detail), then its HTTP status picks the code Triton would answer with.
enum GRPCStatusMapping {
    /// The longest status message sent, in UTF-8 bytes.
    static let maxMessageBytes = 1024

    static func rpcError(_ error: any Error) -> RPCError {
        if let error = error as? RPCError { return error }
        let problem = Problem.from(error)
        let code: RPCError.Code =
            switch problem.status.code {
            case 400, 422: .invalidArgument
            case 401: .unauthenticated
            case 403: .permissionDenied
            case 404: .notFound
            case 408: .deadlineExceeded
            case 409: .failedPrecondition
            case 413: .resourceExhausted
            case 499: .cancelled
            case 503: .unavailable
            default: .internalError
            }
        // Cut: the message goes into the `grpc-message` trailer, and details quote names the client sent (any length
        // up to a message's size); clients refuse trailers much over 8 KiB.
        return RPCError(code: code, message: problem.detail.prefix(utf8Bytes: maxMessageBytes))
    }
}
