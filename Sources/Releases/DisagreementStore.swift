import Foundation
import Primitives
import YOLO

/// A mirrored image on which the candidate disagreed with the baseline, with both detection sets.
public struct Disagreement: Sendable, Codable {
    public var id: String
    public var time: Date
    public var content_type: String
    public var image_bytes: Int
    public var baseline: [Detection]
    public var candidate: [Detection]
    public var matched: Int
    public var unmatched_confusion: [String: Int]

    public init(id: String, time: Date, content_type: String, image_bytes: Int, baseline: [Detection],
                candidate: [Detection], matched: Int, unmatched_confusion: [String: Int]) {
        self.id = id
        self.time = time
        self.content_type = content_type
        self.image_bytes = image_bytes
        self.baseline = baseline
        self.candidate = candidate
        self.matched = matched
        self.unmatched_confusion = unmatched_confusion
    }
}

/// The last N disagreeing images of a release, bounded in count and bytes: in a folder (`<id>.json` and
/// `<id>.image`, written privately) or, without one, in memory. The oldest go first.
///
/// Thread-safety: all members may be called from any thread (one lock; file writes happen under it, so call it off the
/// cooperative pool).
public final class DisagreementStore: Sendable {
    public let directory: String?
    public let capacity: Int
    public let maxBytes: Int
    private struct Entry { var meta: Disagreement; var image: [UInt8]? }
    private let entries = Locked<[Entry]>([])

    /// - Parameters:
    ///   - directory: where to keep them (created); nil: in memory.
    ///   - capacity: how many (0 keeps none).
    ///   - maxBytes: the most image bytes kept in all.
    public init(directory: String?, capacity: Int, maxBytes: Int = 256 << 20) {
        self.directory = directory
        self.capacity = capacity
        self.maxBytes = maxBytes
        if let directory {
            try? PrivateFiles.createDirectory(atPath: directory)
            // What a previous run kept stays downloadable.
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
                .filter { $0.hasSuffix(".json") }
            let metas = names.compactMap { name -> Disagreement? in
                guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)") else { return nil }
                return try? JSONDecoder.yoloswap.decode(Disagreement.self, from: data)
            }.sorted { $0.time < $1.time }
            entries.withLock { $0 = metas.map { Entry(meta: $0, image: nil) } }
        }
    }

    /// The ids kept, newest last.
    public var ids: [String] { entries.withLock { $0.map(\.meta.id) } }

    /// Keeps one disagreement, dropping the oldest past the bounds.
    public func add(_ meta: Disagreement, image: [UInt8]) {
        guard capacity > 0, image.count <= maxBytes else { return }
        entries.withLock { list in
            if let directory {
                let data = (try? JSONEncoder.yoloswap.encode(meta)) ?? Data()
                writePrivately(Data(image), to: "\(directory)/\(meta.id).image")
                writePrivately(data, to: "\(directory)/\(meta.id).json")
                list.append(Entry(meta: meta, image: nil))
            } else {
                list.append(Entry(meta: meta, image: image))
            }
            while list.count > capacity || list.reduce(0, { $0 + $1.meta.image_bytes }) > maxBytes {
                let old = list.removeFirst()
                if let directory {
                    try? FileManager.default.removeItem(atPath: "\(directory)/\(old.meta.id).image")
                    try? FileManager.default.removeItem(atPath: "\(directory)/\(old.meta.id).json")
                }
            }
        }
    }

    /// One disagreement and its image, or nil when it is not (or no longer) kept.
    public func get(_ id: String) -> (Disagreement, [UInt8])? {
        entries.withLock { list in
            guard let entry = list.first(where: { $0.meta.id == id }) else { return nil }
            if let image = entry.image { return (entry.meta, image) }
            guard let directory, let data = FileManager.default.contents(atPath: "\(directory)/\(id).image") else {
                return nil
            }
            return (entry.meta, [UInt8](data))
        }
    }

    /// Removes every kept file (the release's folder is dropped when a new release starts on the slot).
    public func removeAll() {
        entries.withLock { list in
            if let directory { try? FileManager.default.removeItem(atPath: directory) }
            list.removeAll()
        }
    }
}

/// Writes `data` atomically (a temporary file renamed over the path), readable by the owner only. Best effort.
func writePrivately(_ data: Data, to path: String) {
    let url = URL(fileURLWithPath: path)
    guard (try? data.write(to: url, options: .atomic)) != nil else { return }
    _ = PrivateFiles.restrict(fileAtPath: path)
}
