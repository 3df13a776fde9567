import ArgumentParser
import Fleet
import Foundation
import ModelSigning
import MQTT
import Primitives

/// `yoloswap fleet …`: what an operator of an MQTT fleet runs.
struct FleetCommandGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Operate an MQTT fleet: sign commands and desired-state documents, publish them.",
        subcommands: [FleetSignCommand.self, FleetPublishCommand.self])
}

/// `yoloswap fleet sign`: a signed envelope for a device's command topic or a group's desired-state topic, on stdout.
///
/// ```
/// yoloswap fleet sign --key operator.key --device line-a-01 --action load --slot default --model m.onnx --activate
/// yoloswap fleet sign --key operator.key --group line-a --desired desired.yaml
/// ```
/// The topic to publish it on is printed to stderr (`topic: …`); publish a group's document retained, with QoS 1
/// (`mosquitto_pub -q 1 -r -t TOPIC -f envelope.json`).
struct FleetSignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign", abstract: "Sign a fleet command or desired-state document (the envelope goes to stdout).",
        discussion: "Commands: load (--slot, --model, --version, --sha256, --activate), switch, rollback, discard "
            + "(--slot), apply-desired (--document FILE), status. A desired-state document for a group: --group and "
            + "--desired FILE. Devices refuse commands issued more than their max_clock_skew_s away from their clock, "
            + "and documents not issued after the one they applied last.")

    @Option(name: .long, help: "The operator's private key file (yoloswap keygen); its .pub is in mqtt.trusted_keys.")
    var key: String
    @Option(name: .long, help: "The device a command is for.") var device: String?
    @Option(name: .long, help: "The group a desired-state document is for.") var group: String?
    @Option(name: .long, help: "Topic prefix (mqtt.topic_prefix).") var prefix = "yoloswap/v1"
    @Option(name: .long, help: "The command's action.") var action: String?
    @Option(name: .long, help: "The command's id (default: a random one).") var id: String?
    @Option(name: .long) var slot: String?
    @Option(name: .long, help: "Model path in the device's repository (load).") var model: String?
    @Option(name: .long) var version: String?
    @Option(name: .long) var sha256: String?
    @Flag(name: .long, help: "Switch the loaded model in (load).") var activate = false
    @Option(name: .long, help: "A desired-state file for apply-desired.") var document: String?
    @Option(name: .long, help: "A desired-state file for the group's retained topic.") var desired: String?
    @Option(name: .long, help: "Issue time as Unix seconds (default: now).") var issuedAt: Int64?
    @Option(name: .long, help: "Nonce, 16…128 hex digits (default: 32 random ones).") var nonce: String?
    @Option(name: .long, help: "Write the envelope to this file instead of stdout.") var out: String?

    func validate() throws {
        guard (device == nil) != (group == nil) else { throw ValidationError("give --device or --group") }
        if device != nil && action == nil { throw ValidationError("a command needs --action") }
        if group != nil && desired == nil { throw ValidationError("a group's document needs --desired FILE") }
        for name in [device, group].compactMap({ $0 }) where !FleetTopics.isValidName(name) {
            throw ValidationError("'\(name)' is not a device or group name (1…64 of A-Z a-z 0-9 . _ -)")
        }
        // A built-in action refuses a field it does not read: said here rather than by the device.
        if let action, let allowed = FleetPayload.builtInFields[action] {
            let given = [("slot", slot != nil), ("model", model != nil), ("version", version != nil),
                         ("sha256", sha256 != nil), ("activate", activate), ("document", document != nil)]
            if let extra = given.first(where: { $0.1 && !allowed.contains($0.0) })?.0 {
                throw ValidationError("--\(extra) is not read by action \(action) (it takes: "
                    + (allowed.isEmpty ? "nothing more" : allowed.sorted().map { "--\($0)" }.joined(separator: ", "))
                    + ")")
            }
        }
    }

    func run() throws {
        let topics = FleetTopics(prefix: prefix)
        let issued = issuedAt ?? Int64(Date().timeIntervalSince1970)
        let nonce = self.nonce ?? Self.randomHex(16)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let topic: String
        let payload: Data
        do {
            if let group, let desired {
                topic = topics.fleetDesired(group: group)
                payload = try encoder.encode(FleetDesiredDocument(topic: topic, issuedAt: issued, nonce: nonce,
                    document: try String(contentsOfFile: desired, encoding: .utf8)))
            } else {
                topic = topics.command(device: device ?? "")
                var command = FleetCommand(topic: topic, issuedAt: issued, nonce: nonce,
                    id: id ?? "cmd-\(Self.randomHex(8))", action: action ?? "")
                command.slot = slot
                command.model = model
                command.version = version
                command.sha256 = sha256
                command.activate = activate ? true : nil
                command.document = try document.map { try String(contentsOfFile: $0, encoding: .utf8) }
                payload = try encoder.encode(command)
            }
            let envelope = try SignedEnvelope.seal([UInt8](payload), with: try SigningKey(contentsOf: key))
            if let out {
                try Data(envelope).write(to: URL(fileURLWithPath: out), options: .atomic)
            } else {
                try FileHandle.standardOutput.write(contentsOf: Data(envelope + [UInt8(ascii: "\n")]))
            }
            printError("topic: \(topic)")
        } catch {
            printError("fleet sign failed: \(error)")
            throw ExitCode.failure
        }
    }

    static func randomHex(_ bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }
            .joined()
    }
}

/// `yoloswap fleet publish`: publishes a signed envelope (from `fleet sign`) with QoS 1 and, for a command, waits for
/// its result.
///
/// ```
/// yoloswap fleet publish --host broker --port 8883 --ca-file ca.crt --username ops --password-file pw \
///     --topic yoloswap/v1/fleet/line-a/desired --retain desired.json
/// yoloswap fleet publish … --topic yoloswap/v1/line-a-01/command --wait-result 60 cmd.json
/// ```
struct FleetPublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish", abstract: "Publish a signed envelope to the broker (QoS 1); optionally wait for the "
            + "command's result.",
        discussion: "Exit status: 0 published (and, with --wait-result, the command succeeded), 1 failed or refused, "
            + "2 no acknowledgement or no result in time.")

    @Argument(help: "The envelope file (from yoloswap fleet sign); - reads stdin.") var file: String
    @Option(name: .long, help: "Topic (printed by fleet sign).") var topic: String
    @Option(name: .long) var host = "127.0.0.1"
    @Option(name: .long) var port = 1883
    @Option(name: .long, help: "3.1.1 or 5.") var `protocol` = "3.1.1"
    @Option(name: .long, help: "CA certificate file: connect with TLS, checking the broker's certificate.")
    var caFile: String?
    @Option(name: .long) var username: String?
    @Option(name: .long, help: "File holding the password.") var passwordFile: String?
    @Flag(name: .long, help: "Publish retained (a group's desired state).") var retain = false
    @Option(name: .long, help: "Seconds to wait for the command's result on <topic>/result (0: do not wait).")
    var waitResult = 0
    @Option(name: .long, help: "Seconds to wait for the broker's acknowledgement.") var timeout = 30

    func validate() throws {
        guard MQTTClientConfiguration.ProtocolVersion(rawValue: `protocol`) != nil else {
            throw ValidationError("--protocol must be 3.1.1 or 5")
        }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard (1...86_400).contains(timeout) else { throw ValidationError("--timeout must be in 1...86400 seconds") }
        guard (0...86_400).contains(waitResult) else {
            throw ValidationError("--wait-result must be in 0...86400 seconds (0: do not wait)")
        }
        // A command is one-shot: retained, the broker would deliver it again at every subscription of the device.
        guard !(retain && topic.hasSuffix("/command")) else {
            throw ValidationError("--retain is for a group's desired state: a command published retained would be "
                + "delivered again at every reconnection of the device")
        }
    }

    func run() async throws {
        let envelope: [UInt8]
        do {
            envelope = file == "-" ? [UInt8](FileHandle.standardInput.readDataToEndOfFile())
                : [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        } catch {
            printError("fleet publish: cannot read \(file): \(error.localizedDescription)")
            throw ExitCode.failure
        }
        var c = MQTTClientConfiguration(host: host, port: port,
            clientID: "yoloswap-cli-\(FleetSignCommand.randomHex(6))")
        c.protocolVersion = MQTTClientConfiguration.ProtocolVersion(rawValue: `protocol`) ?? .v311
        c.cleanSession = true
        c.username = username
        c.tls = caFile.map { .init(caFile: $0) }
        c.maxPayloadBytes = SignedEnvelope.maximumByteCount
        if let passwordFile {
            // Unreadable is an error here, not "no password": the broker's refusal would read as a timeout.
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                printError("fleet publish: cannot read the password file \(passwordFile)")
                throw ExitCode.failure
            }
            c.password = text.trimmingCharacters(in: .newlines)
        }
        let client = try MQTTClient(configuration: c)
        let id = Self.commandID(envelope)
        if waitResult > 0 { client.subscribe(topic + "/result") }
        client.start()
        defer { Task { await client.stop() } }
        // The result subscription goes out when the connection is accepted, and the client hands the command over only
        // after it, on the same connection, so the broker has the subscription before the command. Waiting for the
        // connection gives a clear error when none comes; a broker that refuses it (a wrong password) answers at
        // once: exit 1 with its reason (a refusal for now, the broker busy, is retried until the timeout).
        do {
            let connected = await Self.within(.seconds(timeout)) { () async -> String? in
                for await event in client.events {
                    if case .connected = event { return nil }
                    if case .connectFailed(let reason) = event, reason.hasPrefix("the broker refused") { return reason }
                }
                return "the client stopped"
            }
            switch connected {
            case nil:
                printError("fleet publish: cannot connect to \(host):\(port) within \(timeout) s")
                throw ExitCode(2)
            case let reason??:
                printError("fleet publish: \(host):\(port): \(reason)")
                throw ExitCode.failure
            case .some(nil): break
            }
        }
        // A publication the broker refuses (MQTT 5: not authorized, …) or the client cannot send fails at once, with
        // its reason; only silence is a timeout.
        let published: Result<Void, any Error>? = await Self.within(.seconds(timeout)) {
            do {
                try await client.publish(topic, payload: envelope, qos: .atLeastOnce, retain: retain)
                return .success(())
            } catch { return .failure(error) }
        }
        switch published {
        case nil:
            printError("fleet publish: no acknowledgement from \(host):\(port) within \(timeout) s")
            throw ExitCode(2)
        case .failure(let error)?:
            await client.stop()
            printError("fleet publish: \(error)")
            throw ExitCode.failure
        case .success?: break
        }
        printError("published to \(topic)\(retain ? " (retained)" : "")")
        guard waitResult > 0 else {
            await client.stop()
            return
        }
        // Its result, or a refusal made before its id could be read (matched by the message's SHA-256).
        let sha256 = FleetCommandResult.messageSHA256(envelope)
        let result = await Self.within(.seconds(waitResult)) { () async throws -> [UInt8]? in
            for await message in client.messages where message.topic == topic + "/result" {
                let fields = (try? JSONSerialization.jsonObject(with: Data(message.payload))) as? [String: Any]
                // A refusal names the message it refused: one of another message under this id (a copy of this one
                // re-wrapped and replayed, a second command signed with the same id) is not this one's result.
                if let refused = fields?["message_sha256"] as? String {
                    if refused == sha256 { return message.payload }
                    continue
                }
                if let id, fields?["id"] as? String == id { return message.payload }
            }
            return nil
        } ?? nil
        await client.stop()
        guard let result else {
            printError("fleet publish: no result for command '\(id ?? "?")' within \(waitResult) s")
            throw ExitCode(2)
        }
        do { try FileHandle.standardOutput.write(contentsOf: Data(result + [UInt8(ascii: "\n")])) } catch {
            printError("fleet publish: cannot write the result to standard output: \(error)")
            throw ExitCode.failure
        }
        let status = ((try? JSONSerialization.jsonObject(with: Data(result))) as? [String: Any])?["status"] as? String
        if status != "succeeded" { throw ExitCode.failure }
    }

    /// The command id inside an envelope's payload, if it carries one.
    static func commandID(_ envelope: [UInt8]) -> String? {
        guard let outer = try? JSONNumbers.decode(SignedEnvelope.self, from: Data(envelope)),
              let payload = Data(base64Encoded: outer.payload),
              let fields = (try? JSONSerialization.jsonObject(with: payload)) as? [String: Any]
        else { return nil }
        return fields["id"] as? String
    }

    /// `work`'s value, or nil when it throws or takes longer than `timeout`.
    static func within<T: Sendable>(_ timeout: Duration, _ work: @escaping @Sendable () async throws -> T) async
        -> T?
    {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { try? await work() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
