import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The real `yoloswap serve` on a free loopback port, with a configuration written for the test.
final class ServerProcess: @unchecked Sendable {
    // @unchecked: the process handle is used from the test's task only; fields are set once in init.
    static let demoTokens = """
        tokens:
          - { name: alice, role: operator, sha256: "bba775a1794a2ccaa524798e32cea98187c9a32d80433d760a92d449bfddff66" }
          - { name: carol, role: viewer,   sha256: "ec946025b14a2a8b44a16d56cdd2a3978902986d765f5ebc486f7662c955a214" }
          - { name: root,  role: admin,    sha256: "9c588b0babd6a996be956ccc040751f16fb7f1c2cef21d40b265621d37b0a8bc" }
        """
    static let operatorToken = "alice-demo-token"
    static let viewerToken = "carol-demo-token"
    static let adminToken = "admin-demo-token"

    let directory: URL
    let process = Process()
    let port: Int
    var base: URL { URL(string: "http://127.0.0.1:\(port)")! }
    let logFile: URL

    /// Starts the server with `yaml` (model_repository and state_dir are filled in unless given) and waits until
    /// /readyz answers 200.
    /// - Parameters:
    ///   - readyWithin: how long /readyz may take to answer 200.
    ///   - arguments: more arguments for `serve`.
    init(yaml: String, stateDirectory: URL? = nil, waitReady: Bool = true, readyWithin: Duration = .seconds(60),
         arguments: [String] = []) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("serve-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let state = stateDirectory ?? directory.appendingPathComponent("var")
        var config = yaml
        if !config.contains("model_repository:") { config += "\nmodel_repository: \(Repository.path("models"))" }
        if !config.contains("state_dir:") { config += "\nstate_dir: \(state.path)" }
        let configPath = directory.appendingPathComponent("config.yaml")
        try config.write(to: configPath, atomically: true, encoding: .utf8)
        let portFile = directory.appendingPathComponent("port")
        logFile = directory.appendingPathComponent("server.log")
        guard FileManager.default.createFile(atPath: logFile.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: logFile.path])
        }
        process.executableURL = URL(fileURLWithPath: Repo.binary)
        process.arguments = ["serve", "--config", configPath.path, "--port", "0", "--port-file", portFile.path]
            + arguments
        process.currentDirectoryURL = Repository.root
        let log = try FileHandle(forWritingTo: logFile)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        var port: Int?
        for _ in 0..<600 where port == nil {
            if let text = try? String(contentsOf: portFile, encoding: .utf8), let value = Int(text.trimmed) {
                port = value
            } else {
                try await Task.sleep(for: .milliseconds(50))
            }
            if !process.isRunning { break }
        }
        guard let port else {
            process.terminate()
            let text = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
            throw ServerError("server did not start: \(text)")
        }
        self.port = port
        if waitReady {
            let deadline = ContinuousClock.now + readyWithin
            while ContinuousClock.now < deadline {
                if let (status, _) = try? await request("GET", "/readyz"), status == 200 { return }
                try await Task.sleep(for: .milliseconds(100))
            }
            throw ServerError("server never became ready: \(log_)")
        }
    }

    struct ServerError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    private var log_: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }
    var log: String { log_ }

    /// Sends a request; returns status and body.
    func request(_ method: String, _ path: String, token: String? = nil, body: Data? = nil,
                 contentType: String? = nil, headers: [String: String] = [:]) async throws -> (Int, Data) {
        var request = URLRequest(url: URL(string: base.absoluteString + path)!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        request.httpBody = body
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    func json(_ method: String, _ path: String, token: String? = nil, body: [String: Any]? = nil) async throws
        -> (Int, [String: Any])
    {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let (status, response) = try await request(method, path, token: token, body: data,
            contentType: body == nil ? nil : "application/json")
        return (status, (try? JSONSerialization.jsonObject(with: response)) as? [String: Any] ?? [:])
    }

    /// Sends a signal and waits for the process to exit; returns its status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: TimeInterval = 30) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
