import AuditLog
import Crypto
import Foundation
import HotSwap
import Primitives

/// Brings the server to a desired-state document through the control plane's own operations.
///
/// A document is checked whole before anything happens: its format (`DesiredState.parse`), then against this server
/// (every slot exists, every model path resolves inside the model repository, every route targets a slot). A refused
/// document changes nothing; the refusal is kept in the status, counted and audited.
///
/// An accepted document becomes a plan: for each slot whose active model differs from the document's, `load+switch`
/// (a load that stages the model through the full pipeline — digest, signature, warm-up — then a switch; an
/// activating load when the memory budget has no room for both and the policy may unload first), and
/// `routes.replace` when the document has routes that differ. The steps run through `ControlPlane` exactly as the
/// HTTP calls do — the same verification, the same per-slot serialization, audit entries whose actor is the source
/// (`http:<token>`, `configmap:<path>@<sha256>`) — different slots at once. A slot that already serves the document's
/// model is not touched, so applying a document again changes nothing and records nothing.
///
/// Applies run one after another, in the order they arrive.
///
/// A document that leaves a slot failed (a load refused by the memory budget, a file not yet copied, a full disk) is
/// applied again after `retryDelay`, then after twice that, up to `maxRetryDelay`, until every slot has converged or
/// another document is accepted — level-triggered, as a Kubernetes controller retries. A retry plans only what is
/// still off the document, so converged slots are not touched; each retry is audited like the first apply.
///
/// Thread-safety: all members may be used from any task.
public final class DesiredStateReconciler: Sendable {
    let control: ControlPlane
    private let state = Locked(State())
    /// Why the watched file was last not applied (logged as an error once, then at each rescan's retry as debug).
    private let lastFileFailure = Locked<String?>(nil)
    /// The apply under way: the next one waits for it.
    private let tail = Locked<Task<Void, Never>?>(nil)
    /// The first delay before a document with failed slots is applied again; it doubles with each retry.
    let retryDelay: Duration
    let maxRetryDelay: Duration
    /// The retry waiting to run, if any.
    private let pendingRetry = Locked<Task<Void, Never>?>(nil)

    struct State {
        var document: DesiredState?
        var contentSHA256: String?
        var source: String?
        var appliedAt: Date?
        var generation = 0
        var slots: [String: DesiredSlotState] = [:]
        var routesConverged: Bool?
        var lastRejection: DesiredRejectionDTO?
        /// The watched file's refusal recorded last (its content's SHA-256 and the reason): the same one found again
        /// when the watcher reads the file again is not recorded again. Cleared when a document is accepted.
        var recordedFileRefusal: String?
        var retry: DesiredRetryDTO?
        /// Slots (`<content sha256>\n<slot>`) whose activating load, under a policy that unloads first, failed, and
        /// why: a retry does not take the slot's model out again, nor stage it to be refused over budget again (see
        /// `converge`).
        var activatingFailed: [String: String] = [:]
    }

    /// - Parameters:
    ///   - retryDelay: the first delay before a document that left slots failed is applied again (30 s).
    ///   - maxRetryDelay: the longest delay between retries (10 min).
    public init(control: ControlPlane, retryDelay: Duration = .seconds(30), maxRetryDelay: Duration = .seconds(600)) {
        self.control = control
        self.retryDelay = retryDelay
        self.maxRetryDelay = max(retryDelay, maxRetryDelay)
    }

    deinit { pendingRetry.withLock { $0?.cancel() } }

    // MARK: Reading

    var status: DesiredStatusDTO {
        // What the slots serve is read outside the lock (the slots' own locks are not taken inside this one).
        let s = state.withLock { $0 }
        // Routes replaced by hand since (`PUT /v1/routes`) are not the document's: as a slot changed by hand is not.
        var routesConverged = s.routesConverged
        if routesConverged == true, let routes = s.document?.routes, routes != control.routes {
            routesConverged = false
        }
        return DesiredStatusDTO(observed_generation: s.generation, content_sha256: s.contentSHA256, source: s.source,
            applied_at: s.appliedAt, slots: Dictionary(uniqueKeysWithValues: s.slots.map { name, slot in
                (name, slot.dto(serving: served(name)))
            }), routes_converged: routesConverged, last_rejection: s.lastRejection, retry: s.retry)
    }

    /// Brings `yoloswap_desired_slot_condition` to what the status shows now: a slot changed by hand since it
    /// converged has every condition 0 (the others are set as their state changes). Called before each scrape.
    func refreshMetrics() {
        let slots = state.withLock { $0.slots }
        for (name, slot) in slots where slot.phase == .converged {
            let phase: DesiredSlotState.Phase? = slot.isChanged(serving: served(name)) ? nil : .converged
            // Set only while the slot's state is still the one read: an apply that changed it since sets its own.
            state.withLock { if $0.slots[name] == slot { DesiredMetrics.condition(slot: name, phase) } }
        }
    }

    /// What the slot serves now, recorded with its converged state.
    private func served(_ name: String) -> String? { control.manager.slot(name)?.roles.active?.identity.sha256 }

    var document: DesiredDocumentDTO? {
        state.withLock { s in
            guard let document = s.document, let sha = s.contentSHA256, let source = s.source,
                  let time = s.appliedAt
            else { return nil }
            return DesiredDocumentDTO(generation: s.generation, content_sha256: sha, source: source,
                applied_at: time, document: document)
        }
    }

    /// The SHA-256 of the document last accepted.
    public var appliedContentSHA256: String? { state.withLock { $0.contentSHA256 } }

    // MARK: Applying

    /// Checks a document and, unless `dryRun`, brings the server to it; returns once every step has ended.
    /// - Throws: `Problem` 422 for a refused document (naming the field), 503 when the audit log cannot be written.
    /// - Parameter reread: the watcher reading an unchanged file again after its refusal: the same refusal is not
    ///   recorded again.
    func apply(_ bytes: [UInt8], from source: DesiredStateSource, dryRun: Bool = false, attempt: Int = 0,
               reread: Bool = false) async throws -> DesiredApplyDTO
    {
        let result: Result<DesiredApplyDTO, Problem> = await serialized { [self] in
            do {
                return .success(try await applyNow(bytes, from: source, dryRun: dryRun, attempt: attempt,
                    reread: reread))
            } catch {
                return .failure(Problem.from(error))
            }
        }
        return try result.get()
    }

    /// Applies the document a file holds (the ConfigMap watcher's entry point): a refusal is in the status.
    /// - Parameter reread: the file is read again, unchanged, after it was refused (its refusal, if the same, is not
    ///   recorded again).
    /// - Returns: whether the document was accepted.
    @discardableResult
    public func applyFile(_ bytes: [UInt8], path: String, reread: Bool = false) async -> Bool {
        do {
            _ = try await apply(bytes, from: .configMap(path: path), reread: reread)
            lastFileFailure.withLock { $0 = nil }
            return true
        } catch {
            // A refused document is in the status and the log already; anything else (its intent could not be
            // recorded: the audit log unavailable) was said nowhere, the document silently not in force. Said once
            // as an error, not at every rescan's retry of the same file (10 s apart for as long as the cause lasts).
            let problem = Problem.from(error)
            if problem.status != .unprocessableContent {
                let repeated = lastFileFailure.withLock { last in
                    defer { last = problem.detail }
                    return reread && last == problem.detail
                }
                control.logger.log(level: repeated ? .debug : .error, "desired state file not applied",
                    metadata: ["path": "\(path)", "error": "\(problem.detail)"])
            }
            return false
        }
    }

    /// The SHA-256 of the document in force (the last accepted), if any.
    public var inForceSHA256: String? { state.withLock { $0.contentSHA256 } }

    /// Records that the watched file could not be read (missing, too large, not a regular file) as a refusal.
    public func refuseUnreadableFile(path: String, reason: String) async {
        await serialized { [self] in
            await reject(DesiredStateError(field: "", reason: reason), sha: "", source: .configMap(path: path),
                actor: "configmap:\(path)")
        }
    }

    private func applyNow(_ bytes: [UInt8], from source: DesiredStateSource, dryRun: Bool, attempt: Int,
                          reread: Bool) async throws -> DesiredApplyDTO
    {
        let started = Date()
        let sha = Hex.string(SHA256.hash(data: bytes))
        // A retry whose document is no longer the one in force (another was accepted while it waited for its turn)
        // must not bring the older one back.
        if attempt > 0, state.withLock({ $0.contentSHA256 }) != sha {
            return DesiredApplyDTO(changed: false, dry_run: false, converged: false, generation: status.observed_generation,
                content_sha256: sha, plan: [], status: status)
        }
        let actor = source.actor(contentSHA256: sha)
        let document: DesiredState
        let resolved: [String: String]
        do throws(DesiredStateError) {
            document = try DesiredState.parse(bytes)
            resolved = try await check(document)
        } catch {
            if !dryRun { await reject(error, sha: sha, source: source, actor: actor, reread: reread) }
            throw Problem(.unprocessableContent, "Invalid Desired State", detail: error.description)
        }
        let plan = self.plan(document, resolved: resolved)
        let current = state.withLock { ($0.contentSHA256, $0.generation) }
        let generation = current.0 == sha ? current.1 : (document.metadata?.generation ?? current.1 + 1)
        if dryRun || (current.0 == sha && plan.isEmpty) {
            if !dryRun {
                cancelRetry()
                // Nothing to do: every slot the document names serves what it asks (one that failed may have been
                // put right by hand since), which the status says.
                let serving = Dictionary(uniqueKeysWithValues: document.slots.keys.map { ($0, served($0)) })
                state.withLock { s in
                    if document.routes != nil { s.routesConverged = true }
                    for name in document.slots.keys {
                        let previous = s.slots[name]
                        // A converged slot now serving other bytes under the path the document names (a file
                        // replaced, loaded by hand) converged again: before, it stayed `ModelChanged` for good.
                        if previous?.phase == .converged {
                            s.slots[name]?.servedSHA256 = serving[name] ?? nil
                            continue
                        }
                        s.slots[name] = DesiredSlotState(phase: .converged, reason: "ModelActive", message: nil,
                            generation: generation, since: started, lastError: previous?.lastError,
                            servedSHA256: serving[name] ?? nil)
                    }
                }
                for name in document.slots.keys { DesiredMetrics.condition(slot: name, .converged) }
            }
            return DesiredApplyDTO(changed: !plan.isEmpty, dry_run: dryRun, converged: plan.isEmpty,
                generation: generation, content_sha256: sha, plan: plan, status: status)
        }
        try await record(actor, result: "intent", reason: (attempt > 0 ? "retry \(attempt), " : "")
            + "generation \(generation): " + (plan.isEmpty ? "no change" : plan.map(Self.describe).joined(separator: "; ")), started: started)
        // Only once this document is taking over: one refused before (its intent not recorded) leaves the last
        // one's retry in place.
        cancelRetry()
        let planned = Set(plan.compactMap(\.slot))
        var forgotten: [String] = []
        let serving = Dictionary(uniqueKeysWithValues: document.slots.keys.map { ($0, served($0)) })
        state.withLock { s in
            s.document = document
            s.contentSHA256 = sha
            s.source = actor
            s.appliedAt = started
            s.generation = generation
            s.recordedFileRefusal = nil
            // Blocks of documents no longer in force go (they are keyed by document: it grew for good).
            s.activatingFailed = s.activatingFailed.filter { $0.key.hasPrefix(sha + "\n") }
            // Slots an earlier document named and this one does not: no longer this document's to report.
            for name in s.slots.keys where document.slots[name] == nil {
                s.slots[name] = nil
                forgotten.append(name)
            }
            for name in document.slots.keys {
                let phase: DesiredSlotState.Phase = planned.contains(name) ? .progressing : .converged
                let previous = s.slots[name]
                s.slots[name] = DesiredSlotState(phase: phase,
                    reason: phase == .progressing ? "Loading" : "ModelActive", message: nil, generation: generation,
                    since: previous?.phase == phase ? previous!.since : started, lastError: previous?.lastError,
                    servedSHA256: phase == .converged ? serving[name] ?? nil : nil)
            }
            s.routesConverged = document.routes == nil ? nil : !plan.contains { $0.action == "routes.replace" }
        }
        DesiredMetrics.generation(generation)
        forgotten.forEach(DesiredMetrics.forget)
        for name in document.slots.keys {
            DesiredMetrics.condition(slot: name, planned.contains(name) ? .progressing : .converged)
        }

        let principal = Principal(name: actor, role: .operator)
        await withTaskGroup(of: Void.self) { group in
            for step in plan where step.action == "load+switch" {
                guard let name = step.slot, let slot = document.slots[name] else { continue }
                group.addTask { [self] in
                    let outcome = await converge(name, to: slot, by: principal, document: sha, attempt: attempt)
                    finish(name, outcome, generation: generation)
                }
            }
        }
        if let routes = document.routes, plan.contains(where: { $0.action == "routes.replace" }) {
            // Not onto a slot of the document that failed to take its model: that product's requests would go to a
            // slot serving something else, or nothing. The retry replaces them once it has converged.
            let failedTargets = state.withLock { s in
                Set(routes.values).filter { document.slots[$0] != nil && s.slots[$0]?.phase == .failed }
            }
            if failedTargets.isEmpty {
                do {
                    try await control.replaceRoutes(routes, by: principal, from: nil)
                    state.withLock { $0.routesConverged = true }
                } catch {
                    state.withLock { $0.routesConverged = false }
                }
            } else {
                control.logger.warning("desired routes held back: slots they point to failed", metadata: [
                    "slots": "\(failedTargets.sorted().joined(separator: ", "))"])
                state.withLock { $0.routesConverged = false }
            }
        }
        let final = status
        let failed = final.slots.filter { document.slots[$0.key] != nil && $0.value.conditions.contains {
            $0.type == "Failed" && $0.status == "True" } }
        let converged = failed.isEmpty && final.routes_converged != false
        try? await record(actor, result: converged ? "succeeded" : "failed",
            reason: "generation \(generation)" + (failed.isEmpty ? "" : ": failed slots "
                + failed.keys.sorted().joined(separator: ", ")), started: started)
        // Also when every failed slot failed its activating load, which retries do not try again (see `converge`): a
        // slot put right by hand meanwhile is found converged by the retry, and routes held back for it go in then.
        if !converged { scheduleRetry(bytes, from: source, attempt: attempt + 1) }
        return DesiredApplyDTO(changed: true, dry_run: false, converged: converged, generation: generation,
            content_sha256: sha, plan: plan, status: status)
    }

    // MARK: Retries

    /// Applies the same document again after the attempt's delay (`retryDelay` doubled per attempt, at most
    /// `maxRetryDelay`), unless another apply comes first.
    private func scheduleRetry(_ bytes: [UInt8], from source: DesiredStateSource, attempt: Int) {
        let doublings = min(attempt - 1, 30)
        let delay = min(retryDelay * (1 << doublings), maxRetryDelay)
        let at = Date().addingTimeInterval(delay.seconds)
        state.withLock { $0.retry = DesiredRetryDTO(attempt: attempt, at: at, delay_s: delay.seconds) }
        DesiredMetrics.retryScheduled()
        let task = Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard !Task.isCancelled, let self else { return }
            control.logger.info("desired state: retrying failed slots", metadata: ["attempt": "\(attempt)"])
            // A retry that could not run (its intent not recorded: the audit log unavailable; or refused now) is
            // tried again later, as a failed one is: retries go on until the document converges or is replaced.
            do { _ = try await apply(bytes, from: source, attempt: attempt) } catch {
                guard !Task.isCancelled else { return }
                control.logger.error("desired state: the retry could not run; tried again later", metadata: [
                    "attempt": "\(attempt)", "error": "\(Problem.from(error).detail)"])
                scheduleRetry(bytes, from: source, attempt: attempt + 1)
            }
        }
        pendingRetry.withLock { previous in
            previous?.cancel()
            previous = task
        }
    }

    private func cancelRetry() {
        pendingRetry.withLock { $0?.cancel(); $0 = nil }
        state.withLock { $0.retry = nil }
    }

    // MARK: Checking and planning

    /// Checks a parsed document against this server.
    /// - Returns: each slot's model path, resolved inside the repository.
    /// - Throws: `DesiredStateError` naming the field.
    private func check(_ document: DesiredState) async throws(DesiredStateError) -> [String: String] {
        let manager = control.manager
        var resolved: [String: String] = [:]
        for (name, slot) in document.slots.sorted(by: { $0.key < $1.key }) {
            guard manager.slot(name) != nil else {
                throw DesiredStateError(field: "slots.\(name)", reason: "no such slot on this server (slots: "
                    + manager.slotNames.joined(separator: ", ") + ")")
            }
            do { resolved[name] = try await control.repository.resolve(slot.model) } catch {
                throw DesiredStateError(field: "slots.\(name).model",
                    reason: control.repository.hidingRoot(Problem.from(error).detail))
            }
        }
        for (product, target) in (document.routes ?? [:]).sorted(by: { $0.key < $1.key })
        where manager.slot(target) == nil {
            throw DesiredStateError(field: "routes.\(product)", reason: "no such slot '\(target)' on this server")
        }
        return resolved
    }

    /// The steps from what the server runs now to the document.
    private func plan(_ document: DesiredState, resolved: [String: String]) -> [DesiredPlanStep] {
        var steps: [DesiredPlanStep] = []
        for (name, slot) in document.slots.sorted(by: { $0.key < $1.key }) {
            let active = control.manager.slot(name)?.roles.active
            if let active, let path = resolved[name], Self.serves(active, slot, path: path) { continue }
            let to = [slot.model, slot.version.map { "version \($0)" }, slot.sha256.map { "sha256 \($0.prefix(12))" }]
                .compactMap { $0 }.joined(separator: ", ")
            steps.append(DesiredPlanStep(action: "load+switch", slot: name,
                from: active.map { "\(control.repository.relative($0.identity.path)) (\($0.identity.id), sha256 "
                    + "\($0.identity.sha256.prefix(12)))" }, to: to))
        }
        if let routes = document.routes, routes != control.routes {
            func text(_ table: [String: String]) -> String {
                table.map { "\($0.key) → \($0.value)" }.sorted().joined(separator: ", ")
            }
            steps.append(DesiredPlanStep(action: "routes.replace", slot: nil, from: text(control.routes),
                to: text(routes)))
        }
        return steps
    }

    /// Whether the active model is the document's: the same file, and the digest, version and signature asked for.
    static func serves(_ active: ModelInstance, _ slot: DesiredState.Slot, path: String) -> Bool {
        active.identity.path.isByteEqual(to: path) && (slot.sha256 == nil || slot.sha256 == active.identity.sha256)
            && (slot.version == nil || slot.version == active.identity.version)
            && (!slot.require_signature || active.signatureKeyID != nil)
    }

    private static func describe(_ step: DesiredPlanStep) -> String {
        "\(step.action)\(step.slot.map { " \($0)" } ?? ""): \(step.from ?? "-") → \(step.to)"
    }

    // MARK: Converging a slot

    private enum Outcome {
        case converged
        case failed(reason: String, message: String)
    }

    /// Stages the slot's model through the control plane (an unsigned model refused in its verifying stage when the
    /// slot requires a signature: never parsed nor warmed up), then switches it in.
    ///
    /// Staging needs room for the active model and the new one together. When the memory budget has no room for
    /// both and the configured policy may unload the active model first (`resource-preserving`, `auto`), the model
    /// is loaded again as an activating load, which that policy runs as it would run an operator's: the slot's
    /// models are unloaded, then the new one is loaded and switched in. Under `availability-preserving` the slot
    /// stays failed, as an operator's load would. An activating load that failed (after the unload: the old model
    /// is brought back, but the slot served nothing meanwhile) is not tried again by the document's retries, only by
    /// a new apply (`attempt` 0): a model that fails its warm-up would otherwise take the slot down at every retry.
    private func converge(_ name: String, to slot: DesiredState.Slot, by principal: Principal, document: String,
                          attempt: Int) async -> Outcome {
        var body = LoadBody(model: slot.model, version: slot.version, sha256: slot.sha256, activate: false,
            allow_schema_change: slot.allow_schema_change, require_signature: slot.require_signature)
        let key = document + "\n" + name
        // A retry after the activating load failed: nothing is loaded, the slot keeps its reason. A new apply tries
        // again: its block goes (else a staging load failing for another reason left the old one blocking retries).
        if attempt == 0 {
            state.withLock { _ = $0.activatingFailed.removeValue(forKey: key) }
        } else if let reason = state.withLock({ $0.activatingFailed[key] }) {
            return .failed(reason: "LoadFailed", message: reason)
        }
        // A retry (no one asked for it now) leaves a load under way alone — an operator's fix of the slot — and fails
        // `loadInProgress`, to be tried again later; before, it cancelled it.
        let supersede = attempt == 0
        do {
            var status = try await control.load(slot: name, body: body, by: principal, from: nil,
                supersede: supersede).outcome()
            if status.stage != .ready, status.failure?.isOverBudget == true,
               control.manager.configuration.policy != .availabilityPreserving
            {
                body.activate = true
                status = try await control.load(slot: name, body: body, by: principal, from: nil,
                    supersede: supersede).outcome()
                let outcome = status.stage == .ready ? Outcome.converged : failed(status, slot)
                state.withLock { s in
                    if case .failed(_, let message) = outcome { s.activatingFailed[key] = message }
                    else { s.activatingFailed[key] = nil }
                }
                return outcome
            }
            guard status.stage == .ready else { return failed(status, slot) }
            // Only the model this load staged: one another caller staged meanwhile is not switched in under this
            // document's name (nor counted as converged).
            _ = try await control.switchStaged(slot: name, expecting: status.identity, by: principal, from: nil)
            return .converged
        } catch {
            let detail = control.repository.hidingRoot(Problem.from(error).detail)
            return .failed(reason: "OperationFailed", message: detail)
        }
    }

    private func failed(_ status: LoadOperation.Status, _ slot: DesiredState.Slot) -> Outcome {
        let reason = status.failure.map { control.repository.hidingRoot($0.description) } ?? status.stage.rawValue
        if slot.require_signature, case .signatureRejected? = status.failure {
            return .failed(reason: "SignatureRequired", message: reason)
        }
        return .failed(reason: "LoadFailed", message: reason)
    }

    private func finish(_ name: String, _ outcome: Outcome, generation: Int) {
        let now = Date()
        let phase: DesiredSlotState.Phase
        switch outcome {
        case .converged:
            phase = .converged
            let sha = served(name)
            state.withLock { $0.slots[name] = DesiredSlotState(phase: .converged, reason: "ModelActive",
                message: nil, generation: generation, since: now, lastError: $0.slots[name]?.lastError,
                servedSHA256: sha) }
        case .failed(let reason, let message):
            phase = .failed
            state.withLock { $0.slots[name] = DesiredSlotState(phase: .failed, reason: reason, message: message,
                generation: generation, since: now, lastError: message) }
        }
        DesiredMetrics.condition(slot: name, phase)
    }

    // MARK: Refusals, audit, serialization

    private func reject(_ error: DesiredStateError, sha: String, source: DesiredStateSource, actor: String,
                        reread: Bool = false) async {
        // The watched file read again, unchanged, until it is accepted: the same refusal is recorded once. Any other
        // refusal (a PUT, an MQTT message, the file's first read) is recorded each time.
        let key = sha + "\n" + error.description
        let repeated = state.withLock { s -> Bool in
            let same = reread && s.recordedFileRefusal == key
            s.lastRejection = DesiredRejectionDTO(time: Date(), source: actor, content_sha256: sha,
                reason: error.description)
            if case .configMap = source { s.recordedFileRefusal = key }
            return same
        }
        if repeated { return }
        DesiredMetrics.rejected(source: source)
        // At most `RefusalLimiter.perSecond` a second a source are recorded and logged, as refused calls are (a
        // caller looping on a bad document would otherwise grow the log as fast as it sends); the next one recorded
        // says how many were not.
        guard let note = control.admitRefusal(Principal(name: source.sender, role: .viewer)) else { return }
        control.logger.warning("desired state refused", metadata: ["source": "\(actor)", "reason": "\(error)"])
        try? await record(actor, result: "rejected", reason: error.description + note, started: Date())
    }

    /// Appends a `desired.apply` entry. A log that cannot be written refuses the apply (503) before any change.
    private func record(_ actor: String, result: String, reason: String, started: Date) async throws {
        guard let audit = control.audit else { return }
        do {
            try await audit.record(AuditEntry(time: started, actor: actor, action: "desired.apply", result: result,
                reason: reason, durationMs: Date().timeIntervalSince(started) * 1000))
        } catch {
            throw Problem(.serviceUnavailable, "Audit Unavailable",
                detail: "the audit log could not be written: \(control.repository.hidingRoot("\(error)"))")
        }
    }

    /// Runs `body` after every apply that arrived before it has ended.
    private func serialized<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
        let task: Task<T, Never> = tail.withLock { tail in
            let previous = tail
            let task = Task {
                _ = await previous?.value
                return await body()
            }
            tail = Task { _ = await task.value }
            return task
        }
        return await task.value
    }
}
