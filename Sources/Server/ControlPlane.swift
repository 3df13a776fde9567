import AuditLog
import Foundation
import HotSwap
import Logging
import Primitives
import Releases
import YOLO

/// The server's view of the control plane: the hot-swap manager plus the product → slot routes, the model
/// repository and the audit trail. Route handlers stay thin and call only this.
///
/// A load's outcome is audited when the load ends, by a task the control plane keeps until it has written its entry;
/// `drain()` waits for all of them (the service calls it before it stops).
///
/// Thread-safety: all members may be used concurrently.
public final class ControlPlane: Sendable {
    public let manager: ModelManager
    public let repository: ModelRepository
    public let audit: AuditTrail?
    let logger: Logger
    private let routeTable: Locked<[String: String]>
    private let pendingAudits = Locked<[UUID: Task<(LoadOperation.Status, Problem?), Never>]>([:])
    private let started = Locked(false)
    /// How many refusals the audit log has taken this second (`auditRefusal`), per caller: each token's name, and
    /// "" for callers without a valid token (at most one entry per configured token, and that one).
    private let refusals = Locked<[String: RefusalLimiter]>([:])
    /// Each slot's release, the latest one (see `ControlPlane+Releases.swift`).
    let releaseRuns = Locked<[String: ReleaseRun]>([:])
    /// Checks a candidate before it takes traffic: the golden-set gate by default (a no-op without `golden_set`).
    let candidateGate: Locked<(any CandidateGate)?>
    /// Where release records persist: `<state_dir>/releases` (nothing persists without a state directory).
    let releaseStore: ReleaseStore
    /// Runs the release store's blocking writes (an fsync each), one at a time, off the cooperative pool.
    let releaseWrites = BlockingQueue(label: "yoloswap.releases")
    /// Every detection request's outcome, whichever transport it came by (`/v1/detect`, `/v2`, gRPC): what the
    /// console's request panel shows (`GET /v1/stats`).
    let requestStats = RequestStats()

    public init(manager: ModelManager, repository: ModelRepository, routes: [String: String],
                audit: AuditTrail?, logger: Logger) {
        self.manager = manager
        self.repository = repository
        self.routeTable = Locked(routes)
        self.audit = audit
        self.logger = logger
        self.releaseStore = ReleaseStore(directory: repository.stateDirectory.map { $0 + "/releases" })
        self.candidateGate = Locked(GoldenSetGate(repository: repository, logger: logger))
    }

    /// Whether the slots have been brought up (`YOLOSwapServer.startSlots` has finished): `/readyz` is 503 before.
    public var hasStarted: Bool { started.value }

    /// Says the slots are up: until then changes to them are refused with 503 (`refuseDuringRelease`).
    /// `YOLOSwapServer.startSlots` calls it at its end; a tool that brings its slots up itself calls it once they are.
    public func markStarted() { started.withLock { $0 = true } }

    /// Counts a detection request that ended (answered 200, or failed with `status`) in the request metrics and the
    /// request statistics, whichever transport it came by. `slot` is the slot's name, or `unknown` for a name that
    /// is no slot (a name from a request never makes a series of its own).
    public func recordRequest(slot: String, model: String?, status: Int, milliseconds: Double) {
        if status == 200 {
            ServerMetrics.request(slot: slot, model: model ?? slot, status: status, seconds: milliseconds / 1000)
        } else {
            ServerMetrics.failedRequest(slot: slot, status: status)
        }
        guard manager.slot(slot) != nil else { return }
        requestStats.record(slot: slot, milliseconds: milliseconds, succeeded: status == 200)
    }

    /// Waits until every load outcome still to be audited has been written.
    public func drain() async {
        while let task = pendingAudits.withLock({ $0.values.first }) { _ = await task.value }
    }

    // MARK: Routes (product / work order → slot)

    public var routes: [String: String] { routeTable.withLock { $0 } }

    /// The slot for a request: explicit `slot`, else the product's route, else `default` (or the only slot).
    func slotName(explicit: String?, product: String?) throws -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let product, !product.isEmpty {
            guard let slot = routeTable.withLock({ $0[product] }) else {
                throw Problem.notFound("no route for product / work order '\(product)'")
            }
            return slot
        }
        let names = manager.slotNames
        if names.contains("default") || names.count != 1 { return "default" }
        return names[0]
    }

    /// Replaces the routes; every target must be an existing slot.
    func replaceRoutes(_ routes: [String: String], by principal: Principal, from remote: String?) async throws {
        let started = Date()
        // Bounded as a desired-state document's routes: the table goes into the audit log whole.
        let malformed = routes.keys.sorted().first { DesiredState.productProblem($0) != nil }
        if routes.count > DesiredState.Limits.routes || malformed != nil {
            let reason = malformed.map { "product '\($0.prefix(64).debugDescription.dropFirst().dropLast())' "
                + (DesiredState.productProblem($0) ?? "") }
                ?? "\(routes.count) routes; at most \(DesiredState.Limits.routes) are accepted"
            try await audit(principal, remote, "routes.replace", nil, result: "rejected", reason: reason,
                started: started)
            throw Problem.badRequest(reason)
        }
        let described = routes.map { "\($0.key) → \($0.value)" }.sorted().joined(separator: ", ")
        let unknown = routes.filter { manager.slot($0.value) == nil }
        guard unknown.isEmpty else {
            let reason = "unknown slots: "
                + unknown.map { "\($0.key) → \($0.value)" }.sorted().joined(separator: ", ")
            try await audit(principal, remote, "routes.replace", nil, result: "rejected", reason: reason,
                started: started)
            throw Problem.notFound(reason)
        }
        try await audit(principal, remote, "routes.replace", nil, result: "intent", reason: described, started: started)
        routeTable.withLock { $0 = routes }
        try await auditOutcome(principal, remote, "routes.replace", nil, result: "succeeded", reason: described,
            started: started)
    }

    // MARK: Operations

    /// Starts a load. Its intent is recorded before the load starts (a load that cannot be recorded is refused), its
    /// outcome when it ends, by a task kept until the entry is written (see `drain()`).
    /// - Parameter supersede: whether a different load under way for the slot is cancelled (else it is refused,
    ///   `loadInProgress`).
    func load(slot: String, body given: LoadBody, by principal: Principal, from remote: String?,
              supersede: Bool = true) async throws -> AuditedLoad
    {
        let started = Date()
        let body: LoadBody
        do { body = try given.checked() } catch {
            await auditRejectedLoad(principal, remote, slot, model: given.auditedModel,
                version: given.auditedVersion, sha256: given.auditedSHA256, reason: Problem.from(error).detail,
                started: started)
            throw error
        }
        let path: String
        var target: ExecutionTarget?
        var policy: SwapPolicy?
        do {
            try refuseDuringRelease(slot, "load")
            path = try await repository.resolve(body.model)
            if let provider = body.provider {
                guard let parsed = ExecutionTarget(parsing: provider) else {
                    throw Problem.badRequest("provider '\(provider)' is not cpu, cuda[:id] or tensorrt[:id]")
                }
                target = parsed
            }
            if let name = body.policy {
                guard let parsed = SwapPolicy(rawValue: name) else {
                    throw Problem.badRequest("policy '\(name)' is not availability-preserving, resource-preserving "
                        + "or auto")
                }
                policy = parsed
            }
        } catch {
            await auditRejectedLoad(principal, remote, slot, model: body.model, version: body.version,
                sha256: body.sha256, reason: Problem.from(error).detail, started: started)
            throw error
        }
        try await audit(principal, remote, "load", slot, modelPath: body.model, version: body.version,
            sha256: body.sha256, result: "intent", reason: body.activate == true ? "activate" : "stage",
            started: started)
        let op: LoadOperation
        do {
            // Again: a release may have started while the intent was written, and this load would supersede its
            // candidate's.
            try refuseDuringRelease(slot, "load")
            op = try await manager.load(LoadRequest(
                slot: slot, path: path, version: body.version, expectedSHA256: body.sha256,
                activate: body.activate ?? false, allowSchemaChange: body.allow_schema_change ?? false,
                policy: policy, target: target, allowDeviceChange: body.allow_device_change ?? false,
                requireSignature: body.require_signature ?? false), supersede: supersede)
        } catch {
            try? await audit(principal, remote, "load", slot, modelPath: body.model, version: body.version,
                sha256: body.sha256, result: "rejected", reason: Problem.from(error).detail, started: started)
            throw error
        }
        let id = UUID()
        let outcome = pendingAudits.withLock { pending in
            let task = Task { [self] () -> (LoadOperation.Status, Problem?) in
                let status = await op.wait()
                var unrecorded: Problem?
                do {
                    try await auditOutcome(principal, remote, "load", slot, modelPath: body.model,
                        version: body.version, sha256: status.identity?.sha256 ?? body.sha256,
                        keyID: status.signatureKeyID, result: status.stage == .ready ? "succeeded" : status.stage.rawValue,
                        reason: status.failure.map { repository.hidingRoot($0.description) }, started: started)
                } catch { unrecorded = Problem.from(error) }
                pendingAudits.withLock { _ = $0.removeValue(forKey: id) }
                return (status, unrecorded)
            }
            pending[id] = task
            return task
        }
        return AuditedLoad(operation: op, audited: outcome)
    }

    /// - Parameter expecting: the staged model the caller loaded; another one staged meanwhile is not switched in.
    func switchStaged(slot: String, expecting: ModelIdentity? = nil, by principal: Principal, from remote: String?)
        async throws -> SwapEvent
    {
        let staged = expecting ?? manager.slot(slot)?.roles.staged?.identity
        return try await audited("switch", slot, model: staged, principal, remote) {
            try await manager.switchStaged(slot: slot, expecting: expecting)
        }
    }

    func rollback(slot: String, by principal: Principal, from remote: String?) async throws -> SwapEvent {
        let standby = manager.slot(slot)?.roles.standby?.identity
        return try await audited("rollback", slot, model: standby, principal, remote) {
            try await manager.rollback(slot: slot)
        }
    }

    /// - Parameter expecting: the staged model the caller loaded; another one staged meanwhile is left staged.
    func discardStaged(slot: String, expecting: ModelIdentity? = nil, by principal: Principal, from remote: String?)
        async throws -> SwapEvent
    {
        let staged = expecting ?? manager.slot(slot)?.roles.staged?.identity
        return try await audited("discard", slot, model: staged, principal, remote) {
            try await manager.discardStaged(slot: slot, expecting: expecting)
        }
    }

    /// Closes the intents a previous run left without an outcome (it ended between the two): each gets an entry with
    /// result `interrupted`, saying what its slot serves now. Only entries from before `startedAt` count, so calls made
    /// since this process started are never taken for interrupted ones. Best effort, like the restore entries.
    ///
    /// An outcome carries its intent's time (both are written with the call's start) and closes that intent: a
    /// caller's overlapping calls of the same action on the same slot (a load superseding another, each with its own
    /// outcome) are told apart, and a refusal recorded before any intent (`rejected`, `refused`, at the refusal's own
    /// time) closes none. An outcome with no intent of its time (an older version's, an `interrupted` entry) closes
    /// the latest open intent of its action, slot and caller.
    /// - Returns: the intents closed.
    @discardableResult
    func reconcileInterruptedIntents(before startedAt: Date) async -> Int {
        guard let audit, let entries = try? await audit.entries(slot: nil, since: nil, limit: 10_000) else { return 0 }
        var open: [String: [AuditEntry]] = [:]
        for entry in entries.reversed() where entry.time < startedAt {
            let key = "\(entry.action)|\(entry.slot ?? "")|\(entry.actor)"
            if entry.result == "intent" {
                open[key, default: []].append(entry)
            } else if var intents = open[key], !intents.isEmpty {
                if let own = intents.lastIndex(where: { $0.timeMicroseconds == entry.timeMicroseconds }) {
                    intents.remove(at: own)
                } else if entry.result != "rejected" && entry.result != "refused" {
                    intents.removeLast()
                }
                open[key] = intents
            }
        }
        let unclosed = open.values.joined().sorted { ($0.id ?? 0) < ($1.id ?? 0) }
        for intent in unclosed {
            let serving = intent.slot.flatMap { manager.slot($0)?.roles.active?.identity }
            let now = serving.map { "slot '\(intent.slot ?? "")' serves \($0.id) (\($0.sha256.prefix(12)))" }
                ?? "nothing is served by its slot"
            _ = try? await audit.record(AuditEntry(
                actor: intent.actor, remoteAddress: intent.remoteAddress, action: intent.action, slot: intent.slot,
                modelPath: intent.modelPath, version: intent.version, sha256: intent.sha256, result: "interrupted",
                reason: "the process ended before the outcome of entry #\(intent.id ?? 0) was recorded; after the "
                    + "restart " + now))
        }
        return unclosed.count
    }

    /// Records a configured model's load at start (a slot with no committed state, or whose committed model could not
    /// be restored), as `system`. Best effort, like the restore entries.
    func auditConfiguredLoad(slot: String, model: String, version: String?, sha256: String?, result: String,
                             reason: String?, started: Date) async {
        try? await audit(Principal(name: "system", role: .admin), nil, "load", slot, modelPath: model,
            version: version, sha256: sha256, result: result, reason: reason.map(repository.hidingRoot),
            started: started)
    }

    /// Records a slot brought back at start-up (actor `system`). Best effort: the restore changes nothing that was
    /// not committed, and recorded, before.
    func auditRestore(_ event: SwapEvent) async {
        try? await audit(Principal(name: "system", role: .admin), nil, "restore", event.slot,
            modelPath: event.to.map { repository.relative($0.path) }, version: event.to?.version,
            sha256: event.to?.sha256, result: event.result.rawValue,
            reason: event.reason.map(repository.hidingRoot), started: event.time)
    }

    /// Records a refused management call (no token, an unknown token, too low a role). Best effort: a refusal that
    /// cannot be recorded is still a refusal.
    package func auditRefusal(_ principal: Principal?, _ remote: String?, action: String, reason: String) async {
        guard let note = admitRefusal(principal) else { return }
        try? await audit(principal ?? Principal(name: "unauthenticated", role: .viewer), remote,
            action.prefix(utf8Bytes: 256), nil, result: "refused", reason: reason.prefix(utf8Bytes: 1024) + note,
            started: Date())
    }

    /// Whether a refusal of the caller's is recorded now, with the note to add to it (empty, or how many were not
    /// recorded one by one before it); nil when it is not (it is counted). Bounded per caller: each entry is a synced
    /// write on the queue every change's intent waits in, and a caller looping on a change it may not make would
    /// otherwise grow the log as fast as it can send. Callers have limits of their own, so an anonymous flood cannot
    /// hide a known caller's refusals, nor one caller's another's.
    func admitRefusal(_ principal: Principal?) -> String? {
        let caller = principal?.name ?? ""
        guard let skipped = refusals.withLock({ $0[caller, default: RefusalLimiter()].admit(now: .now) }) else {
            ServerMetrics.refusalNotAudited()
            return nil
        }
        guard skipped > 0 else { return "" }
        let whose = principal.map { "\($0.name)'s" } ?? "unauthenticated"
        return " (\(skipped) \(whose) refusals before this one were not recorded one by one: more than "
            + "\(RefusalLimiter.perSecond) a second)"
    }

    /// Records a load refused before its intent (`rejected`, with the request's fields cut to their bounds), as the
    /// refused calls are: at most `RefusalLimiter.perSecond` a second a caller.
    func auditRejectedLoad(_ principal: Principal, _ remote: String?, _ slot: String, model: String?,
                           version: String?, sha256: String?, reason: String, started: Date) async {
        guard let note = admitRefusal(principal) else { return }
        try? await audit(principal, remote, "load", slot, modelPath: model, version: version, sha256: sha256,
            result: "rejected", reason: reason.prefix(utf8Bytes: 1024) + note, started: started)
    }

    /// Records the intent, makes the change, records the outcome. A change whose intent cannot be recorded is refused
    /// (503) before anything happens; one refused while the slot has a release (409) is recorded as a refused call,
    /// or, refused by the check made again once its intent is written (a release may start meanwhile), as its
    /// intent's outcome, `rejected`.
    /// - Parameter model: the model the change is about (the staged model a switch activates, the standby a rollback
    ///   activates, the staged model a discard drops), when the slot has one.
    func audited(_ action: String, _ slot: String, model: ModelIdentity?, _ principal: Principal,
                         _ remote: String?, _ body: () async throws -> SwapEvent) async throws -> SwapEvent {
        let started = Date()
        let path = model.map { repository.relative($0.path) }
        do { try refuseDuringRelease(slot, action) } catch {
            // Before any intent: a refused call, recorded as every refused call is (at most 20 a second a caller).
            let problem = Problem.from(error)
            await auditRefusal(principal, remote, action: "\(action) \(slot)",
                reason: "\(problem.status.code) \(problem.detail)")
            throw error
        }
        try await audit(principal, remote, action, slot, modelPath: path, version: model?.version,
            sha256: model?.sha256, result: "intent", reason: nil, started: started)
        let event: SwapEvent
        do {
            // Again: a release may have started while the intent was written, and this change would move the model
            // it compares against.
            try refuseDuringRelease(slot, action)
            event = try await body()
        } catch let refusal as ReleaseError {
            try? await audit(principal, remote, action, slot, modelPath: path, version: model?.version,
                sha256: model?.sha256, result: "rejected", reason: Problem.from(refusal).detail, started: started)
            throw refusal
        } catch {
            // Errors name model files (a rollback whose reload failed): show them relative to the repository.
            var problem = Problem.from(error)
            problem.detail = repository.hidingRoot(problem.detail)
            try? await audit(principal, remote, action, slot, modelPath: path, version: model?.version,
                sha256: model?.sha256, result: "failed", reason: problem.detail, started: started)
            throw problem
        }
        let changed = event.to ?? event.from
        try await auditOutcome(principal, remote, action, slot,
            modelPath: changed.map { repository.relative($0.path) }, version: changed?.version,
            sha256: changed?.sha256, result: event.result.rawValue, reason: event.reason.map(repository.hidingRoot),
            started: started)
        return event
    }

    /// Records the outcome of a change already made. When that fails the change stands (its intent is recorded):
    /// the caller is told so, with 503.
    func auditOutcome(_ principal: Principal, _ remote: String?, _ action: String, _ slot: String?,
                              modelPath: String? = nil, version: String? = nil, sha256: String? = nil,
                              keyID: String? = nil, result: String, reason: String?, started: Date) async throws {
        do {
            try await audit(principal, remote, action, slot, modelPath: modelPath, version: version, sha256: sha256,
                keyID: keyID, result: result, reason: reason, started: started)
        } catch var problem as Problem {
            problem.detail = "the \(action) was made and its intent recorded, but its outcome was not: "
                + problem.detail
            throw problem
        }
    }

    /// Appends an entry. A log that cannot be written makes the call fail with 503 (Audit Unavailable).
    func audit(_ principal: Principal, _ remote: String?, _ action: String, _ slot: String?,
                       modelPath: String? = nil, version: String? = nil, sha256: String? = nil, keyID: String? = nil,
                       result: String, reason: String?, started: Date) async throws {
        guard let audit else { return }
        do {
            try await audit.record(AuditEntry(
                time: started, actor: principal.name, remoteAddress: remote, action: action, slot: slot,
                modelPath: modelPath, version: version, sha256: sha256, signatureKeyID: keyID, result: result,
                reason: reason, durationMs: Date().timeIntervalSince(started) * 1000))
        } catch {
            logger.error("audit write failed", metadata: ["action": "\(action)", "error": "\(error)"])
            throw Problem(.serviceUnavailable, "Audit Unavailable",
                detail: "the audit log could not be written: \(repository.hidingRoot("\(error)"))")
        }
    }

    // MARK: Views

    func slotDTO(_ name: String) async throws -> SlotDTO {
        guard let slot = manager.slot(name) else { throw ControlError.unknownSlot(name) }
        let roles = slot.roles
        let op = await manager.latestOperation(slot: name)
        let lastFailure = manager.recentEvents(slot: name, limit: 50).first { $0.result == .failed }
        func model(_ m: ModelInstance?) -> ModelDTO? { m.map { ModelDTO($0, repository: repository) } }
        let inFlight = [roles.active, roles.staged, roles.standby].compactMap { $0?.inFlightCount }.reduce(0, +)
        return SlotDTO(
            name: name, generation: roles.generation, active: model(roles.active), staged: model(roles.staged),
            standby: model(roles.standby), in_flight: inFlight, queue_depth: slot.executor.queueDepth,
            operation: op.map { OperationDTO($0, repository: repository) },
            last_failure: lastFailure.map { FailureDTO(time: $0.time, operation: $0.operation.rawValue,
                reason: repository.hidingRoot($0.reason ?? "")) })
    }
}

/// A load started through the control plane: its operation, and its outcome once that is audited.
struct AuditedLoad: Sendable {
    let operation: LoadOperation
    fileprivate let audited: Task<(LoadOperation.Status, Problem?), Never>

    /// Suspends until the load has ended, its event is recorded and its outcome is in the audit log (when there is
    /// one): whoever is answered after it finds both there. Returns the load's final status.
    func outcome() async -> LoadOperation.Status { await audited.value.0 }

    /// `outcome()` for a caller that answers a client: a load made whose outcome could not be recorded throws (503,
    /// "the load was made and its intent recorded, but its outcome was not"), as switches and rollbacks answer; a
    /// failed one changed nothing and is answered with its failure.
    func recordedOutcome() async throws -> LoadOperation.Status {
        let (status, unrecorded) = await audited.value
        if let unrecorded, status.stage == .ready { throw unrecorded }
        return status
    }
}

/// At most `perSecond` refusals a second go into the audit log; the others are counted and the count is handed to the
/// next one admitted.
///
/// Thread-safety: a value, kept behind a lock.
struct RefusalLimiter {
    static let perSecond = 20
    private var windowStart: ContinuousClock.Instant?
    private var admitted = 0
    private var skipped = 0

    /// Whether a refusal at `now` is recorded: nil when not; otherwise how many were skipped before it.
    mutating func admit(now: ContinuousClock.Instant) -> Int? {
        if let start = windowStart, now - start < .seconds(1) {
            guard admitted < Self.perSecond else {
                skipped += 1
                return nil
            }
        } else {
            windowStart = now
            admitted = 0
        }
        admitted += 1
        defer { skipped = 0 }
        return skipped
    }
}
