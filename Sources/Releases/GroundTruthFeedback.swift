import Foundation
import YOLO

/// One true box of an inspector's verdict.
public struct TrueBox: Sendable, Codable, Equatable {
    public var class_name: String
    public var box: Box
    public init(class_name: String, box: Box) {
        self.class_name = class_name
        self.box = box
    }
}

/// How one answer fared against the truth: matches at IoU ≥ 0.5 (greedy per class, by descending confidence).
public struct FeedbackOutcome: Sendable, Codable, Equatable {
    public var variant: String
    public var true_positives: Int
    public var false_positives: Int
    public var false_negatives: Int

    public init(variant: String, true_positives: Int, false_positives: Int, false_negatives: Int) {
        self.variant = variant
        self.true_positives = true_positives
        self.false_positives = false_positives
        self.false_negatives = false_negatives
    }
}

/// A variant's figures from the feedback received: precision, recall and mAP@0.5 (per class AP with COCO's
/// 101-point interpolation of the precision envelope, averaged over the classes that have true boxes).
public struct FeedbackStatus: Sendable, Codable, Equatable {
    public var images: Int
    public var precision: Double?
    public var recall: Double?
    public var map50: Double?
    public var ap50_per_class: [String: Double]
}

/// Feedback counted for one variant.
///
/// Thread-safety: a value; `ReleaseEngine` keeps it under its lock.
struct FeedbackTotals: Sendable {
    var images = 0
    var truePositives = 0
    var falsePositives = 0
    var falseNegatives = 0
    /// Per class: each detection's confidence and whether it matched; the number of true boxes.
    var perClass: [String: (scored: [(Float, Bool)], truths: Int)] = [:]
    /// The most scored detections kept in all, in whole images: past it an image's detections and its true boxes
    /// count in the precision and recall only (true boxes counted without their detections would pull every class's
    /// AP down with each image after).
    static let maxScored = 200_000
    /// The most classes the AP is kept for (the names come from the feedback, each one a key).
    static let maxClasses = 4096
    private var scoredCount = 0
    /// Set by the first image that did not fit: no later one counts in the AP, not even one with no detection
    /// (whose true boxes alone would pull the AP down, as the images left out cannot balance them).
    private var capped = false

    /// An answer's detections matched against an inspector's true boxes (`match`), to be counted (`add`).
    struct Matched: Sendable {
        var scored: [(className: String, confidence: Float, matched: Bool)]
        var truthClasses: [String]
        var truePositives: Int
    }

    /// Matches `detections` against `truths` and counts the outcome.
    mutating func add(detections: [Detection], truths: [TrueBox]) -> (tp: Int, fp: Int, fn: Int) {
        add(Self.match(detections: detections, truths: truths))
    }

    /// Matches `detections` against `truths` (up to detections × truths IoUs: done outside any lock).
    static func match(detections: [Detection], truths: [TrueBox]) -> Matched {
        var used = [Bool](repeating: false, count: truths.count)
        let order = detections.indices.sorted { detections[$0].confidence > detections[$1].confidence ||
            (detections[$0].confidence == detections[$1].confidence && $0 < $1) }
        var tp = 0
        var scored: [(className: String, confidence: Float, matched: Bool)] = []
        scored.reserveCapacity(detections.count)
        for d in order {
            var best = -1, bestIoU = 0.5
            for t in truths.indices where !used[t] && truths[t].class_name == detections[d].className {
                let iou = truths[t].box.iou(detections[d].box)
                if iou >= bestIoU && (best < 0 || iou > bestIoU) {
                    best = t
                    bestIoU = iou
                }
            }
            if best >= 0 {
                used[best] = true
                tp += 1
            }
            scored.append((detections[d].className, detections[d].confidence, best >= 0))
        }
        return Matched(scored: scored, truthClasses: truths.map(\.class_name), truePositives: tp)
    }

    /// Counts a matched answer.
    mutating func add(_ matched: Matched) -> (tp: Int, fp: Int, fn: Int) {
        let (scored, tp) = (matched.scored, matched.truePositives)
        let detections = scored.count, truths = matched.truthClasses.count
        if !capped && scoredCount + scored.count > Self.maxScored { capped = true }
        if !capped {
            scoredCount += scored.count
            func admits(_ name: String) -> Bool { perClass[name] != nil || perClass.count < Self.maxClasses }
            for entry in scored where admits(entry.className) {
                perClass[entry.className, default: ([], 0)].scored.append((entry.confidence, entry.matched))
            }
            for name in matched.truthClasses where admits(name) { perClass[name, default: ([], 0)].truths += 1 }
        }
        images += 1
        truePositives += tp
        falsePositives += detections - tp
        falseNegatives += truths - tp
        return (tp, detections - tp, truths - tp)
    }

    var status: FeedbackStatus {
        var ap: [String: Double] = [:]
        for (name, entry) in perClass where entry.truths > 0 {
            ap[name] = Self.averagePrecision(entry.scored, truths: entry.truths)
        }
        let predicted = truePositives + falsePositives, actual = truePositives + falseNegatives
        return FeedbackStatus(images: images,
            precision: predicted > 0 ? Double(truePositives) / Double(predicted) : nil,
            recall: actual > 0 ? Double(truePositives) / Double(actual) : nil,
            map50: ap.isEmpty ? nil : ap.values.reduce(0, +) / Double(ap.count), ap50_per_class: ap)
    }

    /// AP: detections by descending confidence, the precision envelope, sampled at 101 recall points.
    static func averagePrecision(_ scored: [(Float, Bool)], truths: Int) -> Double {
        let sorted = scored.enumerated().sorted { $0.element.0 > $1.element.0 ||
            ($0.element.0 == $1.element.0 && $0.offset < $1.offset) }.map(\.element.1)
        var tp = 0, fp = 0
        var recall: [Double] = [], precision: [Double] = []
        for hit in sorted {
            if hit { tp += 1 } else { fp += 1 }
            recall.append(Double(tp) / Double(truths))
            precision.append(Double(tp) / Double(tp + fp))
        }
        // The envelope: the best precision at this recall or beyond.
        var i = precision.count - 2
        while i >= 0 {
            precision[i] = max(precision[i], precision[i + 1])
            i -= 1
        }
        var sum = 0.0
        for step in 0...100 {
            let r = Double(step) / 100
            if let k = recall.firstIndex(where: { $0 >= r - 1e-12 }) { sum += precision[k] }
        }
        return sum / 101
    }
}
