/// The outcome of walking the audit chain.
public enum AuditVerification: Sendable, Equatable, CustomStringConvertible {
    /// Every entry matches its hash and links to its predecessor, and the last one is the recorded head.
    case intact(entries: Int, headHash: String)
    /// The first broken link found.
    case broken(ChainBreak)

    public var isIntact: Bool { if case .intact = self { true } else { false } }

    public var description: String {
        switch self {
        case .intact(let entries, _): "audit log OK: \(entries) entries"
        case .broken(let chainBreak): "audit log BROKEN at entry #\(chainBreak.entryID): \(chainBreak.reason)"
        }
    }
}

/// Where and how the audit chain is broken.
public struct ChainBreak: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// The entry's stored hash does not match its content: the row was edited.
        case contentMismatch = "content-mismatch"
        /// Ids are not consecutive before this entry: rows were deleted.
        case missingEntries = "missing-entries"
        /// The entry's `previous_hash` is not its predecessor's hash: the predecessor was edited and re-hashed,
        /// or rows were deleted and the ids rewritten.
        case linkMismatch = "link-mismatch"
        /// Entries at the end are gone: the head records a later entry than the last row.
        case truncated
        /// The head record is missing or does not match the last entry.
        case headMismatch = "head-mismatch"
    }

    /// The first entry that does not check out (for `.truncated`, the first missing one).
    public var entryID: Int64
    public var kind: Kind
    /// What is wrong, in a sentence.
    public var reason: String
    /// Entries that checked out before the break.
    public var verifiedEntries: Int

    public init(entryID: Int64, kind: Kind, reason: String, verifiedEntries: Int) {
        self.entryID = entryID
        self.kind = kind
        self.reason = reason
        self.verifiedEntries = verifiedEntries
    }

    public var description: String { "entry #\(entryID): \(reason)" }
}
