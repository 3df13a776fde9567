import Crypto
import Foundation
import Hummingbird
import Primitives

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
            guard let digest = Hex.bytes(token.sha256) else { return nil }
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

    /// Lower-case hex SHA-256 of a token: what goes into the configuration.
    public static func digest(of token: String) -> String {
        Hex.string(SHA256.hash(data: Data(token.utf8)))
    }
}

/// Authenticates `Authorization: Bearer <token>` when present; handlers then require a role. An unknown token on a
/// call that would change the service (any method but GET, other than the inferences and reads sent with POST:
/// `/v1/detect`, `/v2/models/…/infer`, `/v2/repository/index`) is recorded in the audit log as refused.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = YOLOSwapRequestContext
    let authenticator: TokenAuthenticator
    let control: ControlPlane

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer",
                let principal = authenticator.authenticate(token: parts[1].trimmingCharacters(in: .whitespaces))
            else {
                let problem = Problem(.unauthorized, "Unauthorized", detail: "unknown or malformed bearer token")
                if request.method != .get, !Self.readsOnly(request.uri.path) {
                    await control.auditRefusal(nil, context.remoteAddress,
                        action: "\(request.method.rawValue) \(request.uri.path)", reason: "401 \(problem.detail)")
                }
                throw problem
            }
            context.principal = principal
        }
        return try await next(request, context)
    }

    /// Whether a POST to `path` only infers or reads: a wrong token there changes nothing, and a misconfigured
    /// inference client (tritonclient sends a request per frame) would otherwise fill the audit log with refusals and
    /// crowd out the unauthenticated refusals worth keeping, as the same token over gRPC is not recorded either.
    static func readsOnly(_ path: String) -> Bool {
        path == "/v1/detect" || path == "/v2/repository/index"
            || (path.hasPrefix("/v2/models/") && path.hasSuffix("/infer"))
    }
}
