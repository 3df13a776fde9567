import Fleet
import Foundation
import Logging
import ModelSigning
import MQTT
import Primitives
import Synchronization
import TestSupport
import Testing

@testable import Server

/// The fleet agent in process (real slots over fake backends, a real broker): the extension points another API
/// plugs into — a command action of its own and a section of the status.
@Suite("Fleet agent: command handlers and status sections", .serialized, .timeLimit(.minutes(5)))
struct FleetAgentTests {
    /// A command action beyond the built-in ones: answers with the slot, a field of its own and the caller.
    struct EchoHandler: FleetCommandHandler {
        func run(_ command: FleetCommand, payload: [UInt8], by principal: Principal, control: ControlPlane)
            async throws -> FleetJSON?
        {
            let fields = try JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] ?? [:]
            guard control.manager.slot(command.slot ?? "") != nil else { throw CancellationError() }
            return .object(["slot": .string(command.slot ?? ""), "percent": .number(fields["percent"] as? Double ?? -1),
                            "by": .string(principal.name)])
        }
    }

    /// Collects every message a client receives, for polling with a deadline.
    final class Inbox: Sendable {
        let messages = Locked<[MQTTMessage]>([])

        func first(on topic: String, timeout: Duration = .seconds(60), where matches: ([String: Any]) -> Bool) async
            -> [String: Any]?
        {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                let found = messages.value.lazy.filter { $0.topic == topic }
                    .compactMap { (try? JSONSerialization.jsonObject(with: Data($0.payload))) as? [String: Any] }
                    .first(where: matches)
                if let found { return found }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
    }

    @Test("a registered action runs with the payload's own fields as mqtt:<client id>; an unregistered one is refused; contributed status sections are published")
    func extensionPoints() async throws {
        let rig = try await Rig(handlers: ["release.start": EchoHandler()],
            statusContributors: ["release": { .object(["progress": .number(42)]) }])
        let (inbox, topics) = (rig.inbox, rig.topics)

        // The retained status carries the contributed section (and says the agent is up and subscribed).
        let status = await inbox.first(on: topics.status(device: "dev-x")) { $0["state"] as? String == "online" }
        let extensions = status?["extensions"] as? [String: Any]
        #expect((extensions?["release"] as? [String: Any])?["progress"] as? Double == 42, "\(status ?? [:])")

        func send(id: String, action: String, extra: [String: Any]) async throws {
            try await rig.send(id: id, action: action, extra: extra)
        }
        try await send(id: "r1", action: "release.start", extra: ["percent": 10])
        try await send(id: "r2", action: "release.nope", extra: [:])
        let resultTopic = topics.commandResult(device: "dev-x")
        let started = await inbox.first(on: resultTopic) { $0["id"] as? String == "r1" }
        #expect(started?["status"] as? String == "succeeded", "\(started ?? [:])")
        let output = started?["output"] as? [String: Any]
        #expect(output?["slot"] as? String == "line2")
        #expect(output?["percent"] as? Double == 10)
        #expect(output?["by"] as? String == "mqtt:dev-x-client")
        let unknown = await inbox.first(on: resultTopic) { $0["id"] as? String == "r2" }
        #expect(unknown?["status"] as? String == "refused")
        #expect(unknown?["reason"] as? String == "unknown_action")
        #expect((unknown?["detail"] as? String)?.contains("release.start") == true)

        // The releases API's own actions are built in: a canary started, shown in the status, aborted.
        try await send(id: "r3", action: "release-start", extra: [
            "slot": "default", "release": [
                "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary", "steps": [["percent": 50]],
            ],
        ])
        let release = await inbox.first(on: resultTopic) { $0["id"] as? String == "r3" }
        #expect(release?["status"] as? String == "succeeded", "\(release ?? [:])")
        #expect((release?["output"] as? [String: Any])?["phase"] as? String == "running")
        #expect((release?["output"] as? [String: Any])?["started_by"] as? String == "mqtt:dev-x-client")
        // The status is published every second: one taken after the release started shows it running.
        let withRelease = await inbox.first(on: topics.status(device: "dev-x")) {
            ((($0["extensions"] as? [String: Any])?["releases"] as? [String: Any])?["default"] as? [String: Any])?[
                "phase"] as? String == "running"
        }
        let shown = ((withRelease?["extensions"] as? [String: Any])?["releases"] as? [String: Any])?["default"]
        #expect((shown as? [String: Any])?["phase"] as? String == "running", "\(withRelease ?? [:])")
        #expect((shown as? [String: Any])?["candidate_percent"] as? Double == 50)
        try await send(id: "r4", action: "release-abort", extra: ["slot": "default"])
        let aborted = await inbox.first(on: resultTopic) { $0["id"] as? String == "r4" }
        #expect((aborted?["output"] as? [String: Any])?["phase"] as? String == "aborted", "\(aborted ?? [:])")
        try await send(id: "r5", action: "release-start", extra: ["slot": "default"])
        let malformed = await inbox.first(on: resultTopic) { $0["id"] as? String == "r5" }
        #expect(malformed?["status"] as? String == "refused", "\(malformed ?? [:])")
        // A misspelt gate is refused, named, as over HTTP.
        try await send(id: "r6", action: "release-start", extra: ["slot": "default", "release": [
            "model": "synthetic/yolov5-nc80-320-identity.onnx", "strategy": "canary", "rules": ["rollbackIf": [:]],
        ]])
        let typo = await inbox.first(on: resultTopic) { $0["id"] as? String == "r6" }
        #expect(typo?["status"] as? String == "refused", "\(typo ?? [:])")
        #expect(typo?["detail"] as? String == "release: unknown key: rules.rollbackIf", "\(typo ?? [:])")

        // A field the action does not read is refused, named, before anything runs (before, this load ran with the
        // misspelt `activate` dropped: switched in where it was to be staged); an explicit null counts as absent.
        let manager = rig.harness.control.manager
        let lastLoad = await manager.latestOperation(slot: "line2")?.id
        try await send(id: "r7", action: "load", extra: [
            "model": "synthetic/yolov5-nc80-416-identity.onnx", "actvate": false, "version": NSNull(),
        ])
        let misspelt = await inbox.first(on: resultTopic) { $0["id"] as? String == "r7" }
        #expect(misspelt?["status"] as? String == "refused" && misspelt?["reason"] as? String == "malformed",
            "\(misspelt ?? [:])")
        #expect((misspelt?["detail"] as? String)?.hasPrefix("load does not take the field 'actvate' (it takes: "
            + "action, activate, id,") == true, "\(misspelt ?? [:])")
        #expect(await manager.latestOperation(slot: "line2")?.id == lastLoad)
        try await send(id: "r8", action: "release-abort", extra: ["slot": "default", "force": true, "why": "x"])
        let extra = await inbox.first(on: resultTopic) { $0["id"] as? String == "r8" }
        #expect(extra?["detail"] as? String == "release-abort does not take the fields 'force', 'why' (it takes: "
            + "action, id, issued_at, kind, nonce, slot, topic)", "\(extra ?? [:])")

        await rig.stop()
    }

    /// A command that holds its turn (a long load, say) while more than the client's buffer of messages that fail
    /// verification arrive, then a signed command: the junk is refused as it arrives, at most
    /// `RefusalLimiter.perSecond` a second recorded, and the signed command is not pushed out — it runs once the
    /// first is done, in order.
    @Test("a long command and a flood of unverifiable messages do not push signed commands out; refusals are bounded")
    func floodDuringLongCommand() async throws {
        let hold = HoldHandler()
        let rig = try await Rig(handlers: ["release.start": EchoHandler(), "hold": hold])
        let resultTopic = rig.topics.commandResult(device: "dev-x")
        #expect(await rig.inbox.first(on: rig.topics.status(device: "dev-x")) { $0["state"] as? String == "online" }
            != nil)
        let started = ContinuousClock.now
        try await rig.send(id: "long", action: "hold", extra: [:])
        #expect(await eventually(timeout: .seconds(30)) { hold.running.load(ordering: .sequentiallyConsistent) })
        // More junk than the client buffers (1024), in bursts: before, the agent handled messages one at a time,
        // so all of it waited behind the held command and the client dropped what did not fit — the signed command
        // last of all.
        let junk = 1500
        for burst in stride(from: 0, to: junk, by: 250) {
            for index in burst..<min(burst + 250, junk) {
                try await rig.peer.publish(rig.topics.command(device: "dev-x"), payload: Array("junk \(index)".utf8))
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        // One more past the limiter's second: recorded, saying how many before it were not (the flood may have come
        // within one second).
        try await Task.sleep(for: .milliseconds(1100))
        try await rig.peer.publish(rig.topics.command(device: "dev-x"), payload: Array("junk \(junk)".utf8))
        try await rig.send(id: "after", action: "release.start", extra: ["percent": 5])
        try await Task.sleep(for: .milliseconds(500))
        func answered() -> [String] {
            rig.inbox.messages.value.filter { $0.topic == resultTopic }
                .compactMap { (try? JSONSerialization.jsonObject(with: Data($0.payload))) as? [String: Any] }
                .compactMap { $0["id"] as? String }
        }
        #expect(!answered().contains("after"), "the second command ran before the first was done")
        hold.release()
        let long = await rig.inbox.first(on: resultTopic) { $0["id"] as? String == "long" }
        let after = await rig.inbox.first(on: resultTopic) { $0["id"] as? String == "after" }
        #expect(long?["status"] as? String == "succeeded", "\(long ?? [:])")
        #expect(after?["status"] as? String == "succeeded", "\(after ?? [:])")
        let order = answered()
        #expect(order.firstIndex(of: "long") ?? .max < order.firstIndex(of: "after") ?? -1, "\(order)")
        // Refusals recorded: at most the limit per second of the run (a window per second, one more for its edge).
        let seconds = Int((ContinuousClock.now - started).components.seconds) + 2
        let refused = try await rig.harness.auditEntries().filter {
            $0.action == "mqtt.command" && $0.result == "refused"
        }
        #expect(!refused.isEmpty && refused.count <= RefusalLimiter.perSecond * seconds,
            "\(refused.count) refusals recorded in about \(seconds) s")
        #expect(refused.contains { $0.reason?.contains("were not recorded or answered one by one") == true })
        // Each refusal recorded is answered (without an id: junk has none), none beyond; answers are published by
        // tasks of their own, so the last may still be on its way.
        func refusalsAnswered() -> Int {
            rig.inbox.messages.value.filter { $0.topic == resultTopic }
                .compactMap { (try? JSONSerialization.jsonObject(with: Data($0.payload))) as? [String: Any] }
                .filter { $0["status"] as? String == "refused" }.count
        }
        #expect(await eventually(timeout: .seconds(60)) { refusalsAnswered() == refused.count },
            "\(refusalsAnswered()) answered, \(refused.count) recorded")
        await rig.stop()
    }
}

extension FleetAgentTests {
    @Test("a group document superseded while it waited for its turn is not applied over the newer one")
    func supersededDocumentSkipped() async throws {
        let hold = HoldHandler()
        let rig = try await Rig(handlers: ["hold": hold], group: "line-a")
        #expect(await rig.inbox.first(on: rig.topics.status(device: "dev-x")) { $0["state"] as? String == "online" }
            != nil)
        try await rig.send(id: "long", action: "hold", extra: [:])
        #expect(await eventually(timeout: .seconds(30)) { hold.running.load(ordering: .sequentiallyConsistent) })
        // Both documents arrive while the command holds the turn: the first names a model not copied yet, the
        // second puts it right.
        let now = Int64(Date().timeIntervalSince1970)
        let head = "apiVersion: yoloswap/v1\nkind: DesiredState\nslots:\n  line2: { model: synthetic/"
        try await rig.sendDocument(head + "not-copied-yet.onnx }\n", issuedAt: now - 1)
        let good = head + "yolov5-nc80-416-identity.onnx }\n"
        let newer = try await rig.sendDocument(good, issuedAt: now)
        let memory = rig.folder.file("mqtt-replay-guard.json")
        #expect(await eventually(timeout: .seconds(30)) {
            (try? String(contentsOfFile: memory, encoding: .utf8))?.contains(newer) == true
        })
        hold.release()
        let goodSHA = FleetCommandResult.messageSHA256(Array(good.utf8))
        #expect(await eventually(timeout: .seconds(30)) { rig.reconciler.inForceSHA256 == goodSHA })
        // Before, the older document was applied first: refused (its model missing), with a retry armed that
        // applied it again over the newer one — every 10 s, and once its model was copied, for good.
        let rejected = try await rig.harness.auditEntries().filter {
            $0.action == "desired.apply" && $0.result == "rejected"
        }
        #expect(rejected.isEmpty, "\(rejected.map { $0.reason ?? "" })")
        #expect(rig.reconciler.inForceSHA256 == goodSHA)
        await rig.stop()
    }
}

extension FleetAgentTests {
    @Test("a command published retained runs once, as published; the copy each subscription brings back is refused, not run, not answered")
    func retainedCommand() async throws {
        let rig = try await Rig(handlers: ["release.start": EchoHandler()])
        let (status, results) = (rig.topics.status(device: "dev-x"), rig.topics.commandResult(device: "dev-x"))
        #expect(await rig.inbox.first(on: status) { $0["state"] as? String == "online" } != nil)
        try await rig.send(id: "kept", action: "release.start", extra: ["percent": 5], retain: true)
        let ran = await rig.inbox.first(on: results) { $0["id"] as? String == "kept" }
        #expect(ran?["status"] as? String == "succeeded" && ran?["duplicate"] == nil, "\(ran ?? [:])")
        // The broker restarts, its retained messages kept: the agent reconnects and subscribes again, which brings
        // the retained copy back (it was answered again as a duplicate, at every reconnection, for good).
        try rig.broker.restart()
        let refused = await eventuallyAsync(timeout: .seconds(60)) {
            let entries = (try? await rig.harness.auditEntries()) ?? []
            return entries.contains { $0.action == "mqtt.command" && $0.result == "refused"
                && $0.reason?.contains("a retained copy of a command") == true }
        }
        #expect(refused)
        // A command sent after the reconnection is answered; the retained one only the once.
        try await rig.send(id: "after", action: "release.start", extra: ["percent": 6])
        let after = await rig.inbox.first(on: results, timeout: .seconds(60)) { $0["id"] as? String == "after" }
        #expect(after?["status"] as? String == "succeeded", "\(after ?? [:])")
        let answers = rig.inbox.messages.value.filter { message in
            message.topic == results && ((try? JSONSerialization.jsonObject(with: Data(message.payload)))
                as? [String: Any])?["id"] as? String == "kept"
        }
        #expect(answers.count == 1, "\(answers.map { String(decoding: $0.payload, as: UTF8.self) })")
        await rig.stop()
    }

    @Test("a command still running when the agent stops has its result published, before offline")
    func resultAtStop() async throws {
        let hold = HoldHandler(throughCancellation: true)
        let rig = try await Rig(handlers: ["hold": hold])
        let (status, results) = (rig.topics.status(device: "dev-x"), rig.topics.commandResult(device: "dev-x"))
        #expect(await rig.inbox.first(on: status) { $0["state"] as? String == "online" } != nil)
        try await rig.send(id: "long", action: "hold", extra: [:])
        #expect(await eventually(timeout: .seconds(30)) { hold.running.load(ordering: .sequentiallyConsistent) })
        // The agent leaves (as when another service fails) while the command runs; it ends a moment later.
        rig.running.cancel()
        try await Task.sleep(for: .milliseconds(500))
        hold.release()
        // Before, `offline` went out at once and the client stopped: the result was refused by it, never sent.
        let result = await rig.inbox.first(on: results, timeout: .seconds(60)) { $0["id"] as? String == "long" }
        #expect(result?["status"] as? String == "succeeded", "\(result ?? [:])")
        #expect(await rig.inbox.first(on: status, timeout: .seconds(60)) { $0["state"] as? String == "offline" }
            != nil)
        let order = rig.inbox.messages.value.compactMap { message -> String? in
            let fields = (try? JSONSerialization.jsonObject(with: Data(message.payload))) as? [String: Any]
            if message.topic == results { return fields?["id"] as? String }
            return fields?["state"] as? String == "offline" ? "offline" : nil
        }
        #expect(order.firstIndex(of: "long") ?? .max < order.firstIndex(of: "offline") ?? -1, "\(order)")
        await rig.stop()
    }

    @Test("no status waits in the client while the broker is away: none from the outage arrives at the reconnection")
    func noStaleStatuses() async throws {
        let rig = try await Rig(handlers: [:])
        let status = rig.topics.status(device: "dev-x")
        #expect(await rig.inbox.first(on: status) { $0["state"] as? String == "online" } != nil)
        rig.broker.stop()
        let stopped = Date()
        try await Task.sleep(for: .seconds(7))
        let restarted = Date()
        try rig.broker.start()
        // A status taken after the reconnection arrives (times are whole seconds).
        let fresh = await rig.inbox.first(on: status, timeout: .seconds(60)) {
            ($0["time"] as? String).flatMap(Self.time).map { $0 >= restarted.addingTimeInterval(-1) } == true
                && $0["state"] as? String == "online"
        }
        #expect(fresh != nil)
        try await Task.sleep(for: .seconds(2))
        // Before, a status was queued every few seconds of the outage (status_interval_s is 1) and all of them came
        // in a burst at the reconnection, the broker's session for the peer keeping them through the restart.
        let stale = rig.inbox.messages.value.filter { $0.topic == status }
            .compactMap { (try? JSONSerialization.jsonObject(with: Data($0.payload))) as? [String: Any] }
            .compactMap { ($0["time"] as? String).flatMap(Self.time) }
            .filter { $0 > stopped.addingTimeInterval(2) && $0 < restarted.addingTimeInterval(-1) }
        #expect(stale.isEmpty, "\(stale.count) statuses taken during the outage were published")
        await rig.stop()
    }

    static func time(_ text: String) -> Date? { ISO8601DateFormatter().date(from: text) }
}

/// A command action that holds its turn until the test lets it go — through a cancellation too if asked, as work
/// that cannot be cut short (a model load) goes on past a stop.
final class HoldHandler: FleetCommandHandler {
    let running = Atomic(false)
    private let released = Atomic(false)
    private let throughCancellation: Bool

    init(throughCancellation: Bool = false) { self.throughCancellation = throughCancellation }

    func release() { released.store(true, ordering: .sequentiallyConsistent) }

    func run(_ command: FleetCommand, payload: [UInt8], by principal: Principal, control: ControlPlane) async throws
        -> FleetJSON?
    {
        running.store(true, ordering: .sequentiallyConsistent)
        while !released.load(ordering: .sequentiallyConsistent) {
            if throughCancellation {
                try? await Task.sleep(for: .milliseconds(10))
            } else {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        return .object(["held": .bool(true)])
    }
}

/// A broker, a server over fake backends, an agent for device `dev-x` trusting one operator key, and a peer client
/// subscribed to the device's results and status.
struct Rig {
    let broker: MosquittoBroker
    let harness: ServerHarness
    let folder: TemporaryDirectory
    let key = SigningKey()
    let peer: MQTTClient
    let inbox = FleetAgentTests.Inbox()
    let topics = FleetTopics()
    let running: Task<Void, any Error>
    let collecting: Task<Void, Never>
    let reconciler: DesiredStateReconciler
    let group: String?

    init(handlers: [String: any FleetCommandHandler], statusContributors: [String: FleetStatusContributor] = [:],
         group: String? = nil) async throws
    {
        self.group = group
        broker = try MosquittoBroker()
        harness = try await ServerHarness()
        folder = try TemporaryDirectory(prefix: "fleet-agent")
        try key.verificationKey.write(to: folder.file("operator.pub"))
        try MosquittoBroker.password.write(toFile: folder.file("password"), atomically: true, encoding: .utf8)
        var settings = try #require(try ServerConfiguration.parse("""
            mqtt:
              host: 127.0.0.1
              port: \(broker.port)
              device: dev-x
              tls: {ca_file: \(broker.caFile)}
              username: \(MosquittoBroker.username)
              password_file: password
              trusted_keys: [operator.pub]
              reconnect_max_s: 1
              status_interval_s: 1
            """ + (group.map { "\n  group: \($0)" } ?? ""), base: folder.path).mqtt)
        settings.clientID = "dev-x-client"
        reconciler = DesiredStateReconciler(control: harness.control)
        let agent = try FleetAgent(settings: settings, control: harness.control,
            reconciler: reconciler, stateDirectory: folder.path,
            handlers: handlers, statusContributors: statusContributors, logger: Logger(label: "test"))
        running = Task { try await agent.run() }

        var peerConfiguration = MQTTClientConfiguration(host: "127.0.0.1", port: broker.port, clientID: "operator")
        peerConfiguration.username = MosquittoBroker.username
        peerConfiguration.password = MosquittoBroker.password
        peerConfiguration.tls = .init(caFile: broker.caFile)
        peer = try MQTTClient(configuration: peerConfiguration)
        peer.subscribe(topics.commandResult(device: "dev-x"))
        peer.subscribe(topics.status(device: "dev-x"))
        let (peer, inbox) = (peer, inbox)
        collecting = Task { for await message in peer.messages { inbox.messages.withLock { $0.append(message) } } }
        peer.start()
    }

    /// Publishes a command signed by the operator key, for slot `line2` unless `extra` says otherwise.
    func send(id: String, action: String, extra: [String: Any], retain: Bool = false) async throws {
        var command = FleetCommand(topic: topics.command(device: "dev-x"),
            issuedAt: Int64(Date().timeIntervalSince1970), nonce: UUID().uuidString.replacingOccurrences(
                of: "-", with: ""), id: id, action: action)
        command.slot = "line2"
        var fields = try JSONSerialization.jsonObject(with: JSONEncoder().encode(command)) as? [String: Any] ?? [:]
        fields.merge(extra) { $1 }
        let payload = try JSONSerialization.data(withJSONObject: fields)
        try await peer.publish(topics.command(device: "dev-x"),
            payload: try SignedEnvelope.seal([UInt8](payload), with: key), retain: retain)
    }

    /// Publishes the group's desired-state document, signed by the operator key.
    /// - Returns: its nonce.
    @discardableResult
    func sendDocument(_ text: String, issuedAt: Int64) async throws -> String {
        let nonce = UUID().uuidString.replacingOccurrences(of: "-", with: "")
        let topic = topics.fleetDesired(group: try #require(group))
        let document = FleetDesiredDocument(topic: topic, issuedAt: issuedAt, nonce: nonce, document: text)
        try await peer.publish(topic, payload: try SignedEnvelope.seal([UInt8](JSONEncoder().encode(document)),
            with: key))
        return nonce
    }

    func stop() async {
        running.cancel()
        _ = try? await running.value
        await peer.stop()
        collecting.cancel()
        await harness.cleanUp()
    }
}
