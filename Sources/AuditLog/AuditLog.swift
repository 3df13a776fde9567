import Foundation
import GRDB
import Primitives

/// Why the audit log could not be opened, written or read.
public struct AuditLogError: Error, CustomStringConvertible {
    /// What was being done: "open audit log", "append entry", ….
    public var operation: String
    /// The database file.
    public var path: String
    public var reason: String

    public var description: String { "\(operation) (\(path)): \(reason)" }
}

/// A tamper-evident log of management calls: hash-chained rows in SQLite.
///
/// File `<directory>/audit.sqlite` (WAL, `synchronous = FULL`: an entry that `append` returned survives power
/// loss). Schema:
/// - `audit_entry(id INTEGER PRIMARY KEY, time_us INTEGER, actor, remote_address, action, slot, model_path,
///   version, sha256, signature_key_id, result, reason, duration_ms REAL, previous_hash, hash)`; ids are 1, 2, 3, …
///   with no gaps, and `hash` is SHA-256 over the row's canonical encoding (see `AuditEntry`).
/// - `audit_head(singleton = 1, last_id, hash)`: the latest entry, updated in the same transaction as each append.
///
/// `verify()` detects any edited row (its hash no longer matches), any deleted row (an id gap, or a
/// `previous_hash` that does not match), and deleted rows at the end (the head names a later entry). Someone
/// with write access to the file who knows the scheme can still rewrite the whole chain and the head, or cut the
/// tail and rewrite the head: only an anchor kept elsewhere (publish `head()` to a log or a monitoring system)
/// shows that.
///
/// Thread-safety: all members are thread-safe. Appends are serialized (each is one IMMEDIATE transaction that
/// reads the head and inserts, across processes too); reads see a consistent snapshot and run concurrently with
/// appends. Calls block while SQLite works (an fsync per append), so async callers should keep them off the
/// cooperative pool when they are frequent.
public final class AuditLog: Sendable {
    /// The database file.
    public let path: String
    private let database: DatabasePool

    /// Opens `<directory>/audit.sqlite`.
    /// - Parameters:
    ///   - directory: the state directory; created 0700 (with the database, 0600) unless `readOnly`.
    ///   - readOnly: open an existing log without writing to it (`yoloswap audit verify|list`).
    /// - Throws: `AuditLogError` when the directory or database cannot be created or opened, or a read-only log
    ///   does not exist.
    public init(directory: String, readOnly: Bool = false) throws {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("audit.sqlite").path
        self.path = path
        func fail(_ operation: String, _ error: any Error) -> AuditLogError {
            AuditLogError(operation: operation, path: path, reason: "\(error)")
        }
        if readOnly {
            guard FileManager.default.fileExists(atPath: path) else {
                throw AuditLogError(operation: "open audit log", path: path, reason: "no audit log there")
            }
        } else {
            // Only this user may open what is created here: folders 0700, the database 0600 (SQLite passes the mode
            // on to its -wal and -shm files).
            do { try PrivateFiles.createDirectory(atPath: directory) } catch {
                throw fail("create state directory", error)
            }
            do { try PrivateFiles.createFileIfMissing(atPath: path) } catch {
                throw fail("create audit log", error)
            }
        }
        var configuration = Configuration()
        configuration.label = "YOLOSwap.AuditLog"
        configuration.busyMode = .timeout(5)
        configuration.readonly = readOnly
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            if !readOnly {
                // The pool enables WAL and sets synchronous = NORMAL on its writer; an audit entry must be durable.
                try database.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
                try Self.migrator.migrate(database)
            }
            try database.read { db in
                guard try db.tableExists("audit_entry") else {
                    throw DatabaseError(message: "the database holds no audit_entry table")
                }
            }
        } catch let error as AuditLogError {
            throw error
        } catch {
            throw fail("open audit log", error)
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE audit_entry (
                        id INTEGER PRIMARY KEY,
                        time_us INTEGER NOT NULL,
                        actor TEXT NOT NULL,
                        remote_address TEXT,
                        action TEXT NOT NULL,
                        slot TEXT,
                        model_path TEXT,
                        version TEXT,
                        sha256 TEXT,
                        signature_key_id TEXT,
                        result TEXT NOT NULL,
                        reason TEXT,
                        duration_ms REAL,
                        previous_hash TEXT NOT NULL,
                        hash TEXT NOT NULL);
                    CREATE INDEX audit_entry_slot_id ON audit_entry(slot, id);
                    CREATE INDEX audit_entry_time ON audit_entry(time_us);
                    CREATE TABLE audit_head (
                        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                        last_id INTEGER NOT NULL,
                        hash TEXT NOT NULL);
                    """)
        }
        return migrator
    }

    // MARK: Appending

    /// Appends an entry, chained to the head, and returns it with its id and hashes.
    ///
    /// One IMMEDIATE transaction reads the head, inserts the entry with the next id and moves the head to it;
    /// it is durable when this returns.
    /// - Parameter time: stored to the microsecond; the returned entry carries the stored value.
    /// - Throws: `AuditLogError` when a field holds a NUL character, `durationMs` is not finite, or the database
    ///   cannot be written.
    @discardableResult
    public func append(
        actor: String, remoteAddress: String? = nil, action: String, slot: String? = nil, modelPath: String? = nil,
        version: String? = nil, sha256: String? = nil, signatureKeyID: String? = nil, result: String,
        reason: String? = nil, durationMs: Double? = nil, time: Date = Date()
    ) throws -> AuditEntry {
        try append(AuditEntry(
            time: time, actor: actor, remoteAddress: remoteAddress, action: action, slot: slot, modelPath: modelPath,
            version: version, sha256: sha256, signatureKeyID: signatureKeyID, result: result, reason: reason,
            durationMs: durationMs))
    }

    /// Appends the content fields of `draft` (its id and hashes are ignored), chained to the head, and returns the
    /// stored entry.
    /// - Throws: as `append(actor:...)`.
    @discardableResult
    public func append(_ draft: AuditEntry) throws -> AuditEntry {
        let texts: [(String, String?)] = [
            ("actor", draft.actor), ("remote_address", draft.remoteAddress), ("action", draft.action),
            ("slot", draft.slot), ("model_path", draft.modelPath), ("version", draft.version),
            ("sha256", draft.sha256), ("signature_key_id", draft.signatureKeyID), ("result", draft.result),
            ("reason", draft.reason),
        ]
        for case (let name, let value?) in texts where value.utf8.contains(0) {
            throw AuditLogError(operation: "append entry", path: path, reason: "\(name) holds a NUL character")
        }
        if let durationMs = draft.durationMs, !durationMs.isFinite {
            throw AuditLogError(
                operation: "append entry", path: path, reason: "duration_ms \(durationMs) is not finite")
        }
        var entry = draft
        entry.time = AuditEntry.date(microseconds: AuditEntry.microseconds(draft.time))
        // SQLite may store a REAL -0.0 as integer 0: store +0.0 so the hashed bit pattern round-trips.
        entry.durationMs = draft.durationMs.map { $0 == 0 ? 0 : $0 }
        try attempt("append entry") {
            try database.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    let head = try Self.head(db)
                    // Entries but no head: it was deleted (with the rows after it, maybe). Chaining on from the
                    // last row would write a new head and `verify` would find the log whole again.
                    if head == nil, let last = try Self.lastEntry(db) {
                        throw AuditLogError(operation: "append entry", path: path, reason: "the head record is "
                            + "missing while the log holds entries (the last is \(last.entryID)): the log was altered; "
                            + "nothing is appended until it is repaired (see `yoloswap audit verify`)")
                    }
                    let (id, overflow) = (head?.entryID ?? 0).addingReportingOverflow(1)
                    guard !overflow else {
                        throw AuditLogError(operation: "append entry", path: path, reason: "the head record names "
                            + "entry #\(Int64.max), after which no id is left: the log was altered; nothing is "
                            + "appended until it is repaired (see `yoloswap audit verify`)")
                    }
                    entry.id = id
                    entry.previousHash = head?.hash ?? AuditEntry.genesisHash
                    entry.hash = entry.computedHash
                    try Self.insert(entry, db)
                    try db.execute(
                        sql: "INSERT OR REPLACE INTO audit_head(singleton, last_id, hash) VALUES (1, ?, ?)",
                        arguments: [entry.id, entry.hash])
                    return .commit
                }
            }
        }
        return entry
    }

    private static func insert(_ entry: AuditEntry, _ db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO audit_entry(id, time_us, actor, remote_address, action, slot, model_path, version, sha256,
                    signature_key_id, result, reason, duration_ms, previous_hash, hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                entry.id, entry.timeMicroseconds, entry.actor, entry.remoteAddress, entry.action, entry.slot,
                entry.modelPath, entry.version, entry.sha256, entry.signatureKeyID, entry.result, entry.reason,
                entry.durationMs, entry.previousHash, entry.hash,
            ])
    }

    // MARK: Reading

    /// Entries, newest first.
    /// - Parameters:
    ///   - slot: only entries about this slot.
    ///   - since: only entries at or after this time.
    ///   - limit: at most this many (0 or less: none).
    public func entries(slot: String? = nil, since: Date? = nil, limit: Int = 100) throws -> [AuditEntry] {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let slot {
            conditions.append("slot = ?")
            arguments += [slot]
        }
        if let since {
            conditions.append("time_us >= ?")
            arguments += [AuditEntry.microseconds(since)]
        }
        arguments += [max(0, limit)]
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        return try attempt("read entries") {
            try database.read { db in
                try Row.fetchAll(
                    db, sql: "SELECT * FROM audit_entry \(filter) ORDER BY id DESC LIMIT ?",
                    arguments: arguments
                ).map { try AuditEntry(row: $0) }
            }
        }
    }

    /// The entry with this id, if the log has it.
    public func entry(id: Int64) throws -> AuditEntry? {
        try attempt("read entry #\(id)") {
            try database.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM audit_entry WHERE id = ?", arguments: [id])
                    .map { try AuditEntry(row: $0) }
            }
        }
    }

    /// Whether the log still holds a head recorded earlier (published elsewhere as an anchor): the entry `head.entryID`
    /// with exactly that hash. A log cut back behind it (and its head rewritten) no longer does, even if its own chain
    /// verifies.
    /// - Returns: nil when it does, else the reason.
    public func check(expectedHead head: AuditHead) throws -> String? {
        guard let entry = try entry(id: head.entryID) else {
            let last = try self.head()?.entryID ?? 0
            return "the log ends at entry #\(last), before the expected head #\(head.entryID): entries were removed"
        }
        guard entry.hash == head.hash else {
            return "entry #\(head.entryID) has hash \(entry.hash.prefix(16)), not the expected \(head.hash.prefix(16))"
        }
        return nil
    }

    /// The number of entries.
    public func count() throws -> Int {
        try attempt("count entries") {
            try database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM audit_entry") ?? 0 }
        }
    }

    /// The latest entry's id and hash as recorded by the last append (nil for an empty log).
    public func head() throws -> AuditHead? {
        try attempt("read head") { try database.read { db in try Self.head(db) } }
    }

    private static func head(_ db: Database) throws -> AuditHead? {
        try Row.fetchOne(db, sql: "SELECT last_id, hash FROM audit_head WHERE singleton = 1").map {
            AuditHead(entryID: try $0.decode(forColumn: "last_id"), hash: try $0.decode(forColumn: "hash"))
        }
    }

    private static func lastEntry(_ db: Database) throws -> AuditHead? {
        try Row.fetchOne(db, sql: "SELECT id, hash FROM audit_entry ORDER BY id DESC LIMIT 1").map {
            AuditHead(entryID: try $0.decode(forColumn: "id"), hash: try $0.decode(forColumn: "hash"))
        }
    }

    // MARK: Verifying

    /// Walks the chain in id order, in one snapshot, and reports the first broken link.
    ///
    /// For each entry, in this order: its text columns must hold exactly their text's bytes, and its stored hash must
    /// match its content (else it was edited); its id must follow the previous one (else entries before it were
    /// deleted; one below 1, inserted); its `previous_hash` must be the previous
    /// entry's hash, or 64 zeros for entry #1 (else its predecessor was edited and re-hashed, or replaced).
    /// Finally the last entry must be the recorded head (else entries were deleted from the end).
    public func verify() throws -> AuditVerification {
        try attempt("verify chain") {
            try database.read { db in
                let recordedHead = try Self.head(db)
                var expectedID: Int64 = 1
                var previousHash = AuditEntry.genesisHash
                var verified = 0
                func broken(_ id: Int64, _ kind: ChainBreak.Kind, _ reason: String) -> AuditVerification {
                    .broken(ChainBreak(entryID: id, kind: kind, reason: reason, verifiedEntries: verified))
                }
                let bytes = Self.textColumns.map { "CAST(\($0) AS BLOB) AS \($0)_bytes" }.joined(separator: ", ")
                let rows = try Row.fetchCursor(db, sql: "SELECT *, \(bytes) FROM audit_entry ORDER BY id")
                while let row = try rows.next() {
                    let entry: AuditEntry
                    do { entry = try AuditEntry(row: row) } catch {
                        let id = (try? row.decode(Int64.self, forColumn: "id")) ?? expectedID
                        return broken(id, .contentMismatch, "the row cannot be decoded (the row was edited): \(error)")
                    }
                    let id = entry.id ?? 0
                    if let column = Self.textColumns.first(where: { name in
                        (row[name + "_bytes"] as Data?) != (row[name] as String?).map { Data($0.utf8) }
                    }) {
                        return broken(id, .contentMismatch, "the row's \(column) holds bytes its text does not (a NUL "
                            + "or invalid UTF-8: the row was edited)")
                    }
                    if entry.computedHash != entry.hash {
                        return broken(
                            id, .contentMismatch,
                            "the row's content does not match its hash (the row was edited)")
                    }
                    if id < expectedID {
                        // Only before the first row: ids are unique and walked in order.
                        return broken(id, .missingEntries, "ids start at 1, this row's is \(id) (the row was "
                            + "inserted)")
                    }
                    if id != expectedID {
                        let missing =
                            id - 1 == expectedID ? "entry #\(expectedID) is" : "entries #\(expectedID)–#\(id - 1) are"
                        return broken(id, .missingEntries, "\(missing) missing before it (deleted)")
                    }
                    if entry.previousHash != previousHash {
                        return broken(
                            id, .linkMismatch,
                            id == 1
                                ? "previous_hash is not the genesis value (the first entry was replaced)"
                                : "previous_hash does not match the hash of entry #\(id - 1) (that entry was edited "
                                    + "and re-hashed, or replaced)")
                    }
                    verified += 1
                    expectedID = id + 1
                    previousHash = entry.hash
                }
                let last = verified == 0 ? nil : AuditHead(entryID: expectedID - 1, hash: previousHash)
                switch (recordedHead, last) {
                case (nil, nil):
                    return .intact(entries: 0, headHash: AuditEntry.genesisHash)
                case (let head?, let last) where head.entryID > (last?.entryID ?? 0):
                    let first = (last?.entryID ?? 0) + 1
                    let range =
                        first == head.entryID ? "entry #\(first) is" : "entries #\(first)–#\(head.entryID) are"
                    return broken(
                        first, .truncated,
                        "\(range) missing from the end (deleted; the head records entry #\(head.entryID))")
                case (let head?, let last?) where head == last:
                    return .intact(entries: verified, headHash: last.hash)
                case (nil, let last?):
                    return broken(last.entryID, .headMismatch, "the head record is missing (deleted)")
                case (let head?, _):
                    return broken(
                        head.entryID, .headMismatch,
                        "the head record (entry #\(head.entryID), hash \(head.hash.prefix(12))…) does not match "
                            + "the last entry (edited head)")
                }
            }
        }
    }

    // MARK: Internals

    /// The value of a read-only `PRAGMA` on the writer connection (for tests: `journal_mode`, `synchronous`).
    func pragma(_ name: String) throws -> String? {
        try database.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA \(name)") }
    }

    private func attempt<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as AuditLogError { throw error } catch {
            throw AuditLogError(operation: operation, path: path, reason: "\(error)")
        }
    }
}

extension AuditLog {
    /// The text columns of `audit_entry`. GRDB reads a text up to its first NUL and replaces invalid UTF-8, so `verify`
    /// compares each with its stored bytes: a value with bytes after a NUL would otherwise verify as the text before it.
    static let textColumns = ["actor", "remote_address", "action", "slot", "model_path", "version", "sha256",
                              "signature_key_id", "result", "reason", "previous_hash", "hash"]
}

extension AuditEntry {
    /// Decodes an `audit_entry` row.
    /// - Throws: a GRDB error when a column is missing, NULL where it may not be, or of the wrong type.
    init(row: Row) throws {
        self.init(
            id: try row.decode(forColumn: "id"),
            time: AuditEntry.date(microseconds: try row.decode(forColumn: "time_us")),
            actor: try row.decode(forColumn: "actor"), remoteAddress: try row.decode(forColumn: "remote_address"),
            action: try row.decode(forColumn: "action"), slot: try row.decode(forColumn: "slot"),
            modelPath: try row.decode(forColumn: "model_path"), version: try row.decode(forColumn: "version"),
            sha256: try row.decode(forColumn: "sha256"), signatureKeyID: try row.decode(forColumn: "signature_key_id"),
            result: try row.decode(forColumn: "result"), reason: try row.decode(forColumn: "reason"),
            durationMs: try row.decode(forColumn: "duration_ms"),
            previousHash: try row.decode(forColumn: "previous_hash"), hash: try row.decode(forColumn: "hash"))
    }
}
