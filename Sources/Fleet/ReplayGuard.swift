import Foundation
import Primitives

/// Refuses stale and replayed fleet messages, and remembers what it admitted across restarts.
///
/// Commands are one-shot: one is admitted when it was issued within `maxClockSkew` of now (either way), its nonce has
/// not been seen and its id has not been used by another message. Every admitted command is remembered until it is
/// older than the skew allows, after which its age alone refuses it; so memory stays bounded by the commands of one
/// skew window (and by `capacity`). What is forgotten leaves a floor behind: the latest `issued_at` of a command
/// forgotten, at or before which every command is refused as stale — the age alone would not refuse a forgotten
/// command's copy once this machine's clock stepped back (a board without a real-time clock booting at its last saved
/// time), nor one forgotten for `capacity` while still within the skew.
///
/// Desired-state documents are retained state, delivered again on every subscription and to devices that start days
/// later, so their age does not matter: a group's document is admitted when it was issued after the last one admitted
/// for that topic. The same document again (same nonce and content) is `.alreadyApplied`; an older or different one
/// with the same time is refused as a replay, so a captured old document cannot roll back a device that admitted a
/// newer one (a device with no memory of the topic — new, or its memory lost — admits any signed document). One issued
/// beyond `documentHorizon` ahead of this machine's clock is refused as stale (see there).
///
/// `snapshot()` / `init(restoring:)` carry the memory across restarts (the service keeps it in its state folder), so
/// a restart does not reopen the window for a replay.
///
/// Thread-safety: all members may be used from any thread.
public final class ReplayGuard: Sendable {
    public struct Settings: Sendable, Equatable {
        /// How far a command's `issued_at` may be from this machine's clock, either way.
        public var maxClockSkew: Duration = .seconds(300)
        /// Commands remembered at most (the oldest are forgotten first; they are then refused by age soon after).
        public var capacity = 10_000

        public init(maxClockSkew: Duration = .seconds(300), capacity: Int = 10_000) {
            self.maxClockSkew = maxClockSkew
            self.capacity = capacity
        }
    }

    /// What is remembered, as stored.
    public struct Memory: Codable, Sendable, Equatable {
        public struct Command: Codable, Sendable, Equatable {
            public var id: String
            public var nonce: String
            public var issuedAt: Int64
            /// SHA-256 of the envelope as received.
            public var digest: String
        }
        public struct Document: Codable, Sendable, Equatable {
            public var issuedAt: Int64
            public var nonce: String
            public var digest: String
        }
        public var commands: [Command] = []
        /// The latest `issuedAt` of a command forgotten (by age or for capacity; nil: none yet).
        public var forgottenThrough: Int64?
        /// By topic.
        public var documents: [String: Document] = [:]

        public init() {}
    }

    /// Whether a desired-state document is new.
    public enum DocumentAdmission: Sendable, Equatable {
        case new
        case alreadyApplied
    }

    let settings: Settings
    private let memory: Locked<Memory>

    public init(settings: Settings = Settings(), restoring memory: Memory = Memory()) {
        self.settings = settings
        self.memory = Locked(memory)
    }

    /// Reads a memory written by `snapshot()`. A missing file is an empty memory (the first start); an unreadable or
    /// damaged one is an empty memory too, with the reason, which the caller reports: replays within the clock skew
    /// are then admitted once.
    public static func readMemory(from path: String) -> (memory: Memory, problem: String?) {
        guard FileManager.default.fileExists(atPath: path) else { return (Memory(), nil) }
        do {
            let data = try RegularFile(openingForReading: path).readAll(limit: 16 << 20)
            return (try JSONDecoder().decode(Memory.self, from: data), nil)
        } catch {
            return (Memory(), "\(error)")
        }
    }

    /// The memory as JSON, to be written where `readMemory` finds it.
    public func snapshot() -> Data {
        let memory = self.memory.value
        return (try? JSONEncoder().encode(memory)) ?? Data("{}".utf8)
    }

    /// Admits a command or refuses it.
    /// - Parameters:
    ///   - digest: SHA-256 of the envelope as received.
    ///   - now: this machine's time (Unix seconds).
    /// - Returns: nil when admitted (it is now remembered); the earlier command when this one repeats it byte for
    ///   byte (a QoS 1 redelivery, or a replay within the window) — the caller refuses it and repeats that command's
    ///   result.
    /// - Throws: `FleetRefusal` `.stale`, `.replayed` (a known nonce in another message), `.duplicateID`.
    public func admit(_ command: FleetCommand, digest: String, now: Int64) throws(FleetRefusal) -> Memory.Command? {
        let skew = settings.maxClockSkew.components.seconds
        // Overflow-checked: `issued_at` is the sender's, and a signed command with an absurd time must be refused,
        // not trap.
        let (age, overflow) = now.subtractingReportingOverflow(command.issued_at)
        guard !overflow, age != .min else {
            throw FleetRefusal(.stale, "issued at \(command.issued_at), no time this machine can compare with its own")
        }
        guard age <= skew else {
            throw FleetRefusal(.stale, "issued \(age) s ago; at most \(skew) s of clock skew or delay are accepted")
        }
        guard -age <= skew else {
            throw FleetRefusal(.stale, "issued \(-age) s in the future; at most \(skew) s of clock skew are accepted")
        }
        return try memory.withLock { (m: inout Memory) throws(FleetRefusal) -> Memory.Command? in
            // Overflow-checked too: the memory is read back from a file, which may have been damaged. (A time far in
            // the future is kept: a command admitted before the clock stepped back has one, and forgetting it would let
            // it be replayed; `capacity` bounds what is kept.)
            let forgotten = m.commands.filter {
                let (age, overflow) = now.subtractingReportingOverflow($0.issuedAt)
                return !overflow && age > skew
            }
            // A time whose difference overflows (a damaged file) is dropped without raising the floor.
            m.commands.removeAll {
                let (age, overflow) = now.subtractingReportingOverflow($0.issuedAt)
                return overflow || age > skew
            }
            Self.raiseFloor(&m, to: forgotten.map(\.issuedAt).max())
            if let floor = m.forgottenThrough, command.issued_at <= floor,
               !m.commands.contains(where: { $0.nonce == command.nonce }) {
                throw FleetRefusal(.stale, "issued at \(command.issued_at), not after a command this device no longer "
                    + "remembers (issued at \(floor)): a copy of one it ran cannot be told apart")
            }
            if let earlier = m.commands.first(where: { $0.nonce == command.nonce }) {
                if earlier.digest == digest { return earlier }
                throw FleetRefusal(.replayed, "nonce \(command.nonce) was used by command '\(earlier.id)'")
            }
            if let earlier = m.commands.first(where: { $0.id == command.id }) {
                throw FleetRefusal(.duplicateID, "command id '\(command.id)' was used by another message (nonce "
                    + "\(earlier.nonce))")
            }
            m.commands.append(Memory.Command(id: command.id, nonce: command.nonce, issuedAt: command.issued_at,
                digest: digest))
            // The earliest issued go first (not the first admitted): the floor they leave stays below every command
            // still remembered, so an operator whose clock runs behind another's is not refused. Never the command
            // just admitted: its redelivery is to be answered, not refused.
            let excess = m.commands.count - settings.capacity
            if excess > 0 {
                let earliest = Set(m.commands.indices.dropLast()
                    .sorted { m.commands[$0].issuedAt < m.commands[$1].issuedAt }.prefix(excess))
                Self.raiseFloor(&m, to: earliest.map { m.commands[$0].issuedAt }.max())
                m.commands = m.commands.enumerated().filter { !earliest.contains($0.offset) }.map(\.element)
            }
            return nil
        }
    }

    /// Raises the floor to `issuedAt` (never lowers it).
    private static func raiseFloor(_ m: inout Memory, to issuedAt: Int64?) {
        guard let issuedAt else { return }
        m.forgottenThrough = max(m.forgottenThrough ?? .min, issuedAt)
    }

    /// Forgets an admitted command that was never run (the device stopped before its turn), so that the same message
    /// sent again is admitted rather than refused as a replay.
    public func forget(_ command: FleetCommand) {
        memory.withLock { m in m.commands.removeAll { $0.nonce == command.nonce && $0.id == command.id } }
    }

    /// Admits a group's desired-state document or refuses it (see the type's documentation).
    /// - Parameter now: this machine's time (Unix seconds).
    /// - Throws: `FleetRefusal.replayed` for a document issued before (or with the time of) the one last admitted,
    ///   `.stale` for one issued beyond `documentHorizon` (see `isBeyondHorizon`).
    public func admit(_ document: FleetDesiredDocument, digest: String, now: Int64) throws(FleetRefusal)
        -> DocumentAdmission
    {
        try memory.withLock { (m: inout Memory) throws(FleetRefusal) -> DocumentAdmission in
            // A time remembered beyond twice the horizon (admitted before it was checked: milliseconds for seconds)
            // binds nothing. Twice: a document may be admitted a horizon past the last one, itself up to a horizon
            // ahead (a clock far behind); forgetting that one would let a captured older document back in.
            let last = m.documents[document.topic].flatMap {
                Self.isBeyondHorizon($0.issuedAt, now: now, horizons: 2) ? nil : $0
            }
            if let last, last.nonce == document.nonce && last.digest == digest { return .alreadyApplied }
            // Counted from the latest of this clock and the last document's time: a clock reset to 1970 still
            // admits the documents that follow the last one, whatever the year.
            guard !Self.isBeyondHorizon(document.issued_at, now: max(now, last?.issuedAt ?? now)) else {
                throw FleetRefusal(.stale, "issued at \(document.issued_at), more than ten years ahead of this "
                    + "machine's clock (milliseconds given for seconds?)")
            }
            if let last {
                guard document.issued_at > last.issuedAt else {
                    throw FleetRefusal(.replayed, "issued at \(document.issued_at), not after the document applied "
                        + "last (issued at \(last.issuedAt), nonce \(last.nonce))")
                }
            }
            m.documents[document.topic] = Memory.Document(issuedAt: document.issued_at, nonce: document.nonce,
                digest: digest)
            return .new
        }
    }

    /// How far ahead of this machine's clock a document may be issued: a retained document's age does not matter,
    /// and a device's clock may be far behind (one without a real-time clock boots at the time it last shut down, or
    /// in 1970, until NTP answers); but a time far ahead, admitted, would refuse every later document of the group
    /// until the clock passed it — milliseconds given for seconds, for ever.
    public static let documentHorizon: Int64 = 10 * 366 * 86_400
    /// The earliest "now" a horizon counts from (2026-01-01): a clock reset to 1970 does not make this year's
    /// documents look decades ahead.
    static let earliestNow: Int64 = 1_767_225_600

    /// Whether `issuedAt` lies more than `horizons` × `documentHorizon` ahead of `now` (or of `earliestNow`, if
    /// later).
    static func isBeyondHorizon(_ issuedAt: Int64, now: Int64, horizons: Int64 = 1) -> Bool {
        let (ahead, overflow) = issuedAt.subtractingReportingOverflow(max(now, earliestNow))
        return overflow ? issuedAt > 0 : ahead > documentHorizon * horizons
    }

    /// The document last admitted for a topic.
    public func lastDocument(topic: String) -> Memory.Document? { memory.withLock { $0.documents[topic] } }
}
