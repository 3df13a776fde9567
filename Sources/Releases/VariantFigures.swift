import Foundation
import Histogram
import YOLO

/// One answer (or mirrored run) of a variant, as the figures count it.
public struct VariantSample: Sendable {
    /// Model time: decode, preprocess, inference and postprocess (milliseconds); nil for a failed request.
    public var milliseconds: Double?
    public var failed: Bool
    public var detections: Int
    public var confidenceSum: Double
    /// Detections with a non-finite box or confidence.
    public var nonFinite: Int
    public var classCounts: [String: Int]

    /// A successful run.
    public init(_ result: DetectionResult) {
        milliseconds = result.timings.total
        failed = false
        detections = result.detections.count
        confidenceSum = result.detections.reduce(0) { $0 + Double($1.confidence.isFinite ? $1.confidence : 0) }
        nonFinite = result.detections.filter {
            !$0.confidence.isFinite || ![$0.box.x1, $0.box.y1, $0.box.x2, $0.box.y2].allSatisfy(\.isFinite)
        }.count
        classCounts = result.detections.reduce(into: [:]) { $0[$1.className, default: 0] += 1 }
    }

    /// A failed run (`nonFinite`: the model's output held values that are not numbers).
    public static func failure(nonFinite: Bool = false) -> VariantSample {
        VariantSample(milliseconds: nil, failed: true, detections: 0, confidenceSum: 0, nonFinite: nonFinite ? 1 : 0,
            classCounts: [:])
    }

    init(milliseconds: Double?, failed: Bool, detections: Int, confidenceSum: Double, nonFinite: Int,
         classCounts: [String: Int]) {
        self.milliseconds = milliseconds
        self.failed = failed
        self.detections = detections
        self.confidenceSum = confidenceSum
        self.nonFinite = nonFinite
        self.classCounts = classCounts
    }
}

/// Everything counted of one variant since the release started (or since the process restarted: see the README):
/// requests, errors, latency in an HDR histogram (microseconds, 3 significant digits), detections, confidence and
/// per-class counts.
///
/// Thread-safety: a value; `ReleaseEngine` keeps it under its lock.
struct VariantTotals: Sendable {
    var requests = 0
    var errors = 0
    var nonFinite = 0
    var detections = 0
    var confidenceSum = 0.0
    var classCounts: [String: Int] = [:]
    var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    let since: Date

    init(since: Date) { self.since = since }

    mutating func add(_ s: VariantSample) {
        requests += 1
        if s.failed { errors += 1 }
        nonFinite += s.nonFinite
        detections += s.detections
        confidenceSum += s.confidenceSum
        for (k, v) in s.classCounts { classCounts[k, default: 0] += v }
        if classCounts.count > 1000 { classCounts = classCounts.filter { $0.value > 1 } }
        if let ms = s.milliseconds, ms.isFinite, ms >= 0 {
            _ = latency.record(UInt64(min(ms * 1000, 600_000_000)))
        }
    }

    func status(now: Date) -> VariantStatus {
        let ok = requests - errors
        func percentile(_ p: Double) -> Double? {
            latency.totalCount > 0 ? Double(latency.valueAtPercentile(p)) / 1000 : nil
        }
        let elapsed = now.timeIntervalSince(since)
        return VariantStatus(
            requests: requests, errors: errors, error_rate: requests > 0 ? Double(errors) / Double(requests) : 0,
            p50_ms: percentile(50), p95_ms: percentile(95), p99_ms: percentile(99),
            throughput_rps: elapsed > 0 ? Double(requests) / elapsed : 0,
            detections_per_image: ok > 0 ? Double(detections) / Double(ok) : nil,
            mean_confidence: detections > 0 ? confidenceSum / Double(detections) : nil,
            non_finite_outputs: nonFinite, class_counts: classCounts)
    }
}

/// A variant's figures as `GET .../release` shows them.
public struct VariantStatus: Sendable, Codable, Equatable {
    public var requests: Int
    public var errors: Int
    public var error_rate: Double
    public var p50_ms: Double?
    public var p95_ms: Double?
    public var p99_ms: Double?
    public var throughput_rps: Double
    public var detections_per_image: Double?
    public var mean_confidence: Double?
    public var non_finite_outputs: Int
    public var class_counts: [String: Int]
}

/// The last `capacity` samples of one variant, for the gates.
///
/// Every figure is kept up to date as samples come and go (running counts and sums, the latencies kept sorted), so that
/// judging the gates on each request costs no pass over the window: it is judged under the engine's lock, which the
/// slot's routing takes for every request.
///
/// Thread-safety: a value.
struct SampleWindow: Sendable {
    private var latencies: [Double?] = []
    private var failed: [Bool] = []
    private var detections: [Int] = []
    private var nonFiniteRing: [Int] = []
    private var next = 0
    let capacity: Int
    /// The window's finite latencies in ascending order (inserted and removed by binary search).
    private var sortedLatencies: [Double] = []
    private var failures = 0
    private(set) var nonFinite = 0
    /// Detections of the samples that did not fail, and their number.
    private var answeredDetections = 0
    private var answered = 0

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { failed.count }

    mutating func add(_ s: VariantSample) {
        if failed.count < capacity {
            latencies.append(s.milliseconds)
            failed.append(s.failed)
            detections.append(s.detections)
            nonFiniteRing.append(s.nonFinite)
        } else {
            forget(latency: latencies[next], failed: failed[next], detections: detections[next],
                nonFinite: nonFiniteRing[next])
            latencies[next] = s.milliseconds
            failed[next] = s.failed
            detections[next] = s.detections
            nonFiniteRing[next] = s.nonFinite
        }
        if let ms = s.milliseconds, ms.isFinite {
            sortedLatencies.insert(ms, at: Self.firstIndex(notBelow: ms, in: sortedLatencies))
        }
        if s.failed { failures += 1 } else { answered += 1; answeredDetections += s.detections }
        nonFinite += s.nonFinite
        next = (next + 1) % capacity
    }

    private mutating func forget(latency: Double?, failed: Bool, detections: Int, nonFinite: Int) {
        if let latency, latency.isFinite {
            let index = Self.firstIndex(notBelow: latency, in: sortedLatencies)
            if index < sortedLatencies.count, sortedLatencies[index] == latency { sortedLatencies.remove(at: index) }
        }
        if failed { failures -= 1 } else { answered -= 1; answeredDetections -= detections }
        self.nonFinite -= nonFinite
    }

    /// The first index whose value is not below `value` (the end when there is none).
    private static func firstIndex(notBelow value: Double, in sorted: [Double]) -> Int {
        var (low, high) = (0, sorted.count)
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low
    }

    var errorRate: Double { count > 0 ? Double(failures) / Double(count) : 0 }
    var p99: Double? {
        guard !sortedLatencies.isEmpty else { return nil }
        // Nearest rank.
        let rank = Int((0.99 * Double(sortedLatencies.count)).rounded(.up))
        return sortedLatencies[max(0, min(sortedLatencies.count - 1, rank - 1))]
    }
    var detectionsPerImage: Double? { answered == 0 ? nil : Double(answeredDetections) / Double(answered) }
}

/// The sliding windows the gates judge: both variants' last samples and the last mirrored pairs' agreement.
struct WindowFigures {
    var baseline: SampleWindow
    var candidate: SampleWindow
    /// Per mirrored pair: (matched, baseline detections, candidate detections).
    var pairs: [(Int, Int, Int)] = []
    var nextPair = 0
    /// The pairs' sums of each, kept as pairs come and go.
    private var pairTotals = (matched: 0, baseline: 0, candidate: 0)

    init(capacity: Int) {
        baseline = SampleWindow(capacity: capacity)
        candidate = SampleWindow(capacity: capacity)
    }

    mutating func addPair(_ p: PairComparison) {
        let entry = (p.matched, p.baselineCount, p.candidateCount)
        if pairs.count < baseline.capacity {
            pairs.append(entry)
        } else {
            let old = pairs[nextPair]
            pairTotals = (pairTotals.matched - old.0, pairTotals.baseline - old.1, pairTotals.candidate - old.2)
            pairs[nextPair] = entry
        }
        pairTotals = (pairTotals.matched + entry.0, pairTotals.baseline + entry.1, pairTotals.candidate + entry.2)
        nextPair = (nextPair + 1) % baseline.capacity
    }

    var agreementPairs: Int { pairs.count }
    var agreementF1: Double? {
        guard !pairs.isEmpty else { return nil }
        let (m, b, c) = pairTotals
        if b == 0 && c == 0 { return 1 }
        let p = c > 0 ? Double(m) / Double(c) : 0, r = b > 0 ? Double(m) / Double(b) : 0
        return p + r > 0 ? 2 * p * r / (p + r) : 0
    }
    var p99Ratio: Double? {
        guard let c = candidate.p99, let b = baseline.p99, b > 0 else { return nil }
        return c / b
    }
    var detectionsDrift: Double? {
        guard let c = candidate.detectionsPerImage, let b = baseline.detectionsPerImage else { return nil }
        return b > 0 ? abs(c - b) / b : (c > 0 ? 1 : 0)
    }

    /// The figures a decision is recorded with.
    var summary: [String: Double] {
        var f: [String: Double] = ["baseline_samples": Double(baseline.count),
            "candidate_samples": Double(candidate.count), "candidate_error_rate": candidate.errorRate,
            "baseline_error_rate": baseline.errorRate, "candidate_non_finite": Double(candidate.nonFinite)]
        if let v = agreementF1 { f["agreement_f1"] = v; f["agreement_pairs"] = Double(agreementPairs) }
        if let v = p99Ratio { f["p99_ratio"] = v }
        if let v = candidate.p99 { f["candidate_p99_ms"] = v }
        if let v = baseline.p99 { f["baseline_p99_ms"] = v }
        if let v = detectionsDrift { f["detections_per_image_drift"] = v }
        return f
    }
}
