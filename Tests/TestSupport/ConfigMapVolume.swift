import Foundation

/// A folder laid out as kubelet lays out a ConfigMap volume, updated exactly as kubelet's atomic writer updates it
/// (`pkg/volume/util/atomic_writer.go`):
///
/// 1. the new data goes into a new timestamped folder `..2026_12_04_19_53_51.<random>`;
/// 2. a symlink `..data_tmp` is made pointing at that folder (by its relative name);
/// 3. `..data_tmp` is renamed over `..data` (the one atomic step: readers see the old data or the new, never a mix);
/// 4. the user-visible key `desired.yaml -> ..data/desired.yaml` is made if missing;
/// 5. the previous timestamped folder is removed.
///
/// Thread-safety: none; one test drives it.
public final class ConfigMapVolume {
    public let directory: String
    public let key: String
    private var current: String?
    private var serial = 0

    /// The path readers open: `<directory>/<key>`, a symlink through `..data`.
    public var keyPath: String { directory + "/" + key }

    public init(directory: String, key: String = "desired.yaml") {
        self.directory = directory
        self.key = key
    }

    /// Publishes `content` as the key's new value, by the atomic writer's sequence.
    /// - Returns: the moment of the rename over `..data` (what a consumer reacts to).
    @discardableResult
    public func publish(_ content: String) throws -> ContinuousClock.Instant {
        let fm = FileManager.default
        serial += 1
        let stamp = Self.formatter.string(from: Date())
        let folder = "..\(stamp).\(String(format: "%09d", serial))"
        try fm.createDirectory(atPath: directory + "/" + folder, withIntermediateDirectories: false)
        try content.write(toFile: directory + "/" + folder + "/" + key, atomically: false, encoding: .utf8)
        try? fm.removeItem(atPath: directory + "/..data_tmp")
        try fm.createSymbolicLink(atPath: directory + "/..data_tmp", withDestinationPath: folder)
        let renamed = ContinuousClock.now
        guard rename(directory + "/..data_tmp", directory + "/..data") == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        if (try? fm.destinationOfSymbolicLink(atPath: keyPath)) == nil {
            try fm.createSymbolicLink(atPath: keyPath, withDestinationPath: "..data/" + key)
        }
        if let current { try fm.removeItem(atPath: directory + "/" + current) }
        current = folder
        return renamed
    }

    private static let formatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy_MM_dd_HH_mm_ss"
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.locale = Locale(identifier: "en_US_POSIX")
        return formatter
    }()
}
