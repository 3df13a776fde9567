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
    ///
    /// The port is free when it is picked but not reserved: another test's server or broker may bind it before
    /// mosquitto does, and mosquitto then exits ("Address already in use"). The broker is started again on another
    /// port, up to five times.
    /// - Parameter acl: the text of an `acl_file` (nil: every authenticated client may read and write every topic).
    public init(acl: String? = nil) throws {
        directory = try TemporaryDirectory(prefix: "mosquitto")
        let d = directory
        if let acl { try acl.write(toFile: d.file("acl"), atomically: true, encoding: .utf8) }
        try Self.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", d.file("broker.key"), "-out", d.file("broker.crt")])
        try Self.run("/usr/bin/mosquitto_passwd", ["-c", "-b", d.file("passwd"), Self.username, Self.password])
        var attempt = 1
        while true {
            // Outside the ephemeral range, so that no outgoing connection takes it while `restart()` rebinds it.
            let port = try LoopbackPort.free()
            try (Self.configuration(port: port, in: d) + (acl == nil ? "" : "\nacl_file \(d.file("acl"))"))
                .write(toFile: d.file("mosquitto.conf"), atomically: true,
                encoding: .utf8)
            do {
                process = try Self.start(port: port, directory: d)
                self.port = port
                return
            } catch let error as BrokerError where error.exited && attempt < 5 {
                attempt += 1
            }
        }
    }

    private static func configuration(port: Int, in d: TemporaryDirectory) -> String {
        """
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
        """
    }

    deinit { stop(signal: SIGKILL) }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    public func start() throws { process = try Self.start(port: port, directory: directory) }

    /// Runs mosquitto with the directory's configuration and waits until it listens on `port`: its log says it is
    /// running (once every listener is open) and the port accepts. A connection alone could be another server's that
    /// took the port; the log alone could come before a listener failed.
    private static func start(port: Int, directory: TemporaryDirectory) throws -> Process {
        let logFile = directory.file("mosquitto.log")
        let startsBefore = runningLines(logFile)
        let process = Process()
        // The test process blocks SIGTERM and SIGINT, and a child inherits the mask: mosquitto would never see the
        // signal that stops it cleanly. `env --default-signal` unblocks them before it runs mosquitto.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["--default-signal=TERM", "--default-signal=INT", "--default-signal=HUP",
                             "/usr/sbin/mosquitto", "-c", directory.file("mosquitto.conf")]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if runningLines(logFile) > startsBefore, process.isRunning, LoopbackPort.accepts(port: port) { return process }
            guard process.isRunning else { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let exited = !process.isRunning
        if !exited {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        throw BrokerError("mosquitto did not start on port \(port): \(log)", exited: exited)
    }

    /// How many times mosquitto logged "mosquitto version … running" in `logFile` (once per start).
    private static func runningLines(_ logFile: String) -> Int {
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        return log.split(separator: "\n").count { $0.contains(": mosquitto version ") && $0.hasSuffix(" running") }
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
        /// mosquitto exited by itself while starting (a port taken meanwhile, a bad configuration).
        public var exited = false
        public init(_ description: String, exited: Bool = false) {
            self.description = description
            self.exited = exited
        }
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        let result = try runProcess(tool, arguments)
        guard result.status == 0 else {
            throw BrokerError("\(tool) failed (\(result.status)): \(result.stderr)")
        }
    }
}
