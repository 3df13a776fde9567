import Foundation
import Primitives

/// Energy used since a start, from Linux RAPL counters, or why it cannot be read.
public struct EnergyReading: Sendable, Equatable {
    public var joules: Double?
    public var unavailable: String?
}

/// Reads the RAPL package counters under `/sys/class/powercap` (`intel-rapl:N/energy_uj`, wrapping at
/// `max_energy_range_uj`). Where the folder or the counters are missing or unreadable (containers, most VMs, non-Intel
/// hosts without the driver), every reading says so: no figure is ever invented.
///
/// A counter wraps every few tens of minutes at a package's power, and a reading can tell one wrap only: each reading
/// adds what was used since the one before, so a meter read more often than its counters wrap (`sample()`, which the
/// release ticker calls every minute) counts every wrap.
///
/// Thread-safety: all members may be called from any thread (not the cooperative pool's: they block on sysfs,
/// briefly); readings are serialized by a lock.
public final class EnergyMeter: Sendable {
    public let root: String
    public let unavailable: String?
    /// Per zone folder: the counter at the last reading (microjoules) and what was used since the start.
    private let zones: Locked<[String: (last: UInt64, used: UInt64)]>

    public init(root: String = "/sys/class/powercap") {
        self.root = root
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .filter { $0.hasPrefix("intel-rapl:") && $0.split(separator: ":").count == 2 }.sorted()
        var start: [String: (last: UInt64, used: UInt64)] = [:]
        for zone in names { if let v = Self.read("\(root)/\(zone)/energy_uj") { start[zone] = (v, 0) } }
        zones = Locked(start)
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
        return zones.withLock { zones in
            var total: UInt64 = 0
            for (zone, counted) in zones {
                guard let now = Self.read("\(root)/\(zone)/energy_uj") else {
                    return EnergyReading(joules: nil, unavailable: "\(zone)/energy_uj is no longer readable")
                }
                let range = Self.read("\(root)/\(zone)/max_energy_range_uj") ?? 0
                let last = counted.last
                let delta = now >= last ? now - last : (range > last ? range - last + now : 0)
                let used = counted.used &+ delta
                zones[zone] = (now, used)
                total &+= used
            }
            return EnergyReading(joules: Double(total) / 1_000_000, unavailable: nil)
        }
    }

    /// Takes a reading for its side effect: what was used since the last one is counted before a counter can wrap
    /// twice.
    public func sample() { _ = reading() }

    static func read(_ path: String) -> UInt64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
