import Crypto
import Foundation
import Primitives

/// `MODEL.sig`: a signature over a model file's SHA-256, with its version label and signing time.
///
/// JSON (keys sorted): `{"format":"yoloswap-signature-v1","key_id":…,"model_sha256":…,"signature":…,
/// "signed_at":…,"version":…}`; `version` is `null` when the model was signed without one.
///
/// `signature` is base64 of an Ed25519 signature over ``canonicalMessage``, the UTF-8 bytes of exactly these five
/// lines joined by `\n` (no trailing newline), taken verbatim from the JSON:
/// ```
/// yoloswap-signature-v1
/// <key_id>
/// <model_sha256>          (64 lower-case hex digits)
/// <version>               (empty when null)
/// <signed_at>             (ISO 8601 UTC, e.g. 2025-01-31T12:00:00Z)
/// ```
/// None of the fields may contain a newline, and `version` may not be empty (a null version and an empty one
/// would sign the same bytes), so distinct documents always sign distinct messages.
///
/// Thread-safety: an immutable value.
public struct SignatureFile: Sendable, Equatable, Codable {
    public static let currentFormat = "yoloswap-signature-v1"
    /// The most bytes a signature file may hold. A signature document is a few hundred bytes; a file far larger is
    /// not one, and is refused before it is read into memory.
    public static let maximumByteCount = 64 << 10

    public var format: String
    public var keyID: String
    public var modelSHA256: String
    public var version: String?
    /// ISO 8601 UTC, signed as written.
    public var signedAt: String
    /// Base64 Ed25519 signature over ``canonicalMessage``.
    public var signature: String

    enum CodingKeys: String, CodingKey {
        case format
        case keyID = "key_id"
        case modelSHA256 = "model_sha256"
        case version
        case signedAt = "signed_at"
        case signature
    }

    public init(
        format: String = Self.currentFormat, keyID: String, modelSHA256: String, version: String?,
        signedAt: String, signature: String
    ) {
        self.format = format
        self.keyID = keyID
        self.modelSHA256 = modelSHA256
        self.version = version
        self.signedAt = signedAt
        self.signature = signature
    }

    /// The bytes the signature covers (see the type's documentation).
    public var canonicalMessage: Data {
        Data([format, keyID, modelSHA256, version ?? "", signedAt].joined(separator: "\n").utf8)
    }

    /// Where a model's signature lives: `MODEL.sig` next to it.
    public static func path(forModel modelPath: String) -> String { modelPath + ".sig" }

    /// The signing time, when `signedAt` parses as ISO 8601.
    public var signedDate: Date? { ISO8601DateFormatter().date(from: signedAt) }

    /// Checks the fields can be signed unambiguously.
    /// - Throws: `SignatureError.invalidField`.
    func validateFields(path: String) throws(SignatureError) {
        let fields = [
            ("key_id", keyID), ("model_sha256", modelSHA256), ("version", version ?? "-"),
            ("signed_at", signedAt),
        ]
        for (name, value) in fields where value.isEmpty || value.contains(where: \.isNewline) {
            throw .invalidField(path: path, field: name, reason: "must be non-empty and hold no line break")
        }
    }

    // MARK: Files

    /// Reads and decodes a signature file.
    ///
    /// Only a regular file of at most ``maximumByteCount`` bytes is read: a FIFO, a device (say, a link to
    /// `/dev/zero`) or a larger file is refused at once, without waiting on it or reading it into memory.
    /// - Throws: `SignatureError.unsigned` when the file does not exist, `.unreadable` when it cannot be read or
    ///   decoded, is not a regular file or is too large.
    public init(contentsOf path: String, model: String) throws(SignatureError) {
        let data: Data
        do { data = try RegularFile(openingForReading: path).readAll(limit: Self.maximumByteCount) } catch {
            if !FileManager.default.fileExists(atPath: path) { throw .unsigned(model: model, signaturePath: path) }
            throw .unreadable(path: path, reason: error.reason)
        }
        do { self = try JSONNumbers.decode(SignatureFile.self, from: data) } catch {
            throw .unreadable(
                path: path,
                reason: "not a yoloswap signature (expected JSON with format, key_id, "
                    + "model_sha256, version, signed_at, signature)")
        }
    }

    /// The JSON document, keys sorted, with a trailing newline.
    public func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Strings only: encoding cannot fail.
        return (try! encoder.encode(self)) + Data("\n".utf8)
    }

    /// Writes every field, `version` as `null` when absent, so the document's layout is fixed.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(format, forKey: .format)
        try container.encode(keyID, forKey: .keyID)
        try container.encode(modelSHA256, forKey: .modelSHA256)
        try container.encode(version, forKey: .version)
        try container.encode(signedAt, forKey: .signedAt)
        try container.encode(signature, forKey: .signature)
    }

    public func write(to path: String) throws(SignatureError) {
        do { try encoded().write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw .unwritable(path: path, reason: error.localizedDescription)
        }
    }
}

// MARK: - Signing

extension SigningKey {
    /// Signs a model digest.
    /// - Parameters:
    ///   - sha256: lower-case hex SHA-256 of the model file.
    ///   - version: the version label the signature vouches for; nil or empty for none.
    ///   - time: the signing time (recorded to the second).
    /// - Throws: `SignatureError.invalidField` when the version holds a line break.
    public func sign(sha256: String, version: String?, at time: Date = Date()) throws(SignatureError)
        -> SignatureFile
    {
        var document = SignatureFile(
            keyID: keyID, modelSHA256: sha256.lowercased(),
            version: version?.isEmpty == true ? nil : version,
            signedAt: ISO8601DateFormatter().string(from: time), signature: "")
        try document.validateFields(path: "(new signature)")
        do {
            document.signature = try key.signature(for: document.canonicalMessage).base64EncodedString()
        } catch {
            throw .signingFailed(reason: "\(error)")
        }
        return document
    }

    /// Signs the model at `modelPath` and writes `modelPath + ".sig"`.
    /// - Returns: the signature written.
    /// - Throws: `SignatureError` when the model cannot be read or the signature cannot be written.
    @discardableResult
    public func signModel(at modelPath: String, version: String?, at time: Date = Date()) throws(SignatureError)
        -> SignatureFile
    {
        let digest = try ModelDigest.sha256(ofFileAt: modelPath)
        let document = try sign(sha256: digest, version: version, at: time)
        try document.write(to: SignatureFile.path(forModel: modelPath))
        return document
    }
}

/// SHA-256 of model files, streamed (no whole-file buffer).
enum ModelDigest {
    static func sha256(ofFileAt path: String) throws(SignatureError) -> String {
        do { return try FileDigest.sha256(ofFileAt: path).sha256 } catch {
            throw .unreadable(path: path, reason: error.reason)
        }
    }
}
