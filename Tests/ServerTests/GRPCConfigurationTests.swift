import Server
import Testing

/// The `grpc` section of the configuration.
@Suite("gRPC configuration")
struct GRPCConfigurationTests {
    @Test("no section: no gRPC endpoint; a section: port checked, host defaults to server.host, paths resolved")
    func parsed() throws {
        #expect(try ServerConfiguration.parse("server: { port: 9000 }").grpc == nil)
        let config = try ServerConfiguration.parse("""
            server: { host: 0.0.0.0 }
            grpc: { port: 8001, tls_cert: certs/cert.pem, tls_key: /etc/key.pem }
            """, base: "/srv/yoloswap")
        #expect(config.grpc == ServerConfiguration.GRPCSettings(host: "0.0.0.0", port: 8001,
            tlsCertificate: "/srv/yoloswap/certs/cert.pem", tlsKey: "/etc/key.pem"))
        #expect(try ServerConfiguration.parse("grpc: { port: 0, host: 127.0.0.2 }").grpc?.host == "127.0.0.2")
    }

    @Test("refused: no port, a port out of range, a certificate without its key")
    func refused() {
        for yaml in ["grpc: { host: 127.0.0.1 }", "grpc: { port: 70000 }", "grpc: { port: 8001, tls_cert: c.pem }",
                     "grpc: { port: 8001, tls_key: k.pem }"] {
            #expect(throws: ConfigurationError.self, "\(yaml)") { try ServerConfiguration.parse(yaml) }
        }
    }
}
