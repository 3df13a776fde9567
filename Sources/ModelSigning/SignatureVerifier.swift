import Foundation

/// What a successful verification vouches for.
public struct VerifiedModel: Sendable, Equatable {
    /// The trusted key that signed the model.
    public var keyID: String
    /// SHA-256 of the model bytes (equal to the signed digest).
    public var sha256: String
    /// The signed version label, if the model was signed with one.
    public var version: String?
    /// When it was signed (ISO 8601, as written in the signature).
    public var signedAt: String
}

/// Checks `MODEL.sig` against a set of trusted Ed25519 public keys. `verify(path:sha256:version:)` has the shape of
/// the hot-swap load pipeline's `ModelVerifier`, which the service wires it in as (in `yoloswap`), so that it runs in
/// the verifying stage, before any ORT allocation.
///
/// A model is accepted when its signature file
/// 1. decodes and has format `yoloswap-signature-v1`,
/// 2. names a trusted key,
/// 3. carries a valid Ed25519 signature by that key over its canonical message (see `SignatureFile`),
/// 4. signs the SHA-256 of exactly the bytes being loaded, and
/// 5. signs the requested version, when the load names one and the signature has one (a signature without a
///    version vouches for the bytes only, and any version label may be given to them).
/// The checks run in that order, so an altered signature file reads "bad signature" and an altered model
/// "modified after signing".
///
/// A model without a signature file is rejected when `requireSignature`, and accepted with no key id otherwise;
/// a signature that is present is always checked.
///
/// Thread-safety: an immutable value; `verify` may be called from any thread.
public struct SignatureVerifier: Sendable {
    /// Trusted keys by key id.
    public let trustedKeys: [String: VerificationKey]
    public let requireSignature: Bool

    public init(trustedKeys: [VerificationKey], requireSignature: Bool) {
        self.trustedKeys = Dictionary(trustedKeys.map { ($0.keyID, $0) }, uniquingKeysWith: { first, _ in first })
        self.requireSignature = requireSignature
    }

    /// Reads the trusted public key files (`KEY.pub`).
    /// - Throws: `KeyFileError` for the first file that cannot be read.
    public init(trustedKeyFiles: [String], requireSignature: Bool) throws(KeyFileError) {
        var keys: [VerificationKey] = []
        for path in trustedKeyFiles { keys.append(try VerificationKey(contentsOf: path)) }
        self.init(trustedKeys: keys, requireSignature: requireSignature)
    }

    // MARK: Verifying a load

    /// Verifies the signature of the model being loaded.
    /// - Parameters:
    ///   - path: the model file; its signature is read from `path + ".sig"`.
    ///   - sha256: lower-case hex SHA-256 of the file's content, computed by the pipeline (which loads only bytes
    ///     with this digest).
    ///   - version: the version the load request names, if any.
    /// - Returns: the key id that vouched for the model, or nil for an unsigned model when signatures are optional.
    /// - Throws: `SignatureError`.
    public func verify(path: String, sha256: String, version: String?) throws(SignatureError)
        -> String?
    {
        let signaturePath = SignatureFile.path(forModel: path)
        let document: SignatureFile
        do { document = try SignatureFile(contentsOf: signaturePath, model: path) } catch {
            if case .unsigned = error, !requireSignature { return nil }
            throw error
        }
        return try check(document, signaturePath: signaturePath, model: path, sha256: sha256, version: version)
            .keyID
    }

    // MARK: Checks

    /// Reads and checks a model file and its signature, which must exist whatever `requireSignature` says
    /// (`yoloswap verify`).
    /// - Parameter version: when given, the signed version must be this — a signature without a version does not
    ///   vouch for it (a load, `check`, takes an unversioned signature for any version).
    /// - Throws: `SignatureError`.
    public func verifyModel(at path: String, version: String? = nil) throws(SignatureError) -> VerifiedModel {
        let signaturePath = SignatureFile.path(forModel: path)
        let document = try SignatureFile(contentsOf: signaturePath, model: path)
        let digest = try ModelDigest.sha256(ofFileAt: path)
        let verified = try check(document, signaturePath: signaturePath, model: path, sha256: digest, version: version)
        if let version, document.version == nil {
            throw .versionMismatch(model: path, signed: "", requested: version)
        }
        return verified
    }

    /// Checks a decoded signature document against the model's digest and the requested version.
    /// - Throws: `SignatureError`: `.unsupportedFormat`, `.invalidField`, `.unknownKey`, `.badSignature`,
    ///   `.digestMismatch` or `.versionMismatch`, in that order of checking.
    public func check(
        _ document: SignatureFile, signaturePath: String, model: String, sha256: String,
        version: String?
    ) throws(SignatureError) -> VerifiedModel {
        guard document.format == SignatureFile.currentFormat else {
            throw .unsupportedFormat(path: signaturePath, format: document.format)
        }
        try document.validateFields(path: signaturePath)
        guard let trusted = trustedKeys[document.keyID] else {
            throw .unknownKey(path: signaturePath, keyID: document.keyID, trusted: trustedKeys.keys.sorted())
        }
        guard let signature = Data(base64Encoded: document.signature),
            trusted.key.isValidSignature(signature, for: document.canonicalMessage)
        else {
            throw .badSignature(path: signaturePath, keyID: document.keyID)
        }
        let actual = sha256.lowercased()
        guard document.modelSHA256 == actual else {
            throw .digestMismatch(model: model, signed: document.modelSHA256, actual: actual)
        }
        if let requested = version, let signed = document.version, requested != signed {
            throw .versionMismatch(model: model, signed: signed, requested: requested)
        }
        return VerifiedModel(
            keyID: document.keyID, sha256: actual, version: document.version,
            signedAt: document.signedAt)
    }
}
