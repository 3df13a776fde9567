import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Server
import TestSupport
import Testing

@Suite("Tokens and roles", .serialized)
struct AuthTests {
    typealias H = ServerHarness

    /// (method, uri, minimum role; nil = open to anyone)
    static let endpoints: [(HTTPRequest.Method, String, Role?)] = [
        (.get, "/healthz", nil), (.get, "/readyz", nil), (.get, "/metrics", nil),
        (.post, "/v1/detect", .viewer), (.get, "/v1/slots", .viewer), (.get, "/v1/slots/default", .viewer),
        (.get, "/v1/routes", .viewer), (.get, "/v1/events", .viewer), (.get, "/v1/audit/head", .viewer),
        (.get, "/v1/audit", .operator),
        (.post, "/v1/slots/default/load", .operator), (.post, "/v1/slots/default/switch", .operator),
        (.post, "/v1/slots/default/rollback", .operator), (.delete, "/v1/slots/default/staged", .operator),
        (.put, "/v1/routes", .operator),
    ]

    static func body(for uri: String) -> (ByteBuffer?, String?) {
        switch uri {
        case "/v1/detect": (H.busJPEG, "image/jpeg")
        case "/v1/slots/default/load":
            (ByteBuffer(string: #"{"model": "missing.onnx"}"#), "application/json")
        case "/v1/routes": (ByteBuffer(string: #"{"routes": {}}"#), "application/json")
        default: (nil, nil)
        }
    }

    @Test("the whole matrix: none → 401, unknown → 401, too low → 403, enough → not 401/403")
    func matrix() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let callers: [(String, String?, Role?)] = [
            ("no token", nil, nil), ("unknown token", "wrong-token", nil), ("carol", "carol-token", .viewer),
            ("alice", "alice-token", .operator), ("root", "root-token", .admin),
        ]
        try await harness.test { client in
            for (method, uri, needed) in Self.endpoints {
                for (who, token, role) in callers {
                    let (body, type) = Self.body(for: uri)
                    try await client.execute(uri: uri, method: method, headers: H.headers(token: token, contentType: type),
                        body: body) { response in
                        let status = response.status
                        if token == "wrong-token" {
                            #expect(status == .unauthorized, "\(who) \(method) \(uri)")
                        } else if let needed {
                            if role == nil {
                                #expect(status == .unauthorized, "\(who) \(method) \(uri)")
                            } else if role! < needed {
                                #expect(status == .forbidden, "\(who) \(method) \(uri)")
                            } else {
                                #expect(status != .unauthorized && status != .forbidden, "\(who) \(method) \(uri): \(status)")
                            }
                        } else {
                            #expect(status == .ok, "\(who) \(method) \(uri)")
                        }
                    }
                }
            }
        }
    }

    @Test("server.metrics_require_token: /metrics needs a token of any role")
    func metricsToken() async throws {
        let config = try ServerConfiguration.parse("server: { metrics_require_token: true }")
        #expect(config.metricsRequireToken)
        #expect(try ServerConfiguration.parse("").metricsRequireToken == false)
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        var configuration = harness.configuration
        configuration.metricsRequireToken = true
        let app = YOLOSwapServer.makeApplication(control: harness.control, configuration: configuration,
            metricsText: { "# metrics\n" }, logger: .init(label: "test"))
        try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(uri: "/metrics", method: .get, headers: H.headers(token: "carol-token")) {
                #expect($0.status == .ok)
            }
        }
    }

    @Test("without tokens configured management is refused; detect only when opened to anonymous callers")
    func noTokens() async throws {
        for anonymous in [false, true] {
            let harness = try await ServerHarness(tokens: [], anonymousDetect: anonymous)
            try await harness.test { client in
                try await client.execute(uri: "/v1/slots/default/switch", method: .post) { #expect($0.status == .forbidden) }
                try await client.execute(uri: "/v1/slots", method: .get) { #expect($0.status == .forbidden) }
                try await client.execute(uri: "/v1/detect", method: .post, headers: H.headers(contentType: "image/jpeg"),
                    body: H.busJPEG) { #expect($0.status == (anonymous ? .ok : .forbidden)) }
            }
            await harness.cleanUp()
        }
    }

    @Test("tokens are stored as SHA-256 and compared in full")
    func digests() {
        let auth = TokenAuthenticator(H.tokens)
        #expect(auth.authenticate(token: "alice-token")?.role == .operator)
        #expect(auth.authenticate(token: "alice-token ") == nil)
        #expect(auth.authenticate(token: "alice-toke") == nil)
        #expect(auth.authenticate(token: "") == nil)
        #expect(TokenAuthenticator.digest(of: "alice-demo-token")
            == "bba775a1794a2ccaa524798e32cea98187c9a32d80433d760a92d449bfddff66")
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    @Test("unknown keys are refused, named with where they are and what the section takes; numbers that trapped Yams and malformed YAML are refused without quoting the line")
    func refusedConfigurations() throws {
        for (yaml, expected) in [
            ("require_signatures: true", "require_signatures: unknown key (the top level takes "),
            ("server: {metrics_require_tokens: true}", "server.metrics_require_tokens: unknown key (server takes "),
            ("slots: {default: {model: m.onnx, sha_256: abc}}", "slots.default.sha_256: unknown key"),
            ("slots: {default: {model: m.onnx, provder: cuda}}", "slots.default.provder: unknown key"),
            ("hotswap: {memory_budget: 10}", "hotswap.memory_budget: unknown key"),
            ("mqt: {host: broker}", "mqt: unknown key"),
            ("mqtt: {host: b, device: d, tls: {ca: x}}", "mqtt.tls.ca: unknown key"),
            ("tokens: [{name: a, role: viewer, sha256: '\(String(repeating: "0", count: 64))', token: x}]",
             "tokens[0].token: unknown key"),
            // Base 60 (YAML 1.1) past Int: Yams' arithmetic trapped and killed the process at start.
            ("hotswap: {queue_capacity: 1:0:0:0:0:0:0:0:0:0:0}", "hotswap.queue_capacity: '1:0:0:0:0:0:0:0:0:0:0' reads as a base-60"),
            ("server: {port: 9223372036854775807:0}", "server.port: '9223372036854775807:0' reads as a base-60"),
            // Exactly Int.min with a sign of its own: Yams' last step, sign × value, trapped.
            ("server: {port: --1:-9223372036854775748}", "server.port: '--1:-9223372036854775748' reads as a base-60"),
        ] {
            let error = #expect(throws: ConfigurationError.self) { _ = try ServerConfiguration.parse(yaml) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(expected), "\(yaml): \(String(describing: error))")
        }
        // A base-60 number that fits is still a number: 1:30 is 90.
        #expect(try ServerConfiguration.parse("hotswap: {queue_capacity: 1:30}").hotSwap.queueCapacity == 90)
        // Yams quotes the line it could not scan; a password on it must not reach the log.
        #expect { _ = try ServerConfiguration.parse("mqtt:\n  password: @SuperSecret123\n") } throws: {
            !"\($0)".contains("SuperSecret") && "\($0)".contains("line 2")
        }
    }

    @Test("the issue's YAML works as is; relative paths resolve against the file's folder")
    func issueYAML() throws {
        let yaml = """
            server: { host: 127.0.0.1, port: 8080 }
            model_repository: ./models          # every model path in the API is relative to this folder
            state_dir: ./var                    # SQLite state + audit
            tokens:                             # sha256 hex of the bearer token, never the token itself
              - { name: alice, role: operator, sha256: "\(TokenAuthenticator.digest(of: "a"))" }
              - { name: carol, role: viewer,   sha256: "\(TokenAuthenticator.digest(of: "c"))" }
            slots:
              default: { model: yolov3-tiny-coco-416.onnx }
            routes: { metal-case: default }     # product / work order → slot
            """
        let config = try ServerConfiguration.parse(yaml, base: "/srv/yoloswap")
        #expect(config.modelRepository == "/srv/yoloswap/models")
        #expect(config.stateDirectory == "/srv/yoloswap/var")
        #expect(config.tokens.map(\.role) == [.operator, .viewer])
        #expect(config.slots["default"]?.model == "yolov3-tiny-coco-416.onnx")
        #expect(config.routes == ["metal-case": "default"])
        #expect(config.port == 8080)
        // Defaults of the memory-related hot-swap keys.
        #expect(config.hotSwap.releaseStandbyBeforeLoad)
        #expect(config.optimizedCacheDirectory == "/srv/yoloswap/var/optimized-models")
        #expect(config.optimizeInChild)
    }

    @Test("hotswap.standby_during_load, hotswap.optimized_cache and hotswap.optimizer")
    func memoryKeys() throws {
        let config = try ServerConfiguration.parse(
            "hotswap: { standby_during_load: keep, optimized_cache: false, optimizer: in-process }", base: "/srv")
        #expect(!config.hotSwap.releaseStandbyBeforeLoad)
        #expect(config.optimizedCacheDirectory == nil)
        #expect(!config.optimizeInChild)
        #expect(throws: (any Error).self) { try ServerConfiguration.parse("hotswap: { optimizer: fork }", base: "/srv") }
    }

    @Test("the repository's example configuration parses")
    func example() throws {
        let config = try ServerConfiguration.load(path: Repository.path("yoloswap.example.yaml"))
        #expect(config.tokens.count == 3)
        #expect(config.modelRepository == Repository.path("models"))
    }

    @Test("clear errors for bad values", arguments: [
        "server: { port: 99999 }", "tokens: [{ name: a, role: operator, sha256: abc }]",
        "tokens: [{ name: a, role: king, sha256: abc }]", "routes: { x: nowhere }", "hotswap: { policy: yolo }",
        "hotswap: { standby_during_load: sometimes }",
        "require_signature: true", "slots: {}", "server: [",
    ])
    func errors(yaml: String) {
        #expect(throws: (any Error).self) { try ServerConfiguration.parse(yaml) }
    }

    /// A digest the authenticator cannot use, or one token under two names, stops the parse instead of leaving a
    /// token that never matches or a caller who is either of two principals.
    @Test("token digests: ASCII hex only, one name per digest", arguments: [
        // 64 characters that are all hex digits to `Character.isHexDigit`, the last a fullwidth Ａ.
        ("tokens: [{ name: a, role: operator, sha256: \(String(repeating: "0", count: 63))Ａ }]", "64 hex digits"),
        // The same digest in either case.
        ("tokens: [{ name: a, role: operator, sha256: \(String(repeating: "ab", count: 32)) },"
            + " { name: b, role: admin, sha256: \(String(repeating: "AB", count: 32)) }]", "'a' and 'b' have the same"),
    ])
    func tokenDigests(yaml: String, message: String) throws {
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(yaml) }
        #expect(error?.message.contains(message) == true, "\(String(describing: error))")
        // Both parse once the digest is ASCII and the second token's differs.
        let fixed = yaml.replacingOccurrences(of: "Ａ", with: "a").replacingOccurrences(of: "AB", with: "cd")
        #expect(try ServerConfiguration.parse(fixed).tokens.count == yaml.components(separatedBy: "name:").count - 1)
    }

    /// A token's name is the actor in the audit log and its caller's key in the refusals' rate limit.
    @Test("token names: not the service's own (system, anonymous, unauthenticated), not empty (the anonymous callers' key), no http:/mqtt: forms",
          arguments: ["system", "anonymous", "unauthenticated", "", "mqtt:dev-1", "a\tb", String(repeating: "x", count: 129)])
    func tokenNames(name: String) throws {
        let yaml = "tokens: [{ name: '\(name)', role: operator, sha256: \(String(repeating: "0", count: 64)) }]"
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(yaml) }
        #expect(error?.message.contains("must be 1…128 bytes without ':' or control characters") == true,
            "\(String(describing: error))")
        let fine = yaml.replacingOccurrences(of: "'\(name)'", with: "'Ops bot (line A) é'")
        #expect(try ServerConfiguration.parse(fine).tokens.first?.name == "Ops bot (line A) é")
    }

    @Test("slot names and route products are checked as a desired-state document's", arguments: [
        ("slots: { 'line/2': { model: m.onnx } }", "is not a slot name"),
        ("slots: { 'line 2': { model: m.onnx } }", "is not a slot name"),
        ("slots: { default: { model: m.onnx } }\nroutes: { \"a\\tb\": default }", "is not a product name"),
        // A slot's digest and version, as a document's (the service ran with the slot never ready).
        ("slots: { default: { model: m.onnx, sha256: nothex } }", "slots.default.sha256 must be 64 hex digits"),
        ("slots: { default: { model: m.onnx, version: '' } }", "slots.default.version must have 1 to 128 bytes"),
        ("slots: { default: { model: '' } }", "slots.default.model must be a path of 1 to 1024 bytes"),
    ])
    func slotAndProductNames(yaml: String, message: String) throws {
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(yaml) }
        #expect(error?.message.contains(message) == true, "\(String(describing: error))")
    }

    /// Numbers that would overflow later arithmetic (`<< 20`, a deadline in nanoseconds) or start a million threads.
    @Test("out-of-range numbers are refused with the key and its allowed range", arguments: [
        ("server: { max_body_mb: 17592186044416 }", "server.max_body_mb", "1...1024"),
        ("server: { max_body_mb: 1025 }", "server.max_body_mb", "1...1024"),
        ("server: { max_body_mb: 0 }", "server.max_body_mb", "1...1024"),
        ("hotswap: { request_timeout_ms: 9200000000000 }", "hotswap.request_timeout_ms", "1...3600000"),
        ("hotswap: { request_timeout_ms: 0 }", "hotswap.request_timeout_ms", "1...3600000"),
        ("hotswap: { memory_budget_mb: 17592186044416 }", "hotswap.memory_budget_mb", "1...1048576"),
        ("hotswap: { memory_budget_mb: -1 }", "hotswap.memory_budget_mb", "1...1048576"),
        ("hotswap: { serving_threads: 1000000 }", "hotswap.serving_threads", "1...256"),
        ("hotswap: { serving_threads: 0 }", "hotswap.serving_threads", "1...256"),
        ("hotswap: { intra_op_threads: 1000000 }", "hotswap.intra_op_threads", "1...256"),
        ("hotswap: { queue_capacity: 100000000 }", "hotswap.queue_capacity", "1...100000"),
        ("hotswap: { warmup_runs: 1000000 }", "hotswap.warmup_runs", "0...100"),
        ("hotswap: { warmup_runs: -1 }", "hotswap.warmup_runs", "0...100"),
        ("hotswap: { warmup_concurrency: 0 }", "hotswap.warmup_concurrency", "1...256"),
        ("hotswap: { warmup_concurrency: 257 }", "hotswap.warmup_concurrency", "1...256"),
        ("hotswap: { warmup_timeout_s: 1e300 }", "hotswap.warmup_timeout_s", "(0, 86400]"),
        ("hotswap: { standby: 1e300 }", "hotswap.standby", "(0, 31536000]"),
        ("hotswap: { standby: .inf }", "hotswap.standby", "(0, 31536000]"),
        ("hotswap: { standby: inf }", "hotswap.standby", "(0, 31536000]"),
        ("server: { port: -1 }", "server.port", "0...65535"),
        ("server: { idle_timeout_s: 0 }", "server.idle_timeout_s", "1...3600"),
        ("server: { read_timeout_s: 0 }", "server.read_timeout_s", "1...3600"),
        ("server: { read_timeout_s: 9223372036854775807 }", "server.read_timeout_s", "1...3600"),
        ("server: { max_connections: 0 }", "server.max_connections", "1...1000000"),
        ("server: { max_connections: 1000001 }", "server.max_connections", "1...1000000"),
    ])
    func outOfRange(yaml: String, key: String, range: String) {
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(yaml, base: "/srv") }
        #expect(error?.message.contains(key) == true, "\(String(describing: error))")
        #expect(error?.message.contains(range) == true, "\(String(describing: error))")
    }

    @Test("the largest allowed values are accepted as given")
    func upperBounds() throws {
        let yaml = """
            server: { max_body_mb: 1024, read_timeout_s: 3600, max_connections: 1000000 }
            hotswap: { serving_threads: 256, intra_op_threads: 256, queue_capacity: 100000, warmup_runs: 100,
                       warmup_concurrency: 256, request_timeout_ms: 3600000, memory_budget_mb: 1048576,
                       warmup_timeout_s: 86400, standby: 31536000 }
            """
        let config = try ServerConfiguration.parse(yaml, base: "/srv")
        #expect(config.maxBodyBytes == 1024 << 20)
        #expect(config.readTimeoutSeconds == 3600 && config.maxConnections == 1_000_000)
        #expect(config.hotSwap.servingThreads == 256 && config.hotSwap.intraOpThreads == 256)
        #expect(config.hotSwap.queueCapacity == 100_000 && config.hotSwap.warmupRuns == 100)
        #expect(config.hotSwap.warmupConcurrency == 256)
        #expect(config.requestTimeoutMilliseconds == 3_600_000)
        #expect(config.hotSwap.memoryBudgetBytes == 1 << 40)
        #expect(config.hotSwap.warmupTimeout == .seconds(86_400))
        #expect(config.hotSwap.standbyRetention == .keepFor(.seconds(31_536_000)))
    }

    @Test("times under a millisecond are rounded up to one, not down to none")
    func subMillisecondTimes() throws {
        let config = try ServerConfiguration.parse("hotswap: { warmup_timeout_s: 0.0004, standby: '0.0004' }")
        #expect(config.hotSwap.warmupTimeout == .milliseconds(1))
        #expect(config.hotSwap.standbyRetention == .keepFor(.milliseconds(1)))
    }

    @Test("environment overrides")
    func environment() throws {
        var config = ServerConfiguration(base: "/x")
        try config.applyEnvironment(["YOLOSWAP_PORT": "9090", "YOLOSWAP_HOST": "0.0.0.0", "YOLOSWAP_STATE_DIR": "/tmp/s"])
        #expect(config.port == 9090 && config.host == "0.0.0.0" && config.stateDirectory == "/tmp/s")
        #expect(throws: ConfigurationError.self) { try config.applyEnvironment(["YOLOSWAP_PORT": "http"]) }
    }
}
