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
        #expect(config.grpc == ServerConfiguration.GRPCSettings(port: 8001,
            tlsCertificate: "/srv/yoloswap/certs/cert.pem", tlsKey: "/etc/key.pem"))
        #expect(config.grpcHost == "0.0.0.0")
        #expect(try ServerConfiguration.parse("grpc: { port: 0, host: 127.0.0.2 }").grpcHost == "127.0.0.2")
        #expect(try ServerConfiguration.parse("grpc: { port: 0, host: '::1' }").grpcHost == "::1")
    }

    @Test("without a host of its own, gRPC listens where HTTP does as the service starts (--host, YOLOSWAP_HOST)")
    func hostFollowsTheServer() throws {
        var config = try ServerConfiguration.parse("grpc: { port: 8001 }")
        try config.applyEnvironment(["YOLOSWAP_HOST": "0.0.0.0"])
        #expect(config.grpcHost == "0.0.0.0")
        config.host = "127.0.0.3"  // serve --host
        #expect(config.grpcHost == "127.0.0.3")
        var own = try ServerConfiguration.parse("grpc: { port: 8001, host: 127.0.0.2 }")
        try own.applyEnvironment(["YOLOSWAP_HOST": "0.0.0.0"])
        #expect(own.grpcHost == "127.0.0.2")
        #expect(try ServerConfiguration.parse("server: { port: 9000 }").grpcHost == nil)
    }

    @Test("refused: no port, a port out of range, a certificate without its key, a host that is not an IP address")
    func refused() {
        for yaml in ["grpc: { host: 127.0.0.1 }", "grpc: { port: 70000 }", "grpc: { port: 8001, tls_cert: c.pem }",
                     "grpc: { port: 8001, tls_key: k.pem }", "grpc: { port: 8001, host: myhost }",
                     "grpc: { port: 8001, host: '127.0.0.1 ' }"] {
            #expect(throws: ConfigurationError.self, "\(yaml)") { try ServerConfiguration.parse(yaml) }
        }
    }
}
