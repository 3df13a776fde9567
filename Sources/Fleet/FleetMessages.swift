import Foundation
import Primitives

/// What every signed fleet payload starts with: its kind, the topic it was signed for, when it was issued and a
/// nonce. Binding the topic into the signed bytes keeps a command signed for one device from being replayed to
/// another, and a group's document from being replayed to another group.
public protocol FleetSignedPayload: Codable, Sendable {
    var kind: String { get }
    var topic: String { get }
    /// Unix time in seconds.
    var issued_at: Int64 { get }
    /// At least 16 random hex digits, never reused by the signer.
    var nonce: String { get }
}

/// A command to one device: `{"kind":"command","topic":…,"issued_at":…,"nonce":…,"id":…,"action":…,…}`.
///
/// Actions and their fields:
/// - `load`: `slot`, `model` (path in the repository), `version?`, `sha256?`, `activate?` (false: stage only)
/// - `switch`, `rollback`, `discard`: `slot`
/// - `apply-desired`: `document` (a desired-state document, YAML or JSON, as text)
/// - `status`: publishes the status now
///
/// Other actions go to the handlers the service registers (`FleetCommandHandler`), which read their own fields from
/// the payload's bytes: a payload may carry fields this type does not name.
///
/// Thread-safety: a value.
public struct FleetCommand: FleetSignedPayload, Equatable {
    public var kind = "command"
    public var topic: String
    public var issued_at: Int64
    public var nonce: String
    /// Chosen by the operator; names the command's result. 1…128 printable ASCII characters.
    public var id: String
    public var action: String
    public var slot: String?
    public var model: String?
    public var version: String?
    public var sha256: String?
    public var activate: Bool?
    public var document: String?

    public init(topic: String, issuedAt: Int64, nonce: String, id: String, action: String) {
        self.topic = topic
        self.issued_at = issuedAt
        self.nonce = nonce
        self.id = id
        self.action = action
    }
}

/// A desired-state document for a group, kept retained on `<prefix>/fleet/<group>/desired`:
/// `{"kind":"desired","topic":…,"issued_at":…,"nonce":…,"document":"<YAML or JSON text>"}`.
///
/// Thread-safety: a value.
public struct FleetDesiredDocument: FleetSignedPayload, Equatable {
    public var kind = "desired"
    public var topic: String
    public var issued_at: Int64
    public var nonce: String
    public var document: String

    public init(topic: String, issuedAt: Int64, nonce: String, document: String) {
        self.topic = topic
        self.issued_at = issuedAt
        self.nonce = nonce
        self.document = document
    }
}

/// A command's outcome, published on `<prefix>/<device>/command/result`.
///
/// `status`: `succeeded`, `failed` (the operation ran and failed), `refused` (not run: unsigned, stale, replayed,
/// unknown action, …). `duplicate` is true when this repeats the result of a command already received (a QoS 1
/// redelivery or a replay), which was not run again.
public struct FleetCommandResult: Codable, Sendable, Equatable {
    /// The hex SHA-256 of a message's bytes, as `message_sha256` gives it.
    public static func messageSHA256(_ message: [UInt8]) -> String { SignedEnvelope.sha256Hex(message) }

    public var id: String?
    public var device: String
    public var action: String?
    public var status: String
    public var detail: String?
    /// The refusal's reason (`FleetRefusal.Reason`), for refusals.
    public var reason: String?
    public var duplicate: Bool?
    /// The SHA-256 (hex) of the message refused, for a refusal: the sender matches a refusal made before the command's
    /// id could be read (unsigned, a bad signature, malformed) by it.
    public var message_sha256: String?
    public var time: Date
    /// What the operation produced (the swap event, the load's outcome, the desired state's status), as JSON.
    public var output: FleetJSON?

    public init(id: String?, device: String, action: String?, status: String, detail: String? = nil,
                reason: String? = nil, time: Date = Date(), output: FleetJSON? = nil) {
        self.id = id
        self.device = device
        self.action = action
        self.status = status
        self.detail = detail
        self.reason = reason
        self.time = time
        self.output = output
    }
}

/// Decoding and checking payloads.
public enum FleetPayload {
    /// Decodes a signed payload of the given kind and checks its common fields: kind, topic (must be `topic`), nonce.
    /// - Throws: `FleetRefusal` (`.malformed`, `.wrongTopic`).
    public static func decode<T: FleetSignedPayload>(_ type: T.Type, _ bytes: [UInt8], kind: String, topic: String)
        throws(FleetRefusal) -> T
    {
        let value: T
        do { value = try JSONNumbers.decode(T.self, from: Data(bytes)) } catch {
            throw FleetRefusal(.malformed, "not a \(kind) payload: \(describe(error))")
        }
        guard value.kind == kind else {
            throw FleetRefusal(.malformed, "kind '\(value.kind.prefix(32))' is not '\(kind)'")
        }
        guard value.topic == topic else {
            throw FleetRefusal(.wrongTopic, "signed for topic '\(value.topic.prefix(256))', received on '\(topic)'")
        }
        guard (16...128).contains(value.nonce.utf8.count), value.nonce.allSatisfy(\.isHexDigit) else {
            throw FleetRefusal(.malformed, "nonce must be 16…128 hex digits")
        }
        return value
    }

    /// Checks a command's own fields.
    public static func check(_ command: FleetCommand) throws(FleetRefusal) {
        guard (1...128).contains(command.id.utf8.count), command.id.utf8.allSatisfy({ (0x21...0x7e).contains($0) })
        else { throw FleetRefusal(.malformed, "id must be 1…128 printable ASCII characters without spaces") }
        guard (1...64).contains(command.action.utf8.count) else {
            throw FleetRefusal(.malformed, "action must be 1…64 characters")
        }
        for (name, value) in [("slot", command.slot), ("model", command.model), ("version", command.version),
                              ("sha256", command.sha256)] {
            if let value, value.utf8.count > 1024 {
                throw FleetRefusal(.malformed, "\(name) has \(value.utf8.count) bytes; at most 1024")
            }
        }
    }

    /// The fields every command has.
    public static let commonFields: Set<String> = ["kind", "topic", "issued_at", "nonce", "id", "action"]

    /// The fields each built-in action reads beside the common ones.
    public static let builtInFields: [String: Set<String>] = [
        "load": ["slot", "model", "version", "sha256", "activate"],
        "switch": ["slot"], "rollback": ["slot"], "discard": ["slot"],
        "apply-desired": ["document"], "status": [],
    ]

    /// Refuses a command whose payload has a field, other than null, outside the common ones and `fields`: a field
    /// spelt wrong would otherwise be dropped without a word (a load's `"actvate": false` switched the model in).
    /// - Parameter payload: the verified payload, a JSON object (it decoded as a `FleetCommand`).
    /// - Throws: `FleetRefusal` (`.malformed`) naming up to 8 of the fields.
    public static func refuseUnknownFields(_ payload: [UInt8], of action: String, allowed fields: Set<String>)
        throws(FleetRefusal)
    {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else {
            throw FleetRefusal(.malformed, "not a JSON object")
        }
        let unknown = object.filter { !($0.value is NSNull) && !commonFields.contains($0.key)
            && !fields.contains($0.key) }.keys.sorted()
        guard unknown.isEmpty else {
            let named = unknown.prefix(8).map { "'\($0.prefix(utf8Bytes: 64))'" }.joined(separator: ", ")
            throw FleetRefusal(.malformed, "\(action) does not take the field\(unknown.count == 1 ? "" : "s") "
                + "\(named)\(unknown.count > 8 ? " (\(unknown.count) in all)" : "") (it takes: "
                + "\((commonFields.union(fields)).sorted().joined(separator: ", ")))")
        }
    }

    /// A decoding error in a line, without Foundation's debug dump.
    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing field '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            "field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type"
        case DecodingError.dataCorrupted(let context): context.debugDescription
        default: "\(error)"
        }
    }
}
