import Crypto
import Foundation

/// What a token may do. viewer: detect and reads; operator: also load, switch, rollback, routes; admin: everything.
public enum Role: String, Sendable, Codable, Comparable, CaseIterable {
    case viewer, `operator`, admin

    private var rank: Int {
        switch self {
        case .viewer: 0
        case .operator: 1
        case .admin: 2
        }
    }
    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

/// Who made a request.
public struct Principal: Sendable, Equatable {
    public var name: String
    public var role: Role
    /// The anonymous caller (detect only, when configured).
    public static let anonymous = Principal(name: "anonymous", role: .viewer)
}

/// Bearer tokens, kept only as SHA-256 digests and compared in constant time.
///
/// Thread-safety: immutable.
public struct TokenAuthenticator: Sendable {
    private let tokens: [(digest: [UInt8], principal: Principal)]

    public init(_ tokens: [ServerConfiguration.Token]) {
        self.tokens = tokens.compactMap { token in
            guard let digest = Self.bytes(fromHex: token.sha256) else { return nil }
            return (digest, Principal(name: token.name, role: token.role))
        }
    }

    public var isEmpty: Bool { tokens.isEmpty }

    /// The principal whose token hashes to the same digest, or nil. Every configured digest is compared, each in
    /// constant time, so the time taken does not depend on which token (if any) matched.
    public func authenticate(token: String) -> Principal? {
        let digest = Array(SHA256.hash(data: Data(token.utf8)))
        var found: Principal?
        for entry in tokens where Self.constantTimeEqual(entry.digest, digest) {
            found = entry.principal
        }
        return found
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    static func bytes(fromHex hex: String) -> [UInt8]? {
        guard hex.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            out.append(byte)
            index = next
        }
        return out
    }

    /// Lower-case hex SHA-256 of a token: what goes into the configuration.
    public static func digest(of token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}
