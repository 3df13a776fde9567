import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The real binary scraped by the real Prometheus server (Debian package `prometheus`, installed by scripts/setup):
/// `/metrics` passes `promtool check metrics`, and a swap made through the API shows up in Prometheus' query API.
@Suite("Prometheus scraping the real server", .serialized, .timeLimit(.minutes(5)))
struct PrometheusTests {
    static let prometheus = "/usr/bin/prometheus"
    static let promtool = "/usr/bin/promtool"
    /// The demo operator token of yoloswap.example.yaml and its SHA-256.
    static let aliceToken = "alice-demo-token"
    static let aliceDigest = "bba775a1794a2ccaa524798e32cea98187c9a32d80433d760a92d449bfddff66"

    @Test("promtool accepts /metrics; Prometheus scrapes the swap counter after a swap through the API")
    func scrapeSwapCounter() async throws {
        for tool in [Self.prometheus, Self.promtool] {
            try #require(FileManager.default.isExecutableFile(atPath: tool),
                "\(tool) is missing: run scripts/setup (it installs the Debian package prometheus)")
        }
        try #require(FileManager.default.isExecutableFile(atPath: Repo.binary),
            "\(Repo.binary) is missing: run swift build first")
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-test-\(UUID())")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: temp) }

        // The service, with alice as operator, on a free port.
        let config = temp.appendingPathComponent("yoloswap.yaml")
        try """
            server: { host: 127.0.0.1, port: 0 }
            model_repository: \(Repository.path("models"))
            state_dir: \(temp.appendingPathComponent("state").path)
            tokens:
              - { name: alice, role: operator, sha256: "\(Self.aliceDigest)" }
            slots:
              default: { model: yolov3-tiny-coco-416.onnx }

            """.write(to: config, atomically: true, encoding: .utf8)
        let portFile = temp.appendingPathComponent("port").path
        let server = try ManagedProcess(Repo.binary,
            ["serve", "--config", config.path, "--port", "0", "--port-file", portFile],
            log: temp.appendingPathComponent("yoloswap.log"))
        defer { server.stop() }
        let port = try await waitFor("the port file \(portFile)", seconds: 60, process: server) {
            (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        }
        let base = "http://127.0.0.1:\(port)"
        _ = try await waitFor("\(base)/readyz to answer 200", seconds: 120, process: server) {
            try? await Self.get("\(base)/readyz").status == 200 ? true : nil
        }

        // promtool lints the exposition text.
        let metrics = try await Self.get("\(base)/metrics")
        #expect(metrics.status == 200)
        let lint = try Self.promtoolCheck(metrics.body, scratch: temp.appendingPathComponent("metrics.txt"))
        #expect(lint.status == 0, "promtool check metrics failed (exit \(lint.status)):\n\(lint.output)")

        // Prometheus, scraping the service every second.
        let prometheusPort = try LoopbackPort.free()
        let scrapeConfig = temp.appendingPathComponent("prometheus.yml")
        try """
            global: { scrape_interval: 1s, evaluation_interval: 1s }
            scrape_configs:
              - job_name: yoloswap
                scrape_interval: 1s
                scrape_timeout: 1s
                static_configs: [{ targets: ["127.0.0.1:\(port)"] }]

            """.write(to: scrapeConfig, atomically: true, encoding: .utf8)
        let prometheus = try ManagedProcess(Self.prometheus, [
            "--config.file=\(scrapeConfig.path)", "--storage.tsdb.path=\(temp.appendingPathComponent("tsdb").path)",
            "--web.listen-address=127.0.0.1:\(prometheusPort)",
        ], log: temp.appendingPathComponent("prometheus.log"))
        defer { prometheus.stop() }
        let prometheusBase = "http://127.0.0.1:\(prometheusPort)"
        _ = try await waitFor("Prometheus to be ready", seconds: 60, process: prometheus) {
            try? await Self.get("\(prometheusBase)/-/ready").status == 200 ? true : nil
        }

        // A swap through the API, as alice: load the 320 model and activate it.
        var load = URLRequest(url: URL(string: "\(base)/v1/slots/default/load?wait=true")!)
        load.httpMethod = "POST"
        load.setValue("Bearer \(Self.aliceToken)", forHTTPHeaderField: "Authorization")
        load.setValue("application/json", forHTTPHeaderField: "Content-Type")
        load.httpBody = Data(#"{"model":"yolov3-tiny-coco-320.onnx","activate":true}"#.utf8)
        // The load's threads run at nice 10, below everything else on the machine: on a saturated one (a CI rehearsal
        // with a build beside it) the answer took over 30 s.
        let swap = try await Self.send(load, timeout: 180)
        try #require(swap.status == 200, "load + activate answered \(swap.status): \(swap.body)")
        #expect(swap.body.contains(#""state":"ready""#), "\(swap.body)")

        // What the service itself now counts, then the same figure through Prometheus' query API.
        let afterSwap = try await Self.get("\(base)/metrics").body
        let exposed = try #require(Self.succeededSwaps(inExposition: afterSwap),
            "no yoloswap_swap_events_total{result=\"succeeded\"} in /metrics after a swap")
        #expect(exposed >= 1)
        // The swap brought new series (the swap counters, the audit head): the exposition still lints.
        #expect(afterSwap.contains("yoloswap_audit_head_sequence"))
        let relint = try Self.promtoolCheck(afterSwap, scratch: temp.appendingPathComponent("metrics-after.txt"))
        #expect(relint.status == 0, "promtool check metrics failed after the swap (exit \(relint.status)):\n\(relint.output)")
        let query = "\(prometheusBase)/api/v1/query?query=yoloswap_swap_events_total"
        let scraped = try await waitFor("Prometheus to report yoloswap_swap_events_total{result=\"succeeded\"} ≥ \(exposed)",
            seconds: 30, process: prometheus)
        { () async -> Double? in
            guard let answer = try? await Self.get(query), answer.status == 200,
                let value = Self.succeededSwaps(inQueryAnswer: answer.body), value >= exposed
            else { return nil }
            return value
        }
        #expect(scraped >= 1)
    }

    // MARK: - helpers

    /// Polls `probe` every 200 ms until it returns a value, failing after `seconds` or when `process` exits.
    func waitFor<T>(_ what: String, seconds: Double, process: ManagedProcess, _ probe: () async -> T?) async throws -> T {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let value = await probe() { return value }
            try #require(process.isRunning, "\(process.name) exited while waiting for \(what):\n\(process.logTail)")
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("timed out after \(seconds) s waiting for \(what); \(process.name) log:\n\(process.logTail)")
        throw CancellationError()
    }

    static func get(_ url: String) async throws -> (status: Int, body: String) {
        try await send(URLRequest(url: URL(string: url)!))
    }

    static func send(_ request: URLRequest, timeout: TimeInterval = 30) async throws -> (status: Int, body: String) {
        var request = request
        request.timeoutInterval = timeout
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// Runs `promtool check metrics` with the exposition text on stdin.
    static func promtoolCheck(_ text: String, scratch: URL) throws -> (status: Int32, output: String) {
        try text.write(to: scratch, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: promtool)
        process.arguments = ["check", "metrics"]
        process.standardInput = try FileHandle(forReadingFrom: scratch)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The value of `yoloswap_swap_events_total{slot="default",operation="activate",result="succeeded"}` in
    /// Prometheus' text exposition format.
    static func succeededSwaps(inExposition text: String) -> Double? {
        let line = text.split(separator: "\n").first {
            $0.hasPrefix("yoloswap_swap_events_total{") && $0.contains(#"slot="default""#)
                && $0.contains(#"operation="activate""#) && $0.contains(#"result="succeeded""#)
        }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
    }

    /// The same series' value in an answer of `GET /api/v1/query` (`{"data": {"result": [{"metric", "value": [t,
    /// "v"]}]}}`).
    static func succeededSwaps(inQueryAnswer body: String) -> Double? {
        struct Answer: Decodable {
            struct Series: Decodable {
                var metric: [String: String]
                var value: [QueryValue]
            }
            struct Payload: Decodable { var result: [Series] }
            var status: String
            var data: Payload
        }
        enum QueryValue: Decodable {
            case time(Double), text(String)
            init(from decoder: any Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let t = try? c.decode(Double.self) { self = .time(t) } else { self = .text(try c.decode(String.self)) }
            }
        }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: Data(body.utf8)), answer.status == "success"
        else { return nil }
        let series = answer.data.result.first {
            $0.metric["slot"] == "default" && $0.metric["operation"] == "activate" && $0.metric["result"] == "succeeded"
        }
        guard case .text(let value)? = series?.value.last else { return nil }
        return Double(value)
    }
}

extension PrometheusTests {
    /// A child process with its output in a log file, stopped with SIGTERM and, after 5 s, SIGKILL.
    final class ManagedProcess: Sendable {
        let name: String
        private let log: URL
        private let process = Process()  // started in init, then only read or signalled

        init(_ executable: String, _ arguments: [String], log: URL) throws {
            name = URL(fileURLWithPath: executable).lastPathComponent
            self.log = log
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.currentDirectoryURL = Repository.root
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        var isRunning: Bool { process.isRunning }

        var logTail: String {
            String(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(4000))
        }

        func stop() {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning, Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }

        deinit { stop() }
    }
}
