import Foundation
import ImageCodecs
import TestSupport
import Testing
import YOLO

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Video streams in the real service: creation checked like model paths, a JSON-lines file, the MJPEG preview with
/// boxes drawn, and results endpoint viewers that read slowly or not at all.
@Suite("Stream service", .serialized)
struct StreamServiceTests {
    /// The folder of the test videos, and a service on yolov3-tiny 320 whose `streams:` section is `streams`.
    private static let media = URL(fileURLWithPath: TestVideos.mjpeg).deletingLastPathComponent().path
    private static func yaml(streams: String) -> String {
        """
        \(ServerProcess.demoTokens)
        slots:
          default: { model: yolov3-tiny-coco-320.onnx }
        hotswap: { warmup_runs: 1 }
        streams: \(streams)
        """
    }

    /// A viewer that keeps its connection but stops reading: TCP never times it out, and Hummingbird's idle timeout
    /// does not run during a response, so its task, frames and connection were held for good — and so was the
    /// service's shutdown, which waits for every connection.
    @Test("a preview viewer that stops reading is cut off after server.idle_timeout_s: the service's shutdown does not wait for it")
    func stalledViewerCutOff() async throws {
        _ = try await onOwnThread { TestVideos.h264 }
        let server = try await ServerProcess(yaml: Self.yaml(streams: "{ media_dir: \"\(Self.media)\" }")
            + "\nserver: { idle_timeout_s: 2 }\n")
        defer { server.stop() }
        let op = ServerProcess.operatorToken
        // 300 frames of 320x240: some 5 MB of JPEG parts if the viewer took them all.
        let (created, stream) = try await server.json("POST", "/v1/streams", token: op, body: ["source": "pan.mp4"])
        #expect(created == 201, "\(stream)")
        let id = try #require(stream["id"] as? String)
        let (port, viewer) = (server.port, ServerProcess.viewerToken)
        // A receive buffer of a few KB: the server's writes to it wait within a few frames.
        let stalled = try await onOwnThread {
            try StalledReader(port: port, path: "/v1/streams/\(id)/preview.mjpeg", token: viewer, receiveBuffer: 4096)
        }
        defer { stalled.close() }
        #expect(stalled.head.contains("200 OK"), "\(stalled.head)")
        #expect(await eventuallyAsync(timeout: .seconds(120)) {
            let status = (try? await server.json("GET", "/v1/streams/\(id)", token: op))?.1 ?? [:]
            return status["state"] as? String == "ended"
        })
        // Its last write waits (the viewer reads nothing): past idle_timeout_s the server closes the connection, so a
        // SIGTERM now ends the service at once. (Reading here would let the write through, and the response end.)
        try await Task.sleep(for: .seconds(4))
        let clock = ContinuousClock()
        let stopping = clock.now
        let status = server.stop(timeout: 30)
        #expect(status == 0, "exit status \(status) after \(clock.now - stopping) (9: killed, still waiting)")
        #expect(await eventuallyAsync(timeout: .seconds(10)) { stalled.isClosedByServer() })
    }

    @Test("POST /v1/streams: sources and outputs are checked, the preview is JPEG frames with boxes, a stalled results viewer does not hold the stream")
    func streamEndToEnd() async throws {
        // The 60-frame MJPEG video (the H.264 one goes through swaps in StreamsTests).
        let output = try TemporaryDirectory()
        let server = try await ServerProcess(yaml: Self.yaml(streams: """
            { media_dir: "\(Self.media)", output_dir: "\(output.path)", allowed_urls: ["udp://127.0.0.1:"],
              keep_alive_s: 0.5 }
            """))
        defer { server.stop() }
        let op = ServerProcess.operatorToken

        // Refusals: a viewer, a file outside the media folder, a URL and a device not allowed, an output outside.
        #expect(try await server.json("POST", "/v1/streams", token: ServerProcess.viewerToken,
            body: ["source": "pan.avi"]).0 == 403)
        for body: [String: Any] in [["source": "../pan.avi"], ["source": "/etc/passwd"],
                                    ["source": "rtsp://10.0.0.1/cam"], ["source": "/dev/video0"],
                                    ["source": "pan.avi", "outputs": ["file": "../escape.jsonl"]],
                                    ["source": "pan.avi", "fps_cap": 0],
                                    ["source": "pan.avi", "outputs": ["video": "../escape.mp4"]],
                                    // This service has no MQTT connection.
                                    ["source": "pan.avi", "outputs": ["mqtt": true]]] {
            let (status, problem) = try await server.json("POST", "/v1/streams", token: op, body: body)
            #expect(status == 400, "\(body): \(problem)")
        }
        // Keys misspelt: refused, named (they were dropped: the stream ran under `latest`, with no video).
        for (body, key) in [(["source": "pan.avi", "back-pressure": "block"], "back-pressure"),
                            (["source": "pan.avi", "outputs": ["vidoe": "a.mp4"]], "outputs.vidoe")] as [([String: Any], String)] {
            let (status, problem) = try await server.json("POST", "/v1/streams", token: op, body: body)
            #expect(status == 400 && (problem["detail"] as? String)?.contains("unknown key: \(key)") == true,
                "\(body): \(problem)")
        }
        // A slot the service does not have: refused, and recorded as the others are.
        #expect(try await server.json("POST", "/v1/streams", token: op,
            body: ["source": "pan.avi", "slot": "nowhere"]).0 == 404)

        // A stalled viewer: connects to the results, reads the head, then reads nothing more.
        let (created, stream) = try await server.json("POST", "/v1/streams", token: op, body: [
            // 10 fps: the stream lasts 6 s, so that the preview viewer below connects before it ends even on a loaded
            // machine (at 30 fps a CI run once connected at frame 48 of 60).
            "source": "pan.avi", "fps_cap": 10, "outputs": ["file": "cam.jsonl", "video": "cam.mp4"],
        ])
        #expect(created == 201, "\(stream)")
        let id = try #require(stream["id"] as? String)
        // The preview viewer connects first, before the stream can end.
        let (port, viewer) = (server.port, ServerProcess.viewerToken)
        let preview = try await onOwnThread {
            try StalledReader(port: port, path: "/v1/streams/\(id)/preview.mjpeg", token: viewer)
        }
        defer { preview.close() }
        let stalled = try await onOwnThread {
            try StalledReader(port: port, path: "/v1/streams/\(id)/results", token: viewer)
        }
        #expect(stalled.head.contains("200 OK") && stalled.head.contains("text/event-stream"))

        // The preview: multipart parts, each a JPEG of the frame. Read until a frame from the second half arrives: the
        // pan's first frames have nothing to detect. A viewer may skip frames (a viewer drops, the stream does not), so
        // the parts are not counted.
        let previews = try await previewParts(preview, untilFrame: 30)
        #expect((previews.last?.frame ?? -1) >= 30, "\(previews.map(\.frame))")
        for part in previews {
            let image = try ImageDecoder.decode(part.jpeg)
            // The grey placeholder, while no frame had come yet (X-Frame -1), or a frame of the video.
            #expect(part.frame == -1 ? image.width == 160 && image.height == 90
                : image.width == 320 && image.height == 240, "frame \(part.frame): \(image.width)x\(image.height)")
        }

        // The stream runs to its end although the stalled viewer read nothing.
        #expect(await eventuallyAsync(timeout: .seconds(120)) {
            let status = (try? await server.json("GET", "/v1/streams/\(id)", token: op))?.1 ?? [:]
            return status["state"] as? String == "ended"
        })
        let (_, final) = try await server.json("GET", "/v1/streams/\(id)", token: op)
        #expect(final["frames_detected"] as? Int == 60 && final["frames_dropped"] as? Int == 0, "\(final)")

        // The annotated video: 60 frames of 320x240 at the source's 30 fps, once its file is complete.
        let videoComplete = await eventuallyAsync(timeout: .seconds(60)) {
            let probe = try? await runProcess("/usr/bin/ffprobe", ["-v", "error", "-count_frames", "-select_streams", "v:0",
                "-show_entries", "stream=width,height,r_frame_rate,nb_read_frames", "-of", "csv=p=0",
                output.file("cam.mp4")])
            return probe?.stdout.trimmed == "320,240,30/1,60"
        }
        let probeErrors = videoComplete ? ""
            : (try? await runProcess("/usr/bin/ffprobe", ["-v", "error", output.file("cam.mp4")]))?.stderr ?? ""
        #expect(videoComplete, "\(probeErrors)")
        let video = ((final["deliveries"] as? [String: Any])?["video"] as? [String: Any]) ?? [:]
        #expect(video["published"] as? Int == 60 && video["failed"] as? Int == 0, "\(video)")
        let file = ((final["deliveries"] as? [String: Any])?["file"] as? [String: Any]) ?? [:]
        #expect(file["published"] as? Int == 60 && file["failed"] as? Int == 0 && file["target"] as? String == "cam.jsonl",
            "\(file)")
        stalled.close()

        // The JSON-lines file: frames 0…59 once each, in order; the preview's boxes are where its results say.
        let lines = try String(contentsOfFile: output.file("cam.jsonl"), encoding: .utf8).split(separator: "\n")
        let results = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(results.map { $0["frame"] as? Int ?? -1 } == Array(0..<60))
        var annotatedParts = 0
        // Not the placeholder (frame -1), shown while no frame had come.
        for part in previews where part.frame >= 0 {
            let detections = try JSONDecoder().decode([Detection].self, from: JSONSerialization.data(
                withJSONObject: results[part.frame]["detections"] as? [Any] ?? []))
            if detections.isEmpty { continue }
            annotatedParts += 1
            let preview = try ImageDecoder.decode(part.jpeg)
            // The frame as FFmpeg decodes it (the stream's own pixels), annotated here from its results. Over the
            // pixels the boxes and labels cover, the preview must be that drawing up to JPEG's loss: more than twice
            // as close to it as to the bare frame. Whole regions, not single pixels: a 2-pixel outline's colour is
            // smeared by 4:2:0 chroma subsampling where it straddles two chroma blocks.
            let png = output.file("frame-\(part.frame).png")
            try TestVideos.extractPNG(TestVideos.mjpeg, frame: part.frame, to: png)
            let bare = try ImageDecoder.decode([UInt8](Data(contentsOf: URL(fileURLWithPath: png))))
            var drawn = bare
            Annotator.draw(detections.map {
                Annotation(x1: $0.box.x1, y1: $0.box.y1, x2: $0.box.x2, y2: $0.box.y2,
                    label: "\($0.className) \(String(format: "%.2f", $0.confidence))", classID: $0.classID)
            }, on: &drawn)
            try #require(preview.pixels.count == bare.pixels.count)
            var (covered, fromDrawn, fromBare) = (0, 0, 0)
            for i in bare.pixels.indices where drawn.pixels[i] != bare.pixels[i] {
                covered += 1
                fromDrawn += abs(Int(preview.pixels[i]) - Int(drawn.pixels[i]))
                fromBare += abs(Int(preview.pixels[i]) - Int(bare.pixels[i]))
            }
            #expect(covered > 0 && fromDrawn * 2 < fromBare,
                "frame \(part.frame): over \(covered) annotated values the preview is \(fromDrawn) from the drawing, \(fromBare) from the bare frame")
        }
        #expect(annotatedParts > 0, "no preview frame had detections: \(previews.map(\.frame))")

        // The stream's series are in /metrics until it is deleted, then gone (random ids must not pile series up).
        let series = "yoloswap_stream_frames_total{stream=\"\(id)\"}"
        let before = String(decoding: try await server.request("GET", "/metrics").1, as: UTF8.self)
        #expect(before.contains(series + " 60"), "\(before.split(separator: "\n").filter { $0.contains("stream") })")
        #expect(try await server.json("DELETE", "/v1/streams/\(id)", token: op).0 == 200)
        #expect(try await server.json("GET", "/v1/streams/\(id)", token: op).0 == 404)
        let after = String(decoding: try await server.request("GET", "/metrics").1, as: UTF8.self)
        #expect(!after.contains("stream=\"\(id)\""), "\(after.split(separator: "\n").filter { $0.contains(id) })")
        // A named stream run twice, the second replacing the ended first: one series, counting on (120).
        for _ in 0..<2 {
            #expect(try await server.json("POST", "/v1/streams", token: op,
                body: ["source": "pan.avi", "name": "twice"]).0 == 201)
            #expect(await eventuallyAsync(timeout: .seconds(120)) {
                let status = (try? await server.json("GET", "/v1/streams/twice", token: op))?.1 ?? [:]
                return status["state"] as? String == "ended"
            })
        }
        let twice = String(decoding: try await server.request("GET", "/metrics").1, as: UTF8.self)
        #expect(twice.contains("yoloswap_stream_frames_total{stream=\"twice\"} 120"),
            "\(twice.split(separator: "\n").filter { $0.contains("twice") })")

        // The audit log: the start with its source and outputs, the stop with how far the stream got, and the refused
        // requests with their reasons.
        let entries = try await server.auditEntries()
        let mine = entries.filter { ($0["reason"] as? String)?.hasPrefix("stream \(id):") == true }
        let start = mine.first { $0["action"] as? String == "stream.start" }
        let stop = mine.first { $0["action"] as? String == "stream.stop" }
        #expect(start?["actor"] as? String == "alice" && start?["slot"] as? String == "default", "\(mine)")
        #expect((start?["reason"] as? String)?.contains("outputs results, preview, file:cam.jsonl, video:cam.mp4")
            == true, "\(start ?? [:])")
        #expect((stop?["reason"] as? String)?.contains("60 frames detected, 0 dropped") == true, "\(mine)")
        // The stop is recorded when it was made (it carried the start's time: `GET /v1/audit?since=` missed it).
        let (startTime, stopTime) = (start?["time_us"] as? Int ?? .max, stop?["time_us"] as? Int ?? .min)
        #expect(stopTime > startTime + 5_000_000, "a 6 s stream: start \(startTime), stop \(stopTime)")
        let refused = entries.filter { $0["action"] as? String == "stream.start" && $0["result"] as? String == "refused" }
        #expect(refused.count == 9, "\(refused)")
        #expect(refused.contains { $0["slot"] as? String == "nowhere" }, "\(refused)")
        #expect(refused.contains { ($0["reason"] as? String)?.contains("no MQTT connection") == true })

        // A quiet stream (a UDP camera that sends nothing): its results viewer gets a keep-alive comment every
        // `keep_alive_s` and nothing else. (Should none come, the stream is deleted after a minute, which ends the
        // response and the read.)
        let silent = Int.random(in: 20_000...32_000)
        #expect(try await server.json("POST", "/v1/streams", token: op,
            body: ["source": "udp://127.0.0.1:\(silent)", "name": "quiet"]).0 == 201)
        let quietViewer = try await onOwnThread {
            try StalledReader(port: port, path: "/v1/streams/quiet/results", token: viewer)
        }
        defer { quietViewer.close() }
        let watchdog = Task {
            try await Task.sleep(for: .seconds(60))
            _ = try? await server.json("DELETE", "/v1/streams/quiet", token: op)
        }
        let comment = ": keep-alive\n\n"
        let quietText = try await onOwnThread { () -> String in
            var received = quietViewer.rest
            while String(decoding: received, as: UTF8.self).components(separatedBy: comment).count <= 3 {
                let more = quietViewer.read()
                if more.isEmpty { break }
                received += more
            }
            return String(decoding: received, as: UTF8.self)
        }
        watchdog.cancel()
        #expect(quietText.hasPrefix(comment + comment + comment)
            && quietText.replacingOccurrences(of: comment, with: "").isEmpty, "\(quietText)")
        #expect(try await server.json("DELETE", "/v1/streams/quiet", token: op).0 == 200)
    }

    @Test("SIGTERM with a stream running and a results viewer reading: the stream stops, the viewer's response ends, the server exits 0, the stop is audited")
    func shutdownStopsStreams() async throws {
        let state = try TemporaryDirectory()
        let yaml = Self.yaml(streams: "{ media_dir: \"\(Self.media)\" }")
        let server = try await ServerProcess(yaml: yaml, stateDirectory: URL(fileURLWithPath: state.path))
        defer { server.stop(signal: SIGKILL) }
        // Two frames a second: the 60 frames would take 30 s.
        let (created, stream) = try await server.json("POST", "/v1/streams", token: ServerProcess.operatorToken,
            body: ["source": "pan.avi", "fps_cap": 2])
        #expect(created == 201, "\(stream)")
        let id = try #require(stream["id"] as? String)
        let viewer = try StalledReader(port: server.port, path: "/v1/streams/\(id)/results",
            token: ServerProcess.viewerToken)
        var seen = String(decoding: viewer.rest, as: UTF8.self)
        while !seen.contains("event: frame") {
            let more = viewer.read()
            guard !more.isEmpty else { break }
            seen += String(decoding: more, as: UTF8.self)
        }
        #expect(seen.contains("event: frame"))

        #expect(server.stop(signal: SIGTERM, timeout: 30) == 0, "\(server.log.suffix(3000))")
        // The viewer got the stream's end, then the end of the response.
        while true {
            let more = viewer.read()
            if more.isEmpty { break }
            seen += String(decoding: more, as: UTF8.self)
        }
        #expect(seen.contains("event: ended"), "\(seen.suffix(500))")
        viewer.close()

        let restarted = try await ServerProcess(yaml: yaml, stateDirectory: URL(fileURLWithPath: state.path))
        defer { restarted.stop(signal: SIGKILL) }
        let stop = try await restarted.auditEntries().first { $0["action"] as? String == "stream.stop" }
        #expect(stop?["actor"] as? String == "system", "\(stop ?? [:])")
        #expect((stop?["reason"] as? String)?.hasPrefix("stream \(id):") == true)
        #expect((stop?["reason"] as? String)?.hasSuffix("state stopped; shutting down") == true, "\(stop ?? [:])")
    }

    @Test("streams.run: started by the service once its slots are up, under their names, each time it starts; names are ids, a running one's is taken")
    func configuredStreams() async throws {
        let state = try TemporaryDirectory()
        // `line-a` runs the 60-frame video at 20 fps (3 s); `ghost` names a slot that does not exist.
        let yaml = Self.yaml(streams: """
            { media_dir: "\(Self.media)", run: [{ name: line-a, source: pan.avi, fps_cap: 20 },
                                                { name: ghost, source: pan.avi, slot: nope }] }
            """)
        let op = ServerProcess.operatorToken
        for run in 1...2 {
            let server = try await ServerProcess(yaml: yaml, stateDirectory: URL(fileURLWithPath: state.path))
            defer { server.stop() }
            // Ready means the slots are up; the configured streams start right after.
            #expect(await eventuallyAsync {
                let status = (try? await server.json("GET", "/v1/streams/line-a", token: op))?.1 ?? [:]
                return status["state"] as? String == "ended"
            }, "run \(run)")
            let (_, line) = try await server.json("GET", "/v1/streams/line-a", token: op)
            #expect(line["frames_detected"] as? Int == 60 && line["slot"] as? String == "default", "\(line)")
            #expect(try await server.json("GET", "/v1/streams/ghost", token: op).0 == 404)

            // Each start is audited by `system`: line-a as started, ghost as refused with the reason.
            let entries = try await server.auditEntries().filter { $0["action"] as? String == "stream.start" }
            let started = entries.filter { $0["result"] as? String == "succeeded" }
            let refused = entries.filter { $0["result"] as? String == "refused" }
            #expect(started.count == run && refused.count == run, "run \(run): \(entries)")
            #expect(started.allSatisfy { $0["actor"] as? String == "system"
                && ($0["reason"] as? String)?.hasPrefix("stream line-a:") == true
                && ($0["reason"] as? String)?.hasSuffix("configured in streams.run") == true }, "\(started)")
            #expect(refused.allSatisfy { $0["actor"] as? String == "system"
                && ($0["reason"] as? String)?.contains("stream ghost (configured in streams.run): no slot 'nope'")
                    == true }, "\(refused)")
            guard run == 2 else { continue }

            // A name given to POST is the id; while that stream runs the name is taken, once it is gone it is free.
            let body: [String: Any] = ["name": "cam-1", "source": "pan.avi", "fps_cap": 2]
            let (created, stream) = try await server.json("POST", "/v1/streams", token: op, body: body)
            #expect(created == 201 && stream["id"] as? String == "cam-1", "\(stream)")
            let (taken, problem) = try await server.json("POST", "/v1/streams", token: op, body: body)
            #expect(taken == 409 && (problem["detail"] as? String)?.contains("'cam-1' is running") == true,
                "\(problem)")
            let (badName, _) = try await server.json("POST", "/v1/streams", token: op,
                body: ["name": "cam/1", "source": "pan.avi"])
            #expect(badName == 400)
            #expect(try await server.json("DELETE", "/v1/streams/cam-1", token: op).0 == 200)
            let (again, _) = try await server.json("POST", "/v1/streams", token: op, body: body)
            #expect(again == 201)
            // The name of an ended stream is reused: its final status gives way.
            let (reused, restarted) = try await server.json("POST", "/v1/streams", token: op,
                body: ["name": "line-a", "source": "pan.avi", "fps_cap": 2])
            #expect(reused == 201 && ["starting", "running"].contains(restarted["state"] as? String ?? ""),
                "\(restarted)")
        }
    }

    /// Reads a preview's parts until one of frame `untilFrame` or later (or the end); the socket is read on a thread
    /// of its own, not the concurrency pool's.
    private func previewParts(_ reader: StalledReader, untilFrame: Int) async throws -> [(frame: Int, jpeg: [UInt8])] {
        #expect(reader.head.contains("multipart/x-mixed-replace; boundary=frame"))
        var parts: [(Int, [UInt8])] = []
        var buffer = reader.rest
        while (parts.last?.0 ?? -1) < untilFrame {
            // A part: --frame CRLF headers CRLF CRLF jpeg CRLF.
            if let headerEnd = find([13, 10, 13, 10], in: buffer) {
                let headers = String(decoding: buffer[..<headerEnd], as: UTF8.self)
                let length = headers.split(separator: "\r\n").first { $0.hasPrefix("Content-Length: ") }
                    .flatMap { Int($0.dropFirst(16)) }
                let frame = headers.split(separator: "\r\n").first { $0.hasPrefix("X-Frame: ") }
                    .flatMap { Int($0.dropFirst(9)) }
                let length_ = try #require(length, "\(headers)")
                #expect(headers.hasPrefix("--frame\r\nContent-Type: image/jpeg"))
                if buffer.count >= headerEnd + 4 + length_ + 2 {
                    let jpeg = Array(buffer[(headerEnd + 4)..<(headerEnd + 4 + length_)])
                    #expect(jpeg.prefix(2) == [0xFF, 0xD8] && jpeg.suffix(2) == [0xFF, 0xD9])
                    parts.append((frame ?? -1, jpeg))
                    buffer.removeFirst(headerEnd + 4 + length_ + 2)
                    continue
                }
            }
            let more = try await onOwnThread { reader.read() }
            guard !more.isEmpty else { break }
            buffer += more
        }
        return parts
    }
}

private func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) {
        return i
    }
    return nil
}

/// GET on a plain socket: reads the response head (and whatever came with it), then reads only when asked; the
/// body's chunked transfer coding is undone.
final class StalledReader: @unchecked Sendable {
    // @unchecked: used by one test at a time, its reads on a thread of their own (`onOwnThread`) one after another.
    private let connection: RawConnection
    private(set) var head = ""
    private(set) var rest: [UInt8] = []
    /// Raw body bytes not yet de-chunked, and the bytes left in the current chunk.
    private var raw: [UInt8] = []
    private var chunkLeft = 0

    init(port: Int, path: String, token: String, receiveBuffer: Int32? = nil) throws {
        connection = try RawConnection(port: port, receiveBuffer: receiveBuffer)
        try connection.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n\r\n")
        var received: [UInt8] = []
        while find([13, 10, 13, 10], in: received) == nil {
            let chunk = connection.receiveBytes()
            guard !chunk.isEmpty else { break }
            received += chunk
        }
        let end = find([13, 10, 13, 10], in: received) ?? received.count
        head = String(decoding: received[..<end], as: UTF8.self)
        raw = Array(received.dropFirst(min(end + 4, received.count)))
        rest = dechunk()
    }

    /// The next body bytes (empty at the end).
    func read() -> [UInt8] {
        while true {
            let chunk = connection.receiveBytes()
            guard !chunk.isEmpty else { return [] }
            raw += chunk
            let body = dechunk()
            if !body.isEmpty { return body }
        }
    }


    /// Takes what complete chunk data `raw` holds: `size CRLF data CRLF`, repeated.
    private func dechunk() -> [UInt8] {
        var out: [UInt8] = []
        while true {
            if chunkLeft > 0 {
                let n = min(chunkLeft, raw.count)
                out += raw.prefix(n)
                raw.removeFirst(n)
                chunkLeft -= n
                if chunkLeft > 0 { return out }
                chunkLeft = -2  // the CRLF after the data
            }
            if chunkLeft == -2 {
                guard raw.count >= 2 else { return out }
                raw.removeFirst(2)
                chunkLeft = 0
            }
            guard let lineEnd = find([13, 10], in: raw) else { return out }
            let size = Int(String(decoding: raw[..<lineEnd], as: UTF8.self).split(separator: ";").first ?? "", radix: 16) ?? 0
            raw.removeFirst(lineEnd + 2)
            guard size > 0 else { return out }
            chunkLeft = size
        }
    }

    /// Whether the server has closed the connection, once what it sent before is read and dropped.
    func isClosedByServer() -> Bool {
        while let bytes = connection.receiveAvailableBytes() {
            if bytes.isEmpty { return false }
        }
        return true
    }

    func close() { connection.close() }
}

