import Foundation
import HotSwap

/// `GET /v1/slots/{slot}/release`: the record, the live figures per variant and per comparison.
///
/// Thread-safety: a value.
public struct ReleaseStatus: Sendable, Codable {
    public var record: ReleaseRecord
    /// The candidate's share of answers now (0 in shadow).
    public var candidate_percent: Double
    /// Candidate samples counted in the current canary step (they start again at a restart).
    public var step_samples: Int
    /// When the figures began counting (the release's start, or the process's restart).
    public var counters_since: Date
    public var variants: [String: VariantStatus]
    /// The sliding window the gates judge.
    public var window: [String: Double]
    public var agreement: AgreementStatus?
    public var mirror: MirrorStatus?
    public var energy: EnergyStatus
    /// Per variant, from `POST /v1/feedback`.
    public var feedback: [String: FeedbackStatus]
}

/// Shadow agreement of the candidate with the baseline over the mirrored pairs.
public struct AgreementStatus: Sendable, Codable, Equatable {
    public var pairs: Int
    public var disagreeing: Int
    public var iou_threshold: Double
    public var precision: Double?
    public var recall: Double?
    public var f1: Double?
    public var mean_iou: Double?
    public var mean_abs_confidence_delta: Double?
    public var mean_count_delta: Double?
    /// Candidate model time over the baseline's on the same images.
    public var latency_ratio: Double?
    /// `"baseline class → candidate class"` for boxes that found no match of their class.
    public var unmatched_confusion: [String: Int]
}

/// What became of the requests chosen for mirroring.
public struct MirrorStatus: Sendable, Codable, Equatable {
    public var mirrored: Int
    /// Not run: the mirror queue was full.
    public var shed_queue_full: Int
    /// Not run: serving had requests waiting (the machine is saturated).
    public var shed_saturated: Int
    public var failed: Int
}

/// Energy per inference from RAPL, or why there is none.
public struct EnergyStatus: Sendable, Codable, Equatable {
    public var available: Bool
    /// Package energy since the release's figures began, over every inference of both variants (the host's energy:
    /// it cannot be split by variant when both run at once).
    public var joules_per_inference: Double?
    public var joules: Double?
    public var reason: String?

    init(reading: EnergyReading?, inferences: Int) {
        guard let reading, let joules = reading.joules else {
            available = false
            reason = reading?.unavailable ?? "not read"
            return
        }
        available = true
        self.joules = joules
        joules_per_inference = inferences > 0 ? joules / Double(inferences) : nil
    }
}
