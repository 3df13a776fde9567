import Foundation
import TestSupport
import Testing

/// The web console in a real browser (Debian's headless Chromium driven by Selenium: tools/console_browser_check.py)
/// against the real binary, and the event stream across a graceful shutdown.
@Suite("Web console (real binary, headless Chromium)", .serialized)
struct ConsoleBrowserTests {
    /// Screenshots are kept here (gitignored) as the test's artifacts.
    static let artifacts = Repository.path("out/console")

    @Test("page, detections, live timeline, load/discard/rollback, a release, viewer and bad token, in one session")
    func browser() async throws {
        // The 60-frame 320x240 MJPEG video, for the Streams panel.
        let media = URL(fileURLWithPath: TestVideos.mjpeg)
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots:
              default: { model: yolov3-tiny-coco-416.onnx }
            hotswap: { warmup_runs: 1 }
            streams: { media_dir: "\(media.deletingLastPathComponent().path)" }
            """)
        defer { server.stop() }
        try? FileManager.default.removeItem(atPath: Self.artifacts)
        let result = try await runProcess(Repo.python, [
            Repository.path("tools/console_browser_check.py"), "--base", server.base.absoluteString,
            "--operator-token", ServerProcess.operatorToken, "--viewer-token", ServerProcess.viewerToken,
            "--image", Repo.image("bus.jpg"), "--switch-model", "yolov3-tiny-coco-320.onnx",
            "--load-model", "yolov3-tiny-coco-608.onnx", "--stream-source", media.lastPathComponent,
            "--stream-size", "320x240", "--stream-fps", "3", "--out", Self.artifacts,
        ])
        let line = try #require(result.stdout.split(separator: "\n").last { $0.hasPrefix("{") },
            "no report from the browser check: \(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let checks = try #require(report["checks"] as? [String: [String: Any]])
        for name in ["page", "detect", "timeline", "operator", "releases", "streams", "viewer", "bad_token"] {
            let check = try #require(checks[name], "check \(name) did not run")
            #expect(check["ok"] as? Bool == true, "\(name): \(check["detail"] ?? "")")
        }
        #expect(result.status == 0, "\(result.stderr)")
        for name in ["console-operator", "console-detect", "console-timeline", "console-load", "console-releases",
            "console-streams", "console-viewer", "console-bad-token"]
        {
            let path = Self.artifacts + "/\(name).png"
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            #expect(size > 10_000, "screenshot \(path)")
        }
        print("console browser check: \(report["figures"] ?? [:])")
    }

    @Test("SIGTERM with an event stream open: the stream ends and the server exits 0")
    func shutdownEndsStreams() async throws {
        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            slots:
              default: { model: yolov3-tiny-coco-320.onnx }
            hotswap: { warmup_runs: 1 }
            """)
        defer { server.stop(signal: SIGKILL) }
        let stream = try EventStreamClient(port: server.port, path: "/v1/events/stream",
            headers: ["Authorization": "Bearer \(ServerProcess.viewerToken)"])
        #expect(await stream.read(until: { $0.contains("event: ready") }))
        let status = server.stop(signal: SIGTERM, timeout: 30)
        #expect(status == 0, "\(server.log)")
        #expect(await stream.read(until: { _ in false }, timeout: .seconds(5)) == false)
        #expect(stream.closed)
    }
}
