import Foundation
import HotSwap
import TestSupport
import Testing

// What the chaos, disk-full and contention tests share: a private model repository and state directory, a served
// slot's state as the API and the state store report it, the audit log as `GET /v1/audit` shows it, detection load,
// and the files and processes a killed server may leave behind.

/// A model repository and a state directory of the test's own, removed at the end.
struct ChaosWorld {
    let root: URL
    let repository: URL
    let state: URL
    /// The base models, copied into the repository: two cheap yolov5 models with COCO's classes (416 and 320) and
    /// one whose Run is slow (a warm-up that lasts).
    static let bases = ["a.onnx": "synthetic/yolov5-nc80-416-identity.onnx",
                        "b.onnx": "synthetic/yolov5-nc80-320-identity.onnx",
                        "slow.onnx": "synthetic/slow.onnx"]

    init(stateDirectory: URL? = nil) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-\(UUID())")
        repository = root.appendingPathComponent("models")
        state = stateDirectory ?? root.appendingPathComponent("var")
        try FileManager.default.createDirectory(at: repository, withIntermediateDirectories: true)
        for (name, source) in Self.bases {
            try FileManager.default.copyItem(atPath: Repo.model(source), toPath: repository.appendingPathComponent(name).path)
        }
    }

    func remove() { try? FileManager.default.removeItem(at: root) }

    /// The configuration every server of the test runs with: slot `default` starts on `a.onnx`.
    var yaml: String {
        """
        \(ServerProcess.demoTokens)
        model_repository: \(repository.path)
        slots:
          default: { model: a.onnx }
        # The warm-up's own timeout is not under test: on a loaded machine the slow model's warm-up can pass the
        # default 30 s, and a load failing on it would be a calibration failure, not a finding.
        hotswap: { warmup_runs: 1, warmup_timeout_s: 600 }
        """
    }

    /// Writes `name`: the base model `base` with one more metadata entry (`chaos_variant: tag`), so that its bytes,
    /// hence its sha256 and its optimized-cache entry, are new. Returns its sha256.
    ///
    /// The entry is appended to the serialized `ModelProto` as field 14 (`metadata_props`, repeated
    /// `StringStringEntryProto`): protobuf readers merge fields wherever they appear, so the model is otherwise the same.
    @discardableResult
    func writeVariant(_ name: String, of base: String, tag: String) throws -> String {
        func varint(_ n: Int) -> [UInt8] {
            var n = n, bytes: [UInt8] = []
            repeat { bytes.append(UInt8(n & 0x7F) | (n > 0x7F ? 0x80 : 0)); n >>= 7 } while n > 0
            return bytes
        }
        func field(_ number: UInt8, _ bytes: [UInt8]) -> [UInt8] { [number << 3 | 2] + varint(bytes.count) + bytes }
        let entry = field(1, Array("chaos_variant".utf8)) + field(2, Array(tag.utf8))
        let bytes = try Data(contentsOf: repository.appendingPathComponent(base)) + Data(field(14, entry))
        let path = repository.appendingPathComponent(name).path
        try bytes.write(to: URL(fileURLWithPath: path))
        return try sha256(name)
    }

    func sha256(_ name: String) throws -> String {
        try ModelFile(verifying: repository.appendingPathComponent(name).path).sha256
    }

    /// The committed state of slot `default`, read from the state store as a restarted server would read it.
    func committed() throws -> CommittedSlot? {
        try StateStore(directory: state.path).committedSlot("default")
    }

    /// Files under the state directory and the repository whose names say they are temporary (`*.tmp`, a child
    /// optimizer's `*.stdout` / `*.stderr`, SQLite's rollback `-journal`), relative to the test's root.
    func temporaryFiles() -> [String] {
        var found: [String] = []
        for base in [state, repository] {
            guard let walker = FileManager.default.enumerator(atPath: base.path) else { continue }
            while let name = walker.nextObject() as? String {
                if name.hasSuffix(".tmp") || name.hasSuffix(".stdout") || name.hasSuffix(".stderr")
                    || name.hasSuffix("-journal") || name.contains(".tmp.")
                {
                    found.append("\(base.lastPathComponent)/\(name)")
                }
            }
        }
        return found.sorted()
    }

    /// Processes other than this one whose command line names the state directory (a child optimizer left running
    /// by a killed server).
    func processesUsingState() -> [Int32] {
        let me = getpid()
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        return pids.filter { pid in
            guard pid != me, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data, as: UTF8.self).contains(state.path)
        }
    }
}

/// An audit entry as `GET /v1/audit` shows it (the fields the tests read).
struct AuditRecord: Decodable, CustomStringConvertible {
    var id: Int
    var actor: String
    var action: String
    var slot: String?
    var sha256: String?
    var result: String
    var reason: String?
    var hash: String

    var description: String { "#\(id) \(actor) \(action):\(result) \(sha256?.prefix(12) ?? "-") \(reason ?? "")" }
}

extension ServerProcess {
    struct SlotView: Decodable {
        struct Model: Decodable { var path: String; var sha256: String }
        var generation: Int
        var active: Model?
        var standby: Model?
    }

    /// `GET /v1/slots/default`.
    func slotView() async throws -> SlotView {
        let (status, data) = try await request("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
        guard status == 200 else { throw ServerError("GET /v1/slots/default: \(status) \(String(decoding: data, as: UTF8.self))") }
        return try JSONDecoder().decode(SlotView.self, from: data)
    }

    /// The audit log, oldest first.
    func auditRecords() async throws -> [AuditRecord] {
        let (status, data) = try await request("GET", "/v1/audit?limit=10000", token: ServerProcess.operatorToken)
        guard status == 200 else { throw ServerError("GET /v1/audit: \(status)") }
        struct List: Decodable { var entries: [AuditRecord] }
        return try JSONDecoder().decode(List.self, from: data).entries.reversed()
    }

    /// One detection of `image`: the status and the sha256 of the model that answered.
    func detectModel(_ image: Data) async -> (status: Int, sha256: String?) {
        guard let (status, data) = try? await request("POST", "/v1/detect", token: ServerProcess.viewerToken,
            body: image, contentType: "image/jpeg")
        else { return (0, nil) }
        let body = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        return (status, (body?["model"] as? [String: Any])?["sha256"] as? String)
    }
}

/// Clients sending detections in a loop until stopped; what each answer was.
final class DetectionLoad: @unchecked Sendable {
    // @unchecked: `answers` is only touched under `lock`; the tasks are set once in init.
    private let lock = NSLock()
    private var answers: [(status: Int, sha256: String?)] = []
    private let stopFlag = ManagedFlag()
    private var tasks: [Task<Void, Never>] = []

    init(_ server: ServerProcess, clients: Int, image: Data) {
        tasks = (0..<clients).map { _ in
            Task { [stopFlag, lock] in
                while !stopFlag.value {
                    let answer = await server.detectModel(image)
                    lock.withLock { self.answers.append(answer) }
                    // Connection refused once the server is gone: do not spin.
                    if answer.status == 0 { try? await Task.sleep(for: .milliseconds(20)) }
                }
            }
        }
    }

    /// Stops the clients and returns every answer.
    func stop() async -> [(status: Int, sha256: String?)] {
        stopFlag.set()
        for task in tasks { await task.value }
        return lock.withLock { answers }
    }
}
