import ArgumentParser
import Fleet
import Foundation
import ModelSigning

/// `yoloswap fleet …`: what an operator of an MQTT fleet runs.
struct FleetCommandGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet", abstract: "Operate an MQTT fleet: sign commands and desired-state documents.",
        subcommands: [FleetSignCommand.self])
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
                FileHandle.standardOutput.write(Data(envelope + [UInt8(ascii: "\n")]))
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
