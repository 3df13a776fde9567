import Crypto
import Fleet
import Foundation
import HotSwap
import Logging
import ModelSigning
import MQTT
import Primitives
import ServiceLifecycle

/// A command action beyond the built-in ones (`load`, `switch`, `rollback`, `discard`, `apply-desired`, `status`).
/// The service registers handlers by action name (`FleetAgent(handlers:)`): the releases API's `release-*` actions are
/// added this way (`ReleaseFleetCommand`). A handler runs after the command has been verified (signature, topic, freshness, replay) and admitted.
public protocol FleetCommandHandler: Sendable {
    /// Runs the command through the control plane, as `principal`.
    /// - Parameter payload: the verified payload's bytes, for fields `FleetCommand` does not name.
    /// - Returns: the output published with the result.
    /// - Throws: any error; the result is then `failed` with its description (a `Problem`'s detail).
    func run(_ command: FleetCommand, payload: [UInt8], by principal: Principal, control: ControlPlane) async throws
        -> FleetJSON?
    /// The payload fields the action reads beside the common ones (`FleetPayload.commonFields`): a command with any
    /// other is refused before it runs. Nil (the default): the handler checks its own.
    var fields: Set<String>? { get }
}

extension FleetCommandHandler {
    public var fields: Set<String>? { nil }
}

/// Adds a section to the device's status (the releases API reports a release's progress this way): called each time
/// the status is published; its value goes under `extensions.<name>`.
public typealias FleetStatusContributor = @Sendable () async -> FleetJSON?

/// This instance as a device of an MQTT fleet (`mqtt:` in the configuration).
///
/// It subscribes to its command topic and its group's retained desired-state topic (`FleetTopics`), with a persistent
/// session (QoS 1 commands sent while it is away wait at the broker). Every message must be a `SignedEnvelope` by a
/// key in `mqtt.trusted_keys`, signed for the topic it arrives on; commands must be fresh and unseen, documents newer
/// than the last one applied (`ReplayGuard`, whose memory is kept in `<state_dir>/mqtt-replay-guard.json`). Refusals
/// are audited (action `mqtt.command` / `mqtt.desired`, result `refused`), counted and, for commands, answered on the
/// result topic; a repeated command (a QoS 1 redelivery or a replay) is not run again, and its earlier result is
/// published again.
///
/// Admitted messages go through the same paths as the HTTP API: commands through `ControlPlane` (the same verifying
/// load pipeline, per-slot serialization and audit, with actor `mqtt:<client id>`), documents through
/// `DesiredStateReconciler` (source `mqtt:<client id>`). They run one at a time, in arrival order, while messages
/// go on being verified as they arrive: neither a long command nor a flood of messages that fail verification fills
/// the client's buffer, where signed commands would be dropped. At most `maxWaiting` admitted messages wait their
/// turn (beyond, refused `busy`), and at most `RefusalLimiter.perSecond` refusals a second are audited, logged and
/// answered (the others are counted, and the count goes into the next one recorded).
///
/// It publishes its status (retained) on every change, on every (re)connection and every `status_interval_s`, swap
/// events as they happen, and `offline` on a clean stop; the broker publishes `offline` as the will otherwise.
///
/// Thread-safety: a `Service`, run once by the service group.
public struct FleetAgent: Service {
    let settings: FleetSettings
    let control: ControlPlane
    let reconciler: DesiredStateReconciler
    let keys: [VerificationKey]
    let handlers: [String: any FleetCommandHandler]
    let statusContributors: [String: FleetStatusContributor]
    let memoryPath: String
    let logger: Logger
    /// The `mqtt` output of video streams: it publishes over this agent's client while the agent runs.
    public let streamOutput: FleetStreamOutput

    /// - Parameters:
    ///   - handlers: command actions beyond the built-in ones, by action name.
    ///   - statusContributors: sections added to the status, by name.
    /// - Throws: `KeyFileError` when a trusted key file cannot be read.
    public init(settings: FleetSettings, control: ControlPlane, reconciler: DesiredStateReconciler,
                stateDirectory: String, handlers: [String: any FleetCommandHandler] = [:],
                statusContributors: [String: FleetStatusContributor] = [:], logger: Logger) throws {
        self.settings = settings
        self.control = control
        self.reconciler = reconciler
        self.keys = try settings.trustedKeys.map { try VerificationKey(contentsOf: $0) }
        // The releases API's actions and status section are built in (`ReleaseFleetCommand`); given ones win.
        self.handlers = ReleaseFleetCommand.handlers.merging(handlers) { _, given in given }
        self.statusContributors = ["releases": ReleaseFleetCommand.status(control)]
            .merging(statusContributors) { _, given in given }
        self.memoryPath = URL(fileURLWithPath: stateDirectory).appendingPathComponent("mqtt-replay-guard.json").path
        self.logger = logger
        self.streamOutput = FleetStreamOutput(topics: settings.topics, device: settings.device)
    }

    public func run() async throws {
        let session = try FleetSession(agent: self)
        streamOutput.attach(session.client)
        defer { streamOutput.attach(nil) }
        await session.run()
    }
}

/// One run of the agent: the MQTT client, the replay guard and the results kept for repeated commands.
///
/// Thread-safety: all members may be used from any task (mutable state is in `Locked` values).
final class FleetSession: Sendable {
    let agent: FleetAgent
    let client: MQTTClient
    let replayGuard: ReplayGuard
    let principal: Principal
    let commandTopic: String
    let desiredTopic: String?
    /// The nonce of the group's document this run applied last (accepted by the reconciler).
    let appliedDocument = Locked<String?>(nil)
    /// The refused group document applied again on a timer, and how many times (`scheduleRetry`).
    let documentRetry = Locked<(nonce: String, attempt: Int)?>(nil)
    /// The newest group document refused `busy` (as received), admitted again once a turn ends: the retained
    /// document comes again only at the next subscription, days later maybe, and the rollout would wait for it.
    let busyDocument = Locked<(issuedAt: Int64, bytes: [UInt8])?>(nil)
    /// Results by command nonce, oldest first, for repeating them; the newest 1000 are kept.
    private let results = Locked<[(nonce: String, result: FleetCommandResult)]>([])
    private let statusRequests: AsyncStream<Void>.Continuation
    private let statusStream: AsyncStream<Void>
    private let writer = BlockingQueue(label: "yoloswap.mqtt-state")
    /// Admitted messages waiting their turn (and the one running), in arrival order.
    private let admitted: AsyncStream<Admitted>
    private let admit: AsyncStream<Admitted>.Continuation
    /// How many are in `admitted` or running; the command ids with a repeat among them; whether the agent has
    /// stopped taking new ones; whether one is running (`leave()` waits for it).
    private let turns = Locked((waiting: 0, repeats: Set<String>(), stopped: false, running: false))
    /// Whether the agent has begun to leave (publish `offline`, disconnect), and the statuses and command results
    /// being sent: `offline` goes out once those have been handed over, and no status starts after it (the retained
    /// status would say `online` after a clean stop, whose will the broker drops).
    private let leaving = Locked((started: false, statusSends: 0, resultSends: 0))
    /// The task publishing `offline` and disconnecting, once leaving began: `run()` returns only once it is done.
    /// Set under `leaving`'s lock.
    private let departure = Locked<Task<Void, Never>?>(nil)
    /// Whether `receive()` has started the client (set just before).
    private let connecting = Locked(false)
    /// The longest `leave()` waits for the command running and the messages being sent: a command's result is the
    /// only word its sender gets of it (a load that went on past a shutdown), within a usual termination grace
    /// (Kubernetes gives 30 s).
    static let leavingGrace: Duration = .seconds(10)
    let refusals = Locked(RefusalLimiter())
    /// Bounds the log lines of messages the client dropped (its buffer full) as the refusals' are bounded.
    let droppedLog = Locked(RefusalLimiter())

    /// The most admitted messages that wait their turn: each holds a verified payload (at most the client's message
    /// size), and a sender told `busy` sends again later.
    static let maxWaiting = 1024

    /// A verified, admitted message waiting its turn.
    enum Admitted: Sendable {
        case command(FleetCommand, payload: [UInt8], keyID: String)
        /// A command received before: answered, once the first has run, with the first one's result.
        case repeated(FleetCommand, earlier: ReplayGuard.Memory.Command)
        case document(FleetDesiredDocument, keyID: String, admission: ReplayGuard.DocumentAdmission)
    }

    var settings: FleetSettings { agent.settings }
    var control: ControlPlane { agent.control }
    var logger: Logger { agent.logger }

    init(agent: FleetAgent) throws {
        self.agent = agent
        let settings = agent.settings
        client = try MQTTClient(configuration: settings.clientConfiguration(
            will: FleetJSONCoding.encode(FleetStatusDTO.offline(device: settings.device, time: nil))))
        let (memory, problem) = ReplayGuard.readMemory(from: agent.memoryPath)
        if let problem {
            // Messages within the clock skew could then be replayed once.
            agent.logger.error("the MQTT replay memory could not be read; starting without it",
                metadata: ["path": "\(agent.memoryPath)", "error": "\(problem)"])
        }
        replayGuard = ReplayGuard(settings: .init(maxClockSkew: .seconds(settings.maxClockSkewSeconds)),
            restoring: memory)
        principal = Principal(name: "mqtt:\(settings.clientID)", role: .operator)
        commandTopic = settings.topics.command(device: settings.device)
        desiredTopic = settings.group.map { settings.topics.fleetDesired(group: $0) }
        (statusStream, statusRequests) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (admitted, admit) = AsyncStream<Admitted>.makeStream()
    }

    func run() async {
        client.subscribe(commandTopic)
        if let desiredTopic { client.subscribe(desiredTopic) }
        // The client connects in `receive()`, once the slots are up: connected before, it would take messages (a
        // persistent session's backlog, a flood) that nothing reads for as long as the models load, acknowledged to
        // the broker and held in its buffer, and drop signed ones once the buffer was full of others.
        logger.info("joining the MQTT fleet", metadata: ["broker": "\(settings.host):\(settings.port)",
            "device": "\(settings.device)", "group": "\(settings.group ?? "-")", "client_id": "\(settings.clientID)"])
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.watchConnection() }
                    group.addTask { await self.publishStatusOnRequest() }
                    group.addTask { await self.forwardSwapEvents() }
                    group.addTask { await self.requestStatusPeriodically() }
                    async let ran: Void = runAdmitted()
                    await receive()
                    turns.withLock { $0.stopped = true }
                    admit.finish()
                    await ran
                    group.cancelAll()
                }
            } onGracefulShutdown: {
                self.beginLeaving()
            }
        } onCancel: {
            // Cancelled (another service of the group failed): leaving as at a shutdown. A bare disconnect is clean,
            // so the broker would drop the will, and the retained status would say `online` after the process ended.
            self.beginLeaving()
        }
        // Cancelled, the client's stream ended at once and `receive()` returned before `leave()` was done: the process
        // could end with the running command's result and `offline` still to be sent.
        await departure.withLock({ $0 })?.value
        logger.info("left the MQTT fleet", metadata: ["device": "\(settings.device)"])
    }

    /// Stops admitting messages — nothing queued starts once the agent is leaving (its result could not be
    /// published) — and leaves.
    private func beginLeaving() {
        turns.withLock { $0.stopped = true }
        // Once: a graceful shutdown followed by a cancellation leaves once. The task is set in the same step, so
        // that `run()` never finds leaving begun and no task to wait for.
        leaving.withLock { leaving in
            guard !leaving.started else { return }
            leaving.started = true
            departure.withLock { $0 = Task { await leave() } }
        }
    }

    /// Publishes `offline` (retained), then disconnects cleanly; `receive()` ends with the client.
    private func leave() async {
        // The command running, its result and the statuses under way first (each send within its own timeout),
        // `leavingGrace` at most: before, a command that ended during the stop had its result refused by the
        // stopped client, and its sender never learnt whether it ran.
        let deadline = ContinuousClock.now + Self.leavingGrace
        func busy() -> Bool {
            turns.withLock { $0.running } || leaving.withLock { $0.statusSends > 0 || $0.resultSends > 0 }
        }
        while busy(), ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        if busy() {
            logger.warning("leaving the MQTT fleet with a command still running or its result not acknowledged",
                metadata: ["waited": "\(Self.leavingGrace)"])
        }
        // Not with a client never started (the slots never came up): it would only wait out the timeout.
        if connecting.value {
            let offline = FleetJSONCoding.encode(FleetStatusDTO.offline(device: settings.device, time: Date()))
            await send(settings.topics.status(device: settings.device), offline, retain: true, within: .seconds(2))
        }
        await client.stop()
    }

    // MARK: Loops

    /// Connects once the slots have been brought up, then verifies and admits (or refuses) messages as they arrive.
    private func receive() async {
        while !control.hasStarted {
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
        connecting.withLock { $0 = true }
        client.start()
        for await message in client.messages {
            if message.topic == commandTopic {
                // A command is one-shot: a retained copy comes again at every subscription (each reconnection, each
                // restart), a standing replay. The broker flags it so; the publication itself, delivered live, is not.
                guard !message.retained else {
                    await ignoreRetainedCommand()
                    continue
                }
                await admitCommand(message.payload)
            } else if message.topic == desiredTopic {
                await admitDocument(message.payload)
            }
        }
    }

    /// Runs admitted messages one at a time, in arrival order. Those still waiting when the agent stops are not run
    /// (each is logged and audited as such).
    private func runAdmitted() async {
        for await item in admitted {
            // Checked and marked in one step: `leave()`, which starts once `stopped` is set, sees this one running.
            let runs = turns.withLock { turns in
                if !turns.stopped { turns.running = true }
                return turns.running
            }
            if !runs {
                await notRun(item)
            } else {
                switch item {
                case .command(let command, let payload, let keyID):
                    let result = await execute(command, payload: payload, keyID: keyID)
                    remember(result, of: command)
                    publish(result, awaitedAtStop: true)
                    requestStatus()
                case .repeated(let command, let earlier):
                    await repeated(command, earlier: earlier)
                case .document(let document, let keyID, let admission):
                    await apply(document, keyID: keyID, admission: admission)
                }
            }
            endTurn(of: item)
            if let held = busyDocument.withLock({ held in
                defer { held = nil }
                return held
            }), !isStopping {
                await admitDocument(held.bytes)
            }
        }
    }

    /// Takes a turn for a message about to be admitted; false when `maxWaiting` are waiting, or the agent stopped.
    func takeTurn() -> Bool {
        turns.withLock { turns in
            guard turns.waiting < Self.maxWaiting, !turns.stopped else { return false }
            turns.waiting += 1
            return true
        }
    }

    /// Takes a turn for a repeat of `id` whose original has not been answered yet: at most one waits per command (a
    /// replayed message, sent any number of times, takes one turn at most), and none when the agent stopped.
    func takeRepeatTurn(id: String) -> Bool {
        turns.withLock { turns in
            guard !turns.stopped, turns.waiting < Self.maxWaiting, turns.repeats.insert(id).inserted else {
                return false
            }
            turns.waiting += 1
            return true
        }
    }

    /// Whether the agent has stopped taking messages (a shutdown has begun).
    var isStopping: Bool { turns.withLock { $0.stopped } }

    /// Gives back a turn taken for a message that was not admitted after all.
    func giveBackTurn() { turns.withLock { $0.waiting -= 1 } }

    /// Ends a queued message's turn: run, or not run.
    private func endTurn(of item: Admitted) {
        turns.withLock { turns in
            turns.waiting -= 1
            turns.running = false
            if case .repeated(let command, _) = item { turns.repeats.remove(command.id) }
        }
    }

    /// Queues an admitted message, whose turn is taken. Once the queue has ended (the agent's task cancelled) the
    /// message is handled as one the agent stopped before running.
    func enqueue(_ item: Admitted) async {
        if case .terminated = admit.yield(item) {
            endTurn(of: item)
            await notRun(item)
        }
    }

    private func watchConnection() async {
        for await event in client.events {
            switch event {
            case .connected(let sessionPresent):
                logger.info("MQTT connected", metadata: ["session_present": "\(sessionPresent)"])
                FleetMetrics.connected(true)
                requestStatus()
            case .disconnected(let reason):
                logger.warning("MQTT connection lost; reconnecting", metadata: ["reason": "\(reason)"])
                FleetMetrics.connected(false)
            case .connectFailed(let reason):
                logger.warning("MQTT connection failed; retrying", metadata: ["reason": "\(reason)"])
            case .messageDropped(let topic, let reason):
                // A flood that outruns verification drops a message at a time: a line each would be a log line per
                // message anyone can send. The count not logged goes into the next line.
                guard let skipped = droppedLog.withLock({ $0.admit(now: .now) }) else { continue }
                logger.warning("MQTT message dropped", metadata: ["topic": "\(topic)", "reason": "\(reason)",
                    "dropped_unlogged_before": "\(skipped)"])
            case .subscriptionRefused(let filter, let reason):
                // The device stays online but deaf on that topic: an error for whoever reads the log.
                logger.error("MQTT subscription refused: no commands or documents arrive on it",
                    metadata: ["filter": "\(filter)", "reason": "\(reason)"])
            }
        }
        FleetMetrics.connected(false)
    }

    func requestStatus() { statusRequests.yield() }

    /// Publishes the newest status on each request; requests made meanwhile collapse into one. None while the client
    /// is not connected: each would wait in its outbox, stale, sent in a burst at the reconnection (a broker away for
    /// days filled the outbox, and command results were then refused); the connection requests a fresh one.
    private func publishStatusOnRequest() async {
        for await _ in statusStream {
            guard client.isConnected else { continue }
            let payload = FleetJSONCoding.encode(await status())
            // Not once leaving has begun: `offline` is, or is about to be, the last status.
            guard leaving.withLock({ l -> Bool in
                if l.started { return false }
                l.statusSends += 1
                return true
            }) else { return }
            await send(settings.topics.status(device: settings.device), payload, retain: true, within: .seconds(3))
            leaving.withLock { $0.statusSends -= 1 }
        }
    }

    private func requestStatusPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(settings.statusIntervalSeconds))
            requestStatus()
        }
    }

    /// Publishes the swap events in the order they happened: one sender hands them to the client one after another
    /// (a task per event handed them over in whatever order the tasks ran: a switch could arrive before its load).
    /// It waits at most 2 s for each acknowledgement (an event not acknowledged still goes out, in its place, once
    /// connected); while the broker is away, the newest 1024 not yet handed over wait.
    private func forwardSwapEvents() async {
        let topic = settings.topics.events(device: settings.device)
        let (outgoing, pending) = AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingNewest(1024))
        let sender = Task { for await bytes in outgoing { await send(topic, bytes, retain: false, within: .seconds(2)) } }
        for await event in control.manager.events() {
            pending.yield(FleetJSONCoding.encode(event.mappingPaths(control.repository.hidingRoot)))
            requestStatus()
        }
        // The agent is stopping: what was not handed over goes with it (waiting 2 s each could hold the stop long).
        pending.finish()
        sender.cancel()
    }

    /// Publishes with QoS 1 and waits for the acknowledgement at most `timeout` (the message still goes out later: it
    /// stays queued in the client). Failures are logged: a status or event that cannot be sent now is replaced by the
    /// next one.
    func send(_ topic: String, _ payload: [UInt8], retain: Bool, within timeout: Duration) async {
        // An empty retained message would delete the topic's retained one (the device's status) at the broker.
        guard !payload.isEmpty else {
            logger.error("MQTT message not published: it could not be encoded", metadata: ["topic": "\(topic)"])
            return
        }
        let client = self.client
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await client.publish(topic, payload: payload, qos: .atLeastOnce, retain: retain) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw CancellationError()
                }
                try await group.next()
                group.cancelAll()
            }
        } catch is CancellationError {
            // Not acknowledged in time (offline): libmosquitto still sends it once connected, if it can.
            logger.debug("MQTT publish not acknowledged", metadata: ["topic": "\(topic)", "timeout": "\(timeout)"])
        } catch let error as MQTTError where error.kind == .stopped {
            // The agent is leaving: what was still in flight goes with it.
            logger.debug("MQTT publish dropped at the stop", metadata: ["topic": "\(topic)"])
        } catch {
            // Refused for good (too large, not authorized by the broker's ACL, too many in flight): say so, or a
            // command's result or the status would vanish without a trace on the device.
            logger.warning("MQTT message not published", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
    }

    // MARK: Status

    func status() async -> FleetStatusDTO {
        var slots: [SlotDTO] = []
        for name in control.manager.slotNames.sorted() {
            if let slot = try? await control.slotDTO(name) { slots.append(slot) }
        }
        let document = desiredTopic.flatMap { topic in
            replayGuard.lastDocument(topic: topic).map {
                FleetDocumentStatusDTO(topic: topic, issued_at: $0.issuedAt, nonce: $0.nonce)
            }
        }
        var extensions: [String: FleetJSON] = [:]
        for (name, contributor) in agent.statusContributors { extensions[name] = await contributor() }
        return FleetStatusDTO(device: settings.device, state: "online", time: Date(), group: settings.group,
            client_id: settings.clientID, slots: slots, desired: FleetDesiredStatusDTO(agent.reconciler.status),
            fleet_document: document, extensions: extensions.isEmpty ? nil : extensions)
    }

    // MARK: Results and the guard's memory

    /// Keeps a command's result for its repeats, by its nonce: an id may be used again by a later command once the
    /// first is past the clock skew, and a repeat of that one must not be answered with the first one's result.
    func remember(_ result: FleetCommandResult, of command: FleetCommand) {
        results.withLock { list in
            list.append((command.nonce, result))
            if list.count > 1000 { list.removeFirst(list.count - 1000) }
        }
    }

    /// The result of the command with this nonce, if it has run (and is among the newest 1000).
    func earlierResult(nonce: String) -> FleetCommandResult? {
        results.withLock { list in list.last { $0.nonce == nonce }?.result }
    }

    /// Publishes a command's result (or refusal) in a task of its own.
    /// - Parameter awaitedAtStop: `leave()` waits for it (a command's own result, the only word its sender gets of
    ///   whether it ran); refusals are not waited for once leaving began (a sender retrying `busy` would hold the
    ///   stop for the whole grace).
    func publish(_ result: FleetCommandResult, awaitedAtStop: Bool = false) {
        let bytes = FleetJSONCoding.encode(result)
        let topic = settings.topics.commandResult(device: settings.device)
        let counted = leaving.withLock { l in
            guard awaitedAtStop || !l.started else { return false }
            l.resultSends += 1
            return true
        }
        Task {
            await send(topic, bytes, retain: false, within: .seconds(30))
            if counted { leaving.withLock { $0.resultSends -= 1 } }
        }
    }

    /// Writes the replay guard's memory (atomically and durably, off the cooperative pool). Best effort: a failed write is
    /// logged; the memory in this process still refuses replays.
    func persistGuard() async {
        let (replayGuard, path) = (replayGuard, agent.memoryPath)
        let written: String? = await writer.run {
            // Taken in the write's turn, so that the last write is the latest memory whichever caller came last.
            let data = replayGuard.snapshot()
            // Durably (the file, then its folder, synced): a power cut must not leave an empty memory.
            do {
                try PrivateFiles.replaceDurably(atPath: path, with: [UInt8](data))
                return nil
            } catch { return "\(error)" }
        }
        if let written { logger.error("cannot keep the MQTT replay memory", metadata: ["error": "\(written)"]) }
    }

    static func digest(_ bytes: [UInt8]) -> String { Hex.string(SHA256.hash(data: bytes)) }
}
