import Foundation

// Where a load's model runs, and which swap policy it runs with: both settled before anything is loaded, and reported
// on the operation and its event.
extension ModelManager {
    /// The execution settings a load runs with: the target it asks for (else the active model's, else the slot's),
    /// which the slot must permit, and which must be the active model's unless the load allows a device change.
    /// - Throws: `LoadFailure.providerNotAllowed`, `.deviceChange`.
    func resolveExecution(_ request: LoadRequest, slot: ModelSlot, current: ExecutionTarget?) throws(LoadFailure)
        -> ModelExecution
    {
        let execution = try configuration.execution(forSlot: slot.name).resolve(requested: request.target,
            current: current, defaultThreads: configuration.intraOpThreads, path: request.path)
        if let current, execution.target != current, !request.allowDeviceChange {
            throw .deviceChange(path: request.path, active: current.description,
                requested: execution.target.description)
        }
        return execution
    }

    /// The policy a load runs with, and why. `auto` compares, on each device the new model needs (the host, and its
    /// GPU), the memory every slot's models hold now (less this slot's standby when an availability-preserving load
    /// would release it first, `releaseStandbyBeforeLoad`) plus the new model's estimate against that device's budget:
    /// availability-preserving when it fits everywhere, else resource-preserving (the active model is unloaded
    /// first).
    func decidePolicy(for request: LoadRequest, execution: ModelExecution, hasActive: Bool) async -> PolicyDecision {
        let requested = request.policy ?? configuration.policy
        let source = request.policy == nil ? "the configured policy" : "the policy the load asked for"
        guard request.activate else {
            return PolicyDecision(policy: .availabilityPreserving, requested: requested,
                reason: "the load only stages the model: the active model keeps serving")
        }
        guard hasActive else {
            return PolicyDecision(policy: .availabilityPreserving, requested: requested,
                reason: "the slot has no active model: nothing to unload first")
        }
        guard requested == .auto else { return PolicyDecision(policy: requested, requested: requested, reason: source) }
        let ledger = self.ledger
        let estimate = await ioQueue.run {
            ledger.estimate(sha256: request.expectedSHA256, byteCount: MemoryLedger.fileSize(request.path),
                execution: execution)
        }
        let freedFirst = configuration.releaseStandbyBeforeLoad
            ? (slot(request.slot)?.standbyMemoryByDevice ?? [:]) : [:]
        let figures = ledger.figures(estimate: estimate,
            inUse: memoryInUse.merging(ledger.reserved, uniquingKeysWith: +)
                .merging(freedFirst.mapValues { -$0 }, uniquingKeysWith: +))
        let compared = figures.map(\.summary).joined(separator: "; ")
        if let over = figures.first(where: { !$0.fits }) {
            return PolicyDecision(policy: .resourcePreserving, requested: requested,
                reason: "auto: old and new do not both fit on \(over.device) (\(compared)): the active model is "
                    + "unloaded first", figures: figures)
        }
        let why = figures.contains { $0.budgetBytes != nil } ? "old and new both fit (\(compared))"
            : "no memory budget applies (\(compared))"
        return PolicyDecision(policy: .availabilityPreserving, requested: requested,
            reason: "auto: \(why): the new model loads beside the active one", figures: figures)
    }

    /// The decision reported for a flip between models already loaded: nothing is loaded or unloaded first.
    func flipDecision(_ reason: String) -> PolicyDecision {
        PolicyDecision(policy: .availabilityPreserving, requested: configuration.policy, reason: reason)
    }
}

extension DeviceMemoryFigures {
    /// `host: 120.0 MiB in use + 60.0 MiB ≤ 256.0 MiB budget`, for reasons and logs.
    var summary: String {
        let mib = { (bytes: Int) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        guard let budgetBytes else { return "\(device): \(mib(inUseBytes)) in use + \(mib(estimateBytes)), no budget" }
        return "\(device): \(mib(inUseBytes)) in use + \(mib(estimateBytes)) \(fits ? "≤" : ">") "
            + "\(mib(budgetBytes)) budget"
    }
}
