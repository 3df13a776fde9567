import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Server
import Testing

@Suite("Web console: its files and the API it reads (in-process, fake inference backends)", .serialized)
struct ConsoleAPITests {
    typealias H = ServerHarness

    @Test("the console's files: content types, revalidation by ETag, a strict Content-Security-Policy; public")
    func staticFiles() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            var etag = ""
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                #expect(response.headers[.cacheControl] == "no-cache")
                let csp = try #require(response.headers[.contentSecurityPolicy])
                #expect(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"))
                #expect(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"))
                #expect(response.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
                let html = String(buffer: response.body)
                #expect(html.contains("<script src=\"/console.js\" defer></script>"))
                // No inline script or style: the policy would block them.
                #expect(!html.contains("<script>") && !html.contains("style="))
                etag = try #require(response.headers[.eTag])
            }
            try await client.execute(uri: "/", method: .get, headers: [.ifNoneMatch: etag]) { response in
                #expect(response.status == .notModified)
                #expect(response.body.readableBytes == 0)
            }
            try await client.execute(uri: "/console.js", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/javascript; charset=utf-8")
                #expect(String(buffer: response.body).contains("/v1/events/stream"))
                #expect(response.headers[.eTag] != etag)
            }
            try await client.execute(uri: "/console.css", method: .get) { response in
                #expect(response.headers[.contentType] == "text/css; charset=utf-8")
            }
        }
    }

    @Test("server.console: false serves no console")
    func consoleOff() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        var configuration = harness.configuration
        configuration.console = false
        let app = YOLOSwapServer.makeApplication(control: harness.control, configuration: configuration,
            metricsText: nil, logger: Logger(label: "test"))
        try await app.test(.router) { client in
            try await client.execute(uri: "/", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/console.js", method: .get) { #expect($0.status == .notFound) }
        }
    }

    @Test("whoami names the token's role; a bad token is refused, none is asked for one")
    func whoami() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            for (token, role) in [("alice-token", "operator"), ("carol-token", "viewer"), ("root-token", "admin")] {
                try await client.execute(uri: "/v1/whoami", method: .get, headers: H.headers(token: token)) {
                    response in
                    #expect(response.status == .ok)
                    let body = try H.json(response)
                    #expect(body["role"] as? String == role)
                }
            }
            try await client.execute(uri: "/v1/whoami", method: .get, headers: H.headers(token: "nope")) { response in
                #expect(response.status == .unauthorized)
                let body = try H.json(response)
                #expect(body["detail"] as? String == "unknown or malformed bearer token")
            }
            try await client.execute(uri: "/v1/whoami", method: .get) { #expect($0.status == .unauthorized) }
        }
    }

    @Test("stats: per-slot request counts, rate and percentiles per second; viewers only")
    func stats() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            let jpeg = H.headers(token: "carol-token", contentType: "image/jpeg")
            for _ in 0..<3 {
                try await client.execute(uri: "/v1/detect", method: .post, headers: jpeg, body: H.busJPEG) {
                    #expect($0.status == .ok)
                }
            }
            try await client.execute(uri: "/v1/detect?slot=line2", method: .post, headers: jpeg,
                body: ByteBuffer(string: "not an image")) { #expect($0.status == .badRequest) }
            // The whole window kept: at a CI run's start the requests above can take longer than 30 s.
            try await client.execute(uri: "/v1/stats?window=300", method: .get, headers: H.headers(token: "carol-token"))
            { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect(body["window_s"] as? Int == 300)
                let slots = try #require(body["slots"] as? [[String: Any]])
                let byName = Dictionary(uniqueKeysWithValues: slots.map { ($0["slot"] as? String ?? "", $0) })
                let main = try #require(byName["default"])
                #expect(main["requests"] as? Int == 3)
                #expect(main["errors"] as? Int == 0)
                let p50 = try #require(main["p50_ms"] as? Double)
                let p99 = try #require(main["p99_ms"] as? Double)
                #expect(p50 > 0 && p99 >= p50)
                let series = try #require(main["series"] as? [[String: Any]])
                #expect(series.count == 300)
                #expect(series.reduce(0) { $0 + ($1["requests"] as? Int ?? 0) } == 3)
                let line2 = try #require(byName["line2"])
                #expect(line2["requests"] as? Int == 1 && line2["errors"] as? Int == 1)
                #expect(line2["p50_ms"] == nil)
            }
            try await client.execute(uri: "/v1/stats", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/v1/stats?window=0", method: .get, headers: H.headers(token: "carol-token"))
            { #expect($0.status == .badRequest) }
        }
    }

    @Test("repository: the .onnx files a load may name; links are not followed")
    func repository() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try Data().write(to: harness.repository.appendingPathComponent("synthetic/yolov5-nc80-320-identity.onnx.sig"))
        try Data("x".utf8).write(to: harness.repository.appendingPathComponent("notes.txt"))
        try await harness.test { client in
            try await client.execute(uri: "/v1/repository", method: .get, headers: H.headers(token: "carol-token")) {
                response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                let models = try #require(body["models"] as? [[String: Any]])
                let paths = models.compactMap { $0["path"] as? String }
                #expect(paths == ServerHarness.models.keys.sorted())
                let signed = models.filter { $0["signed"] as? Bool == true }.compactMap { $0["path"] as? String }
                #expect(signed == ["synthetic/yolov5-nc80-320-identity.onnx"])
                #expect(models.allSatisfy { ($0["bytes"] as? Int ?? 0) > 0 })
            }
            try await client.execute(uri: "/v1/repository", method: .get) { #expect($0.status == .unauthorized) }
        }
    }

    @Test("audit/verify: the chain's state for operators, refused to viewers")
    func auditVerify() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/slots/default/switch", method: .post,
                headers: H.headers(token: "alice-token")) { #expect($0.status == .conflict) }
            _ = try await harness.auditEntries()
            try await client.execute(uri: "/v1/audit/verify", method: .get, headers: H.headers(token: "alice-token")) {
                response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect(body["intact"] as? Bool == true)
                #expect((body["entries"] as? Int ?? 0) >= 1)
                #expect((body["head_hash"] as? String)?.count == 64)
            }
            try await client.execute(uri: "/v1/audit/verify", method: .get, headers: H.headers(token: "carol-token")) {
                #expect($0.status == .forbidden)
            }
        }
    }

    @Test("server.events_keepalive_s, events_buffer and console: defaults, parsed, out of range refused by key")
    func configuration() throws {
        let defaults = try ServerConfiguration.parse("")
        #expect(defaults.eventsKeepAliveSeconds == 15 && defaults.eventsClientBuffer == 256 && defaults.console)
        let set = try ServerConfiguration.parse("server: { events_keepalive_s: 5, events_buffer: 16, console: false }")
        #expect(set.eventsKeepAliveSeconds == 5 && set.eventsClientBuffer == 16 && !set.console)
        for (key, value) in [("events_keepalive_s", 0), ("events_keepalive_s", 3601), ("events_buffer", 0),
            ("events_buffer", 100_001)]
        {
            let error = #expect(throws: ConfigurationError.self) {
                try ServerConfiguration.parse("server: { \(key): \(value) }")
            }
            #expect(error?.message.contains("server.\(key)") == true)
        }
    }
}
