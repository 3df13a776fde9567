import Foundation

/// A/B by time: which variant serves at an instant, from a rotation or from daily windows in a time zone.
///
/// Codable as `{"time_zone"?: "Europe/Berlin", "rotate_every_min"?: 60, "order"?: [names],
/// "windows"?: [{"from": "08:00", "to": "20:00", "variant": "A"}], "default"?: name}`. A rotation takes the variants
/// in `order` (default baseline, candidate) for `rotate_every_min` minutes each, counted from midnight 1970-01-01 in
/// the time zone, so it depends on the clock alone and holds across restarts. Windows are matched in order on the
/// local time of day (`from` inclusive, `to` exclusive; a window whose `to` is before its `from` runs over
/// midnight); outside every window `default` serves (the baseline when not given).
///
/// Thread-safety: a value.
public struct ABSchedule: Sendable, Equatable, Codable {
    public struct Window: Sendable, Equatable, Codable {
        public var from: String
        public var to: String
        public var variant: String
        public init(from: String, to: String, variant: String) {
            self.from = from
            self.to = to
            self.variant = variant
        }
    }

    public var time_zone: String?
    public var rotate_every_min: Double?
    public var order: [String]?
    public var windows: [Window]?
    public var `default`: String?

    public init(timeZone: String? = nil, rotateEveryMinutes: Double? = nil, order: [String]? = nil,
                windows: [Window]? = nil, default: String? = nil) {
        self.time_zone = timeZone
        self.rotate_every_min = rotateEveryMinutes
        self.order = order
        self.windows = windows
        self.default = `default`
    }

    var timeZone: TimeZone { time_zone.flatMap(TimeZone.init(identifier:)) ?? TimeZone(identifier: "UTC")! }

    func validate(variants: [String]) throws(ReleaseError) {
        func fail(_ m: String) -> ReleaseError { .invalid("schedule: " + m) }
        if let time_zone, TimeZone(identifier: time_zone) == nil { throw fail("unknown time_zone '\(time_zone)'") }
        guard (rotate_every_min == nil) != (windows == nil) else {
            throw fail("give either rotate_every_min or windows")
        }
        if let rotate_every_min, !(rotate_every_min.isFinite && rotate_every_min >= 1 && rotate_every_min <= 525_600) {
            throw fail("rotate_every_min must be in [1, 525600]")
        }
        let known = Set(variants)
        if let order {
            guard !order.isEmpty, order.count <= ReleaseSpec.maxWindows, order.allSatisfy(known.contains) else {
                throw fail("order must list 1 to \(ReleaseSpec.maxWindows) of the variants \(variants)")
            }
        }
        if let windows {
            guard !windows.isEmpty, windows.count <= ReleaseSpec.maxWindows else {
                throw fail("windows must hold 1 to \(ReleaseSpec.maxWindows) windows")
            }
            for (i, w) in windows.enumerated() {
                guard Self.minutes(w.from) != nil, Self.minutes(w.to) != nil else {
                    throw fail("windows[\(i)]: from and to must be HH:MM times")
                }
                guard known.contains(w.variant) else { throw fail("windows[\(i)].variant must be one of \(variants)") }
            }
        }
        if let d = `default`, !known.contains(d) { throw fail("default must be one of \(variants)") }
        // A schedule that never gives the candidate a minute judges it on nothing; with only sample-free rules set
        // it promoted on none.
        guard everServes(variants[1], variants: variants) else {
            throw fail("never serves the candidate '\(variants[1])': give it a place in order or a window")
        }
    }

    /// Minutes since midnight of an `HH:MM` time (00:00–24:00).
    static func minutes(_ text: String) -> Int? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ $0.count == 2 }), let h = Int(parts[0]), let m = Int(parts[1]),
              (0...24).contains(h), (0...59).contains(m), h * 60 + m <= 1440 else { return nil }
        return h * 60 + m
    }

    /// The variant that serves at `date`.
    /// - Parameter variants: the baseline's and the candidate's names, in that order.
    public func variant(at date: Date, variants: [String]) -> String {
        let zone = timeZone
        let local = date.timeIntervalSince1970 + Double(zone.secondsFromGMT(for: date))
        if let rotate = rotate_every_min {
            let order = self.order ?? variants
            let index = Int(floor(local / (rotate * 60)).truncatingRemainder(dividingBy: Double(order.count)))
            return order[(index + order.count) % order.count]
        }
        let minuteOfDay = Int(floor(local / 60)) % 1440
        return variant(atMinute: (minuteOfDay + 1440) % 1440, windows: parsedWindows, variants: variants)
    }

    /// Whether `name` serves at some time: a rotation's order names it, or some minute of the day falls to it.
    /// - Parameter variants: the baseline's and the candidate's names, in that order.
    public func everServes(_ name: String, variants: [String]) -> Bool {
        if rotate_every_min != nil { return (order ?? variants).contains(name) }
        let windows = parsedWindows
        return (0..<1440).contains { variant(atMinute: $0, windows: windows, variants: variants) == name }
    }

    private var parsedWindows: [(from: Int, to: Int, variant: String)] {
        (windows ?? []).compactMap { w in
            guard let from = Self.minutes(w.from), let to = Self.minutes(w.to) else { return nil }
            return (from, to, w.variant)
        }
    }

    /// The variant of the first window holding minute `m` of the day, or the default.
    private func variant(atMinute m: Int, windows: [(from: Int, to: Int, variant: String)], variants: [String])
        -> String
    {
        for w in windows {
            let inside = w.from <= w.to ? (m >= w.from && m < w.to) : (m >= w.from || m < w.to)
            if inside { return w.variant }
        }
        return `default` ?? variants[0]
    }
}
