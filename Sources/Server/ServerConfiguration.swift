import Foundation
import HotSwap
import Yams

/// The service's configuration: a YAML file (`--config`), then environment variables, then flags.
///
/// Keys (YAML) and defaults:
/// - `server.host` (127.0.0.1), `server.port` (8080), `server.max_body_mb` (20)
/// - `model_repository` (`./models`): every model path in the API is relative to it and may not leave it
/// - `state_dir` (`./var`): SQLite state and audit log
/// - `tokens`: `[{name, role: viewer|operator|admin, sha256: <hex of the bearer token>}]` (none: management refuses)
/// - `anonymous_detect` (false): let callers without a token detect
/// - `slots`: `{name: {model, version?, sha256?}}` (default: `default` with `yolov3-tiny-coco-416.onnx`)
/// - `routes`: `{product or work order: slot}`
/// - `trusted_keys`: public key files; `require_signature` (false)
/// - `hotswap`: `serving_threads` (2), `queue_capacity` (64), `intra_op_threads` (1), `warmup_runs` (3),
///   `warmup_timeout_s` (30), `standby` (`keep` | `release` | seconds to keep), `standby_during_load` (`release`:
///   a switching load frees the standby it will displace before creating its session | `keep`),
///   `optimized_cache` (true: graph-optimized models kept in `<state_dir>/optimized-models`), `optimizer` (`child`: a
///   cache miss has ORT optimize the model in a child process | `in-process`), `memory_budget_mb` (none),
///   `policy` (`availability-preserving` | `resource-preserving` | `auto`), `request_timeout_ms` (10000: how long a
///   request may wait for a worker or, during a resource-preserving swap, for a model)
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

    public struct SlotModel: Sendable, Equatable, Codable {
        public var model: String
        public var version: String?
        public var sha256: String?
        public init(model: String, version: String? = nil, sha256: String? = nil) {
            self.model = model
            self.version = version
            self.sha256 = sha256
        }
    }

    public var host = "127.0.0.1"
    public var port = 8080
    public var maxBodyBytes = 20 << 20
    public var modelRepository: String
    public var stateDirectory: String
    public var tokens: [Token] = []
    public var anonymousDetect = false
    public var slots: [String: SlotModel] = ["default": SlotModel(model: "yolov3-tiny-coco-416.onnx")]
    public var routes: [String: String] = [:]
    public var trustedKeys: [String] = []
    public var requireSignature = false
    public var servingThreads = 2
    public var queueCapacity = 64
    public var intraOpThreads = 1
    public var warmupRuns = 3
    public var warmupTimeoutSeconds = 30.0
    public var standby: StandbyRetention = .keep
    public var releaseStandbyBeforeLoad = true
    public var optimizedCache = true
    /// Whether a cache miss optimizes the model in a child process (`optimizer: child`) or in this one.
    public var optimizeInChild = true
    public var memoryBudgetBytes: Int?
    public var policy: SwapPolicy = .availabilityPreserving
    public var requestTimeoutMilliseconds = 10_000

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
        let raw: RawConfiguration
        do { raw = try YAMLDecoder().decode(RawConfiguration.self, from: text.isEmpty ? "{}" : text) } catch {
            throw ConfigurationError(file: file, message: "\(error)")
        }
        func fail(_ message: String) -> ConfigurationError { ConfigurationError(file: file, message: message) }
        if let server = raw.server {
            if let host = server.host { config.host = host }
            if let port = server.port {
                guard (0...65535).contains(port) else { throw fail("server.port \(port) is not a port") }
                config.port = port
            }
            if let mb = server.max_body_mb {
                guard mb > 0 else { throw fail("server.max_body_mb must be positive") }
                config.maxBodyBytes = mb << 20
            }
        }
        if let repo = raw.model_repository { config.modelRepository = resolve(repo, against: base) }
        if let state = raw.state_dir { config.stateDirectory = resolve(state, against: base) }
        for token in raw.tokens ?? [] {
            guard token.sha256.count == 64, token.sha256.allSatisfy(\.isHexDigit) else {
                throw fail("token '\(token.name)': sha256 must be 64 hex digits (the SHA-256 of the token)")
            }
        }
        config.tokens = raw.tokens ?? []
        if Set(config.tokens.map(\.name)).count != config.tokens.count { throw fail("token names must be unique") }
        if let anonymous = raw.anonymous_detect { config.anonymousDetect = anonymous }
        if let slots = raw.slots {
            guard !slots.isEmpty else { throw fail("slots: at least one slot is needed") }
            config.slots = slots
        }
        if let routes = raw.routes {
            for (product, slot) in routes where config.slots[slot] == nil {
                throw fail("routes: '\(product)' points to unknown slot '\(slot)'")
            }
            config.routes = routes
        }
        config.trustedKeys = (raw.trusted_keys ?? []).map { resolve($0, against: base) }
        if let require = raw.require_signature { config.requireSignature = require }
        if config.requireSignature && config.trustedKeys.isEmpty {
            throw fail("require_signature is true but trusted_keys is empty")
        }
        if let h = raw.hotswap {
            if let v = h.serving_threads { config.servingThreads = v }
            if let v = h.queue_capacity { config.queueCapacity = v }
            if let v = h.intra_op_threads { config.intraOpThreads = v }
            if let v = h.warmup_runs { config.warmupRuns = v }
            if let v = h.warmup_timeout_s { config.warmupTimeoutSeconds = v }
            if let v = h.memory_budget_mb { config.memoryBudgetBytes = v << 20 }
            if let v = h.request_timeout_ms { config.requestTimeoutMilliseconds = v }
            if let v = h.policy {
                guard let policy = SwapPolicy(rawValue: v) else { throw fail("hotswap.policy '\(v)' is unknown") }
                config.policy = policy
            }
            if let v = h.optimized_cache { config.optimizedCache = v }
            if let v = h.optimizer {
                guard ["child", "in-process"].contains(v) else { throw fail("hotswap.optimizer must be child or in-process") }
                config.optimizeInChild = v == "child"
            }
            if let v = h.standby_during_load {
                guard ["keep", "release"].contains(v) else {
                    throw fail("hotswap.standby_during_load must be keep or release")
                }
                config.releaseStandbyBeforeLoad = v == "release"
            }
            if let v = h.standby {
                switch v {
                case "keep": config.standby = .keep
                case "release": config.standby = .release
                default:
                    guard let seconds = Double(v), seconds > 0 else {
                        throw fail("hotswap.standby must be keep, release or a number of seconds")
                    }
                    config.standby = .keepFor(.milliseconds(Int(seconds * 1000)))
                }
            }
            guard config.servingThreads > 0, config.queueCapacity > 0, config.intraOpThreads > 0,
                config.warmupRuns >= 0, config.warmupTimeoutSeconds > 0, config.requestTimeoutMilliseconds > 0
            else { throw fail("hotswap: thread counts, queue capacity and timeouts must be positive") }
        }
        return config
    }

    /// Applies `YOLOSWAP_*` environment overrides.
    public mutating func applyEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        if let host = environment["YOLOSWAP_HOST"] { self.host = host }
        if let port = environment["YOLOSWAP_PORT"] {
            guard let value = Int(port), (0...65535).contains(value) else {
                throw ConfigurationError(file: "environment", message: "YOLOSWAP_PORT '\(port)' is not a port")
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

    /// The hot-swap manager's settings.
    public var hotSwap: HotSwapConfiguration {
        HotSwapConfiguration(
            servingThreads: servingThreads, queueCapacity: queueCapacity, intraOpThreads: intraOpThreads,
            warmupRuns: warmupRuns, warmupTimeout: .milliseconds(Int(warmupTimeoutSeconds * 1000)),
            standbyRetention: standby, releaseStandbyBeforeLoad: releaseStandbyBeforeLoad,
            memoryBudgetBytes: memoryBudgetBytes, policy: policy)
    }

    static func resolve(_ path: String, against base: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        let url = expanded.hasPrefix("/") ? URL(fileURLWithPath: expanded)
            : URL(fileURLWithPath: base).appendingPathComponent(expanded)
        return url.standardizedFileURL.path
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
    struct Server: Decodable { var host: String?; var port: Int?; var max_body_mb: Int? }
    struct HotSwap: Decodable {
        var serving_threads: Int?
        var queue_capacity: Int?
        var intra_op_threads: Int?
        var warmup_runs: Int?
        var warmup_timeout_s: Double?
        var standby: String?
        var standby_during_load: String?
        var optimized_cache: Bool?
        var optimizer: String?
        var memory_budget_mb: Int?
        var policy: String?
        var request_timeout_ms: Int?
    }
    var server: Server?
    var model_repository: String?
    var state_dir: String?
    var tokens: [ServerConfiguration.Token]?
    var anonymous_detect: Bool?
    var slots: [String: ServerConfiguration.SlotModel]?
    var routes: [String: String]?
    var trusted_keys: [String]?
    var require_signature: Bool?
    var hotswap: HotSwap?
}
