import Foundation
import TestSupport
import Testing

/// `make test`'s short runs of the benchmark commands that have make targets of their own (`make bench`'s
/// `bench-swap`, `make bench-stream`, `make bench-release`, `make bench-oip`; `bench` itself is in CLITests): each runs
/// on a few requests, frames and swaps and must finish without a failure and print every figure its target reports,
/// consistent with each other. The figures' values are the make targets' business (measured alone on the machine),
/// not a test's.
@Suite("Benchmarks: smoke runs", .serialized)
struct BenchmarkSmokeTests {
    private static func json(_ result: ProcessResult) throws -> [String: Any] {
        try #require(result.status == 0, "exit \(result.status): \(result.stderr.suffix(2000))")
        let line = try #require(result.stdout.split(separator: "\n").last { $0.hasPrefix("{") }, "\(result.stdout)")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test("bench-swap: swaps and a rollback under requests, no failure, RSS by cycle, every figure printed")
    func benchSwap() async throws {
        let result = try await runProcess(Repo.binary, ["bench-swap", "--model-a", Fixtures.identity416,
            "--model-b", Fixtures.identity320, "--swaps", "4", "--rollbacks", "1", "--concurrency", "2",
            "--interval-ms", "50", "--json"])
        let figures = try Self.json(result)
        let requests = try #require(figures["requests"] as? Int)
        #expect(requests > 0)
        #expect(figures["failures"] as? Int == 0 && figures["swap_failures"] as? Int == 0, "\(figures)")
        #expect(figures["swaps"] as? Int == 4 && figures["rollbacks"] as? Int == 1)
        #expect((figures["steady_requests"] as? Int ?? -1) + (figures["swap_requests"] as? Int ?? -1) == requests)
        // Five operations; every displaced model but the last standby is released by the end.
        #expect((figures["models_released"] as? Int ?? 0) >= 3, "\(figures["models_released"] ?? "none")")
        #expect((figures["flip_p99_us"] as? Double ?? 0) > 0)
        // Two cycles (A → B → A): RSS after the first; none of 100 yet.
        let byCycle = try #require(figures["rss_by_cycle_mb"] as? [String: Double])
        #expect(Array(byCycle.keys) == ["1"] && byCycle["1"] == figures["rss_first_cycle_mb"] as? Double)
        #expect(figures["rss_cycle_200_mb"] is NSNull)
        // The records written by the first cycle (48 bytes each), and RSS less them.
        let records = try #require(figures["request_records_by_cycle_mb"] as? [String: Double])
        let less = try #require(figures["rss_less_records_by_cycle_mb"] as? [String: Double])
        let recordsAtEnd = figures["request_records_mb"] as? Double ?? 0
        #expect((records["1"] ?? -1) >= 0 && (records["1"] ?? .infinity) <= recordsAtEnd, "\(records)")
        #expect(abs((less["1"] ?? 0) + (records["1"] ?? 0) - (byCycle["1"] ?? 0)) <= 0.11, "\(less) \(records)")
        for key in ["rss_peak_mb", "rss_peak_warm_mb", "rss_steady_pair_mb"] {
            #expect((figures[key] as? Double ?? 0) > 0, "\(key)")
        }
        // A subset's figures are there when it has requests, null (not the whole run's) when it has none.
        // (A short run's swaps may cover every request: no steady ones.)
        for (key, count) in [("steady_p99_ms", "steady_requests"), ("swap_p99_ms", "swap_requests"),
                             ("after_switch_p50_ms", "after_switch_requests"),
                             ("after_switch_p99_ms", "after_switch_requests")] {
            if figures[count] as? Int ?? 0 > 0 {
                #expect((figures[key] as? Double ?? 0) > 0, "\(key)")
            } else {
                #expect(figures[key] is NSNull, "\(key)")
            }
        }
        // The new model's first requests: at most one per loop after each of the 4 swaps (rollbacks not counted).
        let afterSwitch = figures["after_switch_requests"] as? Int ?? -1
        #expect(afterSwitch > 0 && afterSwitch <= 4 * 2, "\(afterSwitch) requests after a switch")
        #expect(figures["warmup_concurrency"] as? Int == 2, "the slot's 2 workers by default")
    }

    @Test("bench-stream: the Python loop, the throughput run and a pair of paced runs with swaps on the 60-frame video")
    func benchStream() async throws {
        // The synthetic model (its loads take milliseconds) and a 5 fps camera (12 s a run): on a loaded CI machine a
        // real model's load at 30 fps outlasted the 2-second video, and no switch was seen.
        let result = try await runProcess(Repo.binary, ["bench-stream", "--video", TestVideos.mjpeg,
            "--model", Fixtures.identity320, "--threads", "1", "--frames-in-flight", "2", "--python-threads", "1",
            "--swaps", "2", "--rollbacks", "1", "--trials", "1", "--camera-fps", "5", "--warmup-concurrency", "1",
            "--json"])
        let figures = try Self.json(result)
        #expect(figures["frames"] as? Int == 60, "\(figures)")
        #expect(figures["warmup_concurrency"] as? Int == 1)
        let fps = try #require(figures["fps"] as? Double)
        let pythonFPS = try #require(figures["python_fps"] as? Double)
        #expect(fps > 0 && pythonFPS > 0)
        #expect(abs((figures["fps_ratio"] as? Double ?? 0) - fps / pythonFPS) <= 1e-9 * fps / pythonFPS)
        #expect((figures["swap_failures"] as? [Any])?.isEmpty == true, "\(figures["swap_failures"] ?? "none")")
        // Two swaps and a rollback, in the plan's order, each timed; a swap's load stages too.
        let operations = try #require(figures["swap_operations"] as? [[String: Any]], "\(figures)")
        #expect(operations.map { $0["operation"] as? String } == ["swap", "swap", "rollback"], "\(operations)")
        for operation in operations {
            #expect((operation["total_ms"] as? Double ?? -1) >= 0, "\(operation)")
            if operation["operation"] as? String == "swap" {
                #expect((operation["warmup_ms"] as? Double ?? 0) > 0, "\(operation)")
            }
        }
        // The operations start at frames 15, 30 and 45 (every 15th of 60, 3 s apart): at least the first switches
        // before the end. Its load's threads run at nice 10, below everything else on the machine: beside the main
        // run's parallel suites a warm-up took over 9 s, and no switch came — so `make test` runs this test apart.
        #expect((figures["swap_run_switches"] as? Int ?? 0) >= 1, "\(operations)")
        #expect((figures["swap_window_service_frames"] as? Int ?? 0) > 0)
        for name in ["latency", "service"] {
            for key in ["steady_\(name)_p99_ms", "swap_run_steady_\(name)_p99_ms", "swap_window_\(name)_p99_ms",
                        "swap_window_\(name)_p99_vs_steady"] {
                #expect((figures[key] as? Double ?? 0) > 0, "\(key): \(figures[key] ?? "none")")
            }
            #expect((figures["swap_window_\(name)_max_ms_by_offset"] as? [Double])?.count == 5)
        }
    }

    @Test("bench-release: shadow on and off at headroom and saturation, every request answered, mirrors counted")
    func benchRelease() async throws {
        let result = try await runProcess(Repo.binary, ["bench-release", "--baseline", Fixtures.identity416,
            "--candidate", Fixtures.identity320, "--image", Repo.image("bus.jpg"), "--requests", "20", "--rounds", "1",
            "--saturation", "2", "--json"])
        let figures = try Self.json(result)
        #expect((figures["service_ms"] as? Double ?? 0) > 0)
        for condition in ["headroom", "saturation"] {
            let block = try #require(figures[condition] as? [String: Any], "\(condition): \(figures)")
            #expect(block["requests"] as? Int == 20, "\(condition): \(block)")
            for key in ["off_p99_ms", "shadow_p99_ms", "p99_ratio"] {
                #expect((block[key] as? Double ?? 0) > 0, "\(condition).\(key)")
            }
            // Each answered request was mirrored to the candidate or counted as shed; never more than were sent.
            let mirrored = block["mirrored"] as? Int ?? -1
            let shed = (block["shed_queue_full"] as? Int ?? 0) + (block["shed_saturated"] as? Int ?? 0)
            #expect(mirrored >= 0 && mirrored + shed <= 20, "\(condition): \(block)")
        }
        // With one request at a time there is room to mirror.
        #expect(((figures["headroom"] as? [String: Any])?["mirrored"] as? Int ?? 0) > 0)
    }

    @Test("bench-oip: the four loops (v1, tritonclient HTTP with JPEG bytes and with a tensor, gRPC) on a few requests")
    func benchOIP() async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["REQUESTS"] = "5"
        environment["WARMUP"] = "1"
        environment["BIN"] = Repo.binary
        let result = try await runProcess("/bin/bash", ["scripts/bench-oip"], environment: environment)
        try #require(result.status == 0, "exit \(result.status): \(result.stderr.suffix(2000))")
        // One row per loop: name, requests/s, p50 ms, p99 ms, requests/s relative to v1's (two decimals).
        let rows = result.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ") }
        #expect(rows.map { $0.first.map(String.init) } == ["v1", "v2-http", "v2-raw", "v2-grpc"], "\(result.stdout)")
        let base = try #require(rows.first.flatMap { Double($0[1]) })
        for row in rows {
            let figures = row.dropFirst().compactMap { Double($0) }
            try #require(figures.count == 4, "\(row)")
            #expect(figures[0] > 0 && figures[1] > 0 && figures[2] >= figures[1], "\(row)")
            // The ratio is printed (to 0.01) from unrounded rates (printed to 0.1): within those roundings.
            let rounding = 0.0051 + figures[3] * (0.051 / figures[0] + 0.051 / base)
            #expect(abs(figures[3] - figures[0] / base) <= rounding, "\(row)")
        }
    }
}
