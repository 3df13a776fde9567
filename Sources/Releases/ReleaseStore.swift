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

    /// The file name part for a slot: the name itself when it is plain, its hex otherwise.
    static func fileName(_ slot: String) -> String {
        let plain = !slot.isEmpty && slot.utf8.count <= 100 && slot.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x2d || $0 == 0x5f
        }
        return plain ? slot : "x-" + Hex.string(Array(slot.utf8).prefix(100))
    }

    /// The folder for a slot's release files (its disagreements).
    public func folder(slot: String) -> String? { directory.map { "\($0)/\(Self.fileName(slot))" } }

    public func save(_ record: ReleaseRecord) throws {
        guard let directory else { return }
        let data = try JSONEncoder.yoloswap.encode(record)
        try PrivateFiles.replaceDurably(atPath: "\(directory)/\(Self.fileName(record.slot)).json", with: [UInt8](data))
    }

    /// Every record kept (one per slot); an unreadable file is skipped and reported.
    public func load() -> (records: [ReleaseRecord], unreadable: [String]) {
        guard let directory,
              let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return ([], []) }
        var records: [ReleaseRecord] = [], unreadable: [String] = []
        for name in names.sorted() where name.hasSuffix(".json") {
            guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)"),
                  let record = try? JSONDecoder.yoloswap.decode(ReleaseRecord.self, from: data) else {
                unreadable.append(name)
                continue
            }
            records.append(record)
        }
        return (records, unreadable)
    }
}
