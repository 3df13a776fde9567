import Foundation
import Primitives

/// Per-slot request counts and latency percentiles, second by second over the last five minutes: what
/// `GET /v1/stats` answers and the console plots (request rate, p50 and p99, with the swap events as markers).
///
/// Each second of each slot keeps a count, an error count and a log-scale histogram of the request durations (bins
/// 2^(1/8) apart, from 0.05 ms to about a minute), so percentiles are exact to within one bin (±4.5 %) and memory is
/// fixed per slot, whatever the request rate. `/metrics` remains the place for long-term figures; this is the
/// short-term view a person watches during a swap.
///
/// Thread-safety: all members may be used from any thread; state lives behind one lock held for a few array writes.
final class RequestStats: Sendable {
    /// Seconds kept per slot.
    static let capacity = 300
    /// Slots tracked at most (requests name existing slots only; this bounds memory all the same).
    static let maxSlots = 256
    static let binsPerDoubling = 8.0
    static let smallestMilliseconds = 0.05
    static let binCount = 160

    private struct Second {
        var second: Int64 = -1
        var requests = 0
        var errors = 0
        /// Empty until the second's first successful request.
        var histogram: [UInt32] = []
    }

    private let state = Locked<[String: [Second]]>([:])

    /// Counts one request of `slot` that took `milliseconds` (successful) or failed.
    func record(slot: String, milliseconds: Double, succeeded: Bool, at time: Date = Date()) {
        let second = Int64(time.timeIntervalSince1970.rounded(.down))
        let index = Int(second % Int64(Self.capacity))
        state.withLock { slots in
            if slots[slot] == nil {
                guard slots.count < Self.maxSlots else { return }
                slots[slot] = Array(repeating: Second(), count: Self.capacity)
            }
            slots[slot]!.withUnsafeMutableBufferPointer { ring in
                if ring[index].second != second { ring[index] = Second(second: second) }
                ring[index].requests += 1
                guard succeeded else {
                    ring[index].errors += 1
                    return
                }
                if ring[index].histogram.isEmpty {
                    ring[index].histogram = Array(repeating: 0, count: Self.binCount)
                }
                ring[index].histogram[Self.bin(milliseconds)] += 1
            }
        }
    }

    /// The last `window` seconds up to `time` (the current second included), per slot, oldest second first.
    func snapshot(window: Int, at time: Date = Date()) -> StatsDTO {
        let window = min(max(window, 1), Self.capacity)
        let end = Int64(time.timeIntervalSince1970.rounded(.down))
        let copy = state.withLock { $0 }
        var slots: [StatsDTO.Slot] = []
        for (name, ring) in copy.sorted(by: { $0.key < $1.key }) {
            var series: [StatsDTO.Point] = []
            var total = Array(repeating: UInt32(0), count: Self.binCount)
            var requests = 0
            var errors = 0
            for second in (end - Int64(window) + 1)...end {
                let entry = ring[Int(second % Int64(Self.capacity))]
                guard entry.second == second else {
                    series.append(StatsDTO.Point(t: second, requests: 0, errors: 0))
                    continue
                }
                requests += entry.requests
                errors += entry.errors
                for (i, n) in entry.histogram.enumerated() { total[i] += n }
                series.append(StatsDTO.Point(t: second, requests: entry.requests, errors: entry.errors,
                    p50_ms: Self.percentile(0.50, entry.histogram), p99_ms: Self.percentile(0.99, entry.histogram)))
            }
            slots.append(StatsDTO.Slot(slot: name, requests: requests, errors: errors,
                rate_rps: Double(requests) / Double(window), p50_ms: Self.percentile(0.50, total),
                p99_ms: Self.percentile(0.99, total), series: series))
        }
        return StatsDTO(interval_s: 1, window_s: window, end: end, slots: slots)
    }

    // MARK: Histogram

    static func bin(_ milliseconds: Double) -> Int {
        guard milliseconds.isFinite, milliseconds > smallestMilliseconds else { return 0 }
        let index = Int((log2(milliseconds / smallestMilliseconds) * binsPerDoubling).rounded(.down))
        return min(max(index, 0), binCount - 1)
    }

    /// The bin's geometric middle, in milliseconds.
    static func value(ofBin index: Int) -> Double {
        smallestMilliseconds * pow(2, (Double(index) + 0.5) / binsPerDoubling)
    }

    /// The `q` quantile of a histogram (nil when it holds no request).
    static func percentile(_ q: Double, _ histogram: [UInt32]) -> Double? {
        let count = histogram.reduce(0) { $0 + Int($1) }
        guard count > 0 else { return nil }
        // The smallest value with at least q of the requests at or below it.
        let rank = max(1, Int((q * Double(count)).rounded(.up)))
        var seen = 0
        for (i, n) in histogram.enumerated() {
            seen += Int(n)
            if seen >= rank { return (value(ofBin: i) * 1000).rounded() / 1000 }
        }
        return nil
    }
}

/// `GET /v1/stats`'s answer.
struct StatsDTO: Encodable {
    struct Point: Encodable {
        /// The second, as Unix time.
        var t: Int64
        var requests: Int
        var errors: Int
        var p50_ms: Double?
        var p99_ms: Double?
    }
    struct Slot: Encodable {
        var slot: String
        var requests: Int
        var errors: Int
        var rate_rps: Double
        var p50_ms: Double?
        var p99_ms: Double?
        var series: [Point]
    }
    var interval_s: Int
    var window_s: Int
    /// The last second of the window, as Unix time.
    var end: Int64
    var slots: [Slot]
}
