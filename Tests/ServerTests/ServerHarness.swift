import AuditLog
import Foundation
import HTTPTypes
import HotSwap
import HotSwapTesting
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Server
import TestSupport
import Testing

/// Builds a real server (real slots, real audit log in SQLite) over fake inference backends for in-process router
/// tests: no ONNX Runtime. The model repository holds small placeholder files, each standing for a kind of model.
struct ServerHarness {
    /// The repository's models and the fake backend each stands for.
    static let models: [String: FakeBackend] = [
        "synthetic/yolov5-nc80-416-identity.onnx": FakeBackend(inputSize: 416),
        "synthetic/yolov5-nc80-320-identity.onnx": FakeBackend(inputSize: 320),
        // Same schema as the others but other class names: refused as incompatible unless a schema change is allowed.
        "synthetic/yolov5-nc80-320-other-names.onnx": FakeBackend(
            inputSize: 320, names: FakeBackend.cocoNames.map { $0 + "-x" }),
        // Outputs NaN: refused by the warm-up.
        "synthetic/nan.onnx": FakeBackend(nonFinite: true),
    ]

    static let loader = FakeLoader { label in
        models.first { label.hasSuffix("/" + $0.key) }?.value ?? FakeBackend()
    }

    static let tokens = [
        ServerConfiguration.Token(name: "alice", role: .operator, sha256: TokenAuthenticator.digest(of: "alice-token")),
        ServerConfiguration.Token(name: "carol", role: .viewer, sha256: TokenAuthenticator.digest(of: "carol-token")),
        ServerConfiguration.Token(name: "root", role: .admin, sha256: TokenAuthenticator.digest(of: "root-token")),
    ]

    let repository: URL
    let configuration: ServerConfiguration
    let control: ControlPlane
    let audit: AuditTrail

    /// A model repository in a temp folder with copies of the synthetic models, plus a symlink that escapes it.
    /// - Parameters:
    ///   - requestTimeoutMilliseconds: each request's deadline; a minute, not the service's 10 s: at the start of a CI
    ///     run the synchronous tests that run Python hold the cooperative pool for about half a minute, and a request
    ///     answered 503 for waiting that long would hide what a test checks (none of them tests this deadline).
    ///   - store: where the manager commits (nil: nothing persisted).
    ///   - slotExecution: providers and settings per slot (none: every slot on the CPU).
    ///   - configure: changes to the configuration (its slots, budget, policy) and files added to the repository
    ///     (`modelRepository`) before the server starts.
    init(tokens: [ServerConfiguration.Token] = Self.tokens, anonymousDetect: Bool = false,
         maxBodyBytes: Int = 20 << 20, requestTimeoutMilliseconds: Int = 60_000,
         store: (any SlotStateStore)? = nil, slotExecution: [String: SlotExecution] = [:],
         loader: (any ModelLoader)? = nil, extraModels: [String] = [],
         configure: (inout ServerConfiguration) throws -> Void = { _ in }) async throws {
        let repo = FileManager.default.temporaryDirectory.appendingPathComponent("repo-\(UUID())")
        try FileManager.default.createDirectory(at: repo.appendingPathComponent("synthetic"),
            withIntermediateDirectories: true)
        for name in Array(Self.models.keys) + extraModels {
            try Data("placeholder for \(name)".utf8).write(to: repo.appendingPathComponent(name))
        }
        try FileManager.default.createSymbolicLink(atPath: repo.appendingPathComponent("escape.onnx").path,
            withDestinationPath: "/etc/passwd")
        repository = repo
        var config = ServerConfiguration(base: repo.path)
        config.modelRepository = repo.path
        config.tokens = tokens
        config.anonymousDetect = anonymousDetect
        config.maxBodyBytes = maxBodyBytes
        config.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        config.slots = ["default": .init(model: "synthetic/yolov5-nc80-416-identity.onnx"),
            "line2": .init(model: "synthetic/yolov5-nc80-320-identity.onnx")]
        config.routes = ["metal-case": "line2"]
        config.hotSwap.warmupRuns = 1
        config.hotSwap.servingThreads = 2
        config.hotSwap.slotExecution = slotExecution
        try configure(&config)
        configuration = config
        audit = AuditTrail(log: try AuditLog(directory: repo.appendingPathComponent("state").path))
        let manager = ModelManager(configuration: config.hotSwap, loader: loader ?? Self.loader, store: store)
        control = ControlPlane(manager: manager, repository: ModelRepository(root: repo.path), routes: config.routes,
            audit: audit, logger: Logger(label: "test"))
        try await YOLOSwapServer.startSlots(control: control, configuration: config, logger: Logger(label: "test"))
    }

    func cleanUp() async {
        await control.manager.shutdown()
        try? FileManager.default.removeItem(at: repository)
    }

    func test<Value: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> Value) async throws -> Value {
        let app = YOLOSwapServer.makeApplication(control: control, configuration: configuration,
            metricsText: { "# metrics\n" }, logger: Logger(label: "test"))
        return try await app.test(.router, body)
    }

    /// Every audit entry, oldest first, once the pending ones (load outcomes) are written.
    func auditEntries() async throws -> [AuditEntry] {
        await control.drain()
        return try await audit.entries(slot: nil, since: nil, limit: 10_000).reversed()
    }

    static func headers(token: String? = nil, contentType: String? = nil) -> HTTPFields {
        var fields = HTTPFields()
        if let token { fields[.authorization] = "Bearer \(token)" }
        if let contentType { fields[.contentType] = contentType }
        return fields
    }

    static var busJPEG: ByteBuffer { ByteBuffer(bytes: Repository.bytes("models/images/bus.jpg")) }

    static func json(_ response: TestResponse) throws -> [String: Any] {
        let data = Data(response.body.readableBytesView)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any],
            "not a JSON object: \(String(decoding: data, as: UTF8.self))")
    }
}
