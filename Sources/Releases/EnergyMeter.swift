import Foundation

/// Energy used since a start, from Linux RAPL counters, or why it cannot be read.
public struct EnergyReading: Sendable, Equatable {
    public var joules: Double?
    public var unavailable: String?
}

/// Reads the RAPL package counters under `/sys/class/powercap` (`intel-rapl:N/energy_uj`, wrapping at
/// `max_energy_range_uj`). Where the folder or the counters are missing or unreadable (containers, most VMs, non-Intel
/// hosts without the driver), every reading says so: no figure is ever invented.
///
/// Thread-safety: immutable; `reading(since:)` reads files and may be called from any thread (not the cooperative
/// pool's: it blocks on sysfs, briefly).
public struct EnergyMeter: Sendable {
    public let root: String
    /// The counters at the start: zone folder → microjoules.
    public let start: [String: UInt64]
    public let unavailable: String?

    public init(root: String = "/sys/class/powercap") {
        self.root = root
        let zones = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .filter { $0.hasPrefix("intel-rapl:") && $0.split(separator: ":").count == 2 }.sorted()
        var start: [String: UInt64] = [:]
        for zone in zones { if let v = Self.read("\(root)/\(zone)/energy_uj") { start[zone] = v } }
        self.start = start
        if !FileManager.default.fileExists(atPath: root) {
            unavailable = "\(root) does not exist on this host"
        } else if start.isEmpty {
            unavailable = "no readable RAPL package counter (intel-rapl:N/energy_uj) under \(root)"
        } else {
            unavailable = nil
        }
    }

    /// Joules used by every package since `init`.
    public func reading() -> EnergyReading {
        if let unavailable { return EnergyReading(joules: nil, unavailable: unavailable) }
        var total = 0.0
        for (zone, begin) in start {
            guard let now = Self.read("\(root)/\(zone)/energy_uj") else {
                return EnergyReading(joules: nil, unavailable: "\(zone)/energy_uj is no longer readable")
            }
            let range = Self.read("\(root)/\(zone)/max_energy_range_uj") ?? 0
            let delta = now >= begin ? now - begin : (range > begin ? range - begin + now : 0)
            total += Double(delta) / 1_000_000
        }
        return EnergyReading(joules: total, unavailable: nil)
    }

    static func read(_ path: String) -> UInt64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
