import Foundation
import Primitives

/// What an operator asks for when starting a release: the candidate, the strategy and the rules.
///
/// Codable as the body of `POST /v1/slots/{slot}/release` (snake_case keys):
/// `{"model", "version"?, "sha256"?, "strategy": "shadow"|"canary"|"ab", "sticky_header"?, "steps"?: [{"percent",
/// "hold_s", "min_requests"}], "mirror_percent"?, "weights"?: {name: weight}, "variant_names"?: {"baseline": name,
/// "candidate": name}, "schedule"?: {...}, "rules"?: {...}, "iou_threshold"?, "disagreements_kept"?,
/// "golden_set"?}`. `validate()` checks it whole, as untrusted input.
///
/// Thread-safety: a value.
public struct ReleaseSpec: Sendable, Equatable, Codable {
    public enum Strategy: String, Sendable, Codable, CaseIterable { case shadow, canary, ab }

    /// One canary step: the candidate's share, held for at least `hold_s` seconds and `min_requests` candidate
    /// answers before the next step.
    public struct Step: Sendable, Equatable, Codable {
        public var percent: Double
        public var hold_s: Double?
        public var min_requests: Int?
        public init(percent: Double, hold_s: Double? = nil, min_requests: Int? = nil) {
            self.percent = percent
            self.hold_s = hold_s
            self.min_requests = min_requests
        }
        public var holdSeconds: Double { hold_s ?? 0 }
        public var minimumRequests: Int { min_requests ?? 0 }
    }

    public var model: String
    public var version: String?
    public var sha256: String?
    public var strategy: Strategy
    /// The request header whose value assigns a variant (sticky); without it (or without the header in a request)
    /// each request is assigned on its own.
    public var sticky_header: String?
    public var steps: [Step]?
    /// Shadow: the share of requests also run on the candidate (default 100).
    public var mirror_percent: Double?
    /// A/B by weight: the variants' weights by name (default 50/50).
    public var weights: [String: Double]?
    /// A/B: the names the answers carry for the baseline and the candidate (default `baseline`, `candidate`).
    public var variant_names: VariantNames?
    /// A/B by time: rotation or windows; overrides `weights`.
    public var schedule: ABSchedule?
    public var rules: ReleaseRules?
    /// Detections of the two variants match when their IoU is at least this (default 0.5).
    public var iou_threshold: Double?
    /// How many disagreeing images are kept on disk for review (default 50).
    public var disagreements_kept: Int?
    /// Let the candidate's class names or layout differ from the baseline's (default false; input size may always).
    public var allow_schema_change: Bool?
    /// A labelled set the candidate must pass before it takes traffic (see `CandidateGate`): a COCO instances file,
    /// relative to the model repository; its images relative to the file's folder.
    public var golden_set: String?
    /// The golden-set gate's rules (AP@[.5:.95] on the set); without them the set is scored and reported only.
    public var golden_gate: GoldenGate?

    /// `min_map`: the candidate's AP@[.5:.95] at least this; `max_drop_vs_baseline`: at most this below the
    /// baseline's on the same set (absolute).
    public struct GoldenGate: Sendable, Equatable, Codable {
        public var min_map: Double?
        public var max_drop_vs_baseline: Double?
        public init(min_map: Double? = nil, max_drop_vs_baseline: Double? = nil) {
            (self.min_map, self.max_drop_vs_baseline) = (min_map, max_drop_vs_baseline)
        }
    }

    public init(model: String, strategy: Strategy) {
        self.model = model
        self.strategy = strategy
    }

    public struct VariantNames: Sendable, Equatable, Codable {
        public var baseline: String?
        public var candidate: String?
        public init(baseline: String? = nil, candidate: String? = nil) {
            self.baseline = baseline
            self.candidate = candidate
        }
    }

    // MARK: Defaults

    public var baselineName: String { strategy == .ab ? (variant_names?.baseline ?? "baseline") : "baseline" }
    public var candidateName: String { strategy == .ab ? (variant_names?.candidate ?? "candidate") : "candidate" }
    public var mirrorPercent: Double { mirror_percent ?? 100 }
    public var iouThreshold: Double { iou_threshold ?? 0.5 }
    public var disagreementsKept: Int { disagreements_kept ?? 50 }
    public var canarySteps: [Step] { steps ?? [Step(percent: 5, hold_s: 600, min_requests: 200)] }
    /// The candidate's share by weight in A/B (0...100).
    public var abCandidatePercent: Double {
        guard let weights, !weights.isEmpty else { return 50 }
        let b = weights[baselineName] ?? 0, c = weights[candidateName] ?? 0
        // The fraction first: `100 * c` overflows to inf for weights near Double's largest, which `validate` lets
        // through (their sum is finite).
        return b + c > 0 ? c / (b + c) * 100 : 0
    }

    // MARK: Validation

    /// The largest number of canary steps, schedule windows and kept disagreements a release may ask for.
    public static let maxSteps = 100
    public static let maxWindows = 48
    public static let maxDisagreementsKept = 1000
    /// The longest model path and version (bytes), as a load's: they go into audit entries, events, every answer's
    /// model stamp and metric labels.
    public static let maxModelLength = 1024
    public static let maxVersionLength = 128

    /// Checks every field; the message names the field and the rule.
    public func validate() throws(ReleaseError) {
        func fail(_ message: String) -> ReleaseError { .invalid(message) }
        guard !model.isEmpty, model.utf8.count <= Self.maxModelLength else {
            throw fail("model must name a file in the model repository (a path of 1 to \(Self.maxModelLength) bytes)")
        }
        if let version, version.isEmpty || version.utf8.count > Self.maxVersionLength {
            throw fail("version must be 1 to \(Self.maxVersionLength) bytes")
        }
        if let sha256, !sha256.isASCIIHex(count: 64) {
            throw fail("sha256 must be 64 hex digits (the SHA-256 of the model file)")
        }
        if let sticky_header {
            let allowed = sticky_header.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 &&
                $0 | 0x20 <= 0x7a) || $0 == 0x2d || $0 == 0x5f }
            guard !sticky_header.isEmpty, sticky_header.utf8.count <= 64, allowed else {
                throw fail("sticky_header must be a header name of letters, digits, '-' and '_' (at most 64)")
            }
        }
        if let steps {
            guard strategy == .canary else { throw fail("steps apply to the canary strategy only") }
            guard !steps.isEmpty, steps.count <= Self.maxSteps else {
                throw fail("steps must hold 1 to \(Self.maxSteps) steps")
            }
            var last = 0.0
            for (i, step) in steps.enumerated() {
                // The split's resolution is 0.01 % (10 000 buckets): 0.001 was served as 0.01, ten times the share.
                guard step.percent.isFinite, step.percent >= 0.01, step.percent <= 100, step.percent >= last else {
                    throw fail("steps[\(i)].percent must be in [0.01, 100] and not below the step before")
                }
                last = step.percent
                guard (step.hold_s ?? 0).isFinite, (0...(366 * 86_400)).contains(step.hold_s ?? 0) else {
                    throw fail("steps[\(i)].hold_s must be in [0, 31622400]")
                }
                guard (0...100_000_000).contains(step.min_requests ?? 0) else {
                    throw fail("steps[\(i)].min_requests must be in [0, 100000000]")
                }
            }
        }
        if let mirror_percent {
            guard strategy == .shadow else { throw fail("mirror_percent applies to the shadow strategy only") }
            // 0 mirrors nothing: no evidence, and a release gated by `non_finite_outputs` alone promoted on none.
            guard mirror_percent.isFinite, mirror_percent >= 0.01, mirror_percent <= 100 else {
                throw fail("mirror_percent must be in [0.01, 100]")
            }
        }
        if weights != nil || variant_names != nil || schedule != nil {
            guard strategy == .ab else { throw fail("weights, variant_names and schedule apply to the ab strategy") }
        }
        if strategy == .ab {
            let names = [baselineName, candidateName]
            guard names[0] != names[1], names.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 64 }) else {
                throw fail("variant_names must be two different names of 1 to 64 characters")
            }
            if let weights {
                guard Set(weights.keys).isSubset(of: Set(names)),
                      weights.values.allSatisfy({ $0.isFinite && $0 >= 0 }), weights.values.reduce(0, +) > 0,
                      weights.values.reduce(0, +).isFinite else {
                    // A sum past Double's range made the share inf/inf = NaN, and the status unencodable.
                    throw fail("weights must give the variants \(names) weights ≥ 0 that are not all 0, and add "
                        + "up to a finite number")
                }
                // Without a schedule the weights are the split: a candidate weighted 0 is never served, judged on
                // nothing (and promoted on nothing where only sample-free rules are set).
                guard schedule != nil || (weights[candidateName] ?? 0) > 0 else {
                    throw fail("weights must give the candidate '\(candidateName)' a weight above 0: it would never "
                        + "serve")
                }
                // And a share the split can serve: its resolution is 0.01 % (10 000 buckets), so 0.001 % was served
                // as 0.01 %, and a share that underflows to 0 never.
                // (Within rounding: 0.01 / (99.99 + 0.01) × 100 comes out a hair below 0.01.)
                guard schedule != nil || abCandidatePercent >= 0.01 * (1 - 1e-9) else {
                    throw fail("weights give the candidate '\(candidateName)' \(abCandidatePercent) % of the traffic; the "
                        + "split serves shares of 0.01 % or more")
                }
            }
            try schedule?.validate(variants: names)
        }
        if let iou_threshold, !(iou_threshold.isFinite && iou_threshold > 0 && iou_threshold <= 1) {
            throw fail("iou_threshold must be in (0, 1]")
        }
        if let disagreements_kept, !(0...Self.maxDisagreementsKept).contains(disagreements_kept) {
            throw fail("disagreements_kept must be in [0, \(Self.maxDisagreementsKept)]")
        }
        if let golden_gate {
            guard golden_set != nil else { throw fail("golden_gate needs a golden_set") }
            for (name, value) in [("min_map", golden_gate.min_map), ("max_drop_vs_baseline",
                golden_gate.max_drop_vs_baseline)] {
                if let value, !(value.isFinite && (0...1).contains(value)) { throw fail("golden_gate.\(name) must be in [0, 1]") }
            }
        }
        if let golden_set, golden_set.isEmpty || golden_set.utf8.count > 4096 {
            throw fail("golden_set must be a path of 1 to 4096 bytes")
        }
        try rules?.validate()
        if strategy != .shadow, rules?.rollback_if?.agreement_f1 != nil {
            // Pairs come from mirrored copies only: the rule was never judged, and the release promoted past it.
            throw fail("rules.rollback_if.agreement_f1 applies to shadow releases, whose mirrored copies are compared "
                + "with the baseline's answers: a \(strategy.rawValue) release makes no pairs to judge it on")
        }
        if strategy == .shadow, rules?.rollback_if?.p99_ratio != nil {
            // Measured: a byte-identical candidate's mirrored copies came out at 1.5× the baseline's p99 (lowered
            // priority, one image at a time, beside the serving threads).
            throw fail("rules.rollback_if.p99_ratio applies to canary and A/B releases, where both variants serve: in "
                + "shadow the candidate runs mirrored copies at lowered priority, so its latency says how much spare "
                + "capacity there was, not how fast it is (its p99 is shown; gate latency with a canary)")
        }
    }
}

/// Errors of releases, mapped to HTTP statuses by the server.
public enum ReleaseError: Error, Equatable, CustomStringConvertible {
    /// The request is malformed (400).
    case invalid(String)
    /// The slot has a release in progress, or none (409 / 404).
    case conflict(String)
    case notFound(String)
    /// The candidate was refused before it took traffic (load failure, golden-set gate) (422).
    case refused(String)
    /// A change that must be recorded first could not be (503).
    case notRecorded(String)

    public var description: String {
        switch self {
        case .invalid(let m), .conflict(let m), .notFound(let m), .refused(let m), .notRecorded(let m): m
        }
    }
}
