import NIOCore
import NIOHTTPTypes
import Primitives

/// Closes a connection whose request does not arrive in full within a time limit, counted from its head.
///
/// Hummingbird's idle timeout covers a client that sends nothing — and one that trickles a request head byte by byte,
/// since no HTTP part is decoded meanwhile — but each body part counts as activity: a client that sends a byte of body
/// every few seconds would hold the connection, and a handler task, for as long as it likes. A route's own deadline
/// answers 408, but the server then drains the rest of the body before the next request. This handler bounds the
/// whole read: when the limit passes between a request's head and its end, the connection is closed.
///
/// Thread-safety: a channel handler, used on its channel's event loop only (NIO's rule); not `Sendable`.
final class RequestReadTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limit: TimeAmount
    private var timer: Scheduled<Void>?

    init(limit: TimeAmount) {
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            timer?.cancel()
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(in: limit) { loopBound.value.close(promise: nil) }
        case .body:
            break
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }
}

/// Reads a request's body by `deadline` (counted from the request's arrival: reading the body spends it too); a body
/// that has not arrived by then is answered 408.
func readBody<T: Sendable>(by deadline: ContinuousClock.Instant, timeoutMilliseconds: Int,
                           _ read: @escaping @Sendable () async throws -> T) async throws -> T {
    do { return try await withDeadline(deadline, read) } catch is DeadlineExceeded {
        throw Problem(.requestTimeout, "Request Timeout", detail: "the request body did not arrive within the request "
            + "timeout of \(timeoutMilliseconds) ms")
    }
}
