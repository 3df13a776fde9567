/// What an unload took out of a slot.
///
/// Thread-safety: a value.
public struct UnloadResult: Sendable, Equatable {
    /// The model that was serving, when the unload took it out (`force`).
    public var active: ModelIdentity?
    public var staged: ModelIdentity?
    public var standby: ModelIdentity?
    /// One `release` event per model taken out.
    public var events: [SwapEvent]

    public init(active: ModelIdentity? = nil, staged: ModelIdentity? = nil, standby: ModelIdentity? = nil,
                events: [SwapEvent]) {
        self.active = active
        self.staged = staged
        self.standby = standby
        self.events = events
    }
}

extension ModelManager {
    /// Takes models out of a slot, in the slot's operation queue: the staged and standby models always, and the
    /// active model only with `includingActive`. Each goes to the releaser, which frees it after its last request.
    ///
    /// With the active model gone the slot serves nothing: requests wait for a model until their deadline (503), the
    /// service's readiness reports the slot not ready, and the next load that activates a model serves again. The
    /// committed state then is left as it is, so a restart restores what the slot last served. A standby unloaded
    /// while the active model stays is committed gone: a restart does not bring back what was unloaded to free memory.
    /// - Throws: `ControlError.unknownSlot`.
    public func unload(slot name: String, includingActive: Bool) async throws -> UnloadResult {
        guard let slot = slot(name) else { throw ControlError.unknownSlot(name) }
        return await serialized(name) { manager in
            let staged = slot.discardStaged()
            let standby = slot.dropStandby()
            var active: ModelIdentity?
            if includingActive, let model = slot.deactivate() {
                active = model.identity
                slot.releaser.retire(model)
            }
            if standby != nil, active == nil { await manager.commitWithoutStandby(slot) }
            var events: [SwapEvent] = []
            for (identity, role) in [(active, "active"), (staged, "staged"), (standby, "standby")] {
                guard let identity else { continue }
                events.append(await manager.emit(SwapEvent(slot: name, operation: .release, result: .succeeded,
                    reason: "unloaded the \(role) model on request", from: identity)))
            }
            return UnloadResult(active: active, staged: staged, standby: standby, events: events)
        }
    }
}
