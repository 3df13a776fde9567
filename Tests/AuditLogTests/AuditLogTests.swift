import Foundation
import TestSupport
import Testing

@testable import AuditLog

@Suite("Audit log: appending and reading")
struct AuditLogTests {
    @Test("the state directory is created 0700 and the database files 0600, whatever the umask lets through")
    func privateModes() throws {
        let dir = try TemporaryDirectory()
        let state = dir.file("var/state")
        let log = try AuditLog(directory: state)
        try log.append(actor: "alice", action: "load", slot: "default", result: "succeeded")
        #expect(try permissions(of: dir.file("var")) == 0o700)
        #expect(try permissions(of: state) == 0o700)
        let files = try permissionsOfEntries(in: state)
        #expect(files.keys.contains("audit.sqlite"))
        #expect(files.keys.contains("audit.sqlite-wal"))
        for (name, mode) in files { #expect(mode == 0o600, "\(name) is \(String(mode, radix: 8))") }
    }

    @Test("concurrent appends from many tasks keep one intact chain with consecutive ids")
    func concurrentAppends() async throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for i in 0..<25 {
                        try log.append(
                            actor: "task-\(task)", action: "load", slot: "s\(task)", result: "succeeded",
                            reason: "#\(i)")
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try log.count() == 200)
        let ids = try log.entries(limit: 1000).compactMap(\.id)
        #expect(ids == (1...200).reversed().map { Int64($0) })
        #expect(try log.verify().isIntact)
    }

    @Test("two logs open on the same directory (as two processes would) append to one chain")
    func twoConnections() async throws {
        let dir = try TemporaryDirectory()
        let first = try AuditLog(directory: dir.path)
        let second = try AuditLog(directory: dir.path)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for log in [first, second] {
                group.addTask { for _ in 0..<30 { try log.append(actor: "x", action: "switch", result: "succeeded") } }
            }
            try await group.waitForAll()
        }
        #expect(try first.verify() == second.verify())
        #expect(try first.verify().isIntact)
        #expect(try second.count() == 60)
    }

    @Test("entries: newest first, filtered by slot and time, limited")
    func filtering() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        for i in 0..<30 {
            try log.append(
                actor: "alice", action: "load", slot: i % 3 == 0 ? "a" : "b", result: "succeeded",
                time: start.addingTimeInterval(Double(i) * 60))
        }
        let all = try log.entries(limit: 1000)
        #expect(all.count == 30)
        #expect(all.first?.id == 30 && all.last?.id == 1)

        let slotA = try log.entries(slot: "a", limit: 1000)
        #expect(slotA.count == 10)
        #expect(slotA.allSatisfy { $0.slot == "a" })
        #expect(slotA.map(\.id) == [28, 25, 22, 19, 16, 13, 10, 7, 4, 1])

        let recent = try log.entries(since: start.addingTimeInterval(25 * 60), limit: 1000)
        #expect(recent.map(\.id) == [30, 29, 28, 27, 26])
        #expect(try log.entries(slot: "b", since: start.addingTimeInterval(25 * 60), limit: 2).map(\.id) == [30, 29])
        #expect(try log.entries(limit: 3).map(\.id) == [30, 29, 28])
        #expect(try log.entries(limit: 0).isEmpty)
        #expect(try log.entries(slot: "nope").isEmpty)
    }

    @Test("times are stored to the microsecond and read back equal to what append returned")
    func microsecondTimes() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        let time = Date(timeIntervalSince1970: 1_712_345_678.9876543)
        let entry = try log.append(actor: "a", action: "load", result: "ok", durationMs: -0.0, time: time)
        #expect(entry.timeMicroseconds == 1_712_345_678_987_654)
        #expect(abs(entry.time.timeIntervalSince(time)) < 1e-6)
        #expect(try log.entries() == [entry])
        #expect(try log.verify().isIntact)
    }

    @Test("an entry's text line escapes control characters: a refused request's path cannot forge a line or drive the terminal")
    func textLineEscapes() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        let forged = "m.onnx\n#999  2030-01-01T00:00:00.000Z  admin  rollback  slot=default  succeeded"
        let entry = try log.append(actor: "eve", action: "load", slot: "default", modelPath: forged,
            version: "v\u{1B}[1A\u{1B}[2K", result: "rejected", reason: "not found\u{2028}hidden \u{202E}txt.exe")
        // Stored verbatim: the hash covers the bytes as sent.
        #expect(try log.entries().first?.modelPath == forged)
        let line = entry.textLine
        #expect(!line.contains("\n") && !line.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x2028
            || $0.value == 0x202E })
        #expect(line.contains(#"model=m.onnx\u{A}#999"#) && line.contains(#"version=v\u{1B}[1A"#))
        #expect(line.hasPrefix("#1  ") && line.contains("  eve  load  slot=default  "))
    }

    @Test("fields that could not round-trip are refused")
    func invalidFields() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        #expect(throws: AuditLogError.self) { try log.append(actor: "a\u{0}b", action: "load", result: "ok") }
        #expect(throws: AuditLogError.self) {
            try log.append(actor: "a", action: "load", result: "ok", durationMs: .nan)
        }
        #expect(try log.count() == 0)
    }

    @Test("read-only: opens an existing log, refuses a missing one, and cannot append")
    func readOnly() throws {
        let dir = try TemporaryDirectory()
        #expect(throws: AuditLogError.self) { try AuditLog(directory: dir.path + "/missing", readOnly: true) }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/missing"))

        let writer = try AuditLog(directory: dir.path)
        try writer.append(actor: "a", action: "load", result: "ok")
        let reader = try AuditLog(directory: dir.path, readOnly: true)
        let head = try #require(try writer.head())
        #expect(try reader.verify() == .intact(entries: 1, headHash: head.hash))
        #expect(throws: AuditLogError.self) { try reader.append(actor: "a", action: "load", result: "ok") }
    }

    @Test("a database without the audit table is not an audit log")
    func notAnAuditLog() throws {
        let dir = try TemporaryDirectory()
        try ExternalSQLite.execute(dir.database, "CREATE TABLE other(x)")
        #expect(throws: AuditLogError.self) { try AuditLog(directory: dir.path, readOnly: true) }
    }
}
