import Foundation

/// The gates of a release: when to roll back and when to promote, judged on sliding windows.
///
/// Codable as `{"window"?: 200, "min_samples"?: 50, "rollback_if"?: {"error_rate"?: 0.01, "p99_ratio"?: 1.5,
/// "agreement_f1"?: 0.9, "detections_per_image_drift"?: 0.3, "non_finite_outputs"?: 0}, "promote_after"?:
/// {"steps_complete"?: true, "min_s"?: 0, "min_requests"?: 0}}`. Each `rollback_if` figure is a limit: the release
/// rolls back when the candidate's `error_rate`, `p99_ratio` (its p99 over the baseline's),
/// `detections_per_image_drift` (|Δ mean detections per image| over the baseline's) or `non_finite_outputs` is above
/// it, or its `agreement_f1` is below it — each judged on the last `window` samples of each variant once both have
/// `min_samples`. `promote_after` promotes the candidate once its conditions hold with no rule breached; without it
/// only an operator promotes.
///
/// Thread-safety: a value.
public struct ReleaseRules: Sendable, Equatable, Codable {
    public struct RollbackIf: Sendable, Equatable, Codable {
        public var error_rate: Double?
        public var p99_ratio: Double?
        public var agreement_f1: Double?
        public var detections_per_image_drift: Double?
        public var non_finite_outputs: Double?
        public init(error_rate: Double? = nil, p99_ratio: Double? = nil, agreement_f1: Double? = nil,
                    detections_per_image_drift: Double? = nil, non_finite_outputs: Double? = nil) {
            self.error_rate = error_rate
            self.p99_ratio = p99_ratio
            self.agreement_f1 = agreement_f1
            self.detections_per_image_drift = detections_per_image_drift
            self.non_finite_outputs = non_finite_outputs
        }
    }

    public struct PromoteAfter: Sendable, Equatable, Codable {
        /// Canary: every step done (default true).
        public var steps_complete: Bool?
        /// Seconds since the release started taking traffic.
        public var min_s: Double?
        /// Candidate samples (answers in canary and A/B, mirrored pairs in shadow) since the release started or
        /// resumed; an automatic promotion waits for at least `ReleaseRules.minSamples` of them whatever this says.
        public var min_requests: Int?
        public init(steps_complete: Bool? = nil, min_s: Double? = nil, min_requests: Int? = nil) {
            self.steps_complete = steps_complete
            self.min_s = min_s
            self.min_requests = min_requests
        }
    }

    public var window: Int?
    public var min_samples: Int?
    public var rollback_if: RollbackIf?
    public var promote_after: PromoteAfter?

    public init(window: Int? = nil, min_samples: Int? = nil, rollback_if: RollbackIf? = nil,
                promote_after: PromoteAfter? = nil) {
        self.window = window
        self.min_samples = min_samples
        self.rollback_if = rollback_if
        self.promote_after = promote_after
    }

    public static let maxWindow = 100_000
    public var windowSize: Int { window ?? 500 }
    /// 50 by default, or the whole window when it is smaller: a window that can never hold `minSamples` would leave
    /// every rule but `non_finite_outputs` unjudged.
    public var minSamples: Int { min_samples ?? min(50, windowSize) }

    func validate() throws(ReleaseError) {
        if let window, !(1...Self.maxWindow).contains(window) {
            throw .invalid("rules.window must be in [1, \(Self.maxWindow)]")
        }
        if let min_samples, !(1...windowSize).contains(min_samples) {
            throw .invalid("rules.min_samples must be in [1, window]")
        }
        let limits = [rollback_if?.error_rate, rollback_if?.p99_ratio, rollback_if?.agreement_f1,
            rollback_if?.detections_per_image_drift, rollback_if?.non_finite_outputs].compactMap { $0 }
        guard limits.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw .invalid("rules.rollback_if limits must be finite numbers ≥ 0")
        }
        // Fractions: `error_rate: 5` (meant as 5 %) could never trip, `agreement_f1: 90` tripped at once.
        for (name, limit) in [("error_rate", rollback_if?.error_rate), ("agreement_f1", rollback_if?.agreement_f1)] {
            if let limit, limit > 1 { throw .invalid("rules.rollback_if.\(name) is a fraction in [0, 1], got \(limit)") }
        }
        if let p = promote_after {
            guard (p.min_s ?? 0).isFinite, (p.min_s ?? 0) >= 0, (p.min_requests ?? 0) >= 0 else {
                throw .invalid("rules.promote_after: min_s and min_requests must be ≥ 0")
            }
        }
    }

    /// Whether every rule set can be judged on the window, each having its minimum samples (`non_finite_outputs`
    /// needs none). An automatic promotion waits for it: a rule that never saw a sample — a shadow whose copies were
    /// all shed, a canary that failed every one of fewer than `min_samples` requests — has not held.
    /// Rules the release cannot feed are left out: `agreement_f1` outside a shadow (no pairs), and the rules that
    /// compare with the baseline while the candidate takes every request (`baselineServed` false: a canary's last
    /// step at 100 %, an A/B with the baseline's weight 0 or a schedule that never gives it an hour).
    func judgeable(_ w: WindowFigures, shadow: Bool, baselineServed: Bool) -> Bool {
        guard let r = rollback_if else { return true }
        let enough = w.candidate.count >= minSamples
        let bothEnough = enough && w.baseline.count >= minSamples
        if r.error_rate != nil && !enough { return false }
        if shadow && r.agreement_f1 != nil && w.agreementPairs < minSamples { return false }
        if baselineServed && (r.p99_ratio != nil || r.detections_per_image_drift != nil) && !bothEnough { return false }
        // Samples are not figures: a window of failures has no p99 and no detections to compare, and a rule skipped
        // for want of its figure has not held.
        if baselineServed && r.p99_ratio != nil && w.p99Ratio == nil { return false }
        if baselineServed && r.detections_per_image_drift != nil && w.detectionsDrift == nil { return false }
        if shadow && r.agreement_f1 != nil && w.agreementF1 == nil { return false }
        return true
    }

    /// The first rule the window breaches, with the figures it was judged on; nil when none.
    func breach(_ w: WindowFigures) -> RuleBreach? {
        guard let r = rollback_if else { return nil }
        let enough = w.candidate.count >= minSamples
        let bothEnough = enough && w.baseline.count >= minSamples
        if let limit = r.non_finite_outputs, w.candidate.nonFinite > 0, Double(w.candidate.nonFinite) > limit {
            // Non-finite outputs need no sample count: one is one too many past the limit.
            return RuleBreach(rule: "non_finite_outputs > \(limit)", value: Double(w.candidate.nonFinite),
                figures: w.summary)
        }
        if let limit = r.error_rate, enough, w.candidate.errorRate > limit {
            return RuleBreach(rule: "error_rate > \(limit)", value: w.candidate.errorRate, figures: w.summary)
        }
        if let limit = r.agreement_f1, w.agreementPairs >= minSamples, let f1 = w.agreementF1, f1 < limit {
            return RuleBreach(rule: "agreement_f1 < \(limit)", value: f1, figures: w.summary)
        }
        if let limit = r.p99_ratio, bothEnough, let ratio = w.p99Ratio, ratio > limit {
            return RuleBreach(rule: "p99_ratio > \(limit)", value: ratio, figures: w.summary)
        }
        if let limit = r.detections_per_image_drift, bothEnough, let drift = w.detectionsDrift, drift > limit {
            return RuleBreach(rule: "detections_per_image_drift > \(limit)", value: drift, figures: w.summary)
        }
        return nil
    }
}

/// A rule a release broke, and the figures behind the decision (recorded in the event and the audit log).
public struct RuleBreach: Sendable, Equatable, Codable {
    public var rule: String
    public var value: Double
    public var figures: [String: Double]

    public init(rule: String, value: Double, figures: [String: Double]) {
        self.rule = rule
        self.value = value
        self.figures = figures
    }

    /// `rule (value v; figures k=v, ...)`.
    public var text: String {
        let list = figures.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.format($0.value))" }
        return "\(rule) (value \(Self.format(value)); \(list.joined(separator: ", ")))"
    }

    static func format(_ v: Double) -> String { String(format: "%.4g", v) }
}
