import Foundation
internal import GRDB
import Primitives

// MARK: - Values

/// A model as recorded in the state: where it came from and what its bytes hashed to.
public struct ModelRecord: Codable, Sendable, Equatable {
    /// File path the model was loaded from.
    public var path: String
    /// Lowercase hex SHA-256 of the model file's bytes, as verified at load.
    public var sha256: String
    /// Optional human version label (from metadata or the operator).
    public var version: String?

    public init(path: String, sha256: String, version: String? = nil) {
        self.path = path
        self.sha256 = sha256
        self.version = version
    }
}

/// The committed state of one slot: the model serving it and the one kept for rollback.
///
/// After a crash at any point of a swap, the service restarts into `active` of the last committed state.
public struct CommittedSlot: Codable, Sendable, Equatable {
    /// Slot name.
    public var slot: String
    /// The model serving the slot.
    public var active: ModelRecord
    /// The previous model, kept for rollback; `nil` if none.
    public var standby: ModelRecord?
    /// Incremented by each committed switch of this slot.
    public var generation: Int
    /// When this state was committed.
    public var updatedAt: Date

    public init(
        slot: String, active: ModelRecord, standby: ModelRecord? = nil, generation: Int, updatedAt: Date = Date()
    ) {
        self.slot = slot
        self.active = active
        self.standby = standby
        self.generation = generation
        self.updatedAt = updatedAt
    }
}

/// Where the manager persists what must survive a restart: the committed slots and the log of swap events.
///
/// Blocking: implementations may block (SQLite with an fsync per write); `ModelManager` calls them on a thread of its
/// own, never on Swift's cooperative pool. `StateStore` is the SQLite implementation.
public protocol SlotStateStore: Sendable {
    /// All committed slots, ordered by slot name.
    func committedSlots() throws -> [CommittedSlot]
    /// Atomically replaces the slot's committed state; durable when it returns.
    func commit(_ state: CommittedSlot) throws
    /// Appends an event to the log.
    func append(_ event: SwapEvent) throws
}

// MARK: - Errors

/// A state-store operation failed; carries what was being done, on which database file, and SQLite's error.
public struct StateStoreError: Error, CustomStringConvertible {
    /// What was being done, e.g. `"commit slot 'default'"`.
    public var operation: String
    /// The database file (`":memory:"` for in-memory stores).
    public var path: String
    /// The underlying error (usually GRDB's `DatabaseError`, with the SQLite code and message).
    public var underlying: any Error

    public var description: String { "state store: \(operation) failed on \(path): \(underlying)" }
}

// MARK: - Store

/// The persisted hot-swap state: the committed slots and the log of swap events, in SQLite.
///
/// The file is `<directory>/state.sqlite`, in WAL journal mode with `synchronous = FULL`: a ``commit(_:)`` that
/// returned is on disk and survives SIGKILL and power loss, so a crash at any point of a swap restarts into the
/// last committed state. Each ``commit(_:)`` is one transaction.
///
/// Schema (migration `v1`):
/// - `committedSlot(slot TEXT PRIMARY KEY, activePath, activeSHA256, activeVersion, standbyPath, standbySHA256,
///   standbyVersion, generation INTEGER, updatedAt REAL)`
/// - `swapEvent(...)`: the event log of v1 (flattened columns); kept as it was, no longer written.
///
/// Migration `v2`:
/// - `event(id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, slot TEXT, json TEXT)`: each ``SwapEvent`` as its one
///   JSON shape (`SwapEvent`'s Codable), with its time and slot as columns for queries.
///
/// Dates are stored as REAL seconds since 2001-01-01 UTC (`Date.timeIntervalSinceReferenceDate`) so that they
/// round-trip exactly; in SQL, `datetime(updatedAt + 978307200, 'unixepoch')` reads them.
///
/// Thread-safety: all members are thread-safe. Every access goes through one GRDB `DatabaseQueue`, which
/// serializes them on its own dispatch queue. Calls block while SQLite works (milliseconds, plus an fsync
/// per commit): async callers run them on a thread of their own (`ModelManager` does). Several stores (or processes)
/// may open the same directory; a busy database is waited on for up to 5 s.
public final class StateStore: SlotStateStore {
    /// The database file, or `":memory:"`.
    public let path: String
    private let database: DatabaseQueue

    /// Opens `<directory>/state.sqlite`, creating the directory and the database if needed, and migrates it.
    ///
    /// What it creates only this user may open (`PrivateFiles`): folders 0700, the database 0600, which SQLite passes
    /// on to its `-wal` and `-shm` files.
    /// - Throws: ``StateStoreError`` if the directory cannot be created or the database cannot be opened
    ///   or migrated.
    public init(directory: String) throws {
        let path = URL(fileURLWithPath: directory).appendingPathComponent("state.sqlite").path
        self.path = path
        do {
            try PrivateFiles.createDirectory(atPath: directory)
        } catch {
            throw StateStoreError(operation: "create state directory", path: path, underlying: error)
        }
        do {
            try PrivateFiles.createFileIfMissing(atPath: path)
        } catch {
            throw StateStoreError(operation: "create database", path: path, underlying: error)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.label = "YOLOSwap.StateStore"
        configuration.prepareDatabase { db in
            // Not `configuration.journalMode = .wal`: GRDB then sets synchronous = NORMAL after this closure,
            // which may lose the last commits on power loss.
            let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
            guard mode == "wal" else {
                throw DatabaseError(message: "could not enable WAL journal mode (got \(mode ?? "nil"))")
            }
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw StateStoreError(operation: "open database", path: path, underlying: error)
        }
        try migrate()
    }

    /// Opens a private in-memory store (for tests); nothing survives it.
    public convenience init(inMemory: ()) throws {
        do {
            try self.init(database: DatabaseQueue(named: nil), path: ":memory:")
        } catch let error as StateStoreError {
            throw error
        } catch {
            throw StateStoreError(operation: "open database", path: ":memory:", underlying: error)
        }
    }

    private init(database: DatabaseQueue, path: String) throws {
        self.database = database
        self.path = path
        try migrate()
    }

    private func migrate() throws {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: CommittedSlotRow.databaseTableName) { t in
                t.primaryKey("slot", .text)
                t.column("activePath", .text).notNull()
                t.column("activeSHA256", .text).notNull()
                t.column("activeVersion", .text)
                t.column("standbyPath", .text)
                t.column("standbySHA256", .text)
                t.column("standbyVersion", .text)
                t.column("generation", .integer).notNull()
                t.column("updatedAt", .double).notNull()
            }
            try db.create(table: "swapEvent") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("slot", .text).notNull()
                t.column("operation", .text).notNull()
                t.column("result", .text).notNull()
                t.column("reason", .text)
                t.column("fromModel", .text)
                t.column("fromSHA256", .text)
                t.column("toModel", .text)
                t.column("toSHA256", .text)
                t.column("generation", .integer)
                t.column("verifyMs", .double)
                t.column("loadMs", .double)
                t.column("warmupMs", .double)
                t.column("flipMicroseconds", .double)
                t.column("totalMs", .double)
            }
            try db.create(index: "swapEvent_slot_id", on: "swapEvent", columns: ["slot", "id"])
        }
        migrator.registerMigration("v2") { db in
            try db.create(table: EventRow.databaseTableName) { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("time", .double).notNull()
                t.column("slot", .text).notNull()
                t.column("json", .text).notNull()
            }
            try db.create(index: "event_slot_id", on: EventRow.databaseTableName, columns: ["slot", "id"])
        }
        try attempt("migrate database") { try migrator.migrate(database) }
    }

    // MARK: Committed slots

    /// All committed slots, ordered by slot name.
    public func committedSlots() throws -> [CommittedSlot] {
        try attempt("read committed slots") {
            try database.read { db in
                try CommittedSlotRow.order(Column("slot")).fetchAll(db).map(\.value)
            }
        }
    }

    /// The committed state of `slot`, or `nil` if none was committed.
    public func committedSlot(_ slot: String) throws -> CommittedSlot? {
        try attempt("read committed slot '\(slot)'") {
            try database.read { db in try CommittedSlotRow.fetchOne(db, key: slot)?.value }
        }
    }

    /// Atomically replaces the slot's committed state (one transaction, durable when this returns).
    public func commit(_ state: CommittedSlot) throws {
        try attempt("commit slot '\(state.slot)' generation \(state.generation)") {
            try database.write { db in try CommittedSlotRow(state).save(db) }
        }
    }

    /// Removes the slot's committed state; no effect if there is none. Its events are kept.
    public func removeSlot(_ slot: String) throws {
        try attempt("remove slot '\(slot)'") {
            _ = try database.write { db in try CommittedSlotRow.deleteOne(db, key: slot) }
        }
    }

    // MARK: Events

    /// Events the log keeps, the newest: a service running for years swaps without end (the audit log is the full
    /// record).
    public static let eventsKept = 10_000

    /// Appends an event to the log, dropping those older than the last `eventsKept`.
    public func append(_ event: SwapEvent) throws {
        try attempt("append \(event.operation.rawValue) event for slot '\(event.slot)'") {
            let json = String(decoding: try JSONEncoder.yoloswap.encode(event), as: UTF8.self)
            try database.write { db in
                try EventRow(id: nil, time: event.time.timeIntervalSinceReferenceDate, slot: event.slot, json: json)
                    .insert(db)
                let id = db.lastInsertedRowID
                if id > Int64(Self.eventsKept) {
                    try db.execute(sql: "DELETE FROM event WHERE id <= ?", arguments: [id - Int64(Self.eventsKept)])
                }
            }
        }
    }

    /// The most recent events, newest first.
    ///
    /// - Parameters:
    ///   - slot: Only this slot's events; all slots if `nil`.
    ///   - limit: At most this many events.
    public func recentEvents(slot: String? = nil, limit: Int = 100) throws -> [SwapEvent] {
        try attempt("read recent events" + (slot.map { " for slot '\($0)'" } ?? "")) {
            let rows = try database.read { db in
                var request = EventRow.all()
                if let slot { request = request.filter(Column("slot") == slot) }
                return try request.order(Column("id").desc).limit(max(0, limit)).fetchAll(db)
            }
            let decoder = JSONDecoder.yoloswap
            return try rows.map { row in
                var event = try decoder.decode(SwapEvent.self, from: Data(row.json.utf8))
                event.time = Date(timeIntervalSinceReferenceDate: row.time)  // exact, where the JSON has milliseconds
                return event
            }
        }
    }

    // MARK: Internals

    /// The value of a read-only `PRAGMA` (for tests: `journal_mode`, `synchronous`).
    func pragma(_ name: String) throws -> String? {
        try attempt("read PRAGMA \(name)") {
            try database.read { db in try String.fetchOne(db, sql: "PRAGMA \(name)") }
        }
    }

    private func attempt<T>(_ operation: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw StateStoreError(operation: operation(), path: path, underlying: error)
        }
    }
}

// MARK: - Rows

/// `committedSlot` row: ``CommittedSlot`` flattened into columns.
private struct CommittedSlotRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "committedSlot"

    var slot: String
    var activePath: String
    var activeSHA256: String
    var activeVersion: String?
    var standbyPath: String?
    var standbySHA256: String?
    var standbyVersion: String?
    var generation: Int
    var updatedAt: Double

    /// Far beyond any slot's swaps (one a microsecond for 29 000 years), far below `Int.max`.
    static let maxGeneration = 1 << 60

    init(_ value: CommittedSlot) {
        slot = value.slot
        activePath = value.active.path
        activeSHA256 = value.active.sha256
        activeVersion = value.active.version
        standbyPath = value.standby?.path
        standbySHA256 = value.standby?.sha256
        standbyVersion = value.standby?.version
        generation = value.generation
        updatedAt = value.updatedAt.timeIntervalSinceReferenceDate
    }

    var value: CommittedSlot {
        var standby: ModelRecord?
        if let standbyPath, let standbySHA256 {
            standby = ModelRecord(path: standbyPath, sha256: standbySHA256, version: standbyVersion)
        }
        // A damaged row's generation (Int.min, Int.max) would trap the next `- 1` or `+ 1`, at every start: kept
        // within what a slot can reach, so that the slot starts and its generations still go up.
        return CommittedSlot(
            slot: slot, active: ModelRecord(path: activePath, sha256: activeSHA256, version: activeVersion),
            standby: standby, generation: min(max(generation, 0), Self.maxGeneration),
            updatedAt: Date(timeIntervalSinceReferenceDate: updatedAt))
    }
}

/// `event` row: a ``SwapEvent`` as its JSON, with its time (REAL) and slot as columns.
private struct EventRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "event"

    var id: Int64?
    var time: Double
    var slot: String
    var json: String
}
