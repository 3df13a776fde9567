import HotSwap

extension ControlPlane {
    /// Unloads a slot's models, audited like every change (intent, then outcome; a refused unload is recorded too).
    ///
    /// Without `force` only a slot that serves nothing may be unloaded (its staged and standby models, if any, are
    /// released); with `force` the active model goes too and the slot serves nothing until the next load — see
    /// `ModelManager.unload(slot:includingActive:)`.
    /// - Throws: `Problem` 409 for a slot with an active model without `force` or with a release in progress, 503
    ///   while the service starts; `ControlError.unknownSlot`.
    func unload(slot: String, force: Bool, by principal: Principal, from remote: String?) async throws -> UnloadResult {
        do { try refuseDuringRelease(slot, "unload") } catch {
            let problem = Problem.from(error)
            await auditRefusal(principal, remote, action: "unload \(slot)", reason: "\(problem.status.code) "
                + problem.detail)
            throw error
        }
        guard let roles = manager.slot(slot)?.roles else {
            let error = ControlError.unknownSlot(slot)
            await auditRefusal(principal, remote, action: "unload \(slot)", reason: "404 \(error)")
            throw error
        }
        if let active = roles.active, !force {
            let reason = "slot '\(slot)' serves \(active.identity.id); unloading it would stop serving: pass the "
                + "parameter force=true to unload it anyway"
            await auditRefusal(principal, remote, action: "unload \(slot)", reason: "409 \(reason)")
            throw Problem.conflict(reason)
        }
        var result: UnloadResult?
        _ = try await audited("unload", slot, model: roles.active?.identity, principal, remote) {
            let unloaded = try await manager.unload(slot: slot, includingActive: force)
            result = unloaded
            guard var event = unloaded.events.first else {
                return SwapEvent(slot: slot, operation: .release, result: .succeeded, reason: "nothing was loaded")
            }
            // The outcome names every model released (the first event's alone left the others out of the log).
            let released = [("active", unloaded.active), ("staged", unloaded.staged), ("standby", unloaded.standby)]
                .compactMap { role, model in model.map { "\(role) \($0.id) (sha256 \($0.sha256))" } }
            event.reason = "released " + released.joined(separator: ", ")
            return event
        }
        return result ?? UnloadResult(events: [])
    }
}
