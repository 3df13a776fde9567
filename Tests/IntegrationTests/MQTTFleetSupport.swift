import Foundation
import HotSwap
import TestSupport
import Testing

/// A fleet for the tests and the benchmark: a real Mosquitto broker (TLS, password file), operator keys, and
/// `yoloswap serve` processes joined to it as devices of one group; paho-mqtt (`tools/fleet_peer.py`) as the
/// operator's client.
final class MQTTFleet: @unchecked Sendable {
    // @unchecked: used from the test's task only.
    static let group = "line-a"
    static let small = "yolov3-tiny-coco-320.onnx"
    static let large = "yolov3-tiny-coco-416.onnx"

    let broker: MosquittoBroker
    let folder: TemporaryDirectory
    var operatorKey: String { folder.file("operator.key") }
    var strangerKey: String { folder.file("stranger.key") }
    var passwordFile: String { folder.file("mqtt-password") }
    var desiredTopic: String { "yoloswap/v1/fleet/\(Self.group)/desired" }

    init() throws {
        broker = try MosquittoBroker()
        folder = try TemporaryDirectory(prefix: "fleet")
        for key in [operatorKey, strangerKey] {
            let made = try runProcess(Repo.binary, ["keygen", "--out", key])
            guard made.status == 0 else { throw MosquittoBroker.BrokerError("keygen: \(made.stderr)") }
        }
        try MosquittoBroker.password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
    }

    /// Starts a device (`yoloswap serve` with an `mqtt:` section) and waits until it is ready.
    /// - Parameter extra: more of the configuration (a `streams:` section).
    func device(_ name: String, protocol version: String = "3.1.1", stateDirectory: URL? = nil, extra: String = "")
        async throws -> ServerProcess
    {
        try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots: {default: {model: \(Self.large)}}
            hotswap: {warmup_runs: 1, standby: release}
            mqtt:
              host: 127.0.0.1
              port: \(broker.port)
              protocol: "\(version)"
              device: \(name)
              group: \(Self.group)
              tls: {ca_file: \(broker.caFile)}
              username: \(MosquittoBroker.username)
              password_file: \(passwordFile)
              trusted_keys: [\(operatorKey).pub]
              keepalive_s: 5
              reconnect_max_s: 1
              status_interval_s: 5
            \(extra)
            """, stateDirectory: stateDirectory)
    }

    /// A desired-state document pinning slot `default` to `model`, with `generation` in its metadata.
    static func document(_ model: String, generation: Int) throws -> String {
        """
        apiVersion: yoloswap/v1
        kind: DesiredState
        metadata: {name: \(group), generation: \(generation)}
        slots:
          default:
            model: \(model)
            sha256: \(try sha(model))
        """
    }

    static func sha(_ model: String) throws -> String { try ModelFile(verifying: Repo.model(model)).sha256 }

    /// Signs with `yoloswap fleet sign`; returns the envelope's file.
    func sign(_ name: String, _ arguments: [String], key: String? = nil) throws -> String {
        let out = folder.file(name)
        let signed = try runProcess(Repo.binary, ["fleet", "sign", "--key", key ?? operatorKey, "--out", out]
            + arguments)
        guard signed.status == 0 else { throw MosquittoBroker.BrokerError("fleet sign: \(signed.stderr)") }
        return out
    }

    /// A group document, signed, in a file. Documents signed in one second need `issuedAt`s in order: a device
    /// applies only a document issued after the last one it applied.
    func signDocument(_ model: String, generation: Int, issuedAt: Int? = nil) throws -> String {
        let file = folder.file("desired-\(generation).yaml")
        try Self.document(model, generation: generation).write(toFile: file, atomically: true, encoding: .utf8)
        return try sign("desired-\(generation).json", ["--group", Self.group, "--desired", file]
            + (issuedAt.map { ["--issued-at", "\($0)"] } ?? []))
    }

    /// Runs `tools/fleet_peer.py` with the broker's connection options.
    func peer(_ arguments: [String], timeout: Int = 90) async throws -> ProcessResult {
        try await runProcess(Repo.python, [Repository.path("tools/fleet_peer.py"), "--port", "\(broker.port)",
            "--cafile", broker.caFile, "--username", MosquittoBroker.username, "--password", MosquittoBroker.password,
            "--timeout", "\(timeout)"] + arguments)
    }

    /// Runs `yoloswap fleet publish` against the broker.
    func publish(_ arguments: [String]) async throws -> ProcessResult {
        try await runProcess(Repo.binary, ["fleet", "publish", "--port", "\(broker.port)", "--ca-file", broker.caFile,
            "--username", MosquittoBroker.username, "--password-file", passwordFile] + arguments)
    }

    /// Waits until every device reports `generation`, converged, serving `model` in slot `default`.
    func waitConverged(_ devices: [String], generation: Int, model: String, timeout: Int = 120) async throws
        -> [String: Any]
    {
        let result = try await peer(["wait-status", "--devices", devices.joined(separator: ","), "--generation",
            "\(generation)", "--sha256", try Self.sha(model)], timeout: timeout)
        let statuses = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
        #expect(result.status == 0, "statuses: \(result.stdout) \(result.stderr)")
        return statuses
    }
}

extension ServerProcess {
    /// The audit entries (newest first).
    func auditEntries(limit: Int = 200) async throws -> [[String: Any]] {
        let (_, audit) = try await json("GET", "/v1/audit?limit=\(limit)", token: ServerProcess.operatorToken)
        return audit["entries"] as? [[String: Any]] ?? []
    }
}
