import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import NIOCore
import Primitives
import ServiceLifecycle

/// `GET /v1/events/stream`: the swap events as server-sent events (`text/event-stream`), live, for as long as the
/// client stays connected.
///
/// What a client receives, in order:
/// - `retry: 2000` (how long a browser waits before reconnecting);
/// - the events it missed, when it reconnects with `Last-Event-ID` and the log still holds every event after that
///   one (the newest 1000 of this run are kept in memory);
/// - `event: ready` with `{"run", "head", "resumed"}`: `resumed` is false when no `Last-Event-ID` was sent or it
///   could not be honoured (another run of the server, or events dropped from memory since) — the client should then
///   read the state afresh (`GET /v1/slots`, `GET /v1/events`);
/// - each new event as `event: swap`, `id: <run>-<sequence>`, `data: <the SwapEvent JSON of GET /v1/events>`;
/// - each stage a load started through the API enters as `event: load`, `data: <the operation JSON of
///   GET /v1/operations/{id}>` (no id: progress is not replayed on reconnection);
/// - a comment line (`: keep-alive`) every `server.events_keepalive_s`, which keeps proxies from closing a quiet
///   stream and lets the server notice a client that has gone.
///
/// Each client has a bounded buffer (`server.events_buffer` events). Events are handed to it without waiting, so a
/// client that reads too slowly never holds up a swap: when its buffer is full, it is dropped (its stream ends after
/// the buffered events) and may reconnect with `Last-Event-ID` to resume. A graceful shutdown ends every stream, so
/// that the server's drain does not wait on them.
///
/// Thread-safety: immutable; each response has its own subscription and buffer.
struct EventStream: Sendable {
    let manager: ModelManager
    /// Paths in events and operations are shown relative to it.
    let repository: ModelRepository
    let keepAlive: Duration
    let bufferLimit: Int

    enum Item: Sendable {
        case event(SequencedSwapEvent)
        /// A load changed stage (no id: progress is not replayed).
        case load(LoadOperation)
        case keepAlive
    }

    /// One client's subscription: the replayed events, then its bounded buffer of live ones.
    struct Feed: Sendable {
        /// Events replayed after `Last-Event-ID` (and any recorded while the subscription began), in order.
        let replayed: [SequencedSwapEvent]
        /// What the response writes after `replayed` and `ready`; ends when the client is dropped as too slow, the
        /// manager shuts down, or `continuation.finish()` is called.
        let items: AsyncStream<Item>
        let continuation: AsyncStream<Item>.Continuation
        let subscription: SwapEventSubscription
        /// Ends the load-progress subscription.
        let cancelProgress: @Sendable () -> Void
        let ready: ReadyDTO

        /// Ends both subscriptions (the response is over).
        func cancel() {
            subscription.cancel()
            cancelProgress()
        }
    }

    /// What the subscription collects while it replays, before the response starts writing.
    private struct Replay: Sendable {
        var replaying = true
        var events: [SequencedSwapEvent] = []
    }

    /// An event id as sent: `<run>-<sequence>`.
    static func eventID(run: String, sequence: UInt64) -> String { "\(run)-\(sequence)" }

    /// `Last-Event-ID` read back; nil when absent or not of the form `eventID` writes (a client's own value, which the
    /// stream then treats as not resumable).
    static func parseEventID(_ text: String?) -> (run: String, sequence: UInt64)? {
        guard let text, text.utf8.count <= 64, let dash = text.lastIndex(of: "-") else { return nil }
        let run = String(text[..<dash])
        guard !run.isEmpty, let sequence = UInt64(text[text.index(after: dash)...]) else { return nil }
        return (run, sequence)
    }

    /// Subscribes one client: what it missed after `lastEventID` (where the log still holds it), then live events
    /// through a buffer of `bufferLimit`; a full buffer ends the feed (the client is dropped, the log goes on).
    /// - Parameters:
    ///   - lastEventID: the `Last-Event-ID` header, if any.
    ///   - slot: only this slot's events (all when nil).
    func open(lastEventID: String?, slot: String?) -> Feed {
        let (stream, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingOldest(bufferLimit))
        let replay = Locked(Replay())
        // Called under the event log's lock: it only appends or yields, never waits.
        let subscription = manager.subscribeEvents(
            after: Self.parseEventID(lastEventID), finish: { continuation.finish() }
        ) { sequenced in
            if let slot, sequenced.event.slot != slot { return true }
            let replayed = replay.withLock { r in
                if r.replaying { r.events.append(sequenced) }
                return r.replaying
            }
            if replayed { return true }
            return Self.offer(.event(sequenced), to: continuation)
        }
        // Load progress shares the buffer, live only.
        let cancelProgress = manager.subscribeLoadProgress { operation in
            if let slot, operation.request.slot != slot { return true }
            return Self.offer(.load(operation), to: continuation)
        }
        // Every event the subscription handed over while it replayed, and any that came since, in order; later ones
        // go through the bounded buffer.
        let replayed = replay.withLock { r in
            r.replaying = false
            return r.events
        }
        let run = subscription.run
        let head = max(subscription.head, replayed.last?.sequence ?? 0)
        return Feed(replayed: replayed, items: stream, continuation: continuation, subscription: subscription,
            cancelProgress: cancelProgress,
            ready: ReadyDTO(run: run, head: Self.eventID(run: run, sequence: head), resumed: subscription.resumed))
    }

    /// Hands `item` to the client's buffer without waiting. A full buffer means the client reads too slowly: its
    /// stream ends after what it holds (it reconnects and resumes). Returns whether to go on delivering.
    private static func offer(_ item: Item, to continuation: AsyncStream<Item>.Continuation) -> Bool {
        switch continuation.yield(item) {
        case .enqueued: return true
        case .dropped:
            continuation.finish()
            return false
        case .terminated: return false
        @unknown default: return false
        }
    }

    /// The streaming response.
    /// - Parameters:
    ///   - lastEventID: the `Last-Event-ID` header, if any.
    ///   - slot: only this slot's events (all when nil).
    ///   - viewer: closes the connection when a write waits too long (the client stopped reading).
    func response(lastEventID: String?, slot: String?, viewer: ViewerDeadline) -> Response {
        let repository = repository
        let hidePaths: @Sendable (String) -> String = { repository.hidingRoot($0) }
        let keepAlive = keepAlive
        let headers = HTTPFields.unbuffered(contentType: "text/event-stream; charset=utf-8")
        return Response(status: .ok, headers: headers, body: ResponseBody { [self] writer in
            // Subscribed here, where it is also cancelled: the body runs only once the head is written, and a client
            // gone before that would have left a subscription made with the response behind, fed under the event
            // log's lock for every event.
            let feed = open(lastEventID: lastEventID, slot: slot)
            let (run, continuation) = (feed.subscription.run, feed.continuation)
            defer { feed.cancel() }
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepAlive)
                    if case .terminated = continuation.yield(.keepAlive) { return }
                }
            }
            defer { ticker.cancel() }
            try await withGracefulShutdownHandler {
                var text = "retry: 2000\n\n"
                for event in feed.replayed { text += try Self.format(event, run: run, hidePaths) }
                text += Self.format(name: "ready", id: feed.ready.head,
                    data: try JSONEncoder.yoloswap.encode(feed.ready))
                try await viewer.write(ByteBuffer(string: text), to: &writer)
                for await item in feed.items {
                    let message: String
                    switch item {
                    case .event(let event): message = try Self.format(event, run: run, hidePaths)
                    case .load(let operation):
                        message = Self.format(name: "load", id: nil,
                            data: try JSONEncoder.yoloswap.encode(OperationDTO(operation, repository: repository)))
                    case .keepAlive: message = ": keep-alive\n\n"
                    }
                    try await viewer.write(ByteBuffer(string: message), to: &writer)
                }
            } onGracefulShutdown: {
                continuation.finish()
            }
            try await viewer.finish(writer)
        })
    }

    /// The first message of a stream.
    struct ReadyDTO: Encodable, Sendable {
        var run: String
        /// The id of the newest event when the stream began.
        var head: String
        /// Whether the events after `Last-Event-ID` were all replayed.
        var resumed: Bool
    }

    private static func format(_ event: SequencedSwapEvent, run: String, _ hidePaths: (String) -> String) throws
        -> String
    {
        format(name: "swap", id: eventID(run: run, sequence: event.sequence),
            data: try JSONEncoder.yoloswap.encode(event.event.mappingPaths(hidePaths)))
    }

    /// One message; each line of `data` gets its own `data:` field, as the format requires.
    static func format(name: String, id: String?, data: Data) -> String {
        var text = "event: \(name)\n" + (id.map { "id: \($0)\n" } ?? "")
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            text += "data: \(line)\n"
        }
        return text + "\n"
    }
}

extension HTTPFields {
    /// The head of a response that never ends (server-sent events, an MJPEG preview): not cached, and not buffered by
    /// a proxy in front (nginx holds a response's body until its buffer fills: events and keep-alives would arrive
    /// late, or never, and the proxy's idle timeout would cut the connection).
    static func unbuffered(contentType: String) -> HTTPFields {
        var headers: HTTPFields = [.contentType: contentType, .cacheControl: "no-store"]
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        return headers
    }
}
