/// Why a model's signature was rejected, or could not be made.
///
/// Every case names the file it is about; `description` is a sentence an operator can act on.
public enum SignatureError: Error, Equatable, CustomStringConvertible {
    /// The model has no `MODEL.sig` and a signature is required.
    case unsigned(model: String, signaturePath: String)
    /// A file could not be read, or is not a signature document.
    case unreadable(path: String, reason: String)
    /// The signature file could not be written.
    case unwritable(path: String, reason: String)
    /// A field is empty or holds a line break (it could not be signed unambiguously).
    case invalidField(path: String, field: String, reason: String)
    /// The signature document has a format this build does not know.
    case unsupportedFormat(path: String, format: String)
    /// Signed by a key that is not among the trusted keys.
    case unknownKey(path: String, keyID: String, trusted: [String])
    /// The signature does not verify: the signature file was altered, or was not made by the key it names.
    case badSignature(path: String, keyID: String)
    /// The model's bytes do not hash to the signed digest: the model was altered (or replaced) after signing.
    case digestMismatch(model: String, signed: String, actual: String)
    /// The load asks for a version other than the one signed.
    case versionMismatch(model: String, signed: String, requested: String)
    /// The private key could not produce a signature.
    case signingFailed(reason: String)

    public var description: String {
        switch self {
        case .unsigned(let model, let signaturePath):
            "\(model) is not signed (no \(signaturePath)) and a signature is required"
        case .unreadable(let path, let reason):
            "cannot read \(path): \(reason)"
        case .unwritable(let path, let reason):
            "cannot write \(path): \(reason)"
        case .invalidField(let path, let field, let reason):
            "\(path): field \(field) \(reason)"
        case .unsupportedFormat(let path, let format):
            "\(path): unsupported signature format '\(format)' (expected '\(SignatureFile.currentFormat)')"
        case .unknownKey(let path, let keyID, let trusted):
            "\(path) is signed by key \(keyID), which is not trusted (trusted: "
                + (trusted.isEmpty ? "none" : trusted.joined(separator: ", ")) + ")"
        case .badSignature(let path, let keyID):
            "\(path): bad signature: it does not verify with key \(keyID) (the signature file was altered or forged)"
        case .digestMismatch(let model, let signed, let actual):
            "\(model) was modified after signing: its sha256 is \(actual) but the signature covers \(signed)"
        case .versionMismatch(let model, let signed, let requested) where signed.isEmpty:
            "\(model) is signed without a version but version '\(requested)' was requested"
        case .versionMismatch(let model, let signed, let requested):
            "\(model) is signed as version '\(signed)' but version '\(requested)' was requested"
        case .signingFailed(let reason):
            "signing failed: \(reason)"
        }
    }
}
