import Foundation
import Logging
import Primitives
import YOLO

// The operations behind `ModelManager`'s API. Each runs in its slot's operation queue (see `serialized`), so two of
// them never overlap on one slot.
extension ModelManager {
    /// Runs a load to its end and records its event; only then can `op.wait()` return.
    func performLoad(_ op: LoadOperation, slot: ModelSlot, operation: SwapEvent.Operation = .load) async
        -> SwapEvent
    {
        let event = await runLoad(op, slot: slot, operation: operation)
        op.markRecorded()
        return event
    }

    private func runLoad(_ op: LoadOperation, slot: ModelSlot, operation: SwapEvent.Operation) async -> SwapEvent {
        let request = op.request
        // Only what is needed of the active model: holding the instance here would keep it alive (and delay its
        // release) after it leaves every role.
        let previous = slot.roles.active.map {
            (identity: $0.identity, schema: $0.schema, execution: $0.execution)
        }
        if op.isCancelled {
            return await emit(event(for: op, operation: operation, from: previous?.identity))
        }
        // Where the model runs (within what the slot permits, on the active model's device unless the load allows a
        // change), then the policy: both are settled, and reported, before anything is loaded.
        let execution: ModelExecution
        do throws(LoadFailure) {
            execution = try resolveExecution(request, slot: slot, current: previous?.execution.target)
        } catch {
            op.finish(.failed, failure: error)
            return await emit(event(for: op, operation: operation, from: previous?.identity))
        }
        let decision = await decidePolicy(for: request, execution: execution, hasActive: previous != nil)
        op.update {
            $0.execution = execution
            $0.policy = decision
        }
        if request.activate, decision.policy == .resourcePreserving, let previous {
            return await performResourcePreservingLoad(op, slot: slot, execution: execution,
                previous: (previous.identity, previous.schema, previous.execution), operation: operation,
                standbyReleased: false)
        }
        // Set when the load released the standby: committed gone should the load then not switch (a restart restored
        // it otherwise).
        let standbyReleased = Locked(false)
        do throws(LoadFailure) {
            // A switch displaces the standby anyway: free it before the new session exists (old + new, not three).
            let releaseStandby = request.activate && configuration.releaseStandbyBeforeLoad
            let model: ModelInstance
            do throws(LoadFailure) {
                model = try await pipeline.run(op, execution: execution, active: previous?.schema, beforeLoading: {
                    if releaseStandby, await slot.releaseStandbyAndWait() { standbyReleased.withLock { $0 = true } }
                })
            } catch {
                // `auto` judged by an estimate made before the file's digest was known (twice its size); the
                // pipeline's check, by the digest's measured cost, says old and new do not both fit after all: the
                // active model is unloaded first, as `auto` would have chosen (before, the load failed). Not for an
                // estimate that was the digest's already: then another load took the room meanwhile.
                // Host memory only: a model's GPU cost does not depend on its digest.
                guard case .overMemoryBudget = error, decision.requested == .auto,
                      decision.policy == .availabilityPreserving,
                      request.activate, !op.isCancelled, let previous, request.expectedSHA256 == nil,
                      let digest = op.status.identity?.sha256,
                      ledger.isMeasured(sha256: digest, target: execution.target)
                else { throw error }
                op.update {
                    $0.policy = PolicyDecision(policy: .resourcePreserving, requested: .auto,
                        reason: "auto: old and new do not both fit by the model's measured cost (\(error)): the "
                            + "active model is unloaded first", figures: nil)
                }
                // The standby this load's hook released is committed gone should that load fail too.
                return await performResourcePreservingLoad(op, slot: slot, execution: execution,
                    previous: (previous.identity, previous.schema, previous.execution), operation: operation,
                    standbyReleased: standbyReleased.value)
            }
            // Cancelled after the pipeline's last check: the model never takes a role. Past `beginActivation` the
            // load can no longer be cancelled (it ends ready with the model switched in and committed).
            guard request.activate ? op.beginActivation() : !op.isCancelled else {
                releaser.retire(model)
                throw LoadFailure.cancelled(path: request.path, reason: "superseded or cancelled")
            }
            if request.activate {
                let flip: Flip
                if operation == .restore {
                    // The committed state already says this model: nothing to record first.
                    flip = self.flip(model, in: slot, keepStandby: false)
                } else {
                    do { flip = try await activate(model, in: slot) } catch {
                        releaser.retire(model)
                        throw LoadFailure.notCommitted(path: request.path, reason: "\(error)")
                    }
                }
                op.update {
                    $0.timings.flipMicroseconds = flip.microseconds
                    $0.generation = flip.generation
                }
            } else {
                slot.stage(model)
            }
            op.finish(.ready)
        } catch {
            op.finish(error.isCancellation ? .cancelled : .failed, failure: error)
            if standbyReleased.value { await commitWithoutStandby(slot) }
        }
        return await emit(event(for: op, operation: operation, from: previous?.identity))
    }

    /// Verify the new file, then drain and release the old model, then load; on failure after the release, bring
    /// the old model back. A file that fails its digest or signature check leaves the old model serving, as does a
    /// load cancelled while the standby or staged model drained.
    /// - Parameter standbyReleased: whether the slot's standby was released for this load already (an `auto` load
    ///   that fell back to this policy); a failure then commits it gone, as one after this load's own release does.
    private func performResourcePreservingLoad(
        _ op: LoadOperation, slot: ModelSlot, execution: ModelExecution,
        previous: (identity: ModelIdentity, schema: ModelSchema, execution: ModelExecution),
        operation: SwapEvent.Operation, standbyReleased: Bool
    ) async -> SwapEvent {
        let previousRecord = previous.identity
        // What the active model holds: should the new model fail after the old one left, the new one's reservation
        // becomes the old one's in one step (`resize`), for the restore. Reserved anew only after the failure, the
        // memory could go to another slot's load in between — the restore then refused over the budget, the slot
        // left with no model.
        let previousMemory = slot.activeMemoryByDevice
        let reserved = Locked<MemoryReservation?>(nil)
        // Set once the old model has left the slot (the pipeline's hook between verifying and loading).
        let released = Locked(false)
        // Set once the standby is gone (here or before): committed gone should the load fail with the old model still
        // active (a restart restored it otherwise).
        let standbyGone = Locked(standbyReleased)
        do throws(LoadFailure) {
            // What the hook frees (this slot's models): a model that does not fit even then is refused first.
            let model = try await pipeline.run(op, execution: execution, active: previous.schema,
                freedBeforeLoading: slot.memoryByDevice, onReserved: { r in
                    // At least what the old model holds, per device: should the new one (smaller, or on another
                    // device) fail, its restore needs that much, which no other load may have taken meanwhile.
                    r.raise(toAtLeast: previousMemory)
                    reserved.withLock { $0 = r }
                }) { [self] in
                // Each freed before the new session is made (the budget counted them as free): a standby or staged
                // model serving a request by version is released once that request ends.
                if await slot.releaseStandbyAndWait() { standbyGone.withLock { $0 = true } }
                if let staged = await slot.discardStagedAndWait() {
                    _ = await emit(SwapEvent(slot: slot.name, operation: .discard, result: .succeeded,
                        reason: "discarded to make room for the resource-preserving load of \(op.request.path)",
                        from: staged))
                }
                // Superseded or cancelled while they drained (a shutdown beginning): the old model stays, rather than
                // leave the slot empty and bring it back through a whole load.
                guard !op.isCancelled else { return }
                released.withLock { $0 = true }
                // Hand over this last reference: the releaser frees the model only once it holds the only one.
                if let drained = slot.deactivate() { await releaser.retireAndWait(consume drained) }
            }
            // Not `retireUnused`: its reservation stays, to become the restore's below.
            guard op.beginActivation() else {
                releaser.retire(model)
                throw LoadFailure.cancelled(path: op.request.path, reason: "superseded or cancelled")
            }
            let flip: Flip
            do { flip = try await activate(model, in: slot, keepStandby: false) } catch {
                releaser.retire(model)
                throw LoadFailure.notCommitted(path: op.request.path, reason: "\(error)")
            }
            // The flip found the slot empty (the old model left in the hook): record it here, for a rollback.
            rememberPrevious(previousRecord.record, target: previous.execution.target, in: slot)
            op.update {
                $0.timings.flipMicroseconds = flip.microseconds
                $0.generation = flip.generation
            }
            op.finish(.ready)
            return await emit(event(for: op, operation: operation, from: previousRecord))
        } catch {
            op.finish(error.isCancellation ? .cancelled : .failed, failure: error)
            var failed = event(for: op, operation: operation, from: previousRecord)
            // Refused before the old model left (its digest, its signature, a cancellation): it still serves.
            guard released.value else {
                if standbyGone.value { await commitWithoutStandby(slot) }
                return await emit(failed)
            }
            let held: MemoryReservation
            if let reservation = reserved.withLock({ $0 }), reservation.resize(to: previousMemory) {
                held = reservation
            } else {
                held = ledger.hold(previousMemory)
            }
            // Bring the previous model back through the same verified pipeline, where it ran.
            let restore = LoadOperation(request: LoadRequest(slot: slot.name, path: previousRecord.path,
                name: previousRecord.name, version: previousRecord.version, expectedSHA256: previousRecord.sha256,
                allowSchemaChange: true, target: previous.execution.target, allowDeviceChange: true))
            // Cut short by a shutdown as a restore is (the store still holds the previous model: the next start
            // brings it back), not waited for through a whole warm-up.
            restoring[slot.name] = restore
            bringingBack.insert(slot.name)
            defer {
                restoring[slot.name] = nil
                bringingBack.remove(slot.name)
            }
            if cancelsRestores { restore.cancel(reason: "shutting down") }
            do {
                let model = try await pipeline.run(restore, execution: previous.execution, active: nil,
                    reserved: held)
                // The store still holds the previous model's state: flip it back even if recording fails again.
                if (try? await activate(model, in: slot, keepStandby: false)) == nil {
                    _ = flip(model, in: slot, keepStandby: false)
                }
                failed.reason = (failed.reason ?? "") + "; previous model \(previousRecord.id) restored"
            } catch where error.isCancellation {
                // A shutdown: the store still names the previous model, which the next start brings back.
                failed.reason = (failed.reason ?? "") + "; \(previousRecord.id) is left for the next start to restore"
                logger.warning("slot left without a model by a shutdown; the next start restores it",
                    metadata: ["slot": "\(slot.name)", "model": "\(previousRecord.id)"])
            } catch {
                failed.reason = (failed.reason ?? "") + "; restoring \(previousRecord.id) failed too: \(error)"
                logger.critical("slot has no active model", metadata: ["slot": "\(slot.name)"])
            }
            return await emit(failed)
        }
    }

    func performSwitch(_ slot: ModelSlot, keepStandby: Bool? = nil) async throws -> SwapEvent {
        guard let staged = slot.roles.staged else { throw ControlError.nothingStaged(slot: slot.name) }
        let flip: Flip
        do { flip = try await activate(staged, in: slot, keepStandby: keepStandby) } catch {
            throw ControlError.notCommitted(slot: slot.name, reason: "\(error)")
        }
        var timings = LoadTimings()
        timings.flipMicroseconds = flip.microseconds
        return await emit(SwapEvent(slot: slot.name, operation: .switch, result: .succeeded,
            from: flip.previous, to: staged.identity, generation: flip.generation, timings: timings,
            target: staged.execution.target,
            policy: flipDecision("a switch flips in the staged model, loaded already")))
    }

    func performRollback(_ slot: ModelSlot) async throws -> SwapEvent {
        if let standbyPlace = slot.roles.standby.map({ (identity: $0.identity, target: $0.execution.target) }) {
            let standby = standbyPlace.identity
            let roles = slot.roles
            let state = CommittedSlot(slot: slot.name, active: standby.record, standby: roles.active?.identity.record,
                generation: roles.generation + 1)
            do { try await commit(state) } catch {
                throw ControlError.notCommitted(slot: slot.name, reason: "\(error)")
            }
            guard let result = slot.flipToStandby() else { throw ControlError.nothingToRollBackTo(slot: slot.name) }
            let flip = Flip(result)
            // The model flipped out is now the standby, and the latest previous model (should the standby be
            // released, a rollback reloads it).
            if let displaced = result.previous {
                rememberPrevious(displaced.identity.record, target: displaced.execution.target, in: slot)
                armRetention(of: displaced, in: slot)
            }
            var timings = LoadTimings()
            timings.flipMicroseconds = flip.microseconds
            return await emit(SwapEvent(slot: slot.name, operation: .rollback, result: .succeeded,
                from: flip.previous, to: standby, generation: flip.generation, timings: timings,
                target: standbyPlace.target, policy: flipDecision("a rollback flips in the warm standby")))
        }
        guard let previous = previousModels[slot.name]?.last else {
            throw ControlError.nothingToRollBackTo(slot: slot.name)
        }
        let record = previous.record
        // Back to where the previous model ran: a rollback undoes a device change too.
        let op = LoadOperation(request: LoadRequest(slot: slot.name, path: record.path, version: record.version,
            expectedSHA256: record.sha256, activate: true, allowSchemaChange: true, target: previous.target,
            allowDeviceChange: true))
        remember(op)
        // Cancelled by a shutdown as a restore is: a reload's warm-up would hold the shutdown up.
        restoring[slot.name] = op
        defer { restoring[slot.name] = nil }
        if isShuttingDown { op.cancel(reason: "shutting down") }
        let event = await performLoad(op, slot: slot, operation: .rollback)
        if let failure = op.status.failure { throw ControlError.loadFailed(slot: slot.name, failure) }
        return event
    }

    /// Brings one committed slot's active model back; the activation restores its committed generation.
    func performRestore(_ entry: CommittedSlot, slot: ModelSlot) async -> SwapEvent {
        let request = LoadRequest(slot: entry.slot, path: entry.active.path, version: entry.active.version,
            expectedSHA256: entry.active.sha256, activate: true, allowSchemaChange: true)
        let op = LoadOperation(request: request)
        remember(op)
        restoring[entry.slot] = op
        defer { restoring[entry.slot] = nil }
        if isShuttingDown { op.cancel(reason: "shutting down") }
        // The activation adds one: the restored model comes back with its committed generation, in the same flip
        // that makes the slot ready.
        slot.setGeneration(max(0, entry.generation - 1))
        let event = await performLoad(op, slot: slot, operation: .restore)
        // Not restored: the slot's next activation follows the committed generation (it would repeat it otherwise,
        // for another model).
        if op.status.stage != .ready { slot.setGeneration(max(slot.roles.generation, entry.generation)) }
        return event
    }

    /// Brings a committed standby back (best effort: a failure is logged, no event), then commits what came back.
    func performRestoreStandby(_ record: ModelRecord, slot: ModelSlot) async {
        let standby = record
        let op = LoadOperation(request: LoadRequest(slot: slot.name, path: standby.path, version: standby.version,
            expectedSHA256: standby.sha256, allowSchemaChange: true))
        defer { op.markRecorded() }
        restoring[slot.name] = op
        defer { restoring[slot.name] = nil }
        if isShuttingDown { op.cancel(reason: "shutting down") }
        do {
            // The standby comes back beside the active model, on its device.
            let execution = try resolveExecution(op.request, slot: slot, current: slot.roles.active?.execution.target)
            let standby = try await pipeline.run(op, execution: execution, active: nil)
            slot.setStandby(standby)
            // It was the active model before the restart: a rollback reloads it once the standby is gone, as it
            // would had there been no restart.
            rememberPrevious(record, target: execution.target, in: slot)
            armRetention(of: standby, in: slot)
            op.finish(.ready)
        } catch {
            op.finish(error.isCancellation ? .cancelled : .failed, failure: error)
            logger.warning("standby not restored", metadata: ["slot": "\(slot.name)", "error": "\(error)"])
            // Cut off (a shutdown during the start): the store keeps it for the next start.
            if error.isCancellation { return }
            // The store should no longer offer it for a rollback after a restart.
            await commitWithoutStandby(slot)
        }
    }

    /// Commits the slot's state with no standby (one no longer held: not restored at the next start, its retention
    /// started over). A failure is logged: the store then still names the standby.
    func commitWithoutStandby(_ slot: ModelSlot) async {
        let roles = slot.roles
        guard let active = roles.active else { return }
        let state = CommittedSlot(slot: slot.name, active: active.identity.record, generation: roles.generation)
        do { try await commit(state) } catch {
            logger.error("cannot commit slot state", metadata: ["slot": "\(slot.name)", "error": "\(error)"])
        }
    }

    // MARK: Flip, commit, events

    /// Commits the state the flip will produce, then flips the model in (applying the standby retention and
    /// recording the previous model): a change the store cannot record is not made.
    /// - Throws: the store's error; nothing was flipped then.
    func activate(_ model: ModelInstance, in slot: ModelSlot, keepStandby: Bool? = nil) async throws -> Flip {
        let keep = keepStandby ?? (configuration.standbyRetention != .release)
        try await commit(Self.state(afterActivating: model, in: slot, keepStandby: keep))
        return flip(model, in: slot, keepStandby: keep)
    }

    /// What the slot's roles will be once `model` is flipped in (as `ModelSlot.activate` changes them).
    private static func state(afterActivating model: ModelInstance, in slot: ModelSlot, keepStandby: Bool)
        -> CommittedSlot
    {
        let roles = slot.roles
        var standby = roles.standby === model ? nil : roles.standby?.identity
        if let previous = roles.active { standby = keepStandby ? previous.identity : nil }
        return CommittedSlot(slot: slot.name, active: model.identity.record, standby: standby?.record,
            generation: roles.generation + 1)
    }

    /// The flip itself: no model instance outlives it here, so a previous model released by it is not kept alive
    /// by the caller.
    func flip(_ model: ModelInstance, in slot: ModelSlot, keepStandby: Bool) -> Flip {
        let flip = slot.activate(model, keepStandby: keepStandby)
        if let previous = flip.previous {
            rememberPrevious(previous.identity.record, target: previous.execution.target, in: slot)
            if keepStandby { armRetention(of: previous, in: slot) }
        }
        return Flip(flip)
    }

    /// Whether `token` names the slot's latest retention timer (which then ends).
    private func endRetention(of slot: String, token: UUID) -> Bool {
        guard retentionTimers[slot] == token else { return false }
        retentionTimers[slot] = nil
        return true
    }

    /// Hands a loaded model that never took a role, in a resource-preserving load that failed after its hook, to the
    /// releaser with its memory reservation ended first: the model's release waits for the releaser's thread, and the
    /// restore of the previous model that follows must not find the reservation still counted. (Elsewhere the
    /// reservation ends with the model, so that its memory stays counted until it is freed.)
    func retireUnused(_ model: ModelInstance) {
        model.reservation?.release()
        releaser.retire(model)
    }

    /// Records a model that was active as the slot's latest previous one (up to 10 kept): what a rollback without
    /// a standby reloads.

    func rememberPrevious(_ record: ModelRecord, target: ExecutionTarget, in slot: ModelSlot) {
        previousModels[slot.name, default: []].append((record, target))
        if previousModels[slot.name]!.count > 10 { previousModels[slot.name]!.removeFirst() }
    }

    /// Under `keepFor`, releases `standby` once the retention has passed since it became the slot's standby — by a
    /// flip, a rollback or a restore — unless it has left that role or become the standby again since (a later
    /// timer then decides).
    func armRetention(of standby: ModelInstance, in slot: ModelSlot) {
        guard case .keepFor(let duration) = configuration.standbyRetention else { return }
        let name = slot.name
        let token = UUID()
        retentionTimers[name] = token
        // A timer, not work that must finish: weak, so that a standby replaced or released before the time is up is
        // not kept alive by it. The drop takes its turn among the slot's operations: a rollback between committing
        // the standby as active and flipping to it must find it there.
        Task { [weak self, weak slot, weak standby] in
            try? await Task.sleep(for: duration)
            guard standby != nil, let self else { return }
            await self.serialized(name) { [weak slot, weak standby] manager in
                guard let standby, await manager.endRetention(of: name, token: token), let slot else { return }
                // Committed too: before, a restart restored the released standby, and its retention began again.
                if slot.dropStandby(only: standby) != nil { await manager.commitWithoutStandby(slot) }
            }
        }
    }

    /// Writes `state` to the store on the manager's I/O queue (nothing without a store); durable when it returns.
    func commit(_ state: CommittedSlot) async throws {
        guard let store else { return }
        try await ioQueue.run { try store.commit(state) }
    }

    func event(for op: LoadOperation, operation: SwapEvent.Operation, from: ModelIdentity?) -> SwapEvent {
        let status = op.status
        let result: SwapEvent.Outcome =
            switch status.stage {
            case .ready: .succeeded
            case .cancelled: .cancelled
            default: .failed
            }
        return SwapEvent(slot: op.request.slot, operation: op.request.activate && operation == .load ? .activate
            : operation, result: result, reason: status.failure?.description, from: from, to: status.identity,
            generation: status.generation, timings: status.timings, operationID: op.id,
            target: status.execution?.target, policy: status.policy)
    }

    /// Appends the event to the store (on the store's queue), then records it (memory, subscribers, log): what a client
    /// sees has been stored.
    @discardableResult
    func emit(_ event: SwapEvent) async -> SwapEvent {
        if let store {
            do { try await ioQueue.run { try store.append(event) } } catch {
                logger.error("cannot store event", metadata: ["error": "\(error)"])
            }
        }
        eventLog.record(event)
        var metadata: Logger.Metadata = ["slot": "\(event.slot)", "operation": "\(event.operation.rawValue)",
            "result": "\(event.result.rawValue)"]
        if let to = event.to { metadata["model"] = "\(to.id)" }
        if let reason = event.reason { metadata["reason"] = "\(reason)" }
        if event.result == .failed { logger.warning("swap operation failed", metadata: metadata) }
        else { logger.info("swap operation", metadata: metadata) }
        return event
    }
}

/// One flip of a slot's active model as the manager reports it: identities only, no model instances.
struct Flip: Sendable {
    var generation: Int
    var microseconds: Double
    var previous: ModelIdentity?

    init(_ result: FlipResult) {
        generation = result.generation
        microseconds = result.microseconds
        previous = result.previous?.identity
    }
}
