import Foundation
import HotSwap

/// Where a release stands.
public enum ReleasePhase: String, Sendable, Codable {
    /// The candidate is being loaded, verified and warmed up (or checked by the candidate gate); the baseline serves.
    case loading
    /// The strategy routes traffic; gates are judged.
    case running
    /// Held where it is: a canary keeps its step's share but does not advance, nothing is promoted automatically;
    /// rollback rules still apply.
    case paused
    /// Promotion under way (the flip is being committed).
    case promoting
    case promoted
    /// A rule was breached: the baseline serves again.
    case rolledBack = "rolled_back"
    case aborted
    /// The candidate never took traffic (load failure, gate refusal), or a restart could not resume the release (its
    /// baseline was no longer the active model).
    case failed

    /// Whether the release is over.
    public var isTerminal: Bool { [.promoted, .rolledBack, .aborted, .failed].contains(self) }
}

/// One step in a release's history.
public struct ReleaseTransition: Sendable, Codable, Equatable {
    public var time: Date
    public var action: String
    public var by: String
    public var detail: String?
    public init(time: Date, action: String, by: String, detail: String? = nil) {
        self.time = time
        self.action = action
        self.by = by
        self.detail = detail
    }
}

/// A release as persisted: what was asked, where it stands, and how it got there. Written to
/// `<state_dir>/releases/<slot>.json` at every change, so that a restart resumes it in the same phase and step
/// (the figures and the current step's request count start again from zero).
///
/// Thread-safety: a value.
public struct ReleaseRecord: Sendable, Codable, Equatable {
    public var id: String
    public var slot: String
    public var spec: ReleaseSpec
    public var phase: ReleasePhase
    /// The model file's absolute path (resolved inside the repository at start).
    public var candidatePath: String
    public var candidate: ModelIdentity?
    public var baseline: ModelIdentity?
    public var startedBy: String
    public var createdAt: Date
    /// When the candidate began taking traffic (or mirrored requests).
    public var trafficSince: Date?
    public var stepIndex: Int
    public var stepStartedAt: Date?
    /// Canary: every step has been held.
    public var stepsComplete: Bool
    public var endedAt: Date?
    public var reason: String?
    public var breach: RuleBreach?
    /// The phase the last promotion started from (`running` or `paused`): where a promotion that fails, or that a
    /// restart interrupted, goes back to. Set by the engine as the release enters `promoting`.
    public var promotedFrom: ReleasePhase?
    /// When the running release was paused, while it is paused (a failed promotion of it keeps it): the current
    /// step's hold does not count the time since.
    public var pausedAt: Date?
    /// The last 100 transitions.
    public var history: [ReleaseTransition]

    public init(id: String = UUID().uuidString.lowercased(), slot: String, spec: ReleaseSpec, candidatePath: String,
                startedBy: String, createdAt: Date) {
        self.id = id
        self.slot = slot
        self.spec = spec
        self.phase = .loading
        self.candidatePath = candidatePath
        self.startedBy = startedBy
        self.createdAt = createdAt
        self.stepIndex = 0
        self.stepsComplete = false
        self.history = [ReleaseTransition(time: createdAt, action: "start", by: startedBy, detail: spec.model)]
    }

    /// Appends a transition to the history (the last 100 are kept).
    public mutating func note(_ action: String, by: String, at time: Date, _ detail: String? = nil) {
        history.append(ReleaseTransition(time: time, action: action, by: by, detail: detail))
        if history.count > 100 { history.removeFirst(history.count - 100) }
    }

    /// The candidate's share of answers now (0...100): the canary step's, the A/B weight's; 0 in shadow and when the
    /// candidate does not serve.
    public func candidatePercent(at date: Date) -> Double {
        guard phase == .running || phase == .paused || phase == .promoting else { return 0 }
        switch spec.strategy {
        case .shadow: return 0
        case .canary:
            let steps = spec.canarySteps
            return steps[min(stepIndex, steps.count - 1)].percent
        case .ab:
            if let schedule = spec.schedule {
                let names = [spec.baselineName, spec.candidateName]
                return schedule.variant(at: date, variants: names) == spec.candidateName ? 100 : 0
            }
            return spec.abCandidatePercent
        }
    }
}
