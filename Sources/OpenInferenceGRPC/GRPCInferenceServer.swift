import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Server
import ServiceLifecycle

/// The gRPC endpoint as a `Service` of the executable's `ServiceGroup`: `InferenceService` on its own port
/// (`grpc.port`), in plaintext or TLS (`grpc.tls_cert` and `grpc.tls_key`, PEM files); at graceful shutdown it stops
/// accepting RPCs and lets those in flight finish.
///
/// Messages up to the HTTP body limit (`server.max_body_mb`) are accepted, so that a raw tensor that fits one fits
/// the other.
public struct GRPCInferenceServer: Service {
    let settings: ServerConfiguration.GRPCSettings
    let host: String
    let service: InferenceService
    let maxMessageBytes: Int
    let limits: GRPCConnectionLimits
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void
    /// The connections open now (for tests and diagnostics).
    let connections = ConnectionCount()

    /// - Parameters:
    ///   - host: where to listen, an IP address or `localhost` (`ServerConfiguration.grpcHost`).
    ///   - limits: connections, streams and timeouts (`GRPCConnectionLimits`).
    public init(settings: ServerConfiguration.GRPCSettings, host: String, service: InferenceService,
                maxMessageBytes: Int, limits: GRPCConnectionLimits, logger: Logger,
                onListening: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.settings = settings
        self.host = host
        self.service = service
        self.maxMessageBytes = maxMessageBytes
        self.limits = limits
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let security: HTTP2ServerTransport.Posix.TransportSecurity =
            if let certificate = settings.tlsCertificate, let key = settings.tlsKey {
                .tls(certificateChain: [.file(path: certificate, format: .pem)], privateKey: .file(path: key, format: .pem))
            } else {
                .plaintext
            }
        var config = limits.apply(to: .defaults, connections: connections)
        config.rpc.maxRequestPayloadSize = maxMessageBytes
        guard ServerConfiguration.GRPCSettings.isListenable(self.host) else {
            throw GRPCHostError(host: self.host)
        }
        let host = self.host == "localhost" ? "127.0.0.1" : self.host
        let address: GRPCNIOTransportCore.SocketAddress =
            host.contains(":") ? .ipv6(host: host, port: settings.port) : .ipv4(host: host, port: settings.port)
        let transport = HTTP2ServerTransport.Posix(address: address, transportSecurity: security, config: config)
        let server = GRPCServer(transport: transport, services: [BoundedInferenceService(service: service)],
            interceptors: [AuthorizingInterceptor(service: service)])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                let bound = try await transport.listeningAddress
                let port = bound.ipv4?.port ?? bound.ipv6?.port ?? settings.port
                logger.info("gRPC listening", metadata: ["host": "\(host)", "port": "\(port)",
                    "tls": "\(settings.tlsCertificate != nil)"])
                await onListening(port)
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// The gRPC endpoint's host is not an IP address (the transport takes no name but `localhost`).
public struct GRPCHostError: Error, CustomStringConvertible {
    public var host: String
    public init(host: String) { self.host = host }
    public var description: String {
        "the gRPC endpoint cannot listen on \(host): give grpc.host (or server.host) as an IP address or localhost"
    }
}
