import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Server
import TestSupport
import Testing

/// `GET /v1/events/stream` over a real socket (HummingbirdTesting's live server; a plain TCP client reads the stream
/// while it is open).
@Suite("Event stream (server-sent events)", .serialized)
struct EventStreamTests {
    typealias H = ServerHarness

    /// Runs `body` against a live server whose event streams send keep-alives every second.
    private func live(_ harness: ServerHarness,
                      _ body: @Sendable (_ port: Int, _ client: any TestClientProtocol) async throws -> Void)
        async throws
    {
        var configuration = harness.configuration
        configuration.eventsKeepAliveSeconds = 1
        let app = YOLOSwapServer.makeApplication(control: harness.control, configuration: configuration,
            metricsText: nil, logger: Logger(label: "test"))
        try await app.test(.live) { client in try await body(try #require(client.port), client) }
    }

    private static func stage(_ client: any TestClientProtocol) async throws {
        let load = try JSONSerialization.data(withJSONObject: ["model": "synthetic/yolov5-nc80-320-identity.onnx"])
        try await client.execute(uri: "/v1/slots/default/load?wait=true", method: .post,
            headers: H.headers(token: "alice-token", contentType: "application/json"), body: ByteBuffer(bytes: load))
        { #expect($0.status == .ok) }
    }

    @Test("a viewer sees each load's stages and each swap as they happen, with keep-alives; no token, no stream")
    func liveEvents() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await live(harness) { port, client in
            try await client.execute(uri: "/v1/events/stream", method: .get) { #expect($0.status == .unauthorized) }
            let stream = try EventStreamClient(port: port, path: "/v1/events/stream",
                headers: ["Authorization": "Bearer carol-token"])
            #expect(await stream.read(until: { $0.contains("event: ready") }))
            #expect(stream.text.hasPrefix("HTTP/1.1 200"))
            #expect(stream.text.lowercased().contains("content-type: text/event-stream"))
            #expect(stream.text.contains("retry: 2000"))
            let ready = try #require(stream.messages.first { $0.event == "ready" })
            #expect(ready.data.contains("\"resumed\":false"))
            try await Self.stage(client)
            try await client.execute(uri: "/v1/slots/default/switch", method: .post,
                headers: H.headers(token: "alice-token")) { #expect($0.status == .ok) }
            #expect(await stream.read(until: { $0.contains("\"operation\":\"switch\"") }))
            // The load's progress, stage by stage, without ids (its end once its swap event was recorded).
            let loads = stream.messages.filter { $0.event == "load" }
            #expect(loads.allSatisfy { $0.id == nil })
            #expect(loads.contains { $0.data.contains("\"state\":\"warming\"") })
            #expect(loads.last?.data.contains("\"state\":\"ready\"") == true)
            #expect(loads.last?.data.contains("\"model\":\"synthetic/yolov5-nc80-320-identity.onnx\"") == true)
            let swaps = stream.messages.filter { $0.event == "swap" }
            #expect(swaps.map { $0.data.contains("\"operation\":\"load\"") } == [true, false])
            let switched = try #require(swaps.last)
            #expect(switched.data.contains("\"generation\":2"))
            // Paths relative to the repository, as in GET /v1/events.
            #expect(switched.data.contains("\"path\":\"synthetic/yolov5-nc80-320-identity.onnx\""))
            // Ids increase by one per event.
            let numbers = swaps.compactMap { $0.id?.split(separator: "-").last.flatMap { UInt64($0) } }
            #expect(numbers.count == 2 && numbers[1] == numbers[0] + 1)
            #expect(await stream.read(until: { $0.contains(": keep-alive") }, timeout: .seconds(10)))
        }
    }

    @Test("long responses are capped per token and in all (429); a closed one gives its place back; slot= names a slot")
    func viewerCaps() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        var configuration = harness.configuration
        configuration.eventsKeepAliveSeconds = 1
        configuration.maxViewers = 3
        configuration.maxViewersPerToken = 2
        let app = YOLOSwapServer.makeApplication(control: harness.control, configuration: configuration,
            metricsText: nil, logger: Logger(label: "test"))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            func open(_ token: String, _ path: String = "/v1/events/stream") throws -> EventStreamClient {
                try EventStreamClient(port: port, path: path, headers: ["Authorization": "Bearer \(token)"])
            }
            let headEnd: @Sendable (String) -> Bool = { $0.contains("\r\n\r\n") }
            var first: EventStreamClient? = try open("carol-token")
            let second = try open("carol-token")
            #expect(await first?.read(until: { $0.contains("event: ready") }) == true)
            #expect(await second.read(until: { $0.contains("event: ready") }))
            // The token's third: refused, naming the setting; another token's is let in (the third in all).
            let refused = try open("carol-token")
            #expect(await refused.read(until: headEnd))
            #expect(refused.text.hasPrefix("HTTP/1.1 429"), "\(refused.text)")
            #expect(refused.text.contains("max_viewers_per_token"))
            let third = try open("alice-token")
            #expect(await third.read(until: { $0.contains("event: ready") }))
            // The fourth in all, whoever asks.
            let full = try open("alice-token")
            #expect(await full.read(until: headEnd))
            #expect(full.text.hasPrefix("HTTP/1.1 429"), "\(full.text)")
            // Refused streams took no place; a closed one gives its place back once its next keep-alive fails.
            first = nil
            var admitted = false
            let deadline = ContinuousClock.now + .seconds(60)
            while !admitted, ContinuousClock.now < deadline {
                let again = try open("carol-token")
                #expect(await again.read(until: headEnd))
                admitted = again.text.hasPrefix("HTTP/1.1 200")
                if !admitted { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(admitted, "the closed stream's place was not given back")
            // A slot filter that names no slot: 404 (unknown), 400 (empty), on the stream and the list alike.
            for (query, status) in [("slot=nope", HTTPResponse.Status.notFound), ("slot=", .badRequest)] {
                let filtered = try open("alice-token", "/v1/events/stream?\(query)")
                #expect(await filtered.read(until: headEnd))
                #expect(filtered.text.hasPrefix("HTTP/1.1 \(status.code)"), "\(query): \(filtered.text)")
                try await client.execute(uri: "/v1/events?\(query)", method: .get,
                    headers: H.headers(token: "carol-token")) { #expect($0.status == status, "\(query)") }
            }
            try await client.execute(uri: "/v1/events?slot=default", method: .get,
                headers: H.headers(token: "carol-token")) { #expect($0.status == .ok) }
        }
    }

    @Test("Last-Event-ID resumes with the events missed; an unknown one is answered resumed: false")
    func resume() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await live(harness) { port, client in
            let first = try EventStreamClient(port: port, path: "/v1/events/stream",
                headers: ["Authorization": "Bearer carol-token"])
            #expect(await first.read(until: { $0.contains("event: ready") }))
            let seen = try #require(first.messages.first { $0.event == "ready" }?.id)
            // Events happen while the client is away.
            try await Self.stage(client)
            try await client.execute(uri: "/v1/slots/default/switch", method: .post,
                headers: H.headers(token: "alice-token")) { #expect($0.status == .ok) }
            let again = try EventStreamClient(port: port, path: "/v1/events/stream",
                headers: ["Authorization": "Bearer carol-token", "Last-Event-ID": seen])
            #expect(await again.read(until: { $0.contains("event: ready") }))
            let messages = again.messages
            #expect(messages.map(\.event) == ["swap", "swap", "ready"])
            #expect(messages[1].data.contains("\"operation\":\"switch\""))
            #expect(messages[2].data.contains("\"resumed\":true"))
            #expect(messages[2].id == messages[1].id)
            // Up to date: nothing to replay.
            let current = try EventStreamClient(port: port, path: "/v1/events/stream",
                headers: ["Authorization": "Bearer carol-token", "Last-Event-ID": try #require(messages[2].id)])
            #expect(await current.read(until: { $0.contains("event: ready") }))
            #expect(current.messages.map(\.event) == ["ready"])
            #expect(current.messages[0].data.contains("\"resumed\":true"))
            // Another run's id, or a made-up one: the client must re-read the state.
            for stale in ["0badc0de-1", "garbage", try #require(messages[2].id) + "9"] {
                let other = try EventStreamClient(port: port, path: "/v1/events/stream",
                    headers: ["Authorization": "Bearer carol-token", "Last-Event-ID": stale])
                #expect(await other.read(until: { $0.contains("event: ready") }))
                #expect(other.messages.map(\.event) == ["ready"])
                #expect(other.messages[0].data.contains("\"resumed\":false"))
            }
        }
    }
}
