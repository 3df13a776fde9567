import Foundation
import HotSwap
import TestSupport
import Testing

/// Storage faults under the real binary: the state directory on a full file system, and the state and audit
/// databases held by another process past the busy timeout. Each operation then fails closed — a clear error, nothing
/// changed, the active model still serving — and once the fault is gone nothing is half-written: the committed state,
/// the served model and the audit log agree, the chain verifies, and the next operation succeeds.
@Suite("Storage faults: disk full, SQLite contention (real binary)", .serialized)
struct StorageFaultTests {
    static let image = Data(Repository.bytes("models/images/bus.jpg"))

    /// Whether this process may mount a tmpfs (the tests run as root; a container may still forbid it).
    static let canMountTmpfs: Bool = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mount-probe-\(UUID())").path
        guard (try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)) != nil
        else { return false }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard (try? runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]))?.status == 0 else {
            return false
        }
        _ = try? runProcess("/bin/umount", [dir])
        return true
    }()

    // MARK: Disk full

    @Test("disk full: switch / load / rollback fail closed with a clear error; after space returns nothing is half-written",
          .enabled(if: canMountTmpfs, "skipped: `mount -t tmpfs` is not permitted here (needs root / CAP_SYS_ADMIN)"))
    func diskFull() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("diskfull-\(UUID())")
        let state = root.appendingPathComponent("var")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let mount = try await runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", state.path])
        try #require(mount.status == 0, "mount: \(mount.stderr)")
        defer {
            _ = try? runProcess("/bin/umount", ["-l", state.path])
            try? FileManager.default.removeItem(at: root)
        }
        let world = try ChaosWorld(stateDirectory: state)
        defer { world.remove() }
        var server = try await ServerProcess(yaml: world.yaml, stateDirectory: state)
        defer { server.stop() }

        // Active b (a as standby), v1 staged: every operation has something to do.
        let b = try world.sha256("b.onnx")
        var (status, body) = try await server.json("POST", "/v1/slots/default/load?wait=true",
            token: ServerProcess.operatorToken, body: ["model": "b.onnx", "activate": true])
        try #require(status == 200, "\(body)")
        let v1 = try world.writeVariant("v1.onnx", of: "a.onnx", tag: "1")
        (status, body) = try await server.json("POST", "/v1/slots/default/load?wait=true",
            token: ServerProcess.operatorToken, body: ["model": "v1.onnx", "sha256": v1])
        try #require(status == 200, "\(body)")
        let before = try await server.slotView()
        let head = try #require(try await server.auditRecords().last)

        let filler = state.appendingPathComponent("filler")
        let filled = try fill(filler)
        #expect(filled > 0)

        // Each operation fails closed: 503, saying the disk is full; the slot keeps serving b.
        let v2 = try world.writeVariant("v2.onnx", of: "b.onnx", tag: "2")
        let attempts: [(String, String, [String: Any]?)] = [
            ("switch", "/v1/slots/default/switch", nil),
            ("rollback", "/v1/slots/default/rollback", nil),
            ("load", "/v1/slots/default/load?wait=true", ["model": "v2.onnx", "sha256": v2, "activate": true]),
        ]
        for (name, path, request) in attempts {
            let (status, answer) = try await server.json("POST", path, token: ServerProcess.operatorToken, body: request)
            let text = "\(answer["title"] ?? "") \(answer["detail"] ?? answer["reason"] ?? "")"
            #expect(status == 503, "\(name) on a full disk: \(status) \(answer)")
            #expect(text.contains("disk is full"), "\(name): the error does not say why: \(text)")
            #expect(!text.contains(state.path), "\(name): the error shows a server path: \(text)")
            let (detect, served) = await server.detectModel(Self.image)
            #expect(detect == 200 && served == b, "\(name): detection during the fault by \(served ?? "-")")
        }
        let during = try await server.slotView()
        #expect(during.active?.sha256 == b && during.generation == before.generation)

        // Space returns: nothing half-written, the audit chain verifies, the next operation succeeds.
        try FileManager.default.removeItem(at: filler)
        try await expectConsistent(world, server, since: head, context: "after space returned")
        (status, body) = try await server.json("POST", "/v1/slots/default/switch", token: ServerProcess.operatorToken)
        #expect(status == 200, "switch after space returned: \(body)")
        #expect(try await server.slotView().active?.sha256 == v1)
        try await expectConsistent(world, server, since: head, context: "after the switch")

        // Nearly full: a little space left lets some writes of an operation through and not the next (the audit
        // intent but not the state commit, the commit but not the outcome). Whatever got through, the answer says
        // what happened — 200 with the change made; 503 without it; 503 "was made … its outcome was not [recorded]"
        // with it made (its intent is the record, closed as interrupted at the next start) — and the slot serves what
        // is committed.
        var outcomes: [String] = []
        for slack in [4096, 8192, 12288, 16384, 24576, 32768, 49152] {
            let committedBefore = try await server.slotView()
            let filled = try fill(filler)
            try #require(truncate(filler.path, off_t(max(0, filled - slack))) == 0)
            let (status, answer) = try await server.json("POST", "/v1/slots/default/rollback",
                token: ServerProcess.operatorToken)
            let text = "\(answer["title"] ?? "") \(answer["detail"] ?? "")"
            let now = try await server.slotView()
            let made = status == 503 && text.contains("was made and its intent recorded")
            if status == 200 || made {
                #expect(now.generation == committedBefore.generation + 1
                    && now.active?.sha256 == committedBefore.standby?.sha256, "slack \(slack): \(answer)")
            } else {
                #expect(status == 503 && text.contains("disk is full"), "slack \(slack): \(status) \(text)")
                #expect(now.generation == committedBefore.generation
                    && now.active?.sha256 == committedBefore.active?.sha256, "slack \(slack): changed on a 503")
            }
            outcomes.append("\(slack / 1024) KiB: \(status) \(text.prefix(60))")
            try FileManager.default.removeItem(at: filler)
            let committed = try #require(try world.committed())
            #expect(committed.active.sha256 == now.active?.sha256 && committed.generation == now.generation,
                "slack \(slack): serves \(String(describing: now.active)), committed \(committed)")
        }
        print("disk full, nearly: \(outcomes.joined(separator: "; "))")

        // After a restart: the committed state is the one served, every intent is closed (an outcome the full disk
        // refused is recorded as interrupted).
        server.stop()
        server = try await ServerProcess(yaml: world.yaml, stateDirectory: state)
        try await expectConsistent(world, server, since: head, context: "after a restart")
    }

    /// Fills the file system holding `file` (created or emptied first) until a write fails with ENOSPC; returns the
    /// file's size.
    func fill(_ file: URL) throws -> Int {
        let descriptor = open(file.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var total = 0
        for chunk in [1 << 16, 4096, 512, 1] {
            let bytes = [UInt8](repeating: 0xA5, count: chunk)
            while true {
                let written = write(descriptor, bytes, chunk)
                if written <= 0 { break }
                total += written
            }
        }
        #expect(errno == ENOSPC, "the filler stopped for another reason: \(String(cString: strerror(errno)))")
        return total
    }

    // MARK: SQLite contention

    @Test("a write lock held past the busy timeout on the state, then the audit database: the switch fails naming it, a retry succeeds")
    func lockedDatabases() async throws {
        let world = try ChaosWorld()
        defer { world.remove() }
        let server = try await ServerProcess(yaml: world.yaml, stateDirectory: world.state)
        defer { server.stop() }
        var head: AuditRecord?

        for (database, phrase) in [("state.sqlite", "state"), ("audit.sqlite", "audit")] {
            let variant = try world.writeVariant("v-\(phrase).onnx", of: "b.onnx", tag: phrase)
            var (status, body) = try await server.json("POST", "/v1/slots/default/load?wait=true",
                token: ServerProcess.operatorToken, body: ["model": "v-\(phrase).onnx", "sha256": variant])
            try #require(status == 200, "\(body)")
            let before = try await server.slotView()
            if head == nil { head = try await server.auditRecords().last }

            // Another process takes the write lock for longer than the server's busy timeout (5 s).
            let holder = try LockHolder(database: world.state.appendingPathComponent(database).path)
            (status, body) = try await server.json("POST", "/v1/slots/default/switch",
                token: ServerProcess.operatorToken)
            let text = "\(body["title"] ?? "") \(body["detail"] ?? "")"
            #expect(status == 503, "switch with \(database) locked: \(status) \(body)")
            #expect(text.contains(database) && (text.contains("locked") || text.contains("busy")),
                "the error does not say which database is busy: \(text)")
            #expect(!text.contains(world.state.path), "the error shows a server path: \(text)")
            // Detection does not wait for the lock.
            let (detect, served) = await server.detectModel(Self.image)
            #expect(detect == 200 && served == before.active?.sha256)
            #expect(try await server.slotView().active?.sha256 == before.active?.sha256)
            try holder.release()

            // The retry succeeds.
            (status, body) = try await server.json("POST", "/v1/slots/default/switch",
                token: ServerProcess.operatorToken)
            #expect(status == 200, "retry after \(database) was released: \(body)")
            let after = try await server.slotView()
            #expect(after.active?.sha256 == variant && after.generation == before.generation + 1)
            try await expectConsistent(world, server, since: try #require(head), context: "after \(database) was released")
        }
    }

    // MARK: Consistency

    /// The committed state is the served one, the audit chain verifies, every intent since `since` is closed by an
    /// outcome, and the last successful change recorded is the model served.
    func expectConsistent(_ world: ChaosWorld, _ server: ServerProcess, since: AuditRecord, context: String)
        async throws
    {
        let committed = try #require(try world.committed(), "\(context): nothing committed")
        let view = try await server.slotView()
        #expect(view.active?.sha256 == committed.active.sha256 && view.generation == committed.generation,
            "\(context): serves \(String(describing: view.active)), committed \(committed)")
        let (status, served) = await server.detectModel(Self.image)
        #expect(status == 200 && served == committed.active.sha256, "\(context)")
        let verify = try await runProcess(Repo.binary, ["audit", "verify", "--state-dir", world.state.path,
            "--expect-head", "\(since.id):\(since.hash)"])
        #expect(verify.status == 0, "\(context): \(verify.stdout)\(verify.stderr)")
        let records = try await server.auditRecords().filter { $0.id > since.id }
        var open: [String: AuditRecord] = [:]
        for record in records where record.actor == "alice" {
            if record.result == "intent" { open[record.action] = record } else { open[record.action] = nil }
        }
        let interrupted = records.filter { $0.result == "interrupted" }
        #expect(open.count <= interrupted.count, "\(context): intents without an outcome: \(records)")
        let changes = records.filter {
            ["switch", "rollback", "restore"].contains($0.action) && $0.result == "succeeded"
                || $0.action == "load" && $0.result == "succeeded" && $0.reason == nil && $0.sha256 != nil
        }
        if let last = changes.last(where: { $0.action != "load" }) {
            #expect(last.sha256 == committed.active.sha256, "\(context): the audit's last change is \(last)")
        }
    }
}

/// A python3 process holding `BEGIN EXCLUSIVE` on a SQLite database (the write lock; in WAL mode readers go on)
/// until `release()`.
struct LockHolder {
    let process = Process()

    init(database: String) throws {
        let script = """
            import sqlite3, sys, time
            c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
            c.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            sys.stdin.read()
            """
        process.executableURL = URL(fileURLWithPath: Repo.python)
        process.arguments = ["-c", script, database]
        let output = Pipe()
        let input = Pipe()
        process.standardOutput = output
        process.standardInput = input
        stdin = input.fileHandleForWriting
        try process.run()
        // Wait until it holds the lock.
        let line = output.fileHandleForReading.readData(ofLength: 7)
        guard String(decoding: line, as: UTF8.self) == "locked\n" else {
            process.terminate()
            throw ServerProcess.ServerError("could not lock \(database)")
        }
    }

    private let stdin: FileHandle

    /// Ends the transaction (the process exits when its input closes) and waits for it.
    func release() throws {
        try stdin.close()
        process.waitUntilExit()
    }
}
