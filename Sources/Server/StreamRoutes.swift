import Foundation
import HTTPTypes
import Hummingbird
import ImageCodecs
import NIOCore
import Primitives
import Streams
import YOLO

struct StreamListDTO: Encodable { var streams: [StreamStatus] }

/// Video streams: create, list, read, stop; their results (server-sent events) and annotated preview (MJPEG).
///
/// A results or preview viewer never slows its stream: each has its own bounded buffer that drops the oldest when
/// the viewer lags. A viewer that takes none of a write for `server.idle_timeout_s` has its connection closed
/// (`ViewerDeadline`).
struct StreamRoutes: Sendable {
    let api: APIRoutes
    let registry: StreamRegistry
    /// JPEG encoding of preview frames, off the cooperative pool: one queue for every stream's viewers (previews take
    /// at most one core from detection), each frame encoded once for all who view it (`PreviewFrame.encoded`).
    private let encoder = BlockingQueue(label: "yoloswap.preview-encode")
    /// Stream creation (paths resolved, files opened, an encoder started), off the cooperative pool.
    static let creating = BlockingQueue(label: "yoloswap.stream-create")

    init(api: APIRoutes, registry: StreamRegistry) {
        self.api = api
        self.registry = registry
    }

    func register(on v1: RouterGroup<YOLOSwapRequestContext>) {
        v1.post("streams") { request, context in
            let principal = try await api.requireOperator(request, context)
            let body = try await api.parsedChange(request, context) {
                // Unknown keys refused, as `streams.run` refuses them: a misspelt `back-pressure` or `outputs.vidoe`
                // ran the stream under `latest`, with no video, without a word.
                let entry = try await api.decode(skippingUnknownKeys: ConfiguredStreamEntry.self, request, context)
                guard entry.unknownKeys.isEmpty else {
                    throw Problem.badRequest("invalid JSON body: " + StrictJSON.UnknownKeys(paths: entry.unknownKeys
                        .prefix(StrictJSON.keysNamed).map { $0.prefix(utf8Bytes: 64) }).description)
                }
                return entry.spec
            }
            var slot: String?
            let stream: VideoStream
            do {
                let name = try api.control.slotName(explicit: body.slot, product: nil)
                slot = name
                // Off the cooperative pool: it resolves paths, opens the output files and may start FFmpeg.
                let (registry, created) = (registry, body.request(slot: name))
                stream = try await Self.creating.run { try registry.create(created) }
            } catch {
                // As every refused call: at most `RefusalLimiter.perSecond` entries a second a caller.
                if let note = api.control.admitRefusal(principal) {
                    try? await api.control.audit(principal, context.remoteAddress, "stream.start",
                        slot ?? body.slot?.prefix(utf8Bytes: 256), result: "refused",
                        reason: "\(error)".prefix(utf8Bytes: 1024) + note, started: Date())
                }
                throw Self.problem(error)
            }
            await api.control.auditStream("stream.start", stream.currentStatus, by: principal,
                from: context.remoteAddress)
            return try api.json(stream.currentStatus, status: .created)
        }
        v1.get("streams") { _, context in
            _ = try api.require(.viewer, context)
            return try api.json(StreamListDTO(streams: registry.all.map(\.currentStatus)), status: .ok)
        }
        v1.get("streams/:id") { _, context in
            _ = try api.require(.viewer, context)
            return try api.json(try stream(context).currentStatus, status: .ok)
        }
        v1.delete("streams/:id") { request, context in
            let principal = try await api.requireOperator(request, context)
            let id = try context.parameters.require("id")
            guard let status = await registry.remove(id) else { throw Problem.notFound("no stream '\(id)'") }
            await api.control.auditStream("stream.stop", status, by: principal, from: context.remoteAddress)
            return try api.json(status, status: .ok)
        }
        v1.get("streams/:id/results") { _, context in
            _ = try api.require(.viewer, context)
            let stream = try stream(context)
            return results(stream, viewer: try api.viewerDeadline(context))
        }
        v1.get("streams/:id/preview.mjpeg") { _, context in
            _ = try api.require(.viewer, context)
            let stream = try stream(context)
            return preview(stream, viewer: try api.viewerDeadline(context))
        }
    }

    private func stream(_ context: YOLOSwapRequestContext) throws -> VideoStream {
        let id = try context.parameters.require("id")
        guard let stream = registry.stream(id) else { throw Problem.notFound("no stream '\(id)'") }
        return stream
    }

    /// Server-sent events: `event: frame` with a result line, `event: switch|reconnect|ended|failed` with an event, and
    /// a `: keep-alive` comment after `streams.keep_alive_s` without either.
    private func results(_ stream: VideoStream, viewer: ViewerDeadline) -> Response {
        let messages = stream.subscribe(buffer: 256, keepAlive: true)
        return Response(status: .ok, headers: .unbuffered(contentType: "text/event-stream"),
            body: ResponseBody { writer in
                let encoder = JSONEncoder.yoloswap
                for await message in messages {
                    let (name, data): (String, Data)
                    switch message {
                    case .frame(let result): (name, data) = ("frame", try encoder.encode(result))
                    case .event(let event): (name, data) = (event.type.rawValue, try encoder.encode(event))
                    case .keepAlive:
                        // A comment line, which event-stream clients ignore.
                        try await viewer.write(ByteBuffer(string: ": keep-alive\n\n"), to: &writer)
                        continue
                    }
                    var buffer = ByteBuffer(string: "event: \(name)\ndata: ")
                    buffer.writeBytes(data)
                    buffer.writeString("\n\n")
                    try await viewer.write(buffer, to: &writer)
                }
                try await viewer.finish(writer)
            })
    }

    /// `multipart/x-mixed-replace`: the newest frame with its boxes drawn, as a JPEG per part.
    private func preview(_ stream: VideoStream, viewer: ViewerDeadline) -> Response {
        let frames = stream.previewFrames()
        let encoder = self.encoder
        return Response(status: .ok,
            headers: .unbuffered(contentType: "multipart/x-mixed-replace; boundary=frame"),
            body: ResponseBody { writer in
                for await frame in frames {
                    let jpeg = try await encoder.run { try frame.encoded.value { try Self.annotatedJPEG(frame) } }
                    var buffer = ByteBuffer(string: "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + "\(jpeg.count)\r\nX-Frame: \(frame.frame)\r\n\r\n")
                    buffer.writeBytes(jpeg)
                    buffer.writeString("\r\n")
                    try await viewer.write(buffer, to: &writer)
                }
                try await viewer.finish(writer)
            })
    }

    /// The frame with each detection's box and label drawn, as a JPEG.
    static func annotatedJPEG(_ frame: PreviewFrame) throws -> [UInt8] {
        try ImageEncoder.jpeg(frame.annotated, quality: 80)
    }

    private static func problem(_ error: any Error) -> any Error {
        guard let error = error as? StreamError else { return error }
        switch error {
        case .sourceNotAllowed, .outputNotAllowed, .invalid: return Problem.badRequest(error.description)
        case .tooManyStreams: return Problem(.tooManyRequests, "Too Many Requests", detail: error.description)
        case .outputUnavailable:
            return Problem(.serviceUnavailable, "Service Unavailable", detail: error.description)
        case .unknownSlot: return Problem.notFound(error.description)
        case .nameTaken: return Problem.conflict(error.description)
        case .shuttingDown: return Problem(.serviceUnavailable, "Service Unavailable", detail: error.description)
        }
    }
}
