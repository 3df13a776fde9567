import Foundation

/// The last entry the log has written, recorded apart from the entries (so that removing entries from the end
/// shows), and worth publishing elsewhere as an anchor.
public struct AuditHead: Sendable, Equatable, Codable {
    public var entryID: Int64
    public var hash: String

    enum CodingKeys: String, CodingKey {
        case entryID = "sequence"
        case hash
    }

    public init(entryID: Int64, hash: String) {
        self.entryID = entryID
        self.hash = hash
    }

    /// Parses `SEQ:HASH`, as `yoloswap audit verify --expect-head` takes it.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let id = Int64(parts[0]), id > 0, parts[1].count == 64,
            parts[1].allSatisfy(\.isHexDigit)
        else { return nil }
        self.init(entryID: id, hash: parts[1].lowercased())
    }

    /// `SEQ:HASH`.
    public var description: String { "\(entryID):\(hash)" }
}
