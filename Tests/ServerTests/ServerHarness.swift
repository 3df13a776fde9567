import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import ONNXRuntime
import Server
import Synchronization
import TestSupport
import Testing

/// Builds a real server (real ORT, real slots, small synthetic models) for in-process router tests.
struct ServerHarness {
    static let loader: ORTModelLoader = {
        do { return ORTModelLoader(environment: try ORTEnvironment(library: ORTLibrary.load())) } catch {
            fatalError("ONNX Runtime could not be loaded (run scripts/setup): \(error)")
        }
    }()

    static let tokens = [
        ServerConfiguration.Token(name: "alice", role: .operator, sha256: TokenAuthenticator.digest(of: "alice-token")),
        ServerConfiguration.Token(name: "carol", role: .viewer, sha256: TokenAuthenticator.digest(of: "carol-token")),
        ServerConfiguration.Token(name: "root", role: .admin, sha256: TokenAuthenticator.digest(of: "root-token")),
    ]

    /// Records audit entries in memory.
    final class MemoryAudit: AuditSink {
        let records = Mutex<[AuditRecord]>([])
        func record(_ record: AuditRecord) throws { records.withLock { $0.append(record) } }
        var all: [AuditRecord] { records.withLock { $0 } }
    }

    let repository: URL
    let configuration: ServerConfiguration
    let control: ControlPlane
    let audit = MemoryAudit()

    /// A model repository in a temp folder with copies of the synthetic models, plus a symlink that escapes it.
    init(tokens: [ServerConfiguration.Token] = Self.tokens, anonymousDetect: Bool = false,
         maxBodyBytes: Int = 20 << 20) async throws {
        let repo = FileManager.default.temporaryDirectory.appendingPathComponent("repo-\(UUID())")
        try FileManager.default.createDirectory(at: repo.appendingPathComponent("synthetic"),
            withIntermediateDirectories: true)
        for name in ["yolov5-nc80-416-identity.onnx", "yolov5-nc80-320-identity.onnx",
            "yolov5-nc80-320-other-names.onnx", "nan.onnx"]
        {
            try FileManager.default.copyItem(at: Repository.url("models/synthetic/\(name)"),
                to: repo.appendingPathComponent("synthetic/\(name)"))
        }
        try FileManager.default.createSymbolicLink(atPath: repo.appendingPathComponent("escape.onnx").path,
            withDestinationPath: "/etc/passwd")
        repository = repo
        var config = ServerConfiguration(base: repo.path)
        config.modelRepository = repo.path
        config.tokens = tokens
        config.anonymousDetect = anonymousDetect
        config.maxBodyBytes = maxBodyBytes
        config.slots = ["default": .init(model: "synthetic/yolov5-nc80-416-identity.onnx"),
            "line2": .init(model: "synthetic/yolov5-nc80-320-identity.onnx")]
        config.routes = ["metal-case": "line2"]
        config.warmupRuns = 1
        configuration = config
        var hotSwap = config.hotSwap
        hotSwap.servingThreads = 2
        let manager = ModelManager(configuration: hotSwap, loader: Self.loader)
        control = ControlPlane(manager: manager, repository: ModelRepository(root: repo.path), routes: config.routes,
            audit: audit, logger: Logger(label: "test"))
        await YOLOSwapServer.startSlots(control: control, configuration: config, logger: Logger(label: "test"))
    }

    func cleanUp() async {
        await control.manager.shutdown()
        try? FileManager.default.removeItem(at: repository)
    }

    func test<Value: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> Value) async throws -> Value {
        let app = YOLOSwapServer.makeApplication(control: control, configuration: configuration,
            auditReader: nil, metricsText: { "# metrics\n" }, logger: Logger(label: "test"))
        return try await app.test(.router, body)
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
