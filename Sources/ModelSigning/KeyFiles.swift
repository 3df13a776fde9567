import Crypto
import Foundation
import Primitives

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a key file could not be read or written.
public struct KeyFileError: Error, Equatable, CustomStringConvertible {
    /// What was being done: "read private key", "write public key", ….
    public var operation: String
    public var path: String
    public var reason: String

    public init(operation: String, path: String, reason: String) {
        self.operation = operation
        self.path = path
        self.reason = reason
    }

    public var description: String { "\(operation) \(path): \(reason)" }
}

/// The JSON layout shared by both key files:
/// `{"type":"ed25519-private"|"ed25519-public","key_id":"<16 hex>","key":"<base64 of the 32 raw key bytes>"}`.
struct KeyFileContents: Codable, Equatable {
    static let privateType = "ed25519-private"
    static let publicType = "ed25519-public"

    /// The most bytes a key file may hold. A key file is about a hundred bytes; a file far larger is not one, and is
    /// refused before it is read into memory.
    static let maximumByteCount = 64 << 10

    var type: String
    var keyID: String
    var key: String

    enum CodingKeys: String, CodingKey {
        case type
        case keyID = "key_id"
        case key
    }

    func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding three strings cannot fail.
        return (try! encoder.encode(self)) + Data("\n".utf8)
    }

    /// Reads and decodes a key file of the given type; the raw key bytes are returned.
    ///
    /// Only a regular file of at most ``maximumByteCount`` bytes is read: a FIFO, a device (say, a link to
    /// `/dev/zero`) or a larger file is refused at once, without waiting on it or reading it into memory.
    static func read(_ path: String, type: String, operation: String) throws(KeyFileError) -> (keyID: String, raw: Data)
    {
        func fail(_ reason: String) -> KeyFileError { KeyFileError(operation: operation, path: path, reason: reason) }
        let data: Data
        do { data = try RegularFile(openingForReading: path).readAll(limit: Self.maximumByteCount) } catch {
            throw fail("cannot read the file (\(error.reason))")
        }
        let contents: KeyFileContents
        do { contents = try JSONNumbers.decode(KeyFileContents.self, from: data) } catch {
            throw fail("not a yoloswap key file (expected JSON with type, key_id and key)")
        }
        guard contents.type == type else {
            throw fail("holds a key of type '\(contents.type)', expected '\(type)'")
        }
        guard let raw = Data(base64Encoded: contents.key) else { throw fail("the key is not valid base64") }
        return (contents.keyID, raw)
    }
}

// MARK: - Key id

/// Key ids name a public key: the first 16 hex digits of SHA-256 over its 32 raw bytes.
enum KeyID {
    static func of(publicKey: Curve25519.Signing.PublicKey) -> String {
        String(Hex.string(SHA256.hash(data: publicKey.rawRepresentation)).prefix(16))
    }
}

// MARK: - Public key

/// A trusted Ed25519 public key: verifies model signatures made with its private half.
///
/// File: `KEY.pub`, `{"type":"ed25519-public","key_id":…,"key":…}`. Thread-safety: an immutable value.
public struct VerificationKey: Sendable, Equatable {
    /// The 32 raw key bytes (kept instead of swift-crypto's key type, which is not `Sendable`).
    public let rawRepresentation: Data
    /// First 16 hex digits of SHA-256 over the raw public key.
    public let keyID: String

    public init(_ key: Curve25519.Signing.PublicKey) {
        self.rawRepresentation = key.rawRepresentation
        self.keyID = KeyID.of(publicKey: key)
    }

    /// The key, rebuilt from its raw bytes (which were valid when this value was made).
    public var key: Curve25519.Signing.PublicKey {
        try! Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)
    }

    /// Reads a public key file.
    /// - Throws: `KeyFileError` when the file is missing, malformed, of another type, or its key id does not match
    ///   its key.
    public init(contentsOf path: String) throws(KeyFileError) {
        let (keyID, raw) = try KeyFileContents.read(
            path, type: KeyFileContents.publicType, operation: "read public key")
        let key: Curve25519.Signing.PublicKey
        do { key = try Curve25519.Signing.PublicKey(rawRepresentation: raw) } catch {
            throw KeyFileError(operation: "read public key", path: path, reason: "not a 32-byte Ed25519 public key")
        }
        self.init(key)
        guard self.keyID == keyID else {
            throw KeyFileError(
                operation: "read public key", path: path,
                reason: "key_id \(keyID) does not match the key (its id is \(self.keyID))")
        }
    }

    /// Writes the public key file (mode 0644), replacing any file at `path`.
    public func write(to path: String) throws(KeyFileError) {
        let contents = KeyFileContents(
            type: KeyFileContents.publicType, keyID: keyID,
            key: key.rawRepresentation.base64EncodedString())
        do { try contents.encoded().write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw KeyFileError(operation: "write public key", path: path, reason: error.localizedDescription)
        }
    }

}

// MARK: - Private key

/// An Ed25519 private key that signs models.
///
/// Files: `KEY` holds the private key (mode 0600), `KEY.pub` the public key; both are small JSON documents
/// (`{"type":"ed25519-private"|"ed25519-public","key_id":…,"key":"<base64 raw>"}`) whose `key_id` is the
/// public key's id. Thread-safety: an immutable value.
public struct SigningKey: Sendable {
    /// The 32 raw private key bytes (kept instead of swift-crypto's key type, which is not `Sendable`).
    private let rawRepresentation: Data

    /// A new random key.
    public init() { self.init(Curve25519.Signing.PrivateKey()) }

    public init(_ key: Curve25519.Signing.PrivateKey) { self.rawRepresentation = key.rawRepresentation }

    /// The key, rebuilt from its raw bytes (which were valid when this value was made).
    public var key: Curve25519.Signing.PrivateKey {
        try! Curve25519.Signing.PrivateKey(rawRepresentation: rawRepresentation)
    }

    /// The public half, which verifiers trust.
    public var verificationKey: VerificationKey { VerificationKey(key.publicKey) }

    /// The public key's id.
    public var keyID: String { verificationKey.keyID }

    /// Reads a private key file.
    /// - Throws: `KeyFileError` when the file is missing, malformed, of another type, or its key id does not match
    ///   its key.
    public init(contentsOf path: String) throws(KeyFileError) {
        let (keyID, raw) = try KeyFileContents.read(
            path, type: KeyFileContents.privateType, operation: "read private key")
        do { self.init(try Curve25519.Signing.PrivateKey(rawRepresentation: raw)) } catch {
            throw KeyFileError(operation: "read private key", path: path, reason: "not a 32-byte Ed25519 private key")
        }
        guard self.keyID == keyID else {
            throw KeyFileError(
                operation: "read private key", path: path,
                reason: "key_id \(keyID) does not match the key (its id is \(self.keyID))")
        }
    }

    /// Writes the private key to `path` (created with mode 0600) and the public key to `path + ".pub"`.
    ///
    /// The private key file is created exclusively: an existing file is never overwritten unless `overwrite`,
    /// in which case the new key is written beside it (created 0600, not inheriting the old file's mode) and renamed
    /// over it; a folder at `path` is refused.
    /// - Throws: `KeyFileError` when a file exists (without `overwrite`) or cannot be written.
    public func write(to path: String, overwrite: Bool = false) throws(KeyFileError) {
        let publicPath = path + ".pub"
        if !overwrite {
            for existing in [path, publicPath] where FileManager.default.fileExists(atPath: existing) {
                throw KeyFileError(
                    operation: "write key", path: existing,
                    reason: "the file exists; refusing to overwrite a key")
            }
        } else {
            // Only a file (or a link) is replaced: `removeItem` would delete a folder given by mistake, with what is in
            // it — other keys perhaps.
            for existing in [path, publicPath] {
                var status = stat()
                if lstat(existing, &status) == 0, status.st_mode & S_IFMT != S_IFREG,
                    status.st_mode & S_IFMT != S_IFLNK
                {
                    throw KeyFileError(operation: "write key", path: existing,
                        reason: "it exists and is not a file; refusing to replace it")
                }
            }
        }
        let contents = KeyFileContents(
            type: KeyFileContents.privateType, keyID: keyID,
            key: key.rawRepresentation.base64EncodedString())
        if overwrite {
            // Both written beside them, then renamed over them, the private key first: the old pair is replaced only
            // once the new one is on disk (a full disk leaves the old pair, not none, nor half of each).
            let temporary = path + ".new-\(getpid())", publicTemporary = publicPath + ".new-\(getpid())"
            let removeTemporaries = {
                try? FileManager.default.removeItem(atPath: temporary)
                try? FileManager.default.removeItem(atPath: publicTemporary)
            }
            removeTemporaries()
            try Self.createPrivateFile(temporary, contents: contents.encoded())
            do { try verificationKey.write(to: publicTemporary) } catch {
                removeTemporaries()
                throw error
            }
            guard rename(temporary, path) == 0 else {
                let reason = String(cString: strerror(errno))
                removeTemporaries()
                throw KeyFileError(operation: "write private key", path: path, reason: reason)
            }
            guard rename(publicTemporary, publicPath) == 0 else {
                let reason = String(cString: strerror(errno))
                removeTemporaries()
                throw KeyFileError(operation: "write public key", path: publicPath,
                    reason: reason + " (the new private key is in place: run keygen --force again)")
            }
        } else {
            try Self.createPrivateFile(path, contents: contents.encoded())
            try verificationKey.write(to: publicPath)
        }
    }

    /// Creates `path` with mode 0600 from the start (`O_CREAT | O_EXCL`), so the key is never readable by others,
    /// not even for a moment.
    private static func createPrivateFile(_ path: String, contents: Data) throws(KeyFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw KeyFileError(
                operation: "write private key", path: path,
                reason: POSIXErrorCode(rawValue: errno).map { "\(POSIXError($0).localizedDescription)" }
                    ?? "errno \(errno)")
        }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        do {
            try handle.write(contentsOf: contents)
            try handle.synchronize()
            try handle.close()
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw KeyFileError(operation: "write private key", path: path, reason: error.localizedDescription)
        }
    }
}
