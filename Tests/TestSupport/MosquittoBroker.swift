import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real Mosquitto broker (Debian's `mosquitto`) on a free loopback port, made for one test: TLS with a self-signed
/// certificate for `127.0.0.1`/`localhost` (made with `openssl`), a password file (made with `mosquitto_passwd`), no
/// anonymous access, and persistence (sessions and retained messages survive `restart()`, saved every second and at a
/// clean stop).
///
/// Thread-safety: use from one task (the test's).
public final class MosquittoBroker: @unchecked Sendable {
    // @unchecked: `process` is replaced by `restart()` only, from the test's task.
    public static let username = "fleet"
    public static let password = "fleet-test-password"

    public let directory: TemporaryDirectory
    public let port: Int
    /// The certificate clients trust (the broker's own, self-signed).
    public var caFile: String { directory.file("broker.crt") }
    public var logFile: String { directory.file("mosquitto.log") }
    private var process: Process?

    /// Makes the certificate and password file, starts the broker and waits until it accepts connections.
    public init() throws {
        directory = try TemporaryDirectory(prefix: "mosquitto")
        port = try Self.freePort()
        let d = directory
        try Self.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", d.file("broker.key"), "-out", d.file("broker.crt")])
        try Self.run("/usr/bin/mosquitto_passwd", ["-c", "-b", d.file("passwd"), Self.username, Self.password])
        try """
            user root
            listener \(port) 127.0.0.1
            certfile \(d.file("broker.crt"))
            keyfile \(d.file("broker.key"))
            allow_anonymous false
            password_file \(d.file("passwd"))
            persistence true
            persistence_location \(d.path)/
            autosave_interval 1
            max_queued_messages 10000
            log_dest file \(d.file("mosquitto.log"))
            log_type all
            """.write(toFile: d.file("mosquitto.conf"), atomically: true, encoding: .utf8)
        try start()
    }

    deinit { stop(signal: SIGKILL) }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    public func start() throws {
        let process = Process()
        // The test process blocks SIGTERM and SIGINT, and a child inherits the mask: mosquitto would never see the
        // signal that stops it cleanly. `env --default-signal` unblocks them before it runs mosquitto.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["--default-signal=TERM", "--default-signal=INT", "--default-signal=HUP",
                             "/usr/sbin/mosquitto", "-c", directory.file("mosquitto.conf")]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if Self.accepts(port: port) { return }
            guard process.isRunning else { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw BrokerError("mosquitto did not start on port \(port): \(log)")
    }

    /// Stops the broker with `signal` (SIGTERM: a clean stop that saves its state) and waits for it to exit.
    public func stop(signal: Int32 = SIGTERM) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    /// Stops the broker cleanly and starts it again on the same port.
    public func restart() throws {
        stop()
        try start()
    }

    public var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    public struct BrokerError: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        let result = try runProcess(tool, arguments)
        guard result.status == 0 else {
            throw BrokerError("\(tool) failed (\(result.status)): \(result.stderr)")
        }
    }

    /// A port no one listens on now (the system's pick for a socket bound to port 0).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BrokerError("socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw BrokerError("bind: errno \(errno)") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw BrokerError("getsockname: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on the loopback port.
    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
