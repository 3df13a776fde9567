import Foundation
import Hummingbird
import NIOCore
import Primitives

/// Per-request context: Hummingbird's core storage, the authenticated principal and the peer's address.
public struct YOLOSwapRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthMiddleware`; nil for an unauthenticated request.
    public var principal: Principal?
    public var remoteAddress: String?
    /// The request's connection: a long response (a stream's viewer) closes it when the peer stops reading.
    public var channel: any Channel
    /// Bodies are collected explicitly (with the configured limit), not through this.
    public var maxUploadSize: Int { 1 << 20 }
    /// Every JSON answer is written by the project's one encoder (sorted keys, ISO 8601 dates).
    public var responseEncoder: JSONEncoder { .yoloswap }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
        remoteAddress = source.channel.remoteAddress.map { address in
            if let ip = address.ipAddress { return ip }
            return "\(address)"
        }
    }
}
