import Crypto
import Foundation
import ModelSigning
import Primitives

/// A fleet message as it travels over MQTT: a payload and an operator's Ed25519 signature over it.
///
/// JSON: `{"format":"yoloswap-fleet-v1","key_id":"<16 hex>","payload":"<base64>","signature":"<base64>"}`. The
/// signature covers the bytes `yoloswap-fleet-v1\n` followed by the payload's bytes exactly as carried (base64 keeps
/// them byte for byte, so no JSON canonicalization is needed). The prefix keeps a fleet signature from ever passing
/// for a model signature (`MODEL.sig` signs lines starting `yoloswap-signature-v1`) and back, when one operator key
/// signs both.
///
/// Keys are ModelSigning's key files (`yoloswap keygen`): the private `KEY` signs, `KEY.pub` is listed under
/// `mqtt.trusted_keys`.
///
/// Thread-safety: a value.
public struct SignedEnvelope: Sendable, Equatable, Codable {
    public static let format = "yoloswap-fleet-v1"
    /// Bounds the envelope: a desired-state document (256 KiB) in base64 with room to spare.
    public static let maximumByteCount = 512 << 10

    public var format: String
    public var keyID: String
    public var payload: String
    public var signature: String

    enum CodingKeys: String, CodingKey {
        case format
        case keyID = "key_id"
        case payload, signature
    }

    /// The bytes a signature covers for `payload`.
    static func signedBytes(_ payload: [UInt8]) -> [UInt8] { Array("\(format)\n".utf8) + payload }

    /// Signs `payload`; returns the envelope's JSON bytes.
    public static func seal(_ payload: [UInt8], with key: SigningKey) throws -> [UInt8] {
        let signature = try key.key.signature(for: signedBytes(payload))
        let envelope = SignedEnvelope(format: format, keyID: key.keyID, payload: Data(payload).base64EncodedString(),
            signature: Data(signature).base64EncodedString())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(envelope))
    }

    /// Checks an envelope's signature against the trusted keys.
    /// - Returns: the payload's bytes and the id of the key that signed them.
    /// - Throws: `FleetRefusal` (`.malformed`, `.unsigned`, `.untrustedKey`, `.badSignature`).
    public static func open(_ bytes: [UInt8], trusting keys: [VerificationKey]) throws(FleetRefusal)
        -> (payload: [UInt8], keyID: String)
    {
        guard bytes.count <= maximumByteCount else {
            throw FleetRefusal(.malformed, "the message has \(bytes.count) bytes; at most \(maximumByteCount)")
        }
        let envelope: SignedEnvelope
        do { envelope = try JSONNumbers.decode(SignedEnvelope.self, from: Data(bytes)) } catch {
            throw FleetRefusal(.unsigned, "not a signed envelope (expected JSON with format, key_id, payload and "
                + "signature)")
        }
        guard envelope.format == format else {
            throw FleetRefusal(.malformed,
                "envelope format '\(envelope.format.prefix(utf8Bytes: 64))' is not \(format)")
        }
        guard let key = keys.first(where: { $0.keyID == envelope.keyID }) else {
            throw FleetRefusal(.untrustedKey, "key \(envelope.keyID.prefix(utf8Bytes: 64)) is not in mqtt.trusted_keys")
        }
        guard let payload = Data(base64Encoded: envelope.payload), let signature = Data(base64Encoded:
            envelope.signature)
        else { throw FleetRefusal(.malformed, "payload or signature is not base64") }
        guard key.key.isValidSignature(signature, for: signedBytes([UInt8](payload))) else {
            throw FleetRefusal(.badSignature, "the signature does not match the payload for key \(key.keyID)")
        }
        return ([UInt8](payload), key.keyID)
    }
}

/// Why a fleet message was refused: a reason from a fixed set (a metric label, an audit field) and the details.
public struct FleetRefusal: Error, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        /// Not a signed envelope at all.
        case unsigned
        /// Signed by a key not in `mqtt.trusted_keys`.
        case untrustedKey = "untrusted_key"
        /// The signature does not verify.
        case badSignature = "bad_signature"
        /// Signed, but not a message of the expected shape, or its fields out of bounds.
        case malformed
        /// Signed for another topic (another device, another group).
        case wrongTopic = "wrong_topic"
        /// Issued too long ago or too far in the future for the clock skew allowed.
        case stale
        /// Its nonce was seen before, or a newer document was already applied.
        case replayed
        /// Its command id was used before by another message.
        case duplicateID = "duplicate_id"
        /// An action no handler takes.
        case unknownAction = "unknown_action"
        /// Verified, but too many admitted messages are already waiting their turn: send it again later.
        case busy
    }

    public var reason: Reason
    public var detail: String

    /// The longest detail kept, in UTF-8 bytes: details quote what a message said, and go into the audit log, the
    /// log and the result published back.
    public static let maxDetailBytes = 1024

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail.prefix(utf8Bytes: Self.maxDetailBytes)
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

extension SignedEnvelope {
    /// The hex SHA-256 of `bytes`.
    static func sha256Hex(_ bytes: [UInt8]) -> String { Hex.string(SHA256.hash(data: bytes)) }
}
