import Foundation
import YOLO

/// How two detection sets of the same image agree: the baseline's (taken as reference) and the candidate's.
///
/// Matching is greedy per class (by class name, so that models with other class tables compare), COCO-style: within
/// each class, the candidate's detections in descending confidence (ties: in order) each take the still unmatched
/// baseline detection with the highest IoU (ties: the first), if that IoU is at least the threshold. Unmatched boxes
/// are then paired across classes the same way (a candidate box on a baseline box of another class, IoU ≥ threshold) to
/// fill the confusion of unmatched boxes; what remains is counted against `(none)`. `tools/release_agreement.py`
/// re-computes exactly this.
///
/// Thread-safety: a value.
public struct PairComparison: Sendable, Equatable {
    public var baselineCount: Int
    public var candidateCount: Int
    public var matched: Int
    public var iouSum: Double
    public var confidenceDeltaSum: Double
    /// `"baseline class → candidate class"` (names, `(none)` for a box with no counterpart) → count.
    public var confusion: [String: Int]

    /// Whether every detection found its match on both sides.
    public var agrees: Bool { matched == baselineCount && matched == candidateCount }

    public init(baseline: [Detection], candidate: [Detection], iouThreshold: Double) {
        baselineCount = baseline.count
        candidateCount = candidate.count
        var baseUsed = [Bool](repeating: false, count: baseline.count)
        var candUsed = [Bool](repeating: false, count: candidate.count)
        let order = candidate.indices.sorted { candidate[$0].confidence > candidate[$1].confidence ||
            (candidate[$0].confidence == candidate[$1].confidence && $0 < $1) }
        var matched = 0, iouSum = 0.0, deltaSum = 0.0
        for c in order {
            var best = -1, bestIoU = iouThreshold
            for b in baseline.indices where !baseUsed[b] && baseline[b].className == candidate[c].className {
                let iou = baseline[b].box.iou(candidate[c].box)
                if iou >= bestIoU && (best < 0 || iou > bestIoU) {
                    best = b
                    bestIoU = iou
                }
            }
            guard best >= 0 else { continue }
            baseUsed[best] = true
            candUsed[c] = true
            matched += 1
            iouSum += bestIoU
            deltaSum += Double(abs(baseline[best].confidence - candidate[c].confidence))
        }
        self.matched = matched
        self.iouSum = iouSum
        self.confidenceDeltaSum = deltaSum
        var confusion: [String: Int] = [:]
        for c in order where !candUsed[c] {
            var best = -1, bestIoU = iouThreshold
            for b in baseline.indices where !baseUsed[b] {
                let iou = baseline[b].box.iou(candidate[c].box)
                if iou >= bestIoU && (best < 0 || iou > bestIoU) {
                    best = b
                    bestIoU = iou
                }
            }
            let from = best >= 0 ? baseline[best].className : "(none)"
            if best >= 0 { baseUsed[best] = true }
            candUsed[c] = true
            confusion["\(from) → \(candidate[c].className)", default: 0] += 1
        }
        for b in baseline.indices where !baseUsed[b] {
            confusion["\(baseline[b].className) → (none)", default: 0] += 1
        }
        self.confusion = confusion
    }
}

/// Agreement summed over many image pairs.
///
/// Thread-safety: a value.
public struct AgreementTotals: Sendable, Equatable {
    public var pairs = 0
    public var disagreeing = 0
    public var baselineDetections = 0
    public var candidateDetections = 0
    public var matched = 0
    public var iouSum = 0.0
    public var confidenceDeltaSum = 0.0
    public var confusion: [String: Int] = [:]
    /// Model time of the pairs (milliseconds), for the latency ratio.
    public var baselineMilliseconds = 0.0
    public var candidateMilliseconds = 0.0

    public init() {}

    public mutating func add(_ p: PairComparison, baselineMs: Double, candidateMs: Double) {
        pairs += 1
        if !p.agrees { disagreeing += 1 }
        baselineDetections += p.baselineCount
        candidateDetections += p.candidateCount
        matched += p.matched
        iouSum += p.iouSum
        confidenceDeltaSum += p.confidenceDeltaSum
        // The confusion keeps its most frequent entries only when it grows past a bound (untrusted outputs may name
        // many classes): low cardinality in the status.
        for (k, v) in p.confusion { confusion[k, default: 0] += v }
        if confusion.count > 400 {
            confusion = Dictionary(uniqueKeysWithValues: confusion.sorted { $0.value > $1.value }.prefix(200)
                .map { ($0.key, $0.value) })
        }
        baselineMilliseconds += baselineMs
        candidateMilliseconds += candidateMs
    }

    /// Candidate detections that match the baseline's, over all candidate detections (1 with none on either side).
    public var precision: Double {
        candidateDetections > 0 ? Double(matched) / Double(candidateDetections) : (baselineDetections == 0 ? 1 : 0)
    }
    public var recall: Double {
        baselineDetections > 0 ? Double(matched) / Double(baselineDetections) : (candidateDetections == 0 ? 1 : 0)
    }
    public var f1: Double { precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0 }
    public var meanIoU: Double? { matched > 0 ? iouSum / Double(matched) : nil }
    public var meanConfidenceDelta: Double? { matched > 0 ? confidenceDeltaSum / Double(matched) : nil }
    /// Mean of (candidate − baseline) detections per image.
    public var meanCountDelta: Double? {
        pairs > 0 ? Double(candidateDetections - baselineDetections) / Double(pairs) : nil
    }
    public var latencyRatio: Double? {
        baselineMilliseconds > 0 && pairs > 0 ? candidateMilliseconds / baselineMilliseconds : nil
    }
}
