import Foundation
import HotSwap
import Primitives
import YOLO

/// The time a release reads: the system's in production, a settable one in tests.
public protocol ReleaseClock: Sendable {
    var now: Date { get }
}

/// The system's wall clock.
public struct SystemReleaseClock: ReleaseClock {
    public init() {}
    public var now: Date { Date() }
}

/// What the engine decided on its own, for the caller to carry out (commit, audit, event).
public enum ReleaseDecision: Sendable, Equatable {
    /// A canary moved to step `index` (its share is `percent`).
    case advanced(index: Int, percent: Double)
    /// A canary's last step held: `promote_after.steps_complete` is met (the caller persists it: a restart would
    /// otherwise gather the last step's requests again, its history entry lost).
    case stepsComplete
    /// A rule was breached: the engine already routes everything to the baseline.
    case rolledBack(RuleBreach)
    /// `promote_after` holds: the caller promotes the candidate.
    case promote(reason: String, figures: [String: Double])
}

/// One release's live state: routing (it is the slot's `ModelRouter` while the release runs), the figures of each
/// variant, the sliding windows and the gates.
///
/// A breach changes the phase under the engine's lock, so the very next request is routed to the baseline; the caller
/// then records it and discards the candidate. Assignment of a request: a canary or weighted A/B hashes the sticky
/// key (FNV-1a over the release id and the key, 10 000 buckets) — the same key gets the same variant while the
/// share is unchanged, and a key on the candidate stays there when the share grows —, and draws a random bucket
/// when the request has no key.
///
/// Thread-safety: all members may be called from any thread; state lives behind one lock held for microseconds.
public final class ReleaseEngine: ModelRouter, Sendable {
    public let clock: any ReleaseClock

    private struct State {
        var record: ReleaseRecord
        var baseline: VariantTotals
        var candidate: VariantTotals
        var window: WindowFigures
        var agreement = AgreementTotals()
        /// Candidate samples since the current step began.
        var stepSamples = 0
        var mirrored = 0
        var shedQueueFull = 0
        var shedSaturated = 0
        var mirrorFailures = 0
        /// Promotions that failed in a row, and when the next automatic one may be tried (`promotionFailed`).
        var promotionFailures = 0
        var nextPromotionAt: Date?
        let countersSince: Date
        /// Ground-truth feedback per variant.
        var feedback: [String: FeedbackTotals] = [:]
        /// The last answers that can still get feedback: request id → (variant, detections); the oldest go first
        /// (`answerOrder` from `answerHead`), while the release runs.
        var answers: [String: (String, [Detection])] = [:]
        var answerOrder: [String] = []
        var answerHead = 0
        /// Detections held in `answers`.
        var answerDetections = 0

        mutating func dropAnswers() {
            answers = [:]
            answerOrder = []
            answerHead = 0
            answerDetections = 0
        }
    }
    /// How many answers are kept for feedback.
    public static let feedbackAnswersKept = 10_000
    /// How many detections those answers may hold together (a few tens of MB): `max_det` answers of 1000 boxes
    /// each would otherwise keep 10 million.
    public static let feedbackDetectionsKept = 500_000
    private let state: Locked<State>
    /// A scheduled A/B's: whether the schedule gives the baseline some time of day (nil without a schedule). Its
    /// rules that compare with the baseline then wait for both windows even while the candidate has every request
    /// (the baseline's hours fill its window), as they do for a weighted share below 100 %.
    private let scheduleServesBaseline: Bool?

    public init(record: ReleaseRecord, clock: any ReleaseClock = SystemReleaseClock()) {
        self.clock = clock
        let spec = record.spec
        scheduleServesBaseline = spec.schedule.map {
            $0.everServes(spec.baselineName, variants: [spec.baselineName, spec.candidateName])
        }
        let now = clock.now
        state = Locked(State(record: record, baseline: VariantTotals(since: now), candidate: VariantTotals(since: now),
            window: WindowFigures(capacity: record.spec.rules?.windowSize ?? 500), countersSince: now))
    }

    public var record: ReleaseRecord { state.withLock { $0.record } }
    public var phase: ReleasePhase { state.withLock { $0.record.phase } }
    public var spec: ReleaseSpec { state.withLock { $0.record.spec } }

    // MARK: Routing

    public func route(_ roles: SlotRoles, request: RoutingContext) -> ModelInstance? {
        choose(roles, request: request)?.model
    }

    public func choose(_ roles: SlotRoles, request: RoutingContext) -> RoutedModel? {
        let (record, now) = state.withLock { ($0.record, clock.now) }
        let names = (record.spec.baselineName, record.spec.candidateName)
        guard let active = roles.active else { return nil }
        if record.phase == .promoting, roles.staged == nil {
            // The candidate has just been flipped in: it is what the active role holds now.
            return RoutedModel(model: active, variant: names.1)
        }
        let baseline = RoutedModel(model: active, variant: names.0)
        guard !request.preferActive, let staged = roles.staged,
              [.running, .paused, .promoting].contains(record.phase) else { return baseline }
        let percent = record.candidatePercent(at: now)
        guard percent > 0 else { return baseline }
        if percent >= 100 { return RoutedModel(model: staged, variant: names.1) }
        let bucket = request.key.map { Self.bucket(key: $0, salt: record.id) } ?? Int.random(in: 0..<10_000)
        return Double(bucket) < percent * 100 ? RoutedModel(model: staged, variant: names.1) : baseline
    }

    /// A key's bucket in 0..<10 000: FNV-1a (64 bits) of `salt`, a zero byte and `key`.
    public static func bucket(key: String, salt: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in salt.utf8 + [0] + key.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return Int(hash % 10_000)
    }

    /// Whether a request is also run on the shadow candidate (`mirror_percent`, by key when it has one).
    public func shouldMirror(key: String?) -> Bool {
        let record = self.record
        guard record.spec.strategy == .shadow, record.phase == .running || record.phase == .paused else {
            return false
        }
        let percent = record.spec.mirrorPercent
        if percent >= 100 { return true }
        let bucket = key.map { Self.bucket(key: $0, salt: record.id) } ?? Int.random(in: 0..<10_000)
        return Double(bucket) < percent * 100
    }

    // MARK: Figures

    /// Counts an answer of `variant` (or a mirrored run) and judges the gates.
    public func record(variant: String, _ sample: VariantSample) -> [ReleaseDecision] {
        state.withLock { s in
            guard !s.record.phase.isTerminal, s.record.phase != .loading else { return [] }
            if variant == s.record.spec.candidateName {
                s.candidate.add(sample)
                s.window.candidate.add(sample)
                // A step's minimum counts answers: a failed run (retried on the baseline) is none.
                if !sample.failed { s.stepSamples += 1 }
            } else {
                s.baseline.add(sample)
                s.window.baseline.add(sample)
            }
            return judge(&s)
        }
    }

    /// Compares a mirrored pair (counts the candidate's run as a sample too) and judges the gates.
    public func recordPair(baseline: DetectionResult, candidate: DetectionResult) -> (PairComparison,
        [ReleaseDecision])
    {
        // Matched outside the lock, which every request routed on the slot takes (`choose`, under the slot's own
        // lock): up to detections² IoUs a pair, which before held the serving workers up behind the shadow's work.
        let pair = PairComparison(baseline: baseline.detections, candidate: candidate.detections,
            iouThreshold: state.withLock { $0.record.spec.iouThreshold })
        return state.withLock { s in
            guard !s.record.phase.isTerminal else { return (pair, []) }
            let sample = VariantSample(candidate)
            s.candidate.add(sample)
            s.window.candidate.add(sample)
            s.stepSamples += 1
            s.mirrored += 1
            s.agreement.add(pair, baselineMs: baseline.timings.total, candidateMs: candidate.timings.total)
            s.window.addPair(pair)
            return (pair, judge(&s))
        }
    }

    /// Counts a mirrored copy not run: `saturated` when serving had work queued, else the mirror queue was full.
    public func recordShed(saturated: Bool) {
        state.withLock { s in if saturated { s.shedSaturated += 1 } else { s.shedQueueFull += 1 } }
    }

    /// Counts a mirrored run that failed (a sample of the candidate's) and judges the gates.
    public func recordMirrorFailure(nonFinite: Bool) -> [ReleaseDecision] {
        state.withLock { s in
            guard !s.record.phase.isTerminal else { return [] }
            s.mirrorFailures += 1
            let sample = VariantSample.failure(nonFinite: nonFinite)
            s.candidate.add(sample)
            s.window.candidate.add(sample)
            return judge(&s)
        }
    }

    // MARK: Ground-truth feedback

    /// Keeps an answer for later feedback (while the release runs: not once it has ended) and returns the id the
    /// client quotes with it. The oldest answers are forgotten past `feedbackAnswersKept` answers or
    /// `feedbackDetectionsKept` detections.
    public func rememberAnswer(variant: String, detections: [Detection]) -> String {
        let id = UUID().uuidString.lowercased()
        state.withLock { s in
            guard !s.record.phase.isTerminal else { return }
            s.answers[id] = (variant, detections)
            s.answerOrder.append(id)
            s.answerDetections += detections.count
            // Bounded three ways: answers, their detections, and ids (answers judged leave their id behind).
            while s.answerHead < s.answerOrder.count, s.answers.count > Self.feedbackAnswersKept
                || s.answerDetections > Self.feedbackDetectionsKept
                || s.answerOrder.count - s.answerHead > 2 * Self.feedbackAnswersKept
            {
                let oldest = s.answerOrder[s.answerHead]
                s.answerHead += 1
                if let (_, dropped) = s.answers.removeValue(forKey: oldest) { s.answerDetections -= dropped.count }
            }
            // Ids judged or forgotten are passed over; the array is compacted once mostly passed.
            if s.answerHead > 1024, s.answerHead * 2 > s.answerOrder.count {
                s.answerOrder.removeFirst(s.answerHead)
                s.answerHead = 0
            }
        }
        return id
    }

    /// What the feedback store holds: answers, and ids in its order (judged answers' included until passed).
    var feedbackStoreSize: (answers: Int, ids: Int) {
        state.withLock { ($0.answers.count, $0.answerOrder.count - $0.answerHead) }
    }

    /// Counts an inspector's verdict on an answer (once per answer); nil when the id is unknown or already judged.
    public func feedback(requestID: String, truths: [TrueBox]) -> FeedbackOutcome? {
        // Taken (once) under the lock, matched outside it (up to detections × truths IoUs, which the requests routed
        // on the slot would otherwise wait for), counted under it again.
        let taken: (variant: String, detections: [Detection])? = state.withLock { s in
            guard let (variant, detections) = s.answers.removeValue(forKey: requestID) else { return nil }
            s.answerDetections -= detections.count
            return (variant, detections)
        }
        guard let taken else { return nil }
        let matched = FeedbackTotals.match(detections: taken.detections, truths: truths)
        let (tp, fp, fn) = state.withLock { $0.feedback[taken.variant, default: FeedbackTotals()].add(matched) }
        return FeedbackOutcome(variant: taken.variant, true_positives: tp, false_positives: fp, false_negatives: fn)
    }

    /// The shadow's agreement F1 over every pair so far (nil before the first): the figure alone, without building
    /// the whole `status()` (percentiles, the window's figures, the feedback's AP) under the lock every pair takes.
    public var agreementF1: Double? { state.withLock { $0.agreement.pairs > 0 ? $0.agreement.f1 : nil } }

    /// Judges the time-based conditions (a canary step's hold, `promote_after.min_s`): call it now and then.
    public func tick() -> [ReleaseDecision] { state.withLock { judge(&$0) } }

    /// Rules first (a breach rolls back at once), then the canary's steps, then promotion.
    private func judge(_ s: inout State) -> [ReleaseDecision] {
        guard s.record.phase == .running || s.record.phase == .paused else { return [] }
        let now = clock.now
        if let breach = s.record.spec.rules?.breach(s.window) {
            s.record.phase = .rolledBack
            s.dropAnswers()
            s.record.pausedAt = nil
            s.record.breach = breach
            s.record.endedAt = now
            s.record.reason = "rule breached: " + breach.text
            s.record.note("rollback", by: "gate", at: now, breach.text)
            return [.rolledBack(breach)]
        }
        guard s.record.phase == .running else { return [] }
        var decisions: [ReleaseDecision] = []
        if s.record.spec.strategy == .canary, !s.record.stepsComplete, let since = s.record.stepStartedAt {
            let steps = s.record.spec.canarySteps
            let step = steps[min(s.record.stepIndex, steps.count - 1)]
            if now.timeIntervalSince(since) >= step.holdSeconds, s.stepSamples >= step.minimumRequests {
                if s.record.stepIndex + 1 < steps.count {
                    s.record.stepIndex += 1
                    s.record.stepStartedAt = now
                    s.stepSamples = 0
                    let percent = steps[s.record.stepIndex].percent
                    s.record.note("step", by: "gate", at: now, "step \(s.record.stepIndex) at \(percent) %")
                    decisions.append(.advanced(index: s.record.stepIndex, percent: percent))
                } else {
                    s.record.stepsComplete = true
                    s.record.note("steps-complete", by: "gate", at: now)
                    decisions.append(.stepsComplete)
                }
            }
        }
        if let p = s.record.spec.rules?.promote_after, let since = s.record.trafficSince {
            let stepsDone = s.record.spec.strategy != .canary || !(p.steps_complete ?? true) || s.record.stepsComplete
            let held = now.timeIntervalSince(since) >= (p.min_s ?? 0)
            // Answers, not attempts: a candidate that fails every run never reaches its minimum. And never fewer than
            // the rules' minimum samples, whatever `min_requests` says: a candidate that answered nothing (a shadow
            // whose copies were all shed, a canary that failed every request) has shown nothing to promote on.
            let floor = s.record.spec.rules?.minSamples ?? 0
            let enough = s.candidate.requests - s.candidate.errors >= max(p.min_requests ?? 0, floor)
            let due = s.nextPromotionAt.map { now >= $0 } ?? true
            let judged = s.record.spec.rules?.judgeable(s.window, shadow: s.record.spec.strategy == .shadow,
                baselineServed: s.record.spec.strategy == .shadow
                    || (scheduleServesBaseline ?? (s.record.candidatePercent(at: now) < 100))) ?? true
            if stepsDone, held, enough, due, judged {
                s.record.promotedFrom = .running
                s.record.phase = .promoting
                var figures = s.window.summary
                figures["candidate_requests"] = Double(s.candidate.requests)
                figures["held_s"] = now.timeIntervalSince(since)
                decisions.append(.promote(reason: "promote_after holds with no rule breached", figures: figures))
            }
        }
        return decisions
    }

    // MARK: Phase changes (by the controller)

    /// Longest wait between automatic promotions that keep failing.
    public static let maximumPromotionBackoff: TimeInterval = 300

    /// Told that a promotion failed (the flip could not be committed): the next automatic one is tried after 5 s,
    /// doubling with each failure in a row up to `maximumPromotionBackoff`, rather than at every tick.
    /// - Returns: the seconds until the next automatic try.
    @discardableResult
    public func promotionFailed() -> TimeInterval {
        state.withLock { s in
            let wait = min(Self.maximumPromotionBackoff, 5 * pow(2, Double(min(s.promotionFailures, 16))))
            s.promotionFailures += 1
            s.nextPromotionAt = clock.now.addingTimeInterval(wait)
            return wait
        }
    }

    /// Applies `change` to the record under the lock and returns the new record.
    @discardableResult
    public func update(_ change: (inout ReleaseRecord) -> Void) -> ReleaseRecord {
        state.withLock { s in
            let step = s.record.stepIndex
            change(&s.record)
            if s.record.stepIndex != step { s.stepSamples = 0 }
            if s.record.phase.isTerminal { s.dropAnswers() }
            return s.record
        }
    }

    /// Changes the phase only if it is one of `from`; returns the record before the change, or nil when it was not.
    @discardableResult
    public func transition(from: Set<ReleasePhase>, to phase: ReleasePhase, action: String, by: String,
                           detail: String? = nil) -> ReleaseRecord? {
        state.withLock { s in
            guard from.contains(s.record.phase) else { return nil }
            let before = s.record
            let now = clock.now
            if s.record.phase == .paused, phase == .running, let step = s.record.stepStartedAt,
               // A record written before `pausedAt` existed: its history's last pause.
               let pausedAt = s.record.pausedAt ?? s.record.history.last(where: { $0.action == "pause" })?.time {
                // The time spent paused does not count towards the step's hold.
                s.record.stepStartedAt = step.addingTimeInterval(now.timeIntervalSince(pausedAt))
            }
            if phase == .promoting { s.record.promotedFrom = s.record.phase }
            if phase == .paused, s.record.phase == .running { s.record.pausedAt = now }
            if phase == .running || phase.isTerminal { s.record.pausedAt = nil }
            s.record.phase = phase
            if phase.isTerminal {
                s.record.endedAt = now
                s.dropAnswers()  // an ended release takes no more feedback
            }
            if let detail, phase.isTerminal { s.record.reason = detail }
            s.record.note(action, by: by, at: now, detail)
            return before
        }
    }

    // MARK: Status

    /// The live status: the record plus every figure.
    public func status(energy: EnergyReading? = nil) -> ReleaseStatus {
        // The feedback's figures (AP per class: sorts of up to `feedbackDetectionsKept` detections) are computed on
        // a copy, outside the lock that every request's routing takes.
        let (status, feedback) = state.withLock { s -> (ReleaseStatus, [String: FeedbackTotals]) in
            let now = clock.now
            let a = s.agreement
            let agreement = s.record.spec.strategy == .shadow ? AgreementStatus(
                pairs: a.pairs, disagreeing: a.disagreeing, iou_threshold: s.record.spec.iouThreshold,
                precision: a.pairs > 0 ? a.precision : nil, recall: a.pairs > 0 ? a.recall : nil,
                f1: a.pairs > 0 ? a.f1 : nil, mean_iou: a.meanIoU, mean_abs_confidence_delta: a.meanConfidenceDelta,
                mean_count_delta: a.meanCountDelta, latency_ratio: a.latencyRatio, unmatched_confusion: a.confusion)
                : nil
            let mirror = s.record.spec.strategy == .shadow ? MirrorStatus(mirrored: s.mirrored,
                shed_queue_full: s.shedQueueFull, shed_saturated: s.shedSaturated, failed: s.mirrorFailures) : nil
            let inferences = s.baseline.requests + s.candidate.requests
            let status = ReleaseStatus(
                record: s.record, candidate_percent: s.record.candidatePercent(at: now),
                step_samples: s.stepSamples, counters_since: s.countersSince,
                variants: [s.record.spec.baselineName: s.baseline.status(now: now),
                    s.record.spec.candidateName: s.candidate.status(now: now)],
                window: s.window.summary, agreement: agreement, mirror: mirror,
                energy: EnergyStatus(reading: energy, inferences: inferences),
                feedback: [:])
            return (status, s.feedback)
        }
        var withFeedback = status
        withFeedback.feedback = feedback.mapValues(\.status)
        return withFeedback
    }
}
