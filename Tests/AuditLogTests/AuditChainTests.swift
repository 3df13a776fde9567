import Foundation
import Primitives
import TestSupport
import Testing

@testable import AuditLog

@Suite("Audit log: the hash chain")
struct AuditChainTests {
    /// Appends `count` entries mixing present and absent fields, one second apart from a fixed start.
    @discardableResult
    static func fill(_ log: AuditLog, count: Int, start: Date = Date(timeIntervalSince1970: 1_750_000_000.123456))
        throws -> [AuditEntry]
    {
        try (0..<count).map { i in
            try log.append(
                actor: i % 3 == 0 ? "alice" : "bob", remoteAddress: i % 2 == 0 ? "10.0.0.\(i % 250)" : nil,
                action: ["load", "switch", "rollback", "discard"][i % 4], slot: i % 5 == 0 ? nil : "slot-\(i % 3)",
                modelPath: i % 4 == 0 ? "café/model-\(i).onnx" : nil, version: i % 4 == 0 ? "1.\(i)" : nil,
                sha256: i % 4 == 0 ? String(repeating: "ab", count: 32) : nil,
                signatureKeyID: i % 8 == 0 ? "0123456789abcdef" : nil,
                result: i % 7 == 0 ? "failed" : "succeeded", reason: i % 7 == 0 ? "bad signature ✗:\n-" : nil,
                durationMs: i % 6 == 0 ? nil : Double(i) * 1.37, time: start.addingTimeInterval(Double(i)))
        }
    }

    @Test("appended entries form an intact chain: ids 1…N, genesis, each linked to its predecessor")
    func intactChain() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        #expect(try log.verify() == .intact(entries: 0, headHash: AuditEntry.genesisHash))
        let appended = try Self.fill(log, count: 60)

        #expect(appended.map(\.id) == (1...60).map { Int64($0) })
        #expect(appended[0].previousHash == String(repeating: "0", count: 64))
        for (previous, entry) in zip(appended, appended.dropFirst()) { #expect(entry.previousHash == previous.hash) }
        #expect(try log.verify() == .intact(entries: 60, headHash: appended[59].hash))
        #expect(try log.head() == AuditHead(entryID: 60, hash: appended[59].hash))
        #expect(try log.verify().description == "audit log OK: 60 entries")
    }

    @Test("entries read back exactly as appended (time to the microsecond, durations bit for bit)")
    func roundTrip() throws {
        let dir = try TemporaryDirectory()
        let appended = try Self.fill(try AuditLog(directory: dir.path), count: 20)
        let reopened = try AuditLog(directory: dir.path)
        let read = try reopened.entries(limit: 100)
        #expect(read == appended.reversed())
        #expect(read.allSatisfy { $0.computedHash == $0.hash })
        #expect(try reopened.verify().isIntact)
        // As the API prints them (`time` to the millisecond) and a client decodes them: `time_us` carries the
        // microseconds the hash covers, so every hash can be recomputed off the machine.
        let printed = try JSONEncoder.yoloswap.encode(read)
        #expect(String(decoding: printed, as: UTF8.self).contains("\"time_us\""))
        let decoded = try JSONDecoder.yoloswap.decode([AuditEntry].self, from: printed)
        #expect(decoded == read)
        #expect(decoded.allSatisfy { $0.computedHash == $0.hash })
    }

    @Test("the stored hashes follow the documented encoding (recomputed by an independent Python script)")
    func documentedEncoding() throws {
        let dir = try TemporaryDirectory()
        try Self.fill(try AuditLog(directory: dir.path), count: 12)
        let lines = try ExternalSQLite.run(dir.database, "check").split(separator: "\n")
        #expect(lines.count == 12)
        #expect(lines.allSatisfy { $0.hasSuffix(" ok") })
    }

    @Test("the database is in WAL mode with synchronous FULL")
    func durability() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        #expect(try log.pragma("journal_mode") == "wal")
        #expect(try log.pragma("synchronous") == "2")  // FULL
    }

    // MARK: Tampering

    @Test(
        "an edited row is reported by its id",
        arguments: [
            "UPDATE audit_entry SET reason = 'all good' WHERE id = 17",
            "UPDATE audit_entry SET actor = 'mallory' WHERE id = 17",
            "UPDATE audit_entry SET time_us = time_us + 1 WHERE id = 17",
            "UPDATE audit_entry SET duration_ms = 0.5 WHERE id = 17",
            "UPDATE audit_entry SET slot = NULL WHERE id = 17",
            "UPDATE audit_entry SET hash = '" + String(repeating: "f", count: 64) + "' WHERE id = 17",
            "UPDATE audit_entry SET time_us = 'yesterday' WHERE id = 17",
        ])
    func editedRow(sql: String) throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 40)
        try ExternalSQLite.execute(dir.database, sql)

        guard case .broken(let chainBreak) = try log.verify() else {
            Issue.record("tampering went unnoticed: \(sql)")
            return
        }
        #expect(chainBreak.entryID == 17)
        #expect(chainBreak.kind == .contentMismatch)
        #expect(chainBreak.verifiedEntries == 16)
        #expect(try log.verify().description.hasPrefix("audit log BROKEN at entry #17: "))
    }

    @Test("an edited row whose hash was recomputed breaks the link to the next row")
    func editedAndRehashed() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 30)
        try ExternalSQLite.execute(dir.database, "UPDATE audit_entry SET result = 'succeeded' WHERE id = 15")
        try ExternalSQLite.run(dir.database, "rehash", "15")

        guard case .broken(let chainBreak) = try log.verify() else {
            Issue.record("a re-hashed edit went unnoticed")
            return
        }
        #expect(chainBreak.entryID == 16)
        #expect(chainBreak.kind == .linkMismatch)
        #expect(chainBreak.reason.contains("entry #15"))
    }

    @Test("a deleted row in the middle is reported at the entry after it")
    func deletedMiddleRow() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 30)
        try ExternalSQLite.execute(dir.database, "DELETE FROM audit_entry WHERE id = 12")

        let outcome = try log.verify()
        #expect(
            outcome
                == .broken(
                    ChainBreak(
                        entryID: 13, kind: .missingEntries,
                        reason: "entry #12 is missing before it (deleted)", verifiedEntries: 11)))
        #expect(outcome.description == "audit log BROKEN at entry #13: entry #12 is missing before it (deleted)")
    }

    @Test("deleted rows renumbered to hide the gap break the link")
    func deletedAndRenumbered() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 10)
        try ExternalSQLite.execute(
            dir.database,
            """
            DELETE FROM audit_entry WHERE id = 5;
            UPDATE audit_entry SET id = id - 1 WHERE id > 5;
            UPDATE audit_head SET last_id = 9;
            """)
        guard case .broken(let chainBreak) = try log.verify() else {
            Issue.record("renumbering went unnoticed")
            return
        }
        #expect(chainBreak.entryID == 5)  // the renumbered row's id is part of its hash
    }

    @Test("the first row deleted: reported at entry #2")
    func deletedFirstRow() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 5)
        try ExternalSQLite.execute(dir.database, "DELETE FROM audit_entry WHERE id = 1")
        guard case .broken(let chainBreak) = try log.verify() else {
            Issue.record("deletion went unnoticed")
            return
        }
        #expect(chainBreak.entryID == 2)
        #expect(chainBreak.kind == .missingEntries)
    }

    @Test("rows deleted from the end are reported through the head record, and stay reported after new appends")
    func truncatedTail() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 20)
        try ExternalSQLite.execute(dir.database, "DELETE FROM audit_entry WHERE id >= 19")

        let outcome = try log.verify()
        guard case .broken(let chainBreak) = outcome else {
            Issue.record("truncation went unnoticed")
            return
        }
        #expect(chainBreak.entryID == 19)
        #expect(chainBreak.kind == .truncated)
        #expect(chainBreak.reason.contains("#19–#20"))

        // The next append chains to the recorded head, not to the surviving last row: the gap stays visible.
        let next = try log.append(actor: "alice", action: "switch", slot: "a", result: "succeeded")
        #expect(next.id == 21)
        guard case .broken(let after) = try log.verify() else {
            Issue.record("truncation healed by an append")
            return
        }
        #expect(after.entryID == 21)
        #expect(after.kind == .missingEntries)
    }

    @Test("a deleted or edited head record is reported")
    func headTampering() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 8)
        try ExternalSQLite.execute(dir.database, "UPDATE audit_head SET hash = 'x'")
        guard case .broken(let edited) = try log.verify() else {
            Issue.record("an edited head went unnoticed")
            return
        }
        #expect(edited.kind == .headMismatch)

        try ExternalSQLite.execute(dir.database, "DELETE FROM audit_head")
        guard case .broken(let deleted) = try log.verify() else {
            Issue.record("a deleted head went unnoticed")
            return
        }
        #expect(deleted.kind == .headMismatch)
        #expect(deleted.entryID == 8)
        // An append does not write a new head over the gap (verify then found the log whole): it is refused.
        let error = #expect(throws: AuditLogError.self) {
            try log.append(actor: "x", action: "load", result: "intent")
        }
        #expect(error?.reason.contains("head record is missing") == true, "\(String(describing: error))")
        guard case .broken = try log.verify() else {
            Issue.record("the deleted head was healed by an append")
            return
        }
    }

    @Test("every row deleted is reported as truncation")
    func everythingDeleted() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 3)
        try ExternalSQLite.execute(dir.database, "DELETE FROM audit_entry")
        guard case .broken(let chainBreak) = try log.verify() else {
            Issue.record("deleting everything went unnoticed")
            return
        }
        #expect(chainBreak.entryID == 1)
        #expect(chainBreak.kind == .truncated)
    }
}

extension AuditChainTests {
    @Test("bytes hidden after a NUL, or invalid UTF-8 read as the replacement character, are reported as edits")
    func bytesTheTextHides() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 10)
        try log.append(actor: "x\u{FFFD}", action: "load", result: "succeeded", reason: "")
        #expect(try log.verify() == .intact(entries: 11, headHash: try #require(log.entries(limit: 1).first?.hash)))
        // Entry #8 has a reason: the same text, then a NUL and more (read back, the text stops at the NUL, and the
        // hash matched: before, the log verified intact).
        try ExternalSQLite.execute(dir.database, "UPDATE audit_entry SET reason = reason || X'00' || 'x' WHERE id = 8")
        guard case .broken(let hidden) = try log.verify() else {
            Issue.record("bytes after a NUL went unnoticed")
            return
        }
        #expect(hidden.entryID == 8 && hidden.kind == .contentMismatch && hidden.reason.contains("reason"))

        let other = try TemporaryDirectory()
        let second = try AuditLog(directory: other.path)
        try second.append(actor: "x\u{FFFD}", action: "load", result: "succeeded")
        try ExternalSQLite.execute(other.database, "UPDATE audit_entry SET actor = CAST(X'78FF' AS TEXT)")
        guard case .broken(let invalid) = try second.verify() else {
            Issue.record("invalid UTF-8 read as U+FFFD went unnoticed")
            return
        }
        #expect(invalid.entryID == 1 && invalid.reason.contains("actor"), "\(invalid)")
    }

    @Test("ids at the ends of Int64 in a tampered log are reported and refused, not trapped on")
    func extremeIDs() throws {
        let dir = try TemporaryDirectory()
        let log = try AuditLog(directory: dir.path)
        try Self.fill(log, count: 3)
        // A row given the smallest id, its hash recomputed: walked first.
        try ExternalSQLite.execute(dir.database, "UPDATE audit_entry SET id = -9223372036854775808 WHERE id = 1")
        try ExternalSQLite.run(dir.database, "rehash", "-9223372036854775808")
        guard case .broken(let inserted) = try log.verify() else {
            Issue.record("a row with id Int64.min went unnoticed")
            return
        }
        #expect(inserted.entryID == .min && inserted.kind == .missingEntries, "\(inserted)")
        // A head at the largest id: the next append is refused (it trapped).
        try ExternalSQLite.execute(dir.database, "UPDATE audit_head SET last_id = 9223372036854775807")
        #expect(throws: AuditLogError.self) { try log.append(actor: "a", action: "load", result: "succeeded") }
    }
}
