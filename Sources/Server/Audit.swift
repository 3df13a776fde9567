import AuditLog
import Foundation
import Logging
import Metrics
import Primitives

// What the server uses of the audit log, in one place: the entry type is `AuditLog.AuditEntry` (one shape for what is
// recorded, stored, verified and shown by `GET /v1/audit`); `AuditTrail` writes and reads it off the cooperative pool.

/// The server's access to the hash-chained audit log.
///
/// Every append runs on one serial `BlockingQueue` (SQLite with an fsync per append must not hold a thread of Swift's
/// cooperative pool), in the order the calls were made; reads (the head, entries, a walk of the whole chain) on
/// another, so that a verification of a long log does not hold up the intents every change waits for (the log's
/// reads see a consistent snapshot beside its writes). Each append publishes the chain's new head — in
/// the log and as the `yoloswap_audit_head_sequence` metric — so that a log cut back behind it can be shown later
/// (`yoloswap audit verify --expect-head SEQ:HASH`).
///
/// Thread-safety: all members may be used from any task.
public final class AuditTrail: Sendable {
    public let log: AuditLog
    private let queue = BlockingQueue(label: "yoloswap.audit")
    private let reads = BlockingQueue(label: "yoloswap.audit-read")
    private let logger: Logger

    public init(log: AuditLog, logger: Logger = Logger(label: "yoloswap.audit")) {
        self.log = log
        self.logger = logger
    }

    /// Appends an entry (its id and hashes are assigned by the log) and returns it as stored.
    ///
    /// Request-supplied text may hold NUL characters, which the log refuses: they are recorded visibly as `\0`.
    /// - Throws: `AuditLogError` when the log cannot be written.
    @discardableResult
    public func record(_ draft: AuditEntry) async throws -> AuditEntry {
        var entry = draft
        func clean(_ text: String?) -> String? { text?.replacingOccurrences(of: "\u{0}", with: "\\0") }
        entry.actor = clean(entry.actor) ?? ""
        entry.remoteAddress = clean(entry.remoteAddress)
        entry.slot = clean(entry.slot)
        entry.modelPath = clean(entry.modelPath)
        entry.version = clean(entry.version)
        entry.sha256 = clean(entry.sha256)
        entry.reason = clean(entry.reason)
        if let duration = entry.durationMs, !duration.isFinite { entry.durationMs = nil }
        let log = self.log
        let toStore = entry
        let stored = try await queue.run { try log.append(toStore) }
        if let id = stored.id {
            Gauge(label: "yoloswap_audit_head_sequence").record(id)
            logger.info("audit", metadata: ["head": "\(id):\(stored.hash)", "action": "\(stored.action)",
                "result": "\(stored.result)", "actor": "\(stored.actor)"])
        }
        return stored
    }

    /// The chain's head: the latest entry's sequence number and hash (nil for an empty log).
    public func head() async throws -> AuditHead? {
        let log = self.log
        return try await reads.run { try log.head() }
    }

    /// Walks the whole chain (see `AuditLog.verify`).
    public func verify() async throws -> AuditVerification {
        let log = self.log
        return try await reads.run { try log.verify() }
    }

    /// Entries, newest first (see `AuditLog.entries`).
    public func entries(slot: String?, since: Date?, limit: Int) async throws -> [AuditEntry] {
        let log = self.log
        return try await reads.run { try log.entries(slot: slot, since: since, limit: limit) }
    }
}

/// The list `GET /v1/audit` answers with.
struct AuditListDTO: Encodable { var entries: [AuditEntry] }
