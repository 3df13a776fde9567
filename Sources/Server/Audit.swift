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
/// the log, its sequence alone as the `yoloswap_audit_head_sequence` metric — so that a log cut back behind it can be
/// shown later (`yoloswap audit verify --expect-head SEQ:HASH`, the hash from the log or `GET /v1/audit/head`).
///
/// Thread-safety: all members may be used from any task.
public final class AuditTrail: Sendable {
    public let log: AuditLog
    private let queue = BlockingQueue(label: "yoloswap.audit")
    let reads = BlockingQueue(label: "yoloswap.audit-read")
    /// The chain walk under way and the one queued behind it (`verify()`), and how many callers and walks there were.
    private let walks = Locked<(running: Task<AuditVerification, any Error>?,
        queued: Task<AuditVerification, any Error>?)>((nil, nil))
    let walkCounts = Locked((callers: 0, walks: 0))
    private let logger: Logger

    /// The longest name, path, version or digest an entry records, in UTF-8 bytes (a model path's bound, 1024).
    public static let maxFieldBytes = 1024
    /// The longest reason an entry records, in UTF-8 bytes.
    public static let maxReasonBytes = 8192

    public init(log: AuditLog, logger: Logger = Logger(label: "yoloswap.audit")) {
        self.log = log
        self.logger = logger
    }

    /// Appends an entry (its id and hashes are assigned by the log) and returns it as stored.
    ///
    /// Request-supplied text may hold NUL characters, which the log refuses: they are recorded visibly as `\0`. Each
    /// field is cut to its bound (`maxFieldBytes`, `maxReasonBytes`), saying how long it was: callers bound what
    /// they record, and this is the last line that keeps a request's text (an unknown slot's name, a refused route
    /// table) from making entries of megabytes that every listing and walk then reads.
    /// - Throws: `AuditLogError` when the log cannot be written.
    @discardableResult
    public func record(_ draft: AuditEntry) async throws -> AuditEntry {
        var entry = draft
        func clean(_ text: String?, max: Int = Self.maxFieldBytes) -> String? {
            guard let text else { return nil }
            let cleaned = text.replacingOccurrences(of: "\u{0}", with: "\\0")
            guard cleaned.utf8.count > max else { return cleaned }
            return cleaned.prefix(utf8Bytes: max) + "… (cut: \(cleaned.utf8.count) bytes)"
        }
        entry.actor = clean(entry.actor) ?? ""
        entry.action = clean(entry.action) ?? ""
        entry.remoteAddress = clean(entry.remoteAddress)
        entry.slot = clean(entry.slot)
        entry.modelPath = clean(entry.modelPath)
        entry.version = clean(entry.version)
        entry.sha256 = clean(entry.sha256)
        entry.reason = clean(entry.reason, max: Self.maxReasonBytes)
        if let duration = entry.durationMs, !duration.isFinite { entry.durationMs = nil }
        let log = self.log
        let toStore = entry
        let stored = try await queue.run {
            let stored = try log.append(toStore)
            // In the append's turn: set after the await, two appends' gauges could be set out of order.
            if let id = stored.id { Gauge(label: "yoloswap_audit_head_sequence").record(id) }
            return stored
        }
        if let id = stored.id {
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
    ///
    /// Callers share walks, so that any number of consoles asking at once cost one walk at a time: a caller joins the
    /// walk queued behind the running one (it has not started, so it covers every entry appended before the caller
    /// asked), or queues one. No caller joins a walk that is already running: it might miss an entry appended just
    /// before the caller asked.
    public func verify() async throws -> AuditVerification {
        try await walks.withLock { walks -> Task<AuditVerification, any Error> in
            walkCounts.withLock { $0.callers += 1 }
            if let queued = walks.queued { return queued }
            walkCounts.withLock { $0.walks += 1 }
            let (log, reads, state) = (self.log, self.reads, self.walks)
            let before = walks.running
            let walk = Task {
                if let before {
                    _ = await before.result
                    // This walk was the queued one until now: later callers queue the next.
                    state.withLock { $0.running = $0.queued; $0.queued = nil }
                }
                return try await reads.run { try log.verify() }
            }
            if before == nil { walks.running = walk } else { walks.queued = walk }
            return walk
        }.value
    }

    /// Entries, newest first (see `AuditLog.entries`).
    public func entries(slot: String?, since: Date?, limit: Int) async throws -> [AuditEntry] {
        let log = self.log
        return try await reads.run { try log.entries(slot: slot, since: since, limit: limit) }
    }
}

/// The list `GET /v1/audit` answers with.
struct AuditListDTO: Encodable { var entries: [AuditEntry] }
