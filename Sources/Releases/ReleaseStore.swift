import Crypto
import Foundation
import Primitives

/// Keeps each slot's release record in a folder (`<slot>.json`, replaced atomically and durably, owner-only), so that a
/// restart resumes it; without a folder nothing persists.
///
/// Thread-safety: all members may be called from any thread; they block on the file system (`save` for an fsync of
/// the file and of the folder): call them off the cooperative pool.
public struct ReleaseStore: Sendable {
    public let directory: String?

    public init(directory: String?) {
        self.directory = directory
        if let directory { try? PrivateFiles.createDirectory(atPath: directory) }
    }

    /// The file name part for a slot, one per slot name: the name itself when it is plain (letters, digits, `-`, `_`,
    /// at most 100 bytes, not starting with `x-`), else `x-` and the SHA-256 of the name in hex.
    static func fileName(_ slot: String) -> String {
        isPlain(slot) && !slot.hasPrefix("x-") ? slot : "x-" + Hex.string(Array(SHA256.hash(data: Array(slot.utf8))))
    }

    /// The name earlier versions gave: the name when plain (`x-` prefix or not), else the hex of its first 100 bytes
    /// (two names could share it).
    static func legacyFileName(_ slot: String) -> String {
        isPlain(slot) ? slot : "x-" + Hex.string(Array(slot.utf8).prefix(100))
    }

    private static func isPlain(_ slot: String) -> Bool {
        !slot.isEmpty && slot.utf8.count <= 100 && slot.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x2d || $0 == 0x5f
        }
    }

    /// The folder for a slot's release files (its disagreements).
    public func folder(slot: String) -> String? { directory.map { "\($0)/\(Self.fileName(slot))" } }

    public func save(_ record: ReleaseRecord) throws {
        guard let directory else { return }
        let data = try JSONEncoder.yoloswap.encode(record)
        let name = Self.fileName(record.slot)
        try PrivateFiles.replaceDurably(atPath: "\(directory)/\(name).json", with: [UInt8](data))
        // The record under an earlier version's name is this one's now: removed, so that a restart does not find two
        // (only when it is this slot's: another slot's record may have had that name).
        let legacy = "\(directory)/\(Self.legacyFileName(record.slot)).json"
        if Self.legacyFileName(record.slot) != name, let old = FileManager.default.contents(atPath: legacy),
           (try? JSONDecoder.yoloswap.decode(ReleaseRecord.self, from: old))?.slot == record.slot {
            try? FileManager.default.removeItem(atPath: legacy)
        }
    }

    /// Every record kept (one per slot); an unreadable file is skipped and reported. A slot's record under an earlier
    /// version's name beside one under its own (a crash between the write and the removal in `save`) is the older:
    /// it is removed, not resumed.
    public func load() -> (records: [ReleaseRecord], unreadable: [String]) {
        guard let directory,
              let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return ([], []) }
        var bySlot: [String: (name: String, record: ReleaseRecord)] = [:], unreadable: [String] = []
        for name in names.sorted() where name.hasSuffix(".json") {
            guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)"),
                  let record = try? JSONDecoder.yoloswap.decode(ReleaseRecord.self, from: data) else {
                unreadable.append(name)
                continue
            }
            let current = Self.fileName(record.slot) + ".json"
            if let kept = bySlot[record.slot] {
                let keepEarlier = kept.name == current
                try? FileManager.default.removeItem(atPath: "\(directory)/\(keepEarlier ? name : kept.name)")
                if !keepEarlier { bySlot[record.slot] = (name, record) }
            } else {
                bySlot[record.slot] = (name, record)
            }
        }
        return (bySlot.values.map(\.record).sorted { $0.slot < $1.slot }, unreadable)
    }
}
