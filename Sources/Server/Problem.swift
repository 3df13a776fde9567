import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import ImageCodecs
import NIOCore
import NIOHTTP1
import Releases
import OpenInference
import Primitives
import YOLO

/// An error answered as RFC 9457 problem details: `application/problem+json` with type, title, status, detail.
public struct Problem: HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var title: String
    public var detail: String
    /// Seconds, for 503 overloaded.
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ title: String, detail: String, retryAfter: Int? = nil) {
        self.status = status
        self.title = title
        self.detail = detail
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status.code) \(title): \(detail)" }

    /// The answer: problem details, or under `/v2` the Open Inference Protocol's `{"error": "<detail>"}` (what
    /// `tritonclient` reads), with the same status.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        if request.uri.path == "/v2" || request.uri.path.hasPrefix("/v2/") {
            let data = try JSONSerialization.data(withJSONObject: ["error": detail], options: [.withoutEscapingSlashes])
            var headers: HTTPFields = [.contentType: "application/json"]
            if let retryAfter { headers[.retryAfter] = String(retryAfter) }
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        let body: [String: Any] = [
            "type": "about:blank", "title": title, "status": Int(status.code), "detail": detail,
            "instance": request.uri.path,
        ]
        let data = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func badRequest(_ detail: String) -> Problem { Problem(.badRequest, "Bad Request", detail: detail) }
    static func notFound(_ detail: String) -> Problem { Problem(.notFound, "Not Found", detail: detail) }
    static func conflict(_ detail: String) -> Problem { Problem(.conflict, "Conflict", detail: detail) }

    /// The one place errors of the layers below become HTTP statuses.
    package static func from(_ error: any Error) -> Problem {
        switch error {
        case let problem as Problem:
            return problem
        case is CancellationError:
            // The caller gave up (a cancelled task: an RPC whose client cancelled or whose deadline passed) before the
            // work ran: nginx's 499, not a failure of the service.
            return Problem(HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"), "Cancelled",
                detail: "the request was cancelled before it ran")
        case let error as HTTPError:
            return Problem(error.status, error.status.reasonPhrase, detail: error.body ?? error.status.reasonPhrase)
        case let routed as RoutedDetectionError:
            return from(routed.error)
        case let error as ReleaseError:
            switch error {
            case .invalid(let m): return .badRequest(m)
            case .notFound(let m): return .notFound(m)
            case .conflict(let m): return Problem(.conflict, "Conflict", detail: m)
            case .refused(let m): return Problem(.unprocessableContent, "Unprocessable Content", detail: m)
            case .notRecorded(let m): return Problem(.serviceUnavailable, "Not Committed", detail: m, retryAfter: 1)
            }
        case let error as DetectionError:
            switch error {
            case .decode(let decode):
                if case .tooLarge = decode {
                    return Problem(.unprocessableContent, "Image Too Large", detail: decode.description)
                }
                return badRequest(decode.description)
            case .inference, .output:
                return Problem(.internalServerError, "Inference Failed", detail: error.description)
            }
        case let error as SlotError:
            switch error {
            case .overloaded(_, _, let retry):
                let seconds = max(1, Int(
                    (Double(retry.components.seconds) + Double(retry.components.attoseconds) / 1e18).rounded(.up)))
                return Problem(.serviceUnavailable, "Overloaded", detail: error.description, retryAfter: seconds)
            case .unavailable, .timedOutInQueue, .shutDown:
                return Problem(.serviceUnavailable, "Unavailable", detail: error.description, retryAfter: 1)
            case .noSuchVersion: return notFound(error.description)
            }
        case let error as InferError:
            switch error.kind {
            case .invalidArgument: return badRequest(error.message)
            case .notFound: return notFound(error.message)
            }
        case let error as ControlError:
            switch error {
            case .unknownSlot: return notFound(error.description)
            case .slotExists, .nothingStaged, .nothingToRollBackTo, .stagedChanged, .loadInProgress:
                return conflict(error.description)
            case .loadFailed(_, let failure): return from(failure)
            case .notCommitted, .stateUnreadable:
                return Problem(.serviceUnavailable, "Not Committed", detail: error.description)
            }
        case let failure as LoadFailure:
            switch failure {
            case .unreadable: return notFound(failure.description)
            case .cancelled: return conflict(failure.description)
            case .notCommitted: return Problem(.serviceUnavailable, "Not Committed", detail: failure.description)
            default: return Problem(.unprocessableContent, "Load Failed", detail: failure.description)
            }
        case let error as MultipartError:
            return badRequest(error.description)
        case let error as DecodingError:
            return badRequest("invalid JSON: \(describe(error))")
        case let error as any HTTPResponseError:
            return Problem(error.status, error.status.reasonPhrase, detail: "\(error)")
        case let error as HTTPParserError:
            // The client's bytes: a malformed chunk size, a body cut short by a closed connection. Not the service's
            // failure (it was logged and counted as one, a 500).
            return badRequest("the request could not be read: \(error)")
        default:
            // An error no layer describes for clients: its text may hold server paths or a Swift dump, so it goes to
            // the log (see `ProblemMiddleware`) and the client gets the request's id to find it there.
            return Problem(.internalServerError, "Internal Server Error",
                detail: "the request failed with an internal error; the server log has the details")
        }
    }

    /// A JSON decoding error in the client's terms: the field and what was wrong, without Swift's dump of the
    /// decoder's context.
    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "wrong type at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted(let c): c.debugDescription
        case let unknown as StrictJSON.UnknownKeys: unknown.description
        case let long as JSONNumbers.TooLong: long.description
        default: "malformed JSON"
        }
    }
}

/// Turns every error thrown by a route into problem details, and nothing into a crash.
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do { return try await next(request, context) } catch {
            var problem = Problem.from(error)
            if problem.status == .internalServerError {
                // The log line carries the request id (`hb.request.id`); the answer names it.
                context.logger.error("request failed", metadata: [
                    "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "error": "\(error)"])
                problem.detail += " (request \(context.id))"
            }
            return try problem.response(from: request, context: context)
        }
    }
}
