import Foundation
import HotSwap
import Primitives
import Streams
import Yams

/// The service's configuration: a YAML file (`--config`), then environment variables, then flags.
///
/// Keys (YAML) and defaults:
/// - `server.host` (127.0.0.1), `server.port` (8080), `server.max_body_mb` (20), `server.metrics_require_token`
///   (false: `/metrics` is open to the scraper; true: it needs a bearer token of any role), `server.idle_timeout_s`
///   (30: a connection silent for longer is closed), `server.events_keepalive_s` (15: a comment line on each
///   `GET /v1/events/stream` that has been quiet this long), `server.events_buffer` (256: events held for a stream
///   client that reads slowly; one more drops the client, which reconnects and resumes), `server.console` (true: the
///   web console at `/`)
/// - `model_repository` (`./models`): every model path in the API is relative to it and may not leave it
/// - `state_dir` (`./var`): SQLite state and audit log
/// - `tokens`: `[{name, role: viewer|operator|admin, sha256: <hex of the bearer token>}]` (none: management refuses)
/// - `anonymous_detect` (false): let callers without a token detect
/// - `slots`: `{name: {model, version?, sha256?, provider?, providers?, intra_op_threads?, cuda_mem_limit_mb?,
///   trt_engine_cache?}}` (default: `default` with `yolov3-tiny-coco-416.onnx`); the execution keys are
///   `HotSwap.SlotExecution`'s: `provider` (`cpu` | `cuda[:id]` | `tensorrt[:id]`, default `cpu`), `providers` (the
///   others a load may ask for), `intra_op_threads` (default `hotswap.intra_op_threads`), `cuda_mem_limit_mb` (the CUDA
///   arena's cap), `trt_engine_cache` (TensorRT's engine cache folder)
/// - `ort_library`: path of `libonnxruntime.so` (default: `--ort-library`, else `ORT_DYLIB_PATH`, else beside the
///   binary, the package's `.ort/lib`, the system; the flag wins over this key)
/// - `routes`: `{product or work order: slot}`
/// - `grpc` (none: no gRPC endpoint): `port` (required; 0 picks a free one), `host` (`server.host`), `tls_cert` and
///   `tls_key` (PEM files, both or neither: TLS instead of plaintext) — the Open Inference Protocol over gRPC
/// - `desired_state` (none): a desired-state document to apply and watch (`serve --desired-state`; a ConfigMap key)
/// - `mqtt` (none): this instance as a device of an MQTT fleet; keys in ``FleetSettings``
/// - `streams`: `media_dir` (none: no file sources; file sources are relative to it), `allowed_urls` (prefixes a
///   network source must start with), `allowed_devices` (V4L2 devices), `output_dir` (none: no JSON-lines files),
///   `max_streams` (16), `max_pixels` (50 000 000: a larger frame ends its stream), `keep_alive_s` (15: a results
///   viewer gets a keep-alive comment after that long without a message), `run` (streams started with the
///   service: each as `POST /v1/streams` takes it, `name` required); see `Streams.SourcePolicy`
/// - `trusted_keys`: public key files; `require_signature` (false)
/// - `hotswap`: `serving_threads` (2), `queue_capacity` (64), `intra_op_threads` (1), `warmup_runs` (3),
///   `warmup_concurrency` (`serving_threads`: how many of them, the last, run at once), `warmup_timeout_s` (30),
///   `standby` (`keep` | `release` | seconds to keep), `standby_during_load` (`release`: a switching load frees the
///   standby it will displace before creating its session | `keep`), `optimized_cache` (true: graph-optimized models
///   kept in `<state_dir>/optimized-models`), `optimizer` (`child`: a cache miss has ORT optimize the model in a child
///   process | `in-process`), `memory_budget_mb` (none), `gpu_memory_budget_mb` (`{gpu id: MiB}`, none: GPUs are not
///   limited), `policy` (`availability-preserving` | `resource-preserving` | `auto`), `request_timeout_ms` (10000: how
///   long a request may wait for a worker or, during a resource-preserving swap, for a model)
///
/// Every number is range-checked when parsed (``Limits`` gives each key's range and why it ends there); a value outside
/// is refused with the key and the range, never stored to overflow or exhaust something later.
///
/// Relative paths resolve against the configuration file's folder (the working directory without a file).
/// Environment overrides: `YOLOSWAP_HOST`, `YOLOSWAP_PORT`, `YOLOSWAP_MODEL_REPOSITORY`, `YOLOSWAP_STATE_DIR`.
public struct ServerConfiguration: Sendable, Equatable {
    public struct Token: Sendable, Equatable, Codable {
        public var name: String
        public var role: Role
        public var sha256: String
        public init(name: String, role: Role, sha256: String) {
            self.name = name
            self.role = role
            self.sha256 = sha256.lowercased()
        }
    }

    /// A slot's initial model, and the execution keys as written (checked into `hotSwap.slotExecution`).
    public struct SlotModel: Sendable, Equatable, Codable {
        public var model: String
        public var version: String?
        public var sha256: String?
        public var provider: String?
        public var providers: [String]?
        public var intraOpThreads: Int?
        public var cudaMemLimitMB: Int?
        public var trtEngineCache: String?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case model, version, sha256, provider, providers
            case intraOpThreads = "intra_op_threads"
            case cudaMemLimitMB = "cuda_mem_limit_mb"
            case trtEngineCache = "trt_engine_cache"
        }

        public init(model: String, version: String? = nil, sha256: String? = nil, provider: String? = nil) {
            self.model = model
            self.version = version
            self.sha256 = sha256
            self.provider = provider
        }
    }

    public var host = "127.0.0.1"
    public var port = 8080
    public var maxBodyBytes = 20 << 20
    /// Whether `/metrics` needs a bearer token (`server.metrics_require_token`).
    public var metricsRequireToken = false
    /// Seconds a connection may stay silent before it is closed (`server.idle_timeout_s`, 1…3600).
    public var idleTimeoutSeconds = 30
    /// Seconds a request may take to arrive in full once its head has (`server.read_timeout_s`), whatever the route.
    public var readTimeoutSeconds = 60
    /// Connections held open at once (`server.max_connections`); more wait in the listen backlog.
    public var maxConnections = 4096
    /// Seconds of silence after which an event stream sends a keep-alive comment (`server.events_keepalive_s`).
    public var eventsKeepAliveSeconds = 15
    /// Events buffered per event-stream client before it is dropped as too slow (`server.events_buffer`).
    public var eventsClientBuffer = 256
    /// Long responses (event streams, stream results and previews) open at once (`server.max_viewers`), and per token
    /// (`server.max_viewers_per_token`); more are answered 429.
    public var maxViewers = 256
    public var maxViewersPerToken = 32
    /// Whether the web console is served at `/` (`server.console`).
    public var console = true
    public var modelRepository: String
    public var stateDirectory: String
    public var tokens: [Token] = []
    public var anonymousDetect = false
    public var slots: [String: SlotModel] = ["default": SlotModel(model: "yolov3-tiny-coco-416.onnx")]
    public var routes: [String: String] = [:]
    public var trustedKeys: [String] = []
    public var requireSignature = false
    /// The hot-swap manager's settings (the `hotswap` section, less the keys below).
    public var hotSwap = HotSwapConfiguration()
    public var optimizedCache = true
    /// Whether a cache miss optimizes the model in a child process (`optimizer: child`) or in this one.
    public var optimizeInChild = true
    public var requestTimeoutMilliseconds = 10_000
    /// `ort_library`: the ONNX Runtime library to load (nil: the usual lookup).
    public var ortLibrary: String?
    /// The desired-state file applied at start and on every change (`desired_state`), if any.
    public var desiredStatePath: String?
    /// The MQTT fleet this instance belongs to (`mqtt`), if any.
    public var mqtt: FleetSettings?
    /// What video streams may read and write (`streams.media_dir`, `allowed_urls`, `allowed_devices`, `output_dir`;
    /// by default nothing: no stream can be created).
    public var streamPolicy = SourcePolicy()
    /// Streams kept at once (`streams.max_streams`, 1…256, default 16).
    public var maxStreams = 16
    /// The largest frame a stream takes, width × height (`streams.max_pixels`, 1…8192², default 50 000 000 as an
    /// image of `POST /v1/detect`): a stream can hold about a dozen frames at once (queued, in flight, drawn).
    public var streamMaxPixels = StreamConfiguration.defaultMaxPixels
    /// A stream's results viewers get a keep-alive comment after this long without a frame or event
    /// (`streams.keep_alive_s`, 0.1…3600, default 15): shorter than a proxy's idle timeout.
    public var streamKeepAlive: Duration = .seconds(15)
    /// Streams the service starts each time it starts, once its slots are up (`streams.run`): each named, checked
    /// against the policy when the configuration is read; its slot is checked when it starts.
    public var configuredStreams: [StreamSpec] = []
    /// The gRPC endpoint (`grpc`), if any.
    public var grpc: GRPCSettings?

    /// Where the Open Inference Protocol's gRPC service listens, and its TLS files (PEM; nil: plaintext).
    public struct GRPCSettings: Sendable, Equatable {
        /// An IP address (or `localhost`); nil: the HTTP server's host (`server.host`, `--host`, `YOLOSWAP_HOST`), as
        /// it is when the service starts.
        public var host: String?
        public var port: Int
        public var tlsCertificate: String?
        public var tlsKey: String?

        public init(host: String? = nil, port: Int, tlsCertificate: String? = nil, tlsKey: String? = nil) {
            self.host = host
            self.port = port
            self.tlsCertificate = tlsCertificate
            self.tlsKey = tlsKey
        }
    }

    /// Where the gRPC endpoint listens: its own host, else the HTTP server's.
    public var grpcHost: String? { grpc.map { $0.host ?? host } }

    /// Defaults, with paths relative to `base` (the working directory when nil).
    public init(base: String? = nil) {
        let base = base ?? FileManager.default.currentDirectoryPath
        modelRepository = Self.resolve("./models", against: base)
        stateDirectory = Self.resolve("./var", against: base)
    }

    /// Reads a YAML file; relative paths resolve against its folder.
    /// - Throws: `ConfigurationError` naming the file and the problem.
    public static func load(path: String) throws -> ServerConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(file: path, message: "cannot read the file")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path,
            base: URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    /// Parses YAML text.
    public static func parse(_ text: String, file: String = "<config>", base: String? = nil) throws
        -> ServerConfiguration
    {
        let base = base ?? FileManager.default.currentDirectoryPath
        var config = ServerConfiguration(base: base)
        func fail(_ message: String) -> ConfigurationError { ConfigurationError(file: file, message: message) }
        let raw: RawConfiguration
        do {
            // Checked before it is decoded: keys the configuration does not have (a misspelt setting would not be in
            // force), numbers that would trap Yams (see `YAMLInput`).
            let node = try YAMLInput.compose(text) ?? .mapping(.init([]))
            try YAMLInput.check(node, schema: RawConfiguration.schema)
            raw = try YAMLDecoder().decode(RawConfiguration.self, from: node)
        } catch let refusal as YAMLInput.Refusal {
            throw fail(refusal.description)
        } catch {
            throw fail(YAMLInput.describe(error))
        }
        if let server = raw.server { try config.apply(server, fail: fail) }
        if let repo = raw.model_repository { config.modelRepository = resolve(repo, against: base) }
        if let state = raw.state_dir { config.stateDirectory = resolve(state, against: base) }
        if let desired = raw.desired_state { config.desiredStatePath = resolve(desired, against: base) }
        try config.applyAccess(raw, base: base, fail: fail)
        if let library = raw.ort_library { config.ortLibrary = resolve(library, against: base) }
        if let hotswap = raw.hotswap { try config.apply(hotswap, fail: fail) }
        try config.applySlots(raw, base: base, fail: fail)
        if let mqtt = raw.mqtt { config.mqtt = try FleetSettings.parse(mqtt, base: base, fail: fail) }
        if let streams = raw.streams {
            config.streamPolicy = SourcePolicy(mediaDirectory: streams.media_dir.map { resolve($0, against: base) },
                allowedURLPrefixes: streams.allowed_urls ?? [], allowedDevices: streams.allowed_devices ?? [],
                outputDirectory: streams.output_dir.map { resolve($0, against: base) })
            if let max = streams.max_streams {
                guard (1...256).contains(max) else { throw fail("streams.max_streams must lie in 1...256, got \(max)") }
                config.maxStreams = max
            }
            if let pixels = streams.max_pixels {
                guard (1...StreamConfiguration.maxPixelsLimit).contains(pixels) else {
                    throw fail("streams.max_pixels must lie in 1...\(StreamConfiguration.maxPixelsLimit), got \(pixels)")
                }
                config.streamMaxPixels = pixels
            }
            if let seconds = streams.keep_alive_s {
                guard seconds.isFinite, (0.1...3600).contains(seconds) else {
                    throw fail("streams.keep_alive_s must lie in 0.1...3600, got \(seconds)")
                }
                config.streamKeepAlive = .milliseconds(Int64((seconds * 1000).rounded()))
            }
            try config.applyConfiguredStreams(streams.run ?? [], mqtt: config.mqtt != nil, fail: fail)
        }
        if let grpc = raw.grpc {
            guard let port = grpc.port else { throw fail("grpc.port is required to serve gRPC") }
            guard (grpc.tls_cert == nil) == (grpc.tls_key == nil) else {
                throw fail("grpc.tls_cert and grpc.tls_key go together (TLS needs both, plaintext neither)")
            }
            if let host = grpc.host, !GRPCSettings.isListenable(host) {
                throw fail("grpc.host must be an IP address or localhost, got \(host)")
            }
            config.grpc = GRPCSettings(host: grpc.host,
                port: try Limits.check(port, "grpc.port", Limits.port, fail: fail),
                tlsCertificate: grpc.tls_cert.map { resolve($0, against: base) },
                tlsKey: grpc.tls_key.map { resolve($0, against: base) })
        }
        return config
    }

    // MARK: Sections

    private mutating func apply(_ server: RawConfiguration.Server, fail: (String) -> ConfigurationError) throws {
        if let host = server.host { self.host = host }
        if let require = server.metrics_require_token { metricsRequireToken = require }
        if let seconds = server.idle_timeout_s {
            idleTimeoutSeconds = try Limits.check(
                seconds, "server.idle_timeout_s", Limits.idleTimeoutSeconds, fail: fail)
        }
        if let seconds = server.read_timeout_s {
            readTimeoutSeconds = try Limits.check(
                seconds, "server.read_timeout_s", Limits.readTimeoutSeconds, fail: fail)
        }
        if let count = server.max_connections {
            maxConnections = try Limits.check(count, "server.max_connections", Limits.maxConnections, fail: fail)
        }
        if let port = server.port { self.port = try Limits.check(port, "server.port", Limits.port, fail: fail) }
        if let seconds = server.events_keepalive_s {
            eventsKeepAliveSeconds = try Limits.check(
                seconds, "server.events_keepalive_s", Limits.eventsKeepAliveSeconds, fail: fail)
        }
        if let count = server.events_buffer {
            eventsClientBuffer = try Limits.check(count, "server.events_buffer", Limits.eventsClientBuffer, fail: fail)
        }
        if let count = server.max_viewers {
            maxViewers = try Limits.check(count, "server.max_viewers", Limits.maxViewers, fail: fail)
        }
        if let count = server.max_viewers_per_token {
            maxViewersPerToken = try Limits.check(
                count, "server.max_viewers_per_token", Limits.maxViewers, fail: fail)
        }
        if let console = server.console { self.console = console }
        if let mb = server.max_body_mb {
            maxBodyBytes = try Limits.check(mb, "server.max_body_mb", Limits.maxBodyMB, fail: fail) << 20
        }
    }

    /// Names the service writes in the audit log as the actor of its own steps and of callers without a token.
    static let reservedTokenNames: Set<String> = ["system", "anonymous", "unauthenticated"]

    /// `tokens`, `anonymous_detect`, `trusted_keys`, `require_signature`.
    private mutating func applyAccess(_ raw: RawConfiguration, base: String, fail: (String) -> ConfigurationError)
        throws
    {
        // ASCII digits only: `Character.isHexDigit` also takes fullwidth forms, which `Hex.bytes` then refuses, and
        // the authenticator would drop the token without a word.
        var owners: [String: String] = [:]
        for token in raw.tokens ?? [] {
            // The name is the actor in the audit log and a caller's key for the refusals' rate limit: not empty (the
            // anonymous callers' key), nor one the service writes as itself, nor `http:…`/`mqtt:…` forms (no ':').
            guard (1...128).contains(token.name.utf8.count), !token.name.contains(":"),
                  !token.name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }),
                  !Self.reservedTokenNames.contains(token.name)
            else {
                throw fail("token name '\(token.name.prefix(utf8Bytes: 64))' must be 1…128 bytes without ':' or control "
                    + "characters, and not \(Self.reservedTokenNames.sorted().joined(separator: ", ")) (the service's own "
                    + "names)")
            }
            guard token.sha256.isASCIIHex(count: 64) else {
                throw fail("token '\(token.name)': sha256 must be 64 hex digits (the SHA-256 of the token)")
            }
            // Two names for one token: the caller would be either, and the audit log would name one at random.
            if let other = owners.updateValue(token.name, forKey: token.sha256.lowercased()) {
                throw fail("tokens '\(other)' and '\(token.name)' have the same sha256 (one token, two names)")
            }
        }
        tokens = raw.tokens ?? []
        if Set(tokens.map(\.name)).count != tokens.count { throw fail("token names must be unique") }
        if let anonymous = raw.anonymous_detect { anonymousDetect = anonymous }
        trustedKeys = (raw.trusted_keys ?? []).map { Self.resolve($0, against: base) }
        if let require = raw.require_signature { requireSignature = require }
        if requireSignature && trustedKeys.isEmpty { throw fail("require_signature is true but trusted_keys is empty") }
    }

    /// `slots` (with each slot's execution keys), `routes`.
    private mutating func applySlots(_ raw: RawConfiguration, base: String, fail: (String) -> ConfigurationError)
        throws
    {
        if let slots = raw.slots {
            guard !slots.isEmpty else { throw fail("slots: at least one slot is needed") }
            self.slots = slots
            for name in slots.keys.sorted() where !DesiredState.isName(name) {
                throw fail("slots: '\(name.prefix(64))' is not a slot name: 1 to \(DesiredState.Limits.nameLength) "
                    + "of A-Z a-z 0-9 . _ -")
            }
            for (name, slot) in slots {
                hotSwap.slotExecution[name] = try Self.execution(of: slot, named: name, base: base, fail: fail)
                // As a desired-state document's: a digest that is no digest, or a version past its bound, left the
                // service running with the slot never ready ("sha256 mismatch … expected nothex").
                if let sha256 = slot.sha256, !sha256.isASCIIHex(count: 64) {
                    throw fail("slots.\(name).sha256 must be 64 hex digits (the SHA-256 of the model file)")
                }
                if let version = slot.version, version.isEmpty || version.utf8.count > DesiredState.Limits.versionLength {
                    throw fail("slots.\(name).version must have 1 to \(DesiredState.Limits.versionLength) bytes")
                }
                guard !slot.model.isEmpty, slot.model.utf8.count <= 1024 else {
                    throw fail("slots.\(name).model must be a path of 1 to 1024 bytes")
                }
                self.slots[name]?.sha256 = slot.sha256?.lowercased()
            }
        }
        if let routes = raw.routes {
            for (product, slot) in routes where slots[slot] == nil {
                throw fail("routes: '\(product)' points to unknown slot '\(slot)'")
            }
            if routes.count > DesiredState.Limits.routes {
                throw fail("routes: \(routes.count) routes; at most \(DesiredState.Limits.routes) are accepted")
            }
            for product in routes.keys.sorted() {
                if let problem = DesiredState.productProblem(product) { throw fail("routes: '\(product.prefix(64))' \(problem)") }
            }
            self.routes = routes
        }
    }

    /// `streams.run`: every entry named (its id in the API), names unique, no more than `max_streams`, and each one
    /// allowed by the policy as `POST /v1/streams` would check it.
    private mutating func applyConfiguredStreams(_ entries: [ConfiguredStreamEntry], mqtt: Bool,
                                                 fail: (String) -> ConfigurationError) throws {
        guard entries.count <= maxStreams else {
            throw fail("streams.run lists \(entries.count) streams; streams.max_streams allows \(maxStreams)")
        }
        var names = Set<String>()
        var outputs: [String: String] = [:]
        // Each file source's resolved path and its stream: an output may be none of them (the registry refused it at
        // the start, logged only, and the service ran without that camera).
        var sources: [String: String] = [:]
        for entry in entries {
            guard let name = entry.spec.name, case .file(let path)? = try? streamPolicy.resolve(entry.spec.source)
            else { continue }
            sources[path] = name
        }
        for (index, entry) in entries.enumerated() {
            let key = "streams.run[\(index)]"
            let spec = entry.spec
            if let unknown = entry.unknownKeys.first {
                let known = StreamSpec.CodingKeys.allCases.map(\.rawValue).joined(separator: ", ")
                throw fail("\(key).\(unknown) is not a key of a stream (\(known); outputs: file, video, mqtt)")
            }
            guard let name = spec.name else {
                throw fail("\(key).name is required: a configured stream is addressed by its name")
            }
            guard names.insert(name).inserted else { throw fail("\(key).name '\(name)' names two streams") }
            do {
                _ = try StreamRegistry.check(spec.request(slot: spec.slot ?? ""), policy: streamPolicy,
                    mqttAvailable: mqtt)
                // Two configured streams writing one file would interleave their lines or frames.
                for file in [spec.outputs?.file, spec.outputs?.video].compactMap({ $0 }) {
                    let path = try streamPolicy.resolveOutput(file)
                    if let other = outputs.updateValue(name, forKey: path) {
                        throw StreamError.outputNotAllowed(path: file, reason: "stream '\(other)' writes it too")
                    }
                    if let reader = sources[path] {
                        throw StreamError.outputNotAllowed(path: file, reason: reader == name
                            ? "it is the stream's own source" : "stream '\(reader)' reads it")
                    }
                }
            } catch {
                throw fail("\(key) ('\(name)'): \(error)")
            }
        }
        configuredStreams = entries.map(\.spec)
    }

    private mutating func apply(_ h: RawConfiguration.HotSwap, fail: (String) -> ConfigurationError) throws {
        if let v = h.serving_threads {
            hotSwap.servingThreads = try Limits.check(v, "hotswap.serving_threads", Limits.threads, fail: fail)
        }
        if let v = h.queue_capacity {
            hotSwap.queueCapacity = try Limits.check(v, "hotswap.queue_capacity", Limits.queueCapacity, fail: fail)
        }
        if let v = h.intra_op_threads {
            hotSwap.intraOpThreads = try Limits.check(v, "hotswap.intra_op_threads", Limits.threads, fail: fail)
        }
        if let v = h.warmup_runs {
            hotSwap.warmupRuns = try Limits.check(v, "hotswap.warmup_runs", Limits.warmupRuns, fail: fail)
        }
        if let v = h.warmup_concurrency {
            hotSwap.warmupConcurrency =
                try Limits.check(v, "hotswap.warmup_concurrency", Limits.threads, fail: fail)
        }
        if let v = h.warmup_timeout_s {
            guard v.isFinite, v > 0, v <= Limits.warmupTimeoutSeconds else {
                throw fail("hotswap.warmup_timeout_s must be a number of seconds in "
                    + "(0, \(Int(Limits.warmupTimeoutSeconds))], got \(v)")
            }
            // Whole milliseconds, rounded up: 0.0004 s is 1 ms, not a timeout of 0 that fails every warm-up.
            hotSwap.warmupTimeout = .milliseconds(Int((v * 1000).rounded(.up)))
        }
        if let v = h.memory_budget_mb {
            hotSwap.memoryBudgetBytes =
                try Limits.check(v, "hotswap.memory_budget_mb", Limits.memoryBudgetMB, fail: fail) << 20
        }
        if let v = h.request_timeout_ms {
            requestTimeoutMilliseconds =
                try Limits.check(v, "hotswap.request_timeout_ms", Limits.requestTimeoutMilliseconds, fail: fail)
        }
        for (id, mb) in h.gpu_memory_budget_mb ?? [:] {
            guard let gpu = Int(id), (0...1023).contains(gpu) else {
                throw fail("hotswap.gpu_memory_budget_mb: '\(id)' is not a GPU id in 0...1023")
            }
            hotSwap.gpuMemoryBudgets[gpu] =
                try Limits.check(mb, "hotswap.gpu_memory_budget_mb.\(id)", Limits.memoryBudgetMB, fail: fail) << 20
        }
        if let v = h.policy {
            guard let policy = SwapPolicy(rawValue: v) else { throw fail("hotswap.policy '\(v)' is unknown") }
            hotSwap.policy = policy
        }
        if let v = h.optimized_cache { optimizedCache = v }
        if let v = h.optimizer {
            guard ["child", "in-process"].contains(v) else {
                throw fail("hotswap.optimizer must be child or in-process")
            }
            optimizeInChild = v == "child"
        }
        if let v = h.standby_during_load {
            guard ["keep", "release"].contains(v) else {
                throw fail("hotswap.standby_during_load must be keep or release")
            }
            hotSwap.releaseStandbyBeforeLoad = v == "release"
        }
        if let v = h.standby { hotSwap.standbyRetention = try Self.standbyRetention(v, fail: fail) }
    }

    /// A slot's `SlotExecution` from its keys, each checked.
    private static func execution(of slot: SlotModel, named name: String, base: String,
                                  fail: (String) -> ConfigurationError) throws -> SlotExecution {
        func target(_ text: String, _ key: String) throws -> ExecutionTarget {
            guard let target = ExecutionTarget(parsing: text) else {
                throw fail("slots.\(name).\(key): '\(text)' is not cpu, cuda[:id] or tensorrt[:id]")
            }
            return target
        }
        var execution = SlotExecution()
        if let provider = slot.provider { execution.target = try target(provider, "provider") }
        execution.allowedTargets = try (slot.providers ?? []).map { try target($0, "providers") }
        if let threads = slot.intraOpThreads {
            execution.intraOpThreads = try Limits.check(threads, "slots.\(name).intra_op_threads", Limits.threads,
                fail: fail)
        }
        if let mb = slot.cudaMemLimitMB {
            execution.gpuMemoryLimitBytes = try Limits.check(mb, "slots.\(name).cuda_mem_limit_mb",
                Limits.memoryBudgetMB, fail: fail) << 20
        }
        execution.tensorRTEngineCacheDirectory = slot.trtEngineCache.map { resolve($0, against: base) }
        return execution
    }

    private static func standbyRetention(_ text: String, fail: (String) -> ConfigurationError) throws
        -> StandbyRetention
    {
        switch text {
        case "keep": return .keep
        case "release": return .release
        default:
            guard let seconds = Double(text), seconds.isFinite, seconds > 0, seconds <= Limits.standbySeconds else {
                throw fail("hotswap.standby must be keep, release or a number of seconds in "
                    + "(0, \(Int(Limits.standbySeconds))], got '\(text)'")
            }
            return .keepFor(.milliseconds(Int((seconds * 1000).rounded(.up))))
        }
    }

    /// Applies `YOLOSWAP_*` environment overrides.
    public mutating func applyEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws {
        if let host = environment["YOLOSWAP_HOST"] { self.host = host }
        if let port = environment["YOLOSWAP_PORT"] {
            guard let value = Int(port), Limits.port.contains(value) else {
                throw ConfigurationError(file: "environment",
                    message: "YOLOSWAP_PORT '\(port)' is not a port in \(Limits.text(Limits.port))")
            }
            self.port = value
        }
        let cwd = FileManager.default.currentDirectoryPath
        if let repo = environment["YOLOSWAP_MODEL_REPOSITORY"] { modelRepository = Self.resolve(repo, against: cwd) }
        if let state = environment["YOLOSWAP_STATE_DIR"] { stateDirectory = Self.resolve(state, against: cwd) }
    }

    /// Where optimized models are cached (`<state_dir>/optimized-models`), or nil when `optimized_cache` is off.
    public var optimizedCacheDirectory: String? {
        optimizedCache ? URL(fileURLWithPath: stateDirectory).appendingPathComponent("optimized-models").path : nil
    }

    static func resolve(_ path: String, against base: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        let url = expanded.hasPrefix("/") ? URL(fileURLWithPath: expanded)
            : URL(fileURLWithPath: base).appendingPathComponent(expanded)
        return url.standardizedFileURL.path
    }
}

// MARK: - Limits

extension ServerConfiguration {
    /// The allowed range of each numeric key. Each ends where a larger value stops meaning anything a deployment
    /// could want and starts to overflow arithmetic done with it later (`<< 20`, deadlines in nanoseconds) or to
    /// exhaust the machine (threads, memory reserved up front).
    public enum Limits {
        /// `server.port`: a TCP port; 0 lets the system pick a free one.
        public static let port = 0...65535
        /// `server.idle_timeout_s`: at least a second, so that a client between two requests is not cut off; an hour
        /// keeps a silent client from holding a connection for longer.
        public static let idleTimeoutSeconds = 1...3600
        /// `server.read_timeout_s`: a request that takes over an hour to arrive is not coming.
        public static let readTimeoutSeconds = 1...3600
        /// `server.max_connections`: each connection is a file descriptor and a little memory; a million is beyond
        /// what one process serves and what `RLIMIT_NOFILE` usually allows (the server raises its soft limit to fit).
        public static let maxConnections = 1...1_000_000
        /// `server.events_keepalive_s`: proxies close connections silent for about a minute; an hour is the idle
        /// timeout's own limit.
        public static let eventsKeepAliveSeconds = 1...3600
        /// `server.events_buffer`: events (a kilobyte or so each) held per stream client; past this a reader is
        /// not keeping up, and memory per client stays bounded.
        public static let eventsClientBuffer = 1...100_000
        /// `server.max_viewers`, `server.max_viewers_per_token`: each viewer is a connection, a task and its buffer;
        /// no more than the connections a server may hold.
        public static let maxViewers = 1...1_000_000
        /// `server.max_body_mb`: a request body is held whole in memory while its image is decoded, so the limit is
        /// memory per request; a gigabyte is far past any image the detector can take, and far from overflowing
        /// the conversion to bytes.
        public static let maxBodyMB = 1...1024
        /// `hotswap.serving_threads`, `hotswap.intra_op_threads` and `hotswap.warmup_concurrency`: each is an OS
        /// thread (per slot, per model, per warm-up) with its own stack; more threads than the largest machines have
        /// cores only adds contention.
        public static let threads = 1...256
        /// `hotswap.queue_capacity`: requests waiting per slot, each holding its body; beyond this a client waits
        /// longer than any request timeout allows, so failing fast as overloaded is the better answer.
        public static let queueCapacity = 1...100_000
        /// `hotswap.warmup_runs`: inferences run before a model is ready; past a hundred they only delay the swap.
        public static let warmupRuns = 0...100
        /// `hotswap.warmup_timeout_s`: a warm-up taking a day has failed.
        public static let warmupTimeoutSeconds = 86_400.0
        /// `hotswap.memory_budget_mb`: one tebibyte is beyond the memory of any machine this serves on, and its
        /// conversion to bytes stays far from overflowing.
        public static let memoryBudgetMB = 1...1_048_576
        /// `hotswap.request_timeout_ms`: how long a request may wait; an hour is past any client's patience and
        /// keeps deadlines computed in nanoseconds far from overflowing.
        public static let requestTimeoutMilliseconds = 1...3_600_000
        /// `hotswap.standby` as seconds: a standby kept for a year is kept; use `keep`.
        public static let standbySeconds = 31_536_000.0

        /// The range as written in errors, e.g. `1...256`.
        static func text(_ range: ClosedRange<Int>) -> String { "\(range.lowerBound)...\(range.upperBound)" }

        /// `value` when `range` holds it.
        /// - Throws: the error `fail` makes from a message naming `key`, the range and the value.
        static func check(_ value: Int, _ key: String, _ range: ClosedRange<Int>,
                          fail: (String) -> ConfigurationError) throws -> Int {
            guard range.contains(value) else { throw fail("\(key) must be in \(text(range)), got \(value)") }
            return value
        }
    }
}

/// A configuration problem, with the file it came from.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public var description: String { "configuration \(file): \(message)" }
}

/// The YAML shape, decoded as written.
private struct RawConfiguration: Decodable {
    struct Server: Decodable {
        var host: String?
        var port: Int?
        var max_body_mb: Int?
        var metrics_require_token: Bool?
        var idle_timeout_s: Int?
        var read_timeout_s: Int?
        var max_connections: Int?
        var events_keepalive_s: Int?
        var events_buffer: Int?
        var max_viewers: Int?
        var max_viewers_per_token: Int?
        var console: Bool?
    }
    struct HotSwap: Decodable {
        var serving_threads: Int?
        var queue_capacity: Int?
        var intra_op_threads: Int?
        var warmup_runs: Int?
        var warmup_concurrency: Int?
        var warmup_timeout_s: Double?
        var standby: String?
        var standby_during_load: String?
        var optimized_cache: Bool?
        var optimizer: String?
        var memory_budget_mb: Int?
        var gpu_memory_budget_mb: [String: Int]?
        var policy: String?
        var request_timeout_ms: Int?
    }
    struct GRPC: Decodable {
        var host: String?
        var port: Int?
        var tls_cert: String?
        var tls_key: String?
    }
    var server: Server?
    var grpc: GRPC?
    var model_repository: String?
    var desired_state: String?
    var state_dir: String?
    var tokens: [ServerConfiguration.Token]?
    var anonymous_detect: Bool?
    var slots: [String: ServerConfiguration.SlotModel]?
    var routes: [String: String]?
    var trusted_keys: [String]?
    var require_signature: Bool?
    /// `streams`: what video streams may read and write.
    struct Streams: Decodable {
        var media_dir: String?
        var output_dir: String?
        var allowed_urls: [String]?
        var allowed_devices: [String]?
        var max_streams: Int?
        var max_pixels: Int?
        var keep_alive_s: Double?
        var run: [ConfiguredStreamEntry]?
    }
    var hotswap: HotSwap?
    var ort_library: String?
    var mqtt: RawFleetSettings?
    var streams: Streams?

    /// The keys of each section, read off the types that decode them (every stored property is a key; a slot's keys
    /// are its `CodingKeys`); `streams.run` entries check their own (`ConfiguredStreamEntry`).
    static let schema: YAMLInput.Schema = keys(of: RawConfiguration(), nested: [
        "server": keys(of: Server()), "grpc": keys(of: GRPC()), "hotswap": keys(of: HotSwap()),
        "streams": keys(of: Streams()),
        "mqtt": keys(of: RawFleetSettings(), nested: ["tls": keys(of: RawFleetSettings.TLS())]),
        "tokens": .elements(keys(of: ServerConfiguration.Token(name: "", role: .viewer, sha256: ""))),
        "slots": .values(.keys(Dictionary(uniqueKeysWithValues:
            ServerConfiguration.SlotModel.CodingKeys.allCases.map { ($0.rawValue, .any) }))),
    ])

    private static func keys(of value: Any, nested: [String: YAMLInput.Schema] = [:]) -> YAMLInput.Schema {
        .keys(Dictionary(uniqueKeysWithValues: Mirror(reflecting: value).children.compactMap(\.label).map {
            ($0, nested[$0] ?? .any)
        }))
    }
}

extension ServerConfiguration.GRPCSettings {
    /// Whether the gRPC transport can listen on `host`: an IPv4 or IPv6 address, or `localhost` (it takes no other
    /// name).
    public static func isListenable(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
