import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOHTTP2
import Primitives

/// What the gRPC endpoint allows a client, so that slow and numerous clients cannot take it, as `server.*` bounds the
/// HTTP side: connections at once (`server.max_connections`, counted apart from HTTP's), streams at once on one
/// connection, the time a stream's request may take to arrive whole (`server.read_timeout_s`: a request is buffered
/// whole, up to `server.max_body_mb`, before its handler checks the token), and the time a connection may stay
/// without a stream (`server.idle_timeout_s`).
public struct GRPCConnectionLimits: Sendable, Equatable {
    public var maxConnections: Int
    public var maxStreamsPerConnection: Int
    public var requestReadTimeout: Duration
    public var idleTimeout: Duration

    public init(maxConnections: Int, maxStreamsPerConnection: Int = 100, requestReadTimeout: Duration,
                idleTimeout: Duration) {
        self.maxConnections = maxConnections
        self.maxStreamsPerConnection = maxStreamsPerConnection
        self.requestReadTimeout = requestReadTimeout
        self.idleTimeout = idleTimeout
    }

    /// How long a connection told to go away (GOAWAY) for idleness may take to close: gRPC's own handler closes it
    /// only once the client acknowledges its PING, which a client that never speaks never does.
    static let idleGrace = TimeAmount.seconds(5)

    /// `config` with these limits applied; `connections` counts the open connections.
    func apply(to config: HTTP2ServerTransport.Posix.Config, connections: ConnectionCount)
        -> HTTP2ServerTransport.Posix.Config
    {
        var config = config
        config.http2.maxConcurrentStreams = maxStreamsPerConnection
        config.connection.maxIdleTime = idleTimeout
        let (maxConnections, readTimeout) = (self.maxConnections, TimeAmount(requestReadTimeout))
        let closeIdleAfter = TimeAmount(idleTimeout) + Self.idleGrace
        config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
            // Over the limit: closed at once (the client sees the connection end before any exchange).
            if connections.open(channel, closeIdleAfter: closeIdleAfter) > maxConnections {
                channel.close(promise: nil)
            }
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { channel in
            if let connection = channel.parent { connections.streamOpened(channel, on: connection) }
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(RequestReadDeadline(timeout: readTimeout),
                    position: .first)
            }
        }
        return config
    }
}

/// The gRPC connections open now, and each one's open streams: a connection without a stream for `closeIdleAfter`
/// is closed, whatever state gRPC's own idle handling left it in.
///
/// Thread-safety: a lock around the table; its timers run on each connection's event loop.
final class ConnectionCount: Sendable {
    private struct Connection {
        var streams = 0
        var idleSince: NIODeadline? = .now()
    }

    private let table = Locked<[ObjectIdentifier: Connection]>([:])

    var value: Int { table.withLock { $0.count } }

    /// Counts `channel` until it closes, and closes it once it has had no stream for `closeIdleAfter`; returns the
    /// count with it.
    func open(_ channel: any Channel, closeIdleAfter: TimeAmount) -> Int {
        let id = ObjectIdentifier(channel)
        let now = table.withLock { t -> Int in
            t[id] = Connection()
            return t.count
        }
        let check = min(closeIdleAfter, .seconds(1))
        let reaper = channel.eventLoop.scheduleRepeatedTask(initialDelay: check, delay: check) { [table] task in
            let idle = table.withLock { $0[id]?.idleSince }
            if let idle, NIODeadline.now() - idle >= closeIdleAfter {
                task.cancel()
                channel.close(promise: nil)
            }
        }
        channel.closeFuture.whenComplete { [table] _ in
            reaper.cancel()
            table.withLock { $0[id] = nil }
        }
        return now
    }

    /// Counts `stream` on `connection` until the stream closes.
    func streamOpened(_ stream: any Channel, on connection: any Channel) {
        let id = ObjectIdentifier(connection)
        table.withLock {
            $0[id]?.streams += 1
            $0[id]?.idleSince = nil
        }
        stream.closeFuture.whenComplete { [table] _ in
            table.withLock {
                guard var entry = $0[id] else { return }
                entry.streams -= 1
                if entry.streams == 0 { entry.idleSince = .now() }
                $0[id] = entry
            }
        }
    }
}

/// Resets an HTTP/2 stream (closes its channel) when its request has not arrived whole — the frame that ends the
/// client's side, END_STREAM — within `timeout` of the stream's start. Streams are unary here: a stalled upload
/// holding its buffer is what it ends; a handler's own time (a load awaited) does not count.
///
/// Thread-safety: a channel handler, used on its channel's event loop only.
final class RequestReadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let headers) where headers.endStream: cancel()
        case .data(let body) where body.endStream: cancel()
        default: break
        }
        context.fireChannelRead(data)
    }

    private func cancel() {
        deadline?.cancel()
        deadline = nil
    }
}
