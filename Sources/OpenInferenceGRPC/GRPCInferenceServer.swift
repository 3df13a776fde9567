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
    let service: InferenceService
    let maxMessageBytes: Int
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void

    public init(settings: ServerConfiguration.GRPCSettings, service: InferenceService, maxMessageBytes: Int,
                logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.settings = settings
        self.service = service
        self.maxMessageBytes = maxMessageBytes
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
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = maxMessageBytes
        let host = settings.host == "localhost" ? "127.0.0.1" : settings.host
        let address: GRPCNIOTransportCore.SocketAddress =
            host.contains(":") ? .ipv6(host: host, port: settings.port) : .ipv4(host: host, port: settings.port)
        let transport = HTTP2ServerTransport.Posix(address: address, transportSecurity: security, config: config)
        let server = GRPCServer(transport: transport, services: [service])
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
