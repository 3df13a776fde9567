import AuditLog
import Fleet
import Foundation
import HotSwap

// Verifying, admitting and running what arrives on the command and desired-state topics.

extension FleetSession {
    // MARK: Commands

    /// Verifies a command, admits it or refuses it, runs it, publishes and remembers its result.
    func handleCommand(_ bytes: [UInt8]) async {
        let digest = Self.digest(bytes)
        var command: FleetCommand?
        do throws(FleetRefusal) {
            let (payload, keyID) = try SignedEnvelope.open(bytes, trusting: agent.keys)
            let decoded = try FleetPayload.decode(FleetCommand.self, payload, kind: "command", topic: commandTopic)
            command = decoded
            try FleetPayload.check(decoded)
            if let earlier = try replayGuard.admit(decoded, digest: digest, now: Int64(Date().timeIntervalSince1970)) {
                await repeated(decoded, earlier: earlier)
                return
            }
            await persistGuard()
            FleetMetrics.received(kind: "command", outcome: "admitted")
            let result = await execute(decoded, payload: payload, keyID: keyID)
            remember(result)
            publish(result)
            requestStatus()
        } catch {
            await refuse(error, kind: "command", id: command?.id, action: command?.action)
        }
    }

    /// A command received again byte for byte: refused (audited), and its earlier result published again.
    private func repeated(_ command: FleetCommand, earlier: ReplayGuard.Memory.Command) async {
        let refusal = FleetRefusal(.replayed, "command '\(command.id)' was received before (a redelivery or a "
            + "replay); it is not run again")
        await audit("mqtt.command", result: "refused", reason: "\(refusal) (topic \(commandTopic))")
        FleetMetrics.refused(kind: "command", reason: .replayed)
        logger.warning("MQTT command refused", metadata: ["id": "\(command.id)", "reason": "\(refusal)"])
        var result = earlierResult(id: command.id) ?? FleetCommandResult(id: command.id, device: settings.device,
            action: command.action, status: "refused", detail: refusal.detail, reason: refusal.reason.rawValue)
        result.duplicate = true
        publish(result)
    }

    /// Records a refusal and, for a command unless `answer` is false, publishes it as the command's result.
    private func refuse(_ refusal: FleetRefusal, kind: String, id: String?, action: String?, answer: Bool = true)
        async
    {
        let about = [id.map { "command '\($0)'" }, action.map { "action \($0)" }].compactMap { $0 }
            .joined(separator: ", ")
        let topic = kind == "command" ? commandTopic : (desiredTopic ?? "")
        await audit("mqtt.\(kind)", result: "refused",
            reason: "\(refusal) (topic \(topic)\(about.isEmpty ? "" : ", \(about)"))")
        FleetMetrics.refused(kind: kind, reason: refusal.reason)
        logger.warning("MQTT \(kind) refused", metadata: ["reason": "\(refusal)", "id": "\(id ?? "-")"])
        if kind == "command" && answer {
            publish(FleetCommandResult(id: id, device: settings.device, action: action, status: "refused",
                detail: refusal.detail, reason: refusal.reason.rawValue))
        }
    }

    /// Runs an admitted command through the control plane (or a registered handler).
    private func execute(_ command: FleetCommand, payload: [UInt8], keyID: String) async -> FleetCommandResult {
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
        switch command.action {
        case "load":
            guard let model = command.model else { throw FleetRefusal(.malformed, "load needs a model") }
            let load = try await control.load(slot: try slot(), body: LoadBody(model: model,
                version: command.version, sha256: command.sha256, activate: command.activate ?? false),
                by: principal, from: nil)
            let status = await load.outcome()
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

    /// Verifies a group's document and, when it is newer than the last one (or this process has not applied it
    /// yet), applies it through the reconciler.
    func handleDocument(_ bytes: [UInt8]) async {
        guard let desiredTopic else { return }
        do throws(FleetRefusal) {
            let (payload, keyID) = try SignedEnvelope.open(bytes, trusting: agent.keys)
            let document = try FleetPayload.decode(FleetDesiredDocument.self, payload, kind: "desired",
                topic: desiredTopic)
            let admission = try replayGuard.admit(document, digest: Self.digest(bytes))
            let contentSHA = Self.digest(Array(document.document.utf8))
            if admission == .alreadyApplied && agent.reconciler.appliedContentSHA256 == contentSHA { return }
            if admission == .new { await persistGuard() }
            FleetMetrics.received(kind: "desired", outcome: "admitted")
            logger.info("fleet desired state received", metadata: ["topic": "\(desiredTopic)", "key_id": "\(keyID)",
                "issued_at": "\(document.issued_at)", "sha256": "\(contentSHA)"])
            do {
                let applied = try await agent.reconciler.apply(Array(document.document.utf8),
                    from: .mqtt(clientID: settings.clientID))
                logger.info("fleet desired state applied", metadata: ["generation": "\(applied.generation)",
                    "converged": "\(applied.converged)"])
            } catch {
                // The reconciler has recorded the refusal (status, metric, audit).
                logger.warning("fleet desired state not applied", metadata: ["error": "\(error)"])
            }
            requestStatus()
        } catch {
            await refuse(error, kind: "desired", id: nil, action: nil)
        }
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
