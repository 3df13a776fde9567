import Crypto
import Foundation
import Primitives

/// One management call and its outcome, as stored in the audit log.
///
/// `hash` is the lower-case hex SHA-256 of ``canonicalEncoding``: every content field, the row id and
/// `previousHash`, so changing any of them (or moving the row) changes the hash, and each row's `previousHash`
/// ties it to the row before it.
///
/// Canonical encoding (`yoloswap-audit-v1`), UTF-8: the line `yoloswap-audit-v1`, then one line per field, in
/// this order: `id`, `time_us`, `actor`, `remote_address`, `action`, `slot`, `model_path`, `version`, `sha256`,
/// `signature_key_id`, `result`, `reason`, `duration_ms`, `previous_hash`. Each line is `<name>=` followed by
/// `-` for a null field, or by `<UTF-8 byte count>:<value>`, and ends with `\n`. Values are written as stored:
/// `id` and `time_us` (microseconds since 1970-01-01 UTC) in decimal, strings verbatim (the length prefix makes
/// escaping unnecessary), `duration_ms` as the 16 lower-case hex digits of its IEEE 754 binary64 bit pattern
/// (big-endian), so every value round-trips through SQLite exactly and the hash can be recomputed from the raw
/// row by any tool.
///
/// The one shape of an audit record: what the server records (a draft: `id` nil, hashes empty, until
/// `AuditLog.append(_:)` returns the stored entry), what the log stores and verifies, and — Codable with the
/// snake_case keys below — what `GET /v1/audit` and `yoloswap audit list` print. Encoded, an entry has its time twice:
/// `time` (ISO 8601, for reading; the API prints milliseconds) and `time_us`, the microseconds the hash covers, so
/// that anyone can recompute an entry's hash from what the API returns; decoded, `time_us` wins when present.
///
/// Thread-safety: a value.
public struct AuditEntry: Sendable, Codable, Equatable {
    enum CodingKeys: String, CodingKey {
        case id, time, actor, action, slot, version, sha256, result, reason, hash
        case timeMicroseconds = "time_us"
        case remoteAddress = "remote_address"
        case modelPath = "model_path"
        case signatureKeyID = "signature_key_id"
        case durationMs = "duration_ms"
        case previousHash = "previous_hash"
    }

    /// Row id: 1, 2, 3, … in append order (nil before insertion).
    public var id: Int64?
    /// When the call was made, to the microsecond.
    public var time: Date
    /// Who made it (token name).
    public var actor: String
    public var remoteAddress: String?
    /// What was asked: `load`, `switch`, `rollback`, `discard`, `routes.replace`, ….
    public var action: String
    public var slot: String?
    public var modelPath: String?
    public var version: String?
    public var sha256: String?
    public var signatureKeyID: String?
    /// Outcome: `succeeded`, `failed`, `rejected`, ….
    public var result: String
    public var reason: String?
    public var durationMs: Double?
    /// The hash of the previous entry (64 zeros for the first).
    public var previousHash: String
    public var hash: String

    public init(
        id: Int64? = nil, time: Date = Date(), actor: String, remoteAddress: String? = nil, action: String,
        slot: String? = nil, modelPath: String? = nil, version: String? = nil, sha256: String? = nil,
        signatureKeyID: String? = nil, result: String, reason: String? = nil, durationMs: Double? = nil,
        previousHash: String = "", hash: String = ""
    ) {
        self.id = id
        self.time = time
        self.actor = actor
        self.remoteAddress = remoteAddress
        self.action = action
        self.slot = slot
        self.modelPath = modelPath
        self.version = version
        self.sha256 = sha256
        self.signatureKeyID = signatureKeyID
        self.result = result
        self.reason = reason
        self.durationMs = durationMs
        self.previousHash = previousHash
        self.hash = hash
    }

    /// `previousHash` of the first entry.
    public static let genesisHash = String(repeating: "0", count: 64)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(Int64.self, forKey: .id)
        if let microseconds = try c.decodeIfPresent(Int64.self, forKey: .timeMicroseconds) {
            time = Self.date(microseconds: microseconds)
        } else {
            time = try c.decode(Date.self, forKey: .time)
        }
        actor = try c.decode(String.self, forKey: .actor)
        remoteAddress = try c.decodeIfPresent(String.self, forKey: .remoteAddress)
        action = try c.decode(String.self, forKey: .action)
        slot = try c.decodeIfPresent(String.self, forKey: .slot)
        modelPath = try c.decodeIfPresent(String.self, forKey: .modelPath)
        version = try c.decodeIfPresent(String.self, forKey: .version)
        sha256 = try c.decodeIfPresent(String.self, forKey: .sha256)
        signatureKeyID = try c.decodeIfPresent(String.self, forKey: .signatureKeyID)
        result = try c.decode(String.self, forKey: .result)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        durationMs = try c.decodeIfPresent(Double.self, forKey: .durationMs)
        previousHash = try c.decode(String.self, forKey: .previousHash)
        hash = try c.decode(String.self, forKey: .hash)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encode(time, forKey: .time)
        try c.encode(timeMicroseconds, forKey: .timeMicroseconds)
        try c.encode(actor, forKey: .actor)
        try c.encodeIfPresent(remoteAddress, forKey: .remoteAddress)
        try c.encode(action, forKey: .action)
        try c.encodeIfPresent(slot, forKey: .slot)
        try c.encodeIfPresent(modelPath, forKey: .modelPath)
        try c.encodeIfPresent(version, forKey: .version)
        try c.encodeIfPresent(sha256, forKey: .sha256)
        try c.encodeIfPresent(signatureKeyID, forKey: .signatureKeyID)
        try c.encode(result, forKey: .result)
        try c.encodeIfPresent(reason, forKey: .reason)
        try c.encodeIfPresent(durationMs, forKey: .durationMs)
        try c.encode(previousHash, forKey: .previousHash)
        try c.encode(hash, forKey: .hash)
    }

    /// `time` as stored: whole microseconds since 1970-01-01 UTC.
    public var timeMicroseconds: Int64 { Self.microseconds(time) }

    /// Clamped to Int64's range: a query's `since` comes from outside, and a year past about 292 000 would trap.
    static func microseconds(_ date: Date) -> Int64 {
        let value = (date.timeIntervalSince1970 * 1_000_000).rounded()
        return Int64(exactly: value) ?? (value < 0 ? .min : .max)
    }

    static func date(microseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(microseconds) / 1_000_000) }

    // MARK: Hashing

    /// The bytes `hash` is computed over (see the type's documentation).
    public var canonicalEncoding: Data {
        func line(_ name: String, _ value: String?) -> String {
            guard let value else { return "\(name)=-\n" }
            return "\(name)=\(value.utf8.count):\(value)\n"
        }
        var text = "yoloswap-audit-v1\n"
        text += line("id", id.map { String($0) })
        text += line("time_us", String(timeMicroseconds))
        text += line("actor", actor)
        text += line("remote_address", remoteAddress)
        text += line("action", action)
        text += line("slot", slot)
        text += line("model_path", modelPath)
        text += line("version", version)
        text += line("sha256", sha256)
        text += line("signature_key_id", signatureKeyID)
        text += line("result", result)
        text += line("reason", reason)
        text += line(
            "duration_ms", durationMs.map { Hex.string(withUnsafeBytes(of: $0.bitPattern.bigEndian, Array.init)) })
        text += line("previous_hash", previousHash)
        return Data(text.utf8)
    }

    /// SHA-256 of ``canonicalEncoding``, lower-case hex.
    public var computedHash: String { Hex.string(SHA256.hash(data: canonicalEncoding)) }

    /// One line of text for a terminal, as `yoloswap audit list` prints it: id, time, actor, action, the fields
    /// set, result, reason and duration. Every field is written with its control characters escaped: a path or a
    /// reason from a refused request (stored verbatim, as the hash needs) cannot start a forged line of its own or
    /// drive the terminal that shows it.
    public var textLine: String {
        func text(_ field: String) -> String { field.escapingControlCharacters }
        let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var line = "#\(id ?? 0)  \(time.formatted(timeFormat))  \(text(actor))"
        if let remoteAddress { line += "@\(text(remoteAddress))" }
        line += "  \(text(action))"
        if let slot { line += "  slot=\(text(slot))" }
        if let modelPath { line += "  model=\(text(modelPath))" }
        if let version { line += "  version=\(text(version))" }
        if let sha256 { line += "  sha256=\(text(String(sha256.prefix(12))))" }
        if let signatureKeyID { line += "  key=\(text(signatureKeyID))" }
        line += "  \(text(result))"
        if let reason { line += ": \(text(reason))" }
        if let durationMs { line += String(format: "  (%.1f ms)", durationMs) }
        return line
    }
}
