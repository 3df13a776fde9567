import AuditLog
import Fleet
import Foundation
import HotSwap

// Verifying, admitting and running what arrives on the command and desired-state topics.

extension FleetSession {
    // MARK: Commands

    /// Verifies a command and admits it (queued for its turn) or refuses it.
    func admitCommand(_ bytes: [UInt8]) async {
        let digest = Self.digest(bytes)
        var command: FleetCommand?
        do throws(FleetRefusal) {
            let (payload, keyID) = try SignedEnvelope.open(bytes, trusting: agent.keys)
            let decoded = try FleetPayload.decode(FleetCommand.self, payload, kind: "command", topic: commandTopic)
            command = decoded
            try FleetPayload.check(decoded)
            if let earlier = try replayGuard.admit(decoded, digest: digest, now: Int64(Date().timeIntervalSince1970)) {
                // A repeat takes no turn once its original has been answered (it is answered now), and at most one
                // while the original waits or runs: replaying a captured message cannot fill the queue.
                if earlierResult(nonce: earlier.nonce) != nil {
                    await repeated(decoded, earlier: earlier)
                } else if takeRepeatTurn(id: decoded.id) {
                    await enqueue(.repeated(decoded, earlier: earlier))
                } else {
                    FleetMetrics.refused(kind: "command", reason: .replayed)  // one repeat already waits
                }
                return
            }
            guard takeTurn() else {
                // Not remembered: the sender may send it again as it is.
                replayGuard.forget(decoded)
                throw busy()
            }
            await persistGuard()
            FleetMetrics.received(kind: "command", outcome: "admitted")
            await enqueue(.command(decoded, payload: payload, keyID: keyID))
        } catch {
            await refuse(error, kind: "command", id: command?.id, action: command?.action, message: digest)
        }
    }

    /// A retained copy of a command, delivered at a subscription: not run, not answered (it would be at every
    /// reconnection), recorded within the refusals' rate limit.
    func ignoreRetainedCommand() async {
        let refusal = FleetRefusal(.replayed, "a retained copy of a command, delivered again at the device's "
            + "subscription; commands run only as published (publish them without retain)")
        _ = await record(refusal, kind: "command", about: "")
    }

    func busy() -> FleetRefusal {
        isStopping ? FleetRefusal(.busy, "the device is stopping; send it again once it is back")
            : FleetRefusal(.busy, "\(Self.maxWaiting) admitted messages are waiting their turn; send it again later")
    }

    /// A command received again byte for byte: refused (audited), and its earlier result published again (it has
    /// run by now: it was admitted first, and admitted messages run in order).
    func repeated(_ command: FleetCommand, earlier: ReplayGuard.Memory.Command) async {
        let refusal = FleetRefusal(.replayed, "command '\(command.id)' was received before (a redelivery or a "
            + "replay); it is not run again")
        guard await record(refusal, kind: "command", about: "command '\(command.id)'") else { return }
        var result = earlierResult(nonce: earlier.nonce) ?? FleetCommandResult(id: command.id, device: settings.device,
            action: command.action, status: "refused", detail: refusal.detail, reason: refusal.reason.rawValue)
        result.duplicate = true
        publish(result)
    }

    /// Records a refusal and, for a command unless `answer` is false, publishes it as the command's result.
    /// - Parameter message: the refused message's SHA-256, answered with the refusal (its sender matches it by that
    ///   when the command's id could not be read).
    private func refuse(_ refusal: FleetRefusal, kind: String, id: String?, action: String?, answer: Bool = true,
                        message: String? = nil) async
    {
        let about = [id.map { "command '\($0)'" }, action.map { "action \($0)" }].compactMap { $0 }
            .joined(separator: ", ")
        // `answer: false` comes from running an admitted command: once per fresh signed message.
        guard await record(refusal, kind: kind, about: about, limited: answer) else { return }
        if kind == "command" && answer {
            var result = FleetCommandResult(id: id, device: settings.device, action: action, status: "refused",
                detail: refusal.detail, reason: refusal.reason.rawValue)
            result.message_sha256 = message
            publish(result)
        }
    }

    /// Counts a refusal and audits and logs it: always one only a key holder's fresh message gets (a command's
    /// `busy`, or a refusal while running: an unknown action), within the refusals' rate limit any other — unsigned
    /// junk, replays and stale copies of captured messages, which anyone who can publish on the topic could send by
    /// the thousand, and a document's `busy` (the group's document is retained: anyone subscribed can send it again).
    /// - Returns: whether it was recorded (and may be answered).
    private func record(_ refusal: FleetRefusal, kind: String, about: String, limited: Bool = true) async -> Bool {
        FleetMetrics.refused(kind: kind, reason: refusal.reason)
        var skipped = 0
        if limited && (refusal.reason != .busy || kind != "command") {
            guard let admitted = refusals.withLock({ $0.admit(now: .now) }) else {
                FleetMetrics.refusalNotRecorded()
                return false
            }
            skipped = admitted
        }
        let note = skipped == 0 ? "" : "; \(skipped) refusals before this one were not recorded or answered one by "
            + "one: more than \(RefusalLimiter.perSecond) a second"
        let topic = kind == "command" ? commandTopic : (desiredTopic ?? "")
        await audit("mqtt.\(kind)", result: "refused",
            reason: "\(refusal) (topic \(topic)\(about.isEmpty ? "" : ", \(about)")\(note))")
        logger.warning("MQTT \(kind) refused", metadata: ["reason": "\(refusal)", "about": "\(about)",
            "not_recorded_before": "\(skipped)"])
        return true
    }

    /// An admitted message the agent stopped before running: logged and audited (its sender gets no result), and a
    /// command forgotten by the replay guard, so that the sender may send it again as it was.
    func notRun(_ item: Admitted) async {
        if case .command(let command, _, _) = item {
            replayGuard.forget(command)
            await persistGuard()
        }
        let (kind, about): (String, String) = switch item {
        case .command(let command, _, _), .repeated(let command, _): ("command", "command '\(command.id)'")
        case .document(let document, _, _): ("desired", "document issued at \(document.issued_at)")
        }
        logger.warning("MQTT \(kind) not run: the agent stopped before its turn", metadata: ["about": "\(about)"])
        await audit("mqtt.\(kind)", result: "cancelled", reason: "\(about) was admitted, but the agent stopped "
            + "before its turn")
    }

    /// Runs an admitted command through the control plane (or a registered handler).
    func execute(_ command: FleetCommand, payload: [UInt8], keyID: String) async -> FleetCommandResult {
        func result(_ status: String, detail: String? = nil, reason: String? = nil, output: FleetJSON? = nil)
            -> FleetCommandResult
        {
            FleetCommandResult(id: command.id, device: settings.device, action: command.action, status: status,
                detail: detail, reason: reason, output: output)
        }
        let started = Date()
        let outcome: FleetCommandResult
        do {
            outcome = try await run(command, payload: payload, result: result)
        } catch let refusal as FleetRefusal {
            await refuse(refusal, kind: "command", id: command.id, action: command.action, answer: false)
            return result("refused", detail: refusal.detail, reason: refusal.reason.rawValue)
        } catch {
            outcome = result("failed", detail: control.repository.hidingRoot(Problem.from(error).detail))
        }
        FleetMetrics.received(kind: "command", outcome: outcome.status)
        await audit("mqtt.command", slot: command.slot, result: outcome.status,
            reason: "command '\(command.id)' (\(command.action)) signed by key \(keyID)"
                + (outcome.detail.map { ": \($0)" } ?? ""), started: started)
        return outcome
    }

    private func run(_ command: FleetCommand, payload: [UInt8],
                     result: (String, String?, String?, FleetJSON?) -> FleetCommandResult) async throws
        -> FleetCommandResult
    {
        func slot() throws -> String {
            guard let slot = command.slot, !slot.isEmpty else {
                throw FleetRefusal(.malformed, "\(command.action) needs a slot")
            }
            return slot
        }
        let hide = control.repository.hidingRoot
        if let fields = FleetPayload.builtInFields[command.action] ?? agent.handlers[command.action]?.fields {
            try FleetPayload.refuseUnknownFields(payload, of: command.action, allowed: fields)
        }
        switch command.action {
        case "load":
            guard let model = command.model else { throw FleetRefusal(.malformed, "load needs a model") }
            let load = try await control.load(slot: try slot(), body: LoadBody(model: model,
                version: command.version, sha256: command.sha256, activate: command.activate ?? false),
                by: principal, from: nil)
            let status = try await load.recordedOutcome()
            let output = FleetJSON.from(OperationDTO(load.operation, repository: control.repository))
            guard status.stage == .ready else {
                return result("failed", status.failure.map { hide($0.description) } ?? status.stage.rawValue, nil,
                    output)
            }
            return result("succeeded", nil, nil, output)
        case "switch":
            let event = try await control.switchStaged(slot: try slot(), by: principal, from: nil)
            return result("succeeded", nil, nil, FleetJSON.from(event.mappingPaths(hide)))
        case "rollback":
            let event = try await control.rollback(slot: try slot(), by: principal, from: nil)
            return result("succeeded", nil, nil, FleetJSON.from(event.mappingPaths(hide)))
        case "discard":
            let event = try await control.discardStaged(slot: try slot(), by: principal, from: nil)
            return result("succeeded", nil, nil, FleetJSON.from(event.mappingPaths(hide)))
        case "apply-desired":
            guard let document = command.document else {
                throw FleetRefusal(.malformed, "apply-desired needs a document")
            }
            let applied = try await agent.reconciler.apply(Array(document.utf8),
                from: .mqtt(clientID: settings.clientID))
            return result(applied.converged ? "succeeded" : "failed",
                applied.converged ? nil : "not every slot converged", nil, FleetJSON.from(applied))
        case "status":
            requestStatus()
            return result("succeeded", nil, nil, FleetJSON.from(await status()))
        default:
            guard let handler = agent.handlers[command.action] else {
                throw FleetRefusal(.unknownAction, "no action '\(command.action.prefix(64))' (actions: "
                    + (["apply-desired", "discard", "load", "rollback", "status", "switch"]
                        + agent.handlers.keys.sorted()).joined(separator: ", ") + ")")
            }
            let output = try await handler.run(command, payload: payload, by: principal, control: control)
            return result("succeeded", nil, nil, output)
        }
    }

    // MARK: Desired-state documents

    /// Verifies a group's document and admits it (queued for its turn) or refuses it.
    func admitDocument(_ bytes: [UInt8]) async {
        guard let desiredTopic else { return }
        do throws(FleetRefusal) {
            let (payload, keyID) = try SignedEnvelope.open(bytes, trusting: agent.keys)
            let document = try FleetPayload.decode(FleetDesiredDocument.self, payload, kind: "desired",
                topic: desiredTopic)
            guard takeTurn() else {
                // Admitted again when a turn ends (not at a stop: the next start has the retained document); the
                // newest kept, whatever order copies arrive in.
                if !isStopping {
                    busyDocument.withLock { held in
                        if (held?.issuedAt ?? .min) < document.issued_at { held = (document.issued_at, bytes) }
                    }
                }
                throw busy()
            }
            let admission: ReplayGuard.DocumentAdmission
            do {
                admission = try replayGuard.admit(document, digest: Self.digest(bytes),
                    now: Int64(Date().timeIntervalSince1970))
            } catch {
                giveBackTurn()
                throw error
            }
            // The document applied last, delivered again (a reconnection, a replay): nothing to queue once this
            // process has applied it — a document accepted since (over HTTP, from the watched file) is not undone by
            // a delivery again. After a restart it is applied again, and one refused (its model not copied yet) is
            // tried again at each delivery.
            if admission == .alreadyApplied && appliedDocument.value == document.nonce {
                giveBackTurn()
                return
            }
            if admission == .new {
                documentRetry.withLock { $0 = nil }  // a newer document: the older one's retry stops
                // And one held since a `busy` is no longer the newest.
                busyDocument.withLock { held in if (held?.issuedAt ?? .max) <= document.issued_at { held = nil } }
                await persistGuard()
            }
            await enqueue(.document(document, keyID: keyID, admission: admission))
        } catch {
            await refuse(error, kind: "desired", id: nil, action: nil)
        }
    }

    /// Applies an admitted document through the reconciler, unless it is the one applied last (the retained
    /// document delivered again on a reconnection).
    func apply(_ document: FleetDesiredDocument, keyID: String, admission: ReplayGuard.DocumentAdmission) async {
        let contentSHA = Self.digest(Array(document.document.utf8))
        if admission == .alreadyApplied && appliedDocument.value == document.nonce { return }
        // A newer document admitted since (queued behind this one, or applied already while this one waited for a
        // retry) is the group's: this one must not undo it.
        guard isNewestDocument(document) else {
            logger.info("fleet desired state superseded before its turn: not applied", metadata: [
                "issued_at": "\(document.issued_at)", "sha256": "\(contentSHA)"])
            return
        }
        FleetMetrics.received(kind: "desired", outcome: "admitted")
        logger.info("fleet desired state received", metadata: ["topic": "\(desiredTopic ?? "-")",
            "key_id": "\(keyID)", "issued_at": "\(document.issued_at)", "sha256": "\(contentSHA)"])
        do {
            let applied = try await agent.reconciler.apply(Array(document.document.utf8),
                from: .mqtt(clientID: settings.clientID))
            appliedDocument.withLock { $0 = document.nonce }
            logger.info("fleet desired state applied", metadata: ["generation": "\(applied.generation)",
                "converged": "\(applied.converged)"])
        } catch {
            // The reconciler has recorded the refusal (status, metric, audit).
            logger.warning("fleet desired state not applied", metadata: ["error": "\(error)"])
            scheduleRetry(document, keyID: keyID)
        }
        requestStatus()
    }

    /// Applies a group document the reconciler refused (its model not copied yet, the audit log unavailable) again
    /// after 10 s, then after twice that, up to 10 min, while it is the group's newest document admitted, no other
    /// document was accepted since, and the agent runs — as the watched file is read again — rather than only at its
    /// next delivery (a reconnection, days away).
    func scheduleRetry(_ document: FleetDesiredDocument, keyID: String) {
        // One timer at a time: a later failure (of a delivery's apply) replaces the timer set before it.
        let attempt = documentRetry.withLock { retry -> Int in
            let next = retry?.nonce == document.nonce ? (retry?.attempt ?? 0) + 1 : 1
            retry = (document.nonce, next)
            return next
        }
        let delay = min(Duration.seconds(10 * (1 << min(attempt - 1, 6))), .seconds(600))
        // A document the reconciler accepts meanwhile (over HTTP, from the file, a command) is not undone by a retry.
        let inForce = agent.reconciler.inForceSHA256
        logger.info("fleet desired state: applying it again later", metadata: ["attempt": "\(attempt)",
            "delay_s": "\(delay.components.seconds)"])
        Task { [self] in
            try? await Task.sleep(for: delay)
            guard !isStopping, let retry = documentRetry.value, retry.nonce == document.nonce,
                  retry.attempt == attempt, appliedDocument.value != document.nonce, isNewestDocument(document),
                  agent.reconciler.inForceSHA256 == inForce
            else { return }
            guard takeTurn() else {
                scheduleRetry(document, keyID: keyID)  // busy: later
                return
            }
            await enqueue(.document(document, keyID: keyID, admission: .new))
        }
    }

    /// Whether `document` is the group's document admitted last.
    private func isNewestDocument(_ document: FleetDesiredDocument) -> Bool {
        replayGuard.lastDocument(topic: document.topic)?.nonce == document.nonce
    }

    // MARK: Audit

    /// Appends an entry with this client as the actor. Best effort: a refusal or an outcome that cannot be recorded
    /// is still what it is (the control plane's own entries for the operation are not best effort).
    func audit(_ action: String, slot: String? = nil, result: String, reason: String, started: Date = Date()) async {
        guard let trail = control.audit else { return }
        _ = try? await trail.record(AuditEntry(time: started, actor: principal.name, action: action, slot: slot,
            result: result, reason: reason, durationMs: Date().timeIntervalSince(started) * 1000))
    }
}
