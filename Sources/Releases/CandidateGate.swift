import HotSwap

/// A check a candidate must pass before it takes any traffic (e.g. the golden-set evaluation of module
/// `Evaluation`): given the loaded candidate, the slot's baseline and the release's spec (`golden_set` among its
/// fields), it returns nil to let the release start, or why the candidate is refused (the release then fails, the
/// candidate is discarded, and the reason is in the event and the audit log). `isCancelled` says when the release
/// ended meanwhile (aborted): a gate that takes long stops then, its answer no longer wanted.
public protocol CandidateGate: Sendable {
    func refusal(candidate: ModelInstance, baseline: ModelInstance?, spec: ReleaseSpec,
                 isCancelled: @escaping @Sendable () -> Bool) async -> String?
}
