import Crypto
import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import Primitives

/// Why the optimized-model cache's secret key file could not be read or created.
public struct CacheSecretError: Error, Equatable, CustomStringConvertible {
    public var path: String
    /// What went wrong, in the system's words where there are some.
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "optimized-model cache key \(path): \(reason)" }
}

extension OptimizedModelCache {
    /// The secret that authenticates the cache's manifests: each manifest carries an HMAC-SHA256, under this key, of
    /// the verified source's digest, the optimized file's digest and size, the ORT version, the optimization level
    /// and the CPU fingerprint. Someone who can write the cache folder but not read this key cannot make an entry
    /// that passes for a verified model's, so the key must be kept outside the cache folder.
    ///
    /// Thread-safety: an immutable value.
    public struct Secret: Sendable {
        /// Bytes in a key.
        public static let byteCount = 32
        /// The key's bytes (swift-crypto's `SymmetricKey` is not `Sendable`; one is made for each use).
        private let bytes: [UInt8]
        private var key: SymmetricKey { SymmetricKey(data: bytes) }

        /// A key from its bytes.
        /// - Throws: `CacheSecretError` when there are not `byteCount` of them; `source` names where they came from.
        public init(bytes: [UInt8], source: String = "key bytes") throws(CacheSecretError) {
            guard bytes.count == Self.byteCount else {
                throw CacheSecretError(path: source,
                    reason: "it holds \(bytes.count) bytes, not the \(Self.byteCount) of a key")
            }
            self.bytes = bytes
        }

        /// A new random key, kept only in memory: for a cache that lives no longer than this process.
        public static func random() -> Secret {
            var bytes = [UInt8](repeating: 0, count: byteCount)
            SymmetricKey(size: .bits256).withUnsafeBytes { bytes = Array($0) }
            return try! Secret(bytes: bytes)  // byteCount bytes
        }

        /// The key in the file at `path`, created (32 random bytes, mode 0600, in folders made 0700) when there is
        /// none. Concurrent first calls agree on one key: the new file gets its name only if none is there yet.
        /// - Throws: `CacheSecretError` when the file cannot be read or created, or does not hold a key.
        public static func loadOrCreate(atPath path: String) throws(CacheSecretError) -> Secret {
            var info = stat()
            if lstat(path, &info) != 0 { try create(atPath: path) }
            // Whoever could replace the key (a link, another owner's file) would choose it: refused. One of ours that
            // others may read (a volume whose group Kubernetes sets again at each start: 0660) is made 0600 again.
            let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard descriptor >= 0 else { throw CacheSecretError(path: path, reason: Self.reason(errno)) }
            defer { close(descriptor) }
            guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_uid == geteuid() else {
                throw CacheSecretError(path: path, reason: "it must be a file (not a link) this user owns")
            }
            if info.st_mode & 0o077 != 0, fchmod(descriptor, 0o600) != 0 {
                throw CacheSecretError(path: path, reason: "others may read it, and it cannot be made 0600: "
                    + Self.reason(errno))
            }
            // Read from the descriptor checked above, not by the path again (which could be a link by now).
            var bytes = [UInt8](repeating: 0, count: byteCount + 1)
            var count = 0
            while count < bytes.count {
                let got = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + count, $0.count - count,
                    off_t(count)) }
                if got < 0 && errno == EINTR { continue }
                guard got >= 0 else { throw CacheSecretError(path: path, reason: Self.reason(errno)) }
                if got == 0 { break }
                count += got
            }
            return try Secret(bytes: Array(bytes[..<count]), source: path)
        }

        /// Writes a new random key to a private temporary file, then links it to `path` unless a key is there already.
        private static func create(atPath path: String) throws(CacheSecretError) {
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            do { try PrivateFiles.createDirectory(atPath: folder) } catch {
                throw CacheSecretError(path: path, reason: "\(error)")
            }
            let temporary = "\(path).\(UUID().uuidString).tmp"
            defer { unlink(temporary) }
            let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard descriptor >= 0 else { throw CacheSecretError(path: temporary, reason: Self.reason(errno)) }
            _ = fchmod(descriptor, 0o600)
            let written = SymmetricKey(size: .bits256).withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            let writeErrno = errno
            let synced = fsync(descriptor) == 0
            close(descriptor)
            guard written == byteCount, synced else {
                throw CacheSecretError(path: temporary, reason: written < 0 ? Self.reason(writeErrno) : "short write")
            }
            guard link(temporary, path) == 0 || errno == EEXIST else {
                throw CacheSecretError(path: path, reason: Self.reason(errno))
            }
        }

        private static func reason(_ code: Int32) -> String { String(cString: strerror(code)) }

        /// The HMAC-SHA256 of an entry's bound fields.
        func authenticationCode(for fields: [String]) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: Self.message(fields), using: key))
        }

        /// Whether `code` is the HMAC-SHA256 of the fields (compared in constant time).
        func isValid(_ code: [UInt8], for fields: [String]) -> Bool {
            HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: Self.message(fields), using: key)
        }

        /// The fields, each preceded by its length in bytes, so that no two lists of fields give the same message.
        private static func message(_ fields: [String]) -> Data {
            Data((["yoloswap-optimized-manifest-v2"] + fields).map { "\($0.utf8.count):\($0)" }.joined().utf8)
        }
    }
}
