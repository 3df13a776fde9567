import AuditLog
import Foundation
import HotSwap
import Logging
import Primitives
import Releases
import YOLO

// Releases through the control plane: a candidate loaded beside the active model through the verified pipeline, the
// slot's router handed to the release's engine, and every step — start, each canary step, pause, resume, promotion,
// rollback, abort — an event, a metric and an audit record (intent before the change for manual steps; the rule and
// figures behind an automatic one).
extension ControlPlane {
    static let system = Principal(name: "system", role: .admin)

    /// Sets the check a candidate must pass before it takes traffic (module `Evaluation`'s golden-set gate).
    public func setCandidateGate(_ gate: (any CandidateGate)?) { candidateGate.withLock { $0 = gate } }

    /// The slot's current (or last) release.
    func releaseRun(_ slot: String) -> ReleaseRun? { releaseRuns.withLock { $0[slot] } }

    /// 503 while the service starts (until `markStarted`: the committed models are being restored and the releases
    /// resumed, so which slot belongs to a release is not known yet, nor whether a slot exists); 409 when the slot
    /// has a release that is not over: its roles belong to the release until then.
    func refuseDuringRelease(_ slot: String, _ action: String) throws {
        guard hasStarted else {
            throw Problem(.serviceUnavailable, "Starting", detail: "the service is bringing its slots up (restoring "
                + "the committed models, resuming releases); ask for the \(action) again once /readyz no longer "
                + "answers \"starting\"", retryAfter: 1)
        }
        if let run = releaseRun(slot), !run.isOver {
            let phase = run.engine.phase
            throw ReleaseError.conflict(phase.isTerminal
                ? "slot '\(slot)' has a release ending (\(phase.rawValue), its end being carried out); ask for the "
                    + "\(action) again in a moment"
                : "slot '\(slot)' has a release in progress (\(phase.rawValue)); promote or abort it before a \(action)")
        }
    }

    // MARK: Start

    /// Records a refused release start, its request's strings cut to their bounds (they may be what was refused).
    /// - Parameter afterIntent: the outcome of a recorded intent (always written); else a refusal before any intent,
    ///   recorded as refused calls are (at most 20 a second a caller).
    private func auditRejectedStart(_ spec: ReleaseSpec, _ slot: String, _ error: any Error, by principal: Principal,
                                    from remote: String?, started: Date, afterIntent: Bool = false) async throws {
        guard let note = afterIntent ? "" : admitRefusal(principal) else { return }
        try await audit(principal, remote, "release.start", slot,
            modelPath: spec.model.prefix(utf8Bytes: ReleaseSpec.maxModelLength),
            version: spec.version?.prefix(utf8Bytes: ReleaseSpec.maxVersionLength),
            sha256: spec.sha256?.prefix(utf8Bytes: 64), result: "rejected",
            reason: Problem.from(error).detail.prefix(utf8Bytes: 1024) + note, started: started)
    }

    /// Starts a release: validates, records the intent, and brings the candidate up in the background (load,
    /// verify, warm up, the candidate gate), after which the strategy routes traffic.
    /// - Returns: the run (its engine's phase is `loading`).
    func startRelease(slot: String, spec asked: ReleaseSpec, by principal: Principal, from remote: String?,
                      clock: any ReleaseClock = SystemReleaseClock()) async throws -> ReleaseRun {
        let started = Date()
        var spec = asked
        spec.sha256 = spec.sha256?.lowercased()
        let path: String
        let baseline: ModelInstance
        do {
            try spec.validate()
            try refuseDuringRelease(slot, "new release")
            guard let slotRef = manager.slot(slot) else { throw ControlError.unknownSlot(slot) }
            guard let active = slotRef.roles.active else {
                throw ReleaseError.conflict("slot '\(slot)' has no active model to compare a candidate with")
            }
            guard slotRef.roles.staged == nil else {
                throw ReleaseError.conflict("slot '\(slot)' has a staged model: switch it in or discard it first "
                    + "(a release's candidate takes the staged role)")
            }
            if let load = await manager.latestOperation(slot: slot), !load.status.stage.isTerminal {
                throw ControlError.loadInProgress(slot: slot, path: load.request.path)
            }
            baseline = active
            path = try await repository.resolve(spec.model)
        } catch {
            try? await auditRejectedStart(spec, slot, error, by: principal, from: remote, started: started)
            throw error
        }
        try await audit(principal, remote, "release.start", slot, modelPath: spec.model, version: spec.version,
            sha256: spec.sha256, result: "intent", reason: "strategy \(spec.strategy.rawValue); baseline "
                + "\(baseline.identity.id) sha256 \(baseline.identity.sha256)", started: started)
        var record = ReleaseRecord(slot: slot, spec: spec, candidatePath: path, startedBy: principal.name,
            createdAt: clock.now)
        record.baseline = baseline.identity
        let run: ReleaseRun
        do { run = try await installRun(record, clock: clock, fresh: true, bringingUp: true) } catch {
            // Another start got in while the intent was written: the intent gets its outcome.
            try? await auditRejectedStart(spec, slot, error, by: principal, from: remote, started: started,
                afterIntent: true)
            throw error
        }
        let task = Task { [self] in
            await bringUp(run, by: principal, from: remote, started: started, resumed: false, restoring: nil)
        }
        run.bringUp.withLock { $0 = task }
        run.keep(task)
        return run
    }

    /// Registers a new run for the slot (refused when another is not over) and persists its record.
    /// - Parameters:
    ///   - fresh: a release just started, whose slot's earlier disagreements go (a resumed one keeps its own).
    ///   - bringingUp: its candidate is to be brought up: marked so before the run is the slot's, so that an abort in
    ///     between does not free the slot ahead of the bring-up it has not seen yet.
    private func installRun(_ record: ReleaseRecord, clock: any ReleaseClock, fresh: Bool = false,
                            bringingUp: Bool = false) async throws -> ReleaseRun
    {
        // A folder per release: a new one does not take the last one's files for its own, nor lose its own to the
        // last one's mirror still writing.
        let slotFolder = releaseStore.folder(slot: record.slot).map { $0 + "-disagreements" }
        let safeID = record.id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") } && !record.id
            .isEmpty ? record.id : "release"
        let engine = ReleaseEngine(record: record, clock: clock)
        // Its disagreement store reads the folder's files (up to 1000 at a restart): off the cooperative pool.
        let folder = slotFolder.map { "\($0)/\(safeID)" }
        let run = await Self.disagreementFiles.run { ReleaseRun(engine: engine, disagreementsFolder: folder) }
        let previous = try releaseRuns.withLock { runs -> ReleaseRun? in
            if let current = runs[record.slot], !current.isOver {
                throw ReleaseError.conflict("slot '\(record.slot)' has a release in progress")
            }
            if bringingUp { run.markBringingUp(true) }
            defer { runs[record.slot] = run }
            return runs[record.slot]
        }
        if let previous, previous.engine.record.id != record.id {
            // A new release's disagreements replace the last one's.
            Task { await previous.stop() }
        }
        if fresh, let slotFolder {
            // Only once this run holds the slot (a start refused as a conflict must not touch the running one's):
            // everything but this run's own folder — the last release's, and files of the one-folder layout before
            // (up to 1000 images: off the cooperative pool).
            await Self.disagreementFiles.run {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: slotFolder)) ?? []
                where name != safeID {
                    try? FileManager.default.removeItem(atPath: "\(slotFolder)/\(name)")
                }
            }
        }
        await persist(run)
        return run
    }

    /// Loads the candidate into the staged role, checks it, and starts routing.
    /// - Parameters:
    ///   - resumed: after a restart (the outcome closes `release.resume`'s intent).
    ///   - phase: the phase it goes back to once its candidate is up again, when not running (a resumed release waits
    ///     in `loading` meanwhile, where no rule or promotion is judged).
    private func bringUp(_ run: ReleaseRun, by principal: Principal, from remote: String?, started: Date,
                         resumed: Bool, restoring phase: ReleasePhase?) async {
        defer { run.markBringingUp(false) }
        let record = run.engine.record
        let spec = record.spec
        let slot = record.slot
        // The outcome closes the intent: `release.start`'s, or at a restart `release.resume`'s.
        let action = resumed ? "release.resume" : "release.start"
        guard let slotRef = manager.slot(slot) else { return }
        let failure: String?
        var loaded: ModelIdentity?
        do {
            // Not over an operator's load that got in after the start's checks: the release fails instead.
            let op = try await manager.load(LoadRequest(
                slot: slot, path: record.candidatePath, version: spec.version,
                expectedSHA256: record.candidate?.sha256 ?? spec.sha256, activate: false,
                allowSchemaChange: spec.allow_schema_change ?? false), supersede: false)
            let status = await op.wait()
            loaded = status.identity
            // Cut off by a shutdown (at any time: during the start too): the record stays as it is, and the next
            // start resumes the release.
            if status.stage == .cancelled, await manager.isShuttingDown { return }
            if let reason = status.failure {
                failure = "the candidate did not load: " + repository.hidingRoot(reason.description)
            } else if slotRef.roles.active?.identity.sha256 != record.baseline?.sha256 {
                // A switch, rollback or forced unload that passed its checks before this release was installed ran
                // before the candidate's load (the slot's operations run in order): the figures would compare against
                // another model than the one recorded, or the release would run with no baseline at all.
                failure = "the active model changed while the release started ("
                    + "\(slotRef.roles.active?.identity.id ?? "none") instead of \(record.baseline?.id ?? "?")): "
                    + "start the release again"
            } else if let staged = slotRef.roles.staged, staged.identity.sha256 == status.identity?.sha256 {
                let gate = candidateGate.withLock { $0 }
                let engine = run.engine
                // An abort, or a shutdown (which stops the run), cuts the scoring short at the next image.
                failure = await gate?.refusal(candidate: staged, baseline: slotRef.roles.active, spec: spec,
                    isCancelled: { engine.phase.isTerminal || run.isStopping })
                    .map { "the candidate gate refused it: \($0)" }
            } else {
                failure = "the candidate left the staged role before it took traffic"
            }
        } catch {
            failure = Problem.from(error).detail
        }
        // A shutdown came while the gate scored the candidate (its scoring was cut short): nothing changes now; the
        // next start resumes the release.
        if await manager.isShuttingDown { return }
        if let failure {
            guard run.engine.transition(from: [.loading, .running, .paused], to: .failed, action: "failed",
                by: "system", detail: failure) != nil
            else {
                // Aborted meanwhile: the gate's refusal left it staged.
                await endAborted(run, loaded: loaded, in: slotRef, by: principal, from: remote, action: action,
                    started: started)
                return
            }
            if slotRef.roles.staged?.identity.path.isByteEqual(to: record.candidatePath) == true {
                _ = try? await manager.discardStaged(slot: slot)
            }
            await finish(run, operation: .releaseStart, result: .failed, reason: failure, by: principal,
                from: remote, action: action, started: started)
            return
        }
        let candidate = slotRef.roles.staged?.identity
        let now = run.engine.clock.now
        let updated = run.engine.update { r in
            // An abort while the gate scored the candidate ended the release: its record keeps no traffic it never had.
            guard r.phase == .loading else { return }
            r.candidate = candidate
            r.phase = phase ?? .running
            r.trafficSince = r.trafficSince ?? now
            r.stepStartedAt = r.stepStartedAt ?? now
            r.note(resumed ? "resumed-after-restart" : "traffic", by: "system", at: now, candidate?.id)
        }
        if updated.phase.isTerminal {
            // Aborted while loading: the abort found no candidate to drop (it had none yet); this one is.
            await endAborted(run, loaded: loaded, in: slotRef, by: principal, from: remote, action: action,
                started: started)
            return
        }
        slotRef.setRouter(run.engine)
        await persist(run)
        ReleaseMetrics.phase(updated)
        let reason = "\(spec.strategy.rawValue) release of \(candidate?.id ?? spec.model) (sha256 "
            + "\(candidate?.sha256 ?? "?")) beside \(updated.baseline?.id ?? "?") (sha256 "
            + "\(updated.baseline?.sha256 ?? "?"))" + (resumed ? ", resumed after a restart" : "")
        await manager.record(SwapEvent(slot: slot, operation: .releaseStart, result: .succeeded, reason: reason,
            from: updated.baseline, to: candidate))
        try? await auditOutcome(principal, remote, action, slot,
            modelPath: repository.relative(record.candidatePath), version: candidate?.version,
            sha256: candidate?.sha256, result: "succeeded", reason: reason, started: started)
        run.keep(Task { [self, weak run] in
            // The time-based conditions (a step's hold, promote_after.min_s) are judged every second; the energy
            // counters are read every minute, well within the tens of minutes they take to wrap.
            var ticks = 0
            while !Task.isCancelled, let run, !run.engine.phase.isTerminal {
                handle(run.engine.tick(), of: run)
                ticks += 1
                if ticks % 60 == 0 { await releaseWrites.run { run.energy.sample() } }
                try? await Task.sleep(for: .seconds(1))
            }
        })
    }

    /// A release aborted while its candidate was brought up: the model its load staged goes, and the start's (or
    /// resume's) intent gets its outcome, `aborted` (the abort has its own entries).
    private func endAborted(_ run: ReleaseRun, loaded: ModelIdentity?, in slot: ModelSlot, by principal: Principal,
                            from remote: String?, action: String, started: Date) async {
        defer { run.markSettled() }
        await discardCandidate(loaded, of: run, in: slot)
        let record = run.engine.record
        try? await auditOutcome(principal, remote, action, record.slot,
            modelPath: repository.relative(record.candidatePath), version: loaded?.version, sha256: loaded?.sha256,
            result: "aborted", reason: (record.reason ?? "aborted") + " before the candidate took traffic",
            started: started)
    }

    /// Discards the model this run's load staged, while this run is still the slot's release (a later release's
    /// candidate of the same file is not this one's to drop).
    private func discardCandidate(_ loaded: ModelIdentity?, of run: ReleaseRun, in slot: ModelSlot) async {
        guard let loaded, releaseRuns.withLock({ $0[slot.name] === run }) else { return }
        _ = try? await manager.discardStaged(slot: slot.name, expecting: loaded)
    }

    // MARK: Automatic decisions

    /// Carries out the engine's decisions in the release's action chain (a rollback has already re-routed traffic).
    func handle(_ decisions: [ReleaseDecision], of run: ReleaseRun) {
        guard !decisions.isEmpty else { return }
        // A rollback is written at once, not in the chain's turn (behind a promotion's attempt, say): a process that
        // ended in between resumed the release, and its candidate, whose rule had tripped, took traffic again.
        if decisions.contains(where: { if case .rolledBack = $0 { true } else { false } }) {
            run.keep(Task { [self] in await persistEnd(run) })
        }
        run.keep(Task { [self] in
            for decision in decisions {
                _ = try? await run.actions.run { [self] in await carryOut(decision, of: run) }
            }
        })
    }

    private func carryOut(_ decision: ReleaseDecision, of run: ReleaseRun) async {
        let record = run.engine.record
        let started = Date()
        switch decision {
        case .advanced(let index, let percent):
            await persist(run)
            ReleaseMetrics.phase(record)
            let reason = "step \(index + 1) of \(record.spec.canarySteps.count): the candidate answers "
                + "\(percent) % (the previous step held)"
            await manager.record(SwapEvent(slot: record.slot, operation: .releaseStep, result: .succeeded,
                reason: reason, from: record.baseline, to: record.candidate))
            try? await audit(Self.system, nil, "release.step", record.slot,
                modelPath: repository.relative(record.candidatePath), version: record.candidate?.version,
                sha256: record.candidate?.sha256, result: "succeeded", reason: reason, started: started)
        case .stepsComplete:
            await persist(run)
        case .rolledBack(let breach):
            await endWithBaseline(run, operation: .releaseRollback, action: "release.rollback", by: Self.system,
                from: nil, reason: "automatic rollback: " + breach.text, started: started)
        case .promote(let reason, let figures):
            let text = RuleBreach(rule: reason, value: figures["candidate_requests"] ?? 0, figures: figures).text
            _ = await promote(run, by: Self.system, from: nil, reason: "automatic promotion: " + text,
                started: started, automatic: true)
        }
    }

    // MARK: Manual actions

    /// Starts a release as `actor` (an admin principal; for tools such as `bench-release`) and waits until the
    /// candidate takes traffic or has failed.
    public func startRelease(slot: String, spec: ReleaseSpec, actor: String) async throws -> ReleaseStatus {
        let run = try await startRelease(slot: slot, spec: spec, by: Principal(name: actor, role: .admin), from: nil)
        await run.bringUp.withLock({ $0 })?.value
        return run.engine.status(energy: run.energy.reading())
    }

    /// Aborts the slot's release as `actor` (see `startRelease(slot:spec:actor:)`).
    @discardableResult
    public func abortRelease(slot: String, actor: String) async throws -> ReleaseStatus {
        try await abortRelease(slot: slot, by: Principal(name: actor, role: .admin), from: nil)
    }

    func promoteRelease(slot: String, by principal: Principal, from remote: String?) async throws -> ReleaseStatus {
        let (run, started) = try await manualStep(slot, "promote", by: principal, from: remote,
            phases: [.running, .paused], to: .promoting, detail: nil)
        let failure = try await run.actions.run { [self] in
            await promote(run, by: principal, from: remote, reason: "promoted by \(principal.name)",
                started: started)
        }
        if let failure { throw failure }
        return run.engine.status(energy: run.energy.reading())
    }

    func abortRelease(slot: String, by principal: Principal, from remote: String?) async throws -> ReleaseStatus {
        let reason = "aborted by \(principal.name)"
        let (run, started) = try await manualStep(slot, "abort", by: principal, from: remote,
            phases: [.loading, .running, .paused], to: .aborted, detail: reason)
        try await run.actions.run { [self] in
            await endWithBaseline(run, operation: .releaseAbort, action: "release.abort", by: principal,
                from: remote, reason: reason, started: started)
        }
        return run.engine.status(energy: run.energy.reading())
    }

    func pauseRelease(slot: String, by principal: Principal, from remote: String?, pause: Bool) async throws
        -> ReleaseStatus
    {
        let action = pause ? "pause" : "resume"
        let (run, started) = try await manualStep(slot, action, by: principal, from: remote,
            phases: [pause ? .running : .paused], to: pause ? .paused : .running, detail: nil)
        let record = run.engine.record
        await persist(run)
        ReleaseMetrics.phase(record)
        let reason = "\(pause ? "paused" : "resumed") by \(principal.name) at step \(record.stepIndex + 1)"
        await manager.record(SwapEvent(slot: slot, operation: pause ? .releasePause : .releaseResume,
            result: .succeeded, reason: reason, from: record.baseline, to: record.candidate))
        try await auditOutcome(principal, remote, "release." + action, slot, sha256: record.candidate?.sha256,
            result: "succeeded", reason: reason, started: started)
        return run.engine.status(energy: run.energy.reading())
    }

    /// A manual step's start: its intent recorded (a step that cannot be recorded is refused), then the phase changed
    /// if it is one of `phases` — atomically, so that an automatic decision racing it finds the phase changed — or
    /// the refusal recorded and thrown (409).
    private func manualStep(_ slot: String, _ action: String, by principal: Principal, from remote: String?,
                            phases: Set<ReleasePhase>, to phase: ReleasePhase, detail: String?) async throws
        -> (ReleaseRun, Date)
    {
        let run = try currentRun(slot)
        let started = Date()
        let record = run.engine.record
        try await audit(principal, remote, "release." + action, slot,
            modelPath: repository.relative(record.candidatePath), version: record.candidate?.version,
            sha256: record.candidate?.sha256, result: "intent", reason: nil, started: started)
        guard run.engine.transition(from: phases, to: phase, action: action, by: principal.name,
            detail: detail) != nil else {
            let current = run.engine.phase.rawValue
            try? await audit(principal, remote, "release." + action, slot, result: "rejected",
                reason: "the release is \(current)", started: started)
            let allowed = phases.map(\.rawValue).sorted().joined(separator: " or ")
            throw ReleaseError.conflict("slot '\(slot)': the release is \(current); to \(action) it, it must be "
                + allowed)
        }
        return (run, started)
    }

    /// The slot's current (or last) release with its live figures.
    public func releaseStatus(slot: String) throws -> ReleaseStatus {
        guard manager.slot(slot) != nil else { throw ControlError.unknownSlot(slot) }
        guard let run = releaseRun(slot) else { throw ReleaseError.notFound("slot '\(slot)' has had no release") }
        return run.engine.status(energy: run.energy.reading())
    }

    func disagreement(slot: String, id: String) async throws -> (Disagreement, [UInt8]) {
        guard let run = releaseRun(slot) else { throw ReleaseError.notFound("slot '\(slot)' has had no release") }
        guard let found = await Self.disagreementFiles.run({ run.disagreements.get(id) }) else {
            throw ReleaseError.notFound("no disagreement '\(id)' is kept for slot '\(slot)'")
        }
        return found
    }

    private func currentRun(_ slot: String) throws -> ReleaseRun {
        guard manager.slot(slot) != nil else { throw ControlError.unknownSlot(slot) }
        guard let run = releaseRun(slot) else { throw ReleaseError.notFound("slot '\(slot)' has no release") }
        return run
    }

    // MARK: Endings

    /// Promotion: the candidate becomes active and the baseline the warm standby (committed first). A promotion that
    /// fails changes nothing: the release goes back to the phase it was promoted from (a paused one stays paused), and
    /// the failure is returned with the status its cause has (409 when the candidate left the staged role, 503 when
    /// the state store cannot record the flip). The next automatic promotion waits for a backoff
    /// (`ReleaseEngine.promotionFailed`), rather than failing again at every tick.
    private func promote(_ run: ReleaseRun, by principal: Principal, from remote: String?, reason: String,
                         started: Date, automatic: Bool = false) async -> Problem? {
        let record = run.engine.record
        do {
            // Recorded before the flip, or no flip: a restart that finds the release `promoting` and the candidate
            // committed active knows the promotion got that far (`resumeReleases`); any other change of the active
            // model while the service was down is not this release's doing.
            do { try await persistOrThrow(run) } catch {
                throw ReleaseError.notRecorded("the release record could not be written before the flip: \(error)")
            }
            _ = try await manager.promoteStaged(slot: record.slot, expecting: record.candidate)
        } catch {
            var problem = Problem.from(error)
            var detail = repository.hidingRoot(problem.detail)
            // Before the phase changes back, so that no tick in between decides to promote again at once.
            let wait = run.engine.promotionFailed()
            if automatic { detail += "; the next automatic promotion in \(Int(wait)) s" }
            // Nothing else leaves `promoting` (pause and abort refuse it): the transition is ours.
            let phase = record.promotedFrom ?? .running
            run.engine.transition(from: [.promoting], to: phase, action: "promote-failed", by: principal.name,
                detail: detail)
            let back = run.engine.record
            await persist(run)
            ReleaseMetrics.phase(back)
            await manager.record(SwapEvent(slot: record.slot, operation: .releasePromote, result: .failed,
                reason: detail, from: record.baseline, to: record.candidate))
            try? await audit(principal, remote, "release.promote", record.slot, sha256: record.candidate?.sha256,
                result: "failed", reason: detail, started: started)
            problem.detail = "the promotion failed and the release went back to \(phase.rawValue): \(detail)"
            return problem
        }
        run.engine.transition(from: [.promoting], to: .promoted, action: "promoted", by: principal.name,
            detail: reason)
        manager.slot(record.slot)?.setRouter(ActiveModelRouter())
        await finish(run, operation: .releasePromote, result: .succeeded, reason: reason, by: principal,
            from: remote, action: "release.promote", started: started)
        return nil
    }

    /// Rollback or abort: the engine routes to the baseline already; the candidate is dropped and the router reset.
    private func endWithBaseline(_ run: ReleaseRun, operation: SwapEvent.Operation, action: String,
                                 by principal: Principal, from remote: String?, reason: String,
                                 started: Date) async {
        let record = run.engine.record
        // The end first on disk: a crash once the candidate is gone must not resume the release (and load it again).
        await persist(run)
        if let slot = manager.slot(record.slot) {
            slot.setRouter(ActiveModelRouter())
            if let candidate = record.candidate, slot.roles.staged?.identity == candidate {
                _ = try? await manager.discardStaged(slot: record.slot, expecting: candidate)
            }
        }
        await finish(run, operation: operation, result: .succeeded, reason: reason, by: principal, from: remote,
            action: action, started: started)
    }

    private func finish(_ run: ReleaseRun, operation: SwapEvent.Operation, result: SwapEvent.Outcome,
                        reason: String, by principal: Principal, from remote: String?, action: String,
                        started: Date) async {
        // Carried out, whatever the recording below makes of it: the slot is free once the outcome is being told.
        defer { run.markSettled() }
        let record = run.engine.record
        await persistEnd(run)
        ReleaseMetrics.phase(record)
        await manager.record(SwapEvent(slot: record.slot, operation: operation, result: result,
            reason: repository.hidingRoot(reason), from: record.baseline, to: record.candidate))
        try? await auditOutcome(principal, remote, action, record.slot,
            modelPath: repository.relative(record.candidatePath), version: record.candidate?.version,
            sha256: record.candidate?.sha256, result: result == .succeeded ? "succeeded" : "failed",
            reason: repository.hidingRoot(reason) + "; baseline \(record.baseline?.id ?? "?") sha256 "
                + "\(record.baseline?.sha256 ?? "?")", started: started)
    }

    // MARK: Persistence and restart

    /// Writes the release's record as it is when the write's turn comes (the writes run one at a time, so the last one
    /// written is the latest state, whichever caller came last); a failure is logged.
    func persist(_ run: ReleaseRun) async {
        do { try await persistOrThrow(run) } catch {
            logger.error("cannot persist the release", metadata: ["slot": "\(run.engine.record.slot)",
                "error": "\(error)"])
        }
    }

    /// Writes a release's end (a rollback, an abort, a failure, a promotion), and when the store refuses, tries again in
    /// the background (1 s, 2 s, … up to a minute apart) until it is written: an end the disk refused (full, read-only
    /// for a while) would otherwise be resumed at the next start — a tripped or aborted candidate serving again.
    func persistEnd(_ run: ReleaseRun) async {
        do { return try await persistOrThrow(run) } catch {
            logger.error("cannot persist the release's end; trying again in the background",
                metadata: ["slot": "\(run.engine.record.slot)", "error": "\(error)"])
        }
        run.keep(Task { [self] in
            var wait = 1.0
            while !run.isStopping, !Task.isCancelled {
                try? await Task.sleep(for: .seconds(wait))
                do { return try await persistOrThrow(run) } catch {
                    logger.error("cannot persist the release's end; trying again",
                        metadata: ["slot": "\(run.engine.record.slot)", "error": "\(error)",
                            "retry_in_s": "\(Int(min(60, wait * 2)))"])
                }
                wait = min(60, wait * 2)
            }
        })
    }

    /// `persist`, throwing what the store threw. Nothing is written for a run no longer the slot's: every run of a
    /// slot writes the same file, and an ended release's last write (its outcome recorded after the slot was free)
    /// came after the next release's first, which a restart then never resumed.
    func persistOrThrow(_ run: ReleaseRun) async throws {
        let slot = run.engine.record.slot
        try await releaseWrites.run { [releaseStore, releaseRuns] in
            guard releaseRuns.withLock({ $0[slot] }) === run else { return }
            try releaseStore.save(run.engine.record)
        }
    }

    /// Resumes the releases a previous run left unfinished, each in the phase and step it had: the candidate is loaded
    /// again (its recorded sha256 verified) and routing starts once it is back. Called once the slots are up.
    ///
    /// A release is resumed only beside the model it was started beside. Two other cases:
    /// - recorded `promoting` with the candidate committed active: the process ended between the promotion's flip and
    ///   the release's end being recorded; recorded as promoted.
    /// - any other active model (changed while the service was down: an offline `yoloswap swap`, or a restore that
    ///   failed and fell back to the configured model): its figures would compare the candidate with a model that is
    ///   not its baseline, so it is not resumed but recorded as failed, saying which model is active.
    func resumeReleases(clock: any ReleaseClock = SystemReleaseClock()) async {
        let store = releaseStore
        let (records, unreadable) = await releaseWrites.run { store.load() }
        for name in unreadable {
            logger.error("release record unreadable: skipped", metadata: ["file": "\(name)"])
        }
        for var record in records where !record.phase.isTerminal {
            guard let active = manager.slot(record.slot)?.roles.active?.identity else {
                logger.warning("release not resumed: its slot has no active model", metadata: [
                    "slot": "\(record.slot)"])
                continue
            }
            if record.phase == .promoting, let candidate = record.candidate, active.sha256 == candidate.sha256,
               active.path.isByteEqual(to: record.candidatePath),
               // A candidate with the baseline's bytes is told apart by its file.
               candidate.sha256 != record.baseline?.sha256 || !record.candidatePath.isByteEqual(to: record.baseline?.path ?? "") {
                await recordInterruptedPromotion(record, clock: clock)
                continue
            }
            if let baseline = record.baseline, active.sha256 != baseline.sha256 {
                await recordBaselineGone(record, active: active, clock: clock)
                continue
            }
            // Written by a version that accepted what this one refuses (a share below the split's resolution, a
            // schedule that never serves the candidate): not resumed on terms a new release could not start on.
            do { try record.spec.validate() } catch {
                await failResume(record, reason: "not resumed after a restart: its spec is no longer accepted: "
                    + error.description, clock: clock)
                continue
            }
            if record.phase == .promoting { record.phase = record.promotedFrom ?? .running }
            // One cut off while loading goes on as a new one would (to running once its candidate is up).
            let phase = record.phase == .loading ? nil : record.phase
            guard let run = try? await installRun(record, clock: clock, bringingUp: true) else { continue }
            // Not judged until its candidate is loaded and checked again: a promotion due while the service was down
            // would otherwise flip in a candidate the golden set has not passed yet (the record keeps its phase).
            run.engine.update { $0.phase = .loading }
            // One time for the intent and its outcome: the outcome names its intent by it.
            let started = Date()
            try? await audit(Self.system, nil, "release.resume", record.slot,
                modelPath: repository.relative(record.candidatePath), version: record.candidate?.version,
                sha256: record.candidate?.sha256, result: "intent",
                reason: "resuming the \(record.phase.rawValue) release after a restart", started: started)
            let task = Task { [self] in
                await bringUp(run, by: Self.system, from: nil, started: started, resumed: true, restoring: phase)
            }
            run.bringUp.withLock { $0 = task }
            run.keep(task)
        }
    }

    private func recordInterruptedPromotion(_ record: ReleaseRecord, clock: any ReleaseClock) async {
        guard let run = try? await installRun(record, clock: clock) else { return }
        let reason = "promoted before a restart: the slot's committed active model is the candidate"
        run.engine.transition(from: [.loading, .running, .paused, .promoting], to: .promoted, action: "promoted",
            by: Self.system.name, detail: reason)
        await finish(run, operation: .releasePromote, result: .succeeded, reason: reason, by: Self.system, from: nil,
            action: "release.promote", started: Date())
    }

    private func recordBaselineGone(_ record: ReleaseRecord, active: ModelIdentity, clock: any ReleaseClock) async {
        let isCandidate = active.path.isByteEqual(to: record.candidatePath) || active.sha256 == record.candidate?.sha256
        let which = isCandidate ? "the release's candidate, though no promotion of it was recorded"
            : "not the release's candidate either"
        let reason = "not resumed after a restart: the slot's active model changed while the service was down; it is "
            + "\(active.id) (sha256 \(active.sha256)), \(which), and the release was started beside "
            + "\(record.baseline?.id ?? "?") (sha256 \(record.baseline?.sha256 ?? "?"))"
        await failResume(record, reason: reason, clock: clock)
    }

    /// Ends a release found running at a start that cannot be resumed, failed with `reason` (audited as the resume's
    /// outcome).
    private func failResume(_ record: ReleaseRecord, reason: String, clock: any ReleaseClock) async {
        guard let run = try? await installRun(record, clock: clock) else { return }
        let started = Date()
        try? await audit(Self.system, nil, "release.resume", record.slot,
            modelPath: repository.relative(record.candidatePath), version: record.candidate?.version,
            sha256: record.candidate?.sha256, result: "intent",
            reason: "resuming the \(record.phase.rawValue) release after a restart", started: started)
        run.engine.transition(from: [.loading, .running, .paused, .promoting], to: .failed, action: "failed",
            by: Self.system.name, detail: reason)
        await finish(run, operation: .releaseStart, result: .failed, reason: reason, by: Self.system, from: nil,
            action: "release.resume", started: started)
    }

    /// Stops every release's ticker and mirror pool and waits for the work under way (at shutdown; the records stay
    /// as they are, to be resumed by the next start).
    public func stopReleases() async {
        for run in releaseRuns.withLock({ Array($0.values) }) { await run.stop() }
    }
}
