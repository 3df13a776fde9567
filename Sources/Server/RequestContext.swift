import Hummingbird
import NIOCore

/// Per-request context: Hummingbird's core storage, the authenticated principal and the peer's address.
public struct YOLOSwapRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthMiddleware`; nil for an unauthenticated request.
    public var principal: Principal?
    public var remoteAddress: String?
    /// Bodies are collected explicitly (with the configured limit), not through this.
    public var maxUploadSize: Int { 1 << 20 }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress.map { address in
            if let ip = address.ipAddress { return ip }
            return "\(address)"
        }
    }
}
