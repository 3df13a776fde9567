import Foundation
import TestSupport
import Testing

/// The real binary killed with SIGKILL in the middle of a swap restarts into the last committed model.
@Suite("Crash recovery (SIGKILL)", .serialized)
struct CrashRecoveryTests {
    let initial = Repo.model("synthetic/yolov5-nc80-416-identity.onnx")
    let other = Repo.model("synthetic/yolov5-nc80-320-identity.onnx")

    struct SlotState: Decodable {
        struct Model: Decodable { var path: String; var sha256: String; var id: String }
        var generation: Int
        var active: Model?
        var standby: Model?
    }

    func swap(_ stateDir: String, _ arguments: [String]) throws -> (ProcessResult, SlotState?) {
        let r = try runProcess(Repo.binary, ["swap", "--state-dir", stateDir] + arguments)
        return (r, try? JSONDecoder().decode(SlotState.self, from: Data(r.stdout.utf8)))
    }

    /// Starts `yoloswap swap`, waits until its stderr contains `marker`, then kills it with SIGKILL.
    func killWhen(_ marker: String, stateDir: String, _ arguments: [String]) throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("swap-\(UUID()).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Repo.binary)
        process.arguments = ["swap", "--state-dir", stateDir] + arguments
        process.currentDirectoryURL = Repository.root
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        let deadline = Date().addingTimeInterval(60)
        var seen = false
        while Date() < deadline, process.isRunning {
            if (try? String(contentsOf: log, encoding: .utf8))?.contains(marker) == true { seen = true; break }
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        try #require(seen, "never saw '\(marker)' before the process ended: \(output)")
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL)
    }

    func freshStateDir() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("killed mid-load (during warm-up of a slow model): restarts into the committed model")
    func midLoad() throws {
        let dir = try freshStateDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (first, before) = try swap(dir, ["--initial", initial])
        try #require(first.status == 0, "\(first.stderr)")
        let committed = try #require(before?.active)
        try killWhen("warming", stateDir: dir, ["--load", Repo.model("synthetic/slow.onnx"), "--activate"])
        let (restart, after) = try swap(dir, [])
        #expect(restart.status == 0, "\(restart.stderr)")
        #expect(after?.active?.sha256 == committed.sha256)
        #expect(after?.generation == 1)
        #expect(restart.stderr.contains("restore default: succeeded"))
    }

    @Test("a completed switch survives a restart, with the previous model as standby")
    func completedSwitch() async throws {
        let dir = try freshStateDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try swap(dir, ["--initial", initial])
        let (switched, state) = try swap(dir, ["--load", other, "--activate"])
        try #require(switched.status == 0, "\(switched.stderr)")
        #expect(state?.active?.path == other)
        let (_, restarted) = try swap(dir, [])
        #expect(restarted?.active?.path == other)
        #expect(restarted?.standby?.path == initial)
        #expect(restarted?.generation == 2)
        let (_, rolledBack) = try swap(dir, ["--rollback"])
        #expect(rolledBack?.active?.path == initial)
        #expect(rolledBack?.generation == 3)
        // Each change is in the audit log, intent then outcome, by the command's user.
        let list = try await runProcess(Repo.binary, ["audit", "list", "--state-dir", dir, "--json"])
        try #require(list.status == 0, "\(list.stderr)")
        let entries = list.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let actions = entries.reversed().map { "\($0["action"] as? String ?? ""):\($0["result"] as? String ?? "")" }
        // The --initial model's load first.
        #expect(actions == ["load:intent", "load:succeeded", "load:intent", "load:succeeded", "rollback:intent",
            "rollback:succeeded"], "\(actions)")
        #expect(entries.allSatisfy { ($0["actor"] as? String)?.hasPrefix("cli:") == true })
    }

    /// Commits a copy of `initial` as the default slot's model in `dir`, then replaces the copy's bytes with `other`'s.
    func commitThenTamper(_ dir: String) throws {
        let copy = dir + "/model.onnx"
        try FileManager.default.copyItem(atPath: initial, toPath: copy)
        let (first, _) = try swap(dir, ["--initial", copy])
        try #require(first.status == 0, "\(first.stderr)")
        try FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: other, toPath: copy)
    }

    @Test("a committed model whose file changed on disk is refused at restart (sha256 re-verified)")
    func tamperedModel() throws {
        let dir = try freshStateDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try commitThenTamper(dir)
        let (restart, state) = try swap(dir, [])
        #expect(restart.status != 0)
        #expect(restart.stderr.contains("sha256 mismatch"))
        #expect(state?.active == nil)
    }

    @Test("swap --slot restores only that slot: another slot's models are not loaded, its state not touched")
    func otherSlotLeftAlone() throws {
        let dir = try freshStateDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The default slot's model changes on disk: restoring it would fail.
        try commitThenTamper(dir)
        let (second, b) = try swap(dir, ["--slot", "b", "--initial", initial])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(!second.stderr.contains("restore default"), "\(second.stderr)")
        #expect(b?.active?.path == initial)
        let (third, again) = try swap(dir, ["--slot", "b"])
        #expect(third.status == 0, "\(third.stderr)")
        #expect(third.stderr.contains("restore b: succeeded"), "\(third.stderr)")
        #expect(again?.generation == 1)
        // The default slot's committed state is still there, and still refused.
        let (fourth, _) = try swap(dir, [])
        #expect(fourth.status != 0)
        #expect(fourth.stderr.contains("sha256 mismatch"), "\(fourth.stderr)")
    }
}
