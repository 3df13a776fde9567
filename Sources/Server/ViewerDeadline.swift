import Hummingbird
import NIOCore

/// Closes a long response's connection (a stream's results or preview, the console's event stream) when a write to it
/// has not completed within `timeout`: the write then fails, and the response ends. A viewer that keeps its connection
/// open but stops reading is never timed out by TCP, and Hummingbird's idle timeout does not run while a response is
/// being written: it would hold its task, what was buffered for it and its connection — and the service's shutdown,
/// which waits for every connection — for good.
///
/// It also holds the viewer's place among those the server lets in (`ViewerAdmission`), given back when the response's
/// body, which holds this, goes.
///
/// Thread-safety: a value; `write` is called by the response's task.
struct ViewerDeadline: Sendable {
    let channel: any Channel
    let timeout: TimeAmount
    let ticket: ViewerAdmission.Ticket

    func write(_ buffer: ByteBuffer, to writer: inout any ResponseBodyWriter) async throws {
        let expiry = closeUnlessCancelled()
        defer { expiry.cancel() }
        try await writer.write(buffer)
    }

    /// Ends the response: the end waits for the channel as a write does.
    func finish(_ writer: consuming any ResponseBodyWriter) async throws {
        let expiry = closeUnlessCancelled()
        defer { expiry.cancel() }
        try await writer.finish(nil)
    }

    private func closeUnlessCancelled() -> Scheduled<Void> {
        let channel = self.channel
        return channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }
}

extension APIRoutes {
    /// Admits a long response's viewer (the request's principal) and watches its connection, closed when a write
    /// waits `server.idle_timeout_s`.
    /// - Throws: `Problem` 429 past `server.max_viewers` or `server.max_viewers_per_token`.
    func viewerDeadline(_ context: YOLOSwapRequestContext) throws -> ViewerDeadline {
        let ticket = try viewers.admit(context.principal?.name ?? Principal.anonymous.name)
        return ViewerDeadline(channel: context.channel, timeout: .seconds(Int64(configuration.idleTimeoutSeconds)),
            ticket: ticket)
    }
}
