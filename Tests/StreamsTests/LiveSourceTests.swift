import Foundation
import HotSwap
import Primitives
import Streams
import TestSupport
import Testing
import VideoDecoding
import YOLO

extension StreamSuite {
    @Suite("Live sources: UDP MPEG-TS, an RTSP camera")
    struct LiveSourceTests {
        /// A source program the test kills and starts again, as a camera that loses power and comes back.
        final class SourceProcess: Sendable {
            let process: Process
            /// - Parameter log: a file for its stdout and stderr (none: discarded).
            init(_ executable: String, _ arguments: [String], log: String? = nil) throws {
                process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = arguments
                if let log, FileManager.default.createFile(atPath: log, contents: nil),
                   let handle = FileHandle(forWritingAtPath: log) {
                    process.standardOutput = handle
                    process.standardError = handle
                } else {
                    process.standardOutput = FileHandle.nullDevice
                    process.standardError = FileHandle.nullDevice
                }
                try process.run()
            }
            /// Kills it (SIGKILL: nothing is closed cleanly).
            func stop() {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
            }
        }

        /// `ffmpeg -re` publishing the test video in a loop, at its real rate, to a UDP port on loopback.
        static func udpPublisher(port: Int) throws -> SourceProcess {
            try SourceProcess("/usr/bin/ffmpeg", ["-nostdin", "-hide_banner", "-loglevel", "error", "-re",
                "-stream_loop", "-1", "-i", TestVideos.transportStream, "-c", "copy", "-f", "mpegts",
                "udp://127.0.0.1:\(port)?pkt_size=1316"])
        }

        /// An RTSP camera: GStreamer's RTSP server (`tools/rtsp_camera.py`, Debian's python3 and gst-rtsp-server)
        /// sending `cameraPhoto` as live MJPEG over RTP at 15 frames a second.
        static func rtspCamera(port: Int, log: String) throws -> SourceProcess {
            try SourceProcess("/usr/bin/python3", [Repository.path("tools/rtsp_camera.py"), "--photo", cameraPhoto,
                "--port", "\(port)", "--fps", "15"], log: log)
        }
        static let cameraPhoto = Repository.path("models/images/zidane.jpg")

        /// Kills `source` and expects the stream to reconnect; starts it again and expects `frames` more frames,
        /// the stream running. Returns the new source.
        static func restart(_ source: SourceProcess, of stream: VideoStream, thenFrames frames: Int,
                            _ startAgain: () throws -> SourceProcess) async throws -> SourceProcess {
            let reconnects = stream.currentStatus.reconnects
            source.stop()
            #expect(await eventually(timeout: .seconds(30)) { stream.currentStatus.reconnects > reconnects })
            let before = stream.currentStatus.frames_detected
            let again = try startAgain()
            #expect(await eventually(timeout: .seconds(60)) {
                let s = stream.currentStatus
                return s.frames_detected >= before + frames && s.state == .running
            }, "\(stream.currentStatus)")
            return again
        }

        /// A one-slot manager with `model` active, and a live stream's configuration on it that notices a stall within
        /// 3 s (a first frame missing within 10 s) and retries quickly.
        static func liveSetUp(url: String, model: String) async throws
            -> (manager: ModelManager, slot: ModelSlot, configuration: StreamConfiguration)
        {
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1, intraOpThreads: 1,
                warmupRuns: 1), loader: streamLoader)
            let slot = try await manager.createSlot("cam")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "cam", path: Repository.path(model)))
            var configuration = StreamConfiguration(source: .network(url: url), slot: "cam")
            configuration.stallTimeout = .seconds(3)
            configuration.openTimeout = .seconds(10)
            configuration.reconnectInitial = .milliseconds(100)
            configuration.reconnectMaximum = .milliseconds(500)
            return (manager, slot, configuration)
        }

        @Test("latest back-pressure follows the source, counting every frame it drops; the stream reconnects after the publisher restarts")
        func followsDropsAndReconnects() async throws {
            let port = Int.random(in: 20_000...32_000)
            let (manager, slot, configuration) = try await Self.liveSetUp(url: "udp://127.0.0.1:\(port)",
                model: "models/yolov3-tiny-coco-320.onnx")
            #expect(configuration.backPressure == .latest)
            // An overloaded consumer: each frame's result takes at least 150 ms to hand on, a 30 fps source is faster.
            let log = ResultLog()
            let stream = VideoStream(id: "udp", configuration: configuration, slot: slot, sink: { result in
                log.append(result)
                try? await Task.sleep(for: .milliseconds(150))
            })
            var publisher = try Self.udpPublisher(port: port)
            stream.start()
            defer { publisher.stop() }

            #expect(await eventually(timeout: .seconds(60)) {
                let s = stream.currentStatus
                return s.frames_detected >= 15 && s.frames_dropped >= 15
            }, "\(stream.currentStatus)")
            // Every decoded frame was detected or counted as dropped (one may be in flight between the two).
            let s = stream.currentStatus
            #expect((0...2).contains(s.frames_decoded - s.frames_detected - s.frames_dropped), "\(s)")
            let frames = log.all.map(\.frame)
            #expect(zip(frames, frames.dropFirst()).allSatisfy { $0 < $1 })
            #expect(zip(frames, frames.dropFirst()).contains { $1 - $0 > 1 })

            // The publisher goes away: the stream notices the stall and reconnects; frames flow again once it is back.
            publisher = try await Self.restart(publisher, of: stream, thenFrames: 5) {
                try Self.udpPublisher(port: port)
            }
            await stream.stop()
            #expect(stream.currentStatus.state == .stopped)
            await manager.shutdown()
        }

        @Test("a live source under block with frames in flight hands each result on as it is detected, not once later frames arrive")
        func liveBlockHoldsNoResults() async throws {
            let port = Int.random(in: 20_000...32_000)
            var (manager, slot, configuration) = try await Self.liveSetUp(url: "udp://127.0.0.1:\(port)",
                model: "models/yolov3-tiny-coco-320.onnx")
            configuration.backPressure = .block
            configuration.framesInFlight = 8
            let stream = VideoStream(id: "udp-block", configuration: configuration, slot: slot)
            let publisher = try Self.udpPublisher(port: port)
            stream.start()
            #expect(await eventually(timeout: .seconds(60)) { stream.currentStatus.frames_detected >= 10 },
                "\(stream.currentStatus)")
            // The camera goes away: every frame it sent is detected and handed on while it is down (before, the last
            // seven waited in flight for frames after them, until it came back: no time is enough then). A minute and a
            // half: at the start of a CI run the synchronous tests that run Python hold the cooperative pool for about
            // half a minute, and a rehearsal saw this stream make no progress for 20 s.
            publisher.stop()
            #expect(await eventually(timeout: .seconds(90)) {
                let s = stream.currentStatus
                return s.frames_detected == s.frames_decoded && s.reconnects > 0
            }, "\(stream.currentStatus)")
            await stream.stop()
            await manager.shutdown()
        }

        @Test("a live stream that fails stays failed: no reconnect after a frame over the limit, nor once its slot shut down")
        func failedLiveStreamStaysFailed() async throws {
            let port = Int.random(in: 20_000...32_000)
            let (manager, slot, configuration) = try await Self.liveSetUp(url: "udp://127.0.0.1:\(port)",
                model: "models/yolov3-tiny-coco-320.onnx")
            let publisher = try Self.udpPublisher(port: port)
            defer { publisher.stop() }

            // The source's 320x240 frames are over this stream's limit: it fails with the size, and stays failed —
            // just over the limit (this decoder's check) and far over it (FFmpeg's).
            for limit in [320 * 239, 160 * 120] {
                var small = configuration
                small.maxPixels = limit
                let refused = VideoStream(id: "too-large", configuration: small, slot: slot)
                refused.start()
                #expect(await eventually(timeout: .seconds(60)) { refused.isFinished }, "\(refused.currentStatus)")
                try await Task.sleep(for: .milliseconds(1500))
                let r = refused.currentStatus
                #expect(r.state == .failed && r.reconnects == 0 && (r.last_error ?? "").contains("320x240"),
                    "limit \(limit): \(r)")
            }

            // The slot goes away under a running stream: the stream fails, and its source is not reconnected.
            let stream = VideoStream(id: "udp", configuration: configuration, slot: slot)
            stream.start()
            #expect(await eventually(timeout: .seconds(60)) { stream.currentStatus.frames_detected >= 3 },
                "\(stream.currentStatus)")
            await manager.shutdown()
            #expect(await eventually(timeout: .seconds(30)) { stream.isFinished }, "\(stream.currentStatus)")
            let reconnects = stream.currentStatus.reconnects
            try await Task.sleep(for: .milliseconds(1500))
            let s = stream.currentStatus
            #expect(s.state == .failed && s.reconnects == reconnects, "\(s)")
        }

        @Test("a results subscriber gets a keep-alive after each quiet interval (none sooner), and none after the stream's end; a preview viewer, the placeholder frame")
        func keepAlive() async throws {
            let port = Int.random(in: 20_000...32_000)
            let (manager, slot, live) = try await Self.liveSetUp(url: "udp://127.0.0.1:\(port)",
                model: "models/yolov3-tiny-coco-320.onnx")
            var configuration = live
            configuration.keepAliveInterval = .milliseconds(300)
            // Nothing is published: a camera still opening, so nothing but keep-alives is sent.
            let stream = VideoStream(id: "quiet", configuration: configuration, slot: slot)
            var messages = stream.subscribe(buffer: 64, keepAlive: true).makeAsyncIterator()
            // A subscriber that did not ask for keep-alives (the MQTT output) gets none.
            var plain = stream.subscribe(buffer: 64).makeAsyncIterator()
            var previews = stream.previewFrames().makeAsyncIterator()
            let started = ContinuousClock.now
            stream.start()
            // Each is sent an interval after the one before (the first, after the start): the k-th cannot arrive
            // sooner than k intervals after the start, however late the ones before it were read.
            for index in 1...4 {
                let message = await messages.next()
                guard case .keepAlive = message else {
                    Issue.record("message \(index): \(String(describing: message))")
                    break
                }
                let elapsed = ContinuousClock.now - started
                #expect(elapsed >= .milliseconds(300) * index, "keep-alive \(index) after \(elapsed)")
            }
            await stream.stop()
            var rest: [StreamMessage] = []
            while let message = await messages.next() { rest.append(message) }
            // The stop's event ends the sequence; a keep-alive may have come just before it.
            guard case .event(let event)? = rest.last else {
                Issue.record("the sequence did not end with the stop's event: \(rest)")
                await manager.shutdown()
                return
            }
            #expect(event.type == .ended)
            #expect(rest.dropLast().allSatisfy { if case .keepAlive = $0 { true } else { false } }, "\(rest)")
            var plainMessages: [StreamMessage] = []
            while let message = await plain.next() { plainMessages.append(message) }
            #expect(plainMessages.count == 1 && !plainMessages[0].isKeepAlive, "\(plainMessages)")
            #expect(stream.currentStatus.viewer_drops == 0)
            // A preview viewer was shown the grey placeholder meanwhile (before, nothing at all until a first frame:
            // a viewer that left was never found out, its connection kept).
            let placeholder = await previews.next()
            #expect(placeholder?.frame == -1 && placeholder?.detections.isEmpty == true
                && placeholder?.image.width == 160, "\(String(describing: placeholder?.frame))")
            await manager.shutdown()
        }

        @Test("a live source has the open timeout for its first frame, the stall timeout between frames")
        func openTimeoutThenStallTimeout() async throws {
            let port = Int.random(in: 20_000...32_000)
            let (manager, slot, live) = try await Self.liveSetUp(url: "udp://127.0.0.1:\(port)",
                model: "models/yolov3-tiny-coco-320.onnx")
            var configuration = live
            configuration.stallTimeout = .seconds(2)
            configuration.openTimeout = .seconds(6)
            // Nothing published yet: a camera still opening (the stall timeout alone would restart it after 2 s).
            let stream = VideoStream(id: "opening", configuration: configuration, slot: slot)
            let started = ContinuousClock.now
            stream.start()
            // Restarted past the open timeout (not before: a slow machine only makes it later), the reason saying which
            // limit ran out.
            #expect(await eventually(timeout: .seconds(30)) { stream.currentStatus.reconnects >= 1 },
                "\(stream.currentStatus)")
            #expect(ContinuousClock.now - started >= .seconds(6), "\(stream.currentStatus)")
            #expect(stream.currentStatus.last_error == "no first frame within 6.0 seconds", "\(stream.currentStatus)")

            // Once frames flowed, a silent source is a stall: the stall timeout's reason.
            let publisher = try Self.udpPublisher(port: port)
            defer { publisher.stop() }
            #expect(await eventually(timeout: .seconds(60)) { stream.currentStatus.frames_detected >= 3 },
                "\(stream.currentStatus)")
            let reconnects = stream.currentStatus.reconnects
            publisher.stop()
            #expect(await eventually(timeout: .seconds(30)) {
                let s = stream.currentStatus
                return s.reconnects > reconnects && s.last_error == "no frame for 2.0 seconds"
            }, "\(stream.currentStatus)")
            await stream.stop()
            await manager.shutdown()
        }

        @Test("an RTSP camera (RTSP over TCP, MJPEG): frames at its rate with their pts and the photo's detections; the camera restarts, the stream reconnects")
        func rtspCamera() async throws {
            // Below the kernel's ephemeral range (32768…), which any outgoing connection could be given.
            let port = Int.random(in: 20_000...32_000)
            let folder = try TemporaryDirectory()
            let (manager, slot, configuration) = try await Self.liveSetUp(url: "rtsp://127.0.0.1:\(port)/cam",
                model: "models/yolov3-tiny-coco-416.onnx")
            let log = ResultLog()
            let stream = VideoStream(id: "rtsp", configuration: configuration, slot: slot, sink: { log.append($0) })
            // The stream may start before the server listens: it retries, as it would for a camera that boots.
            var camera = try Self.rtspCamera(port: port, log: folder.file("camera-1.log"))
            // Where FFmpeg restarted (a stall on a loaded machine, or the camera's restart below): the next frame's
            // index, from the reconnect events.
            let restarts = Locked<[Int]>([])
            let events = stream.subscribe(buffer: 4096)
            let watcher = Task {
                for await case .event(let event) in events where event.type == .reconnect {
                    if let frame = event.frame { restarts.withLock { $0.append(frame) } }
                }
            }
            defer { watcher.cancel() }
            stream.start()
            defer { camera.stop() }
            do {
                #expect(await eventually(timeout: .seconds(60)) { stream.currentStatus.frames_detected >= 10 },
                    "\(stream.currentStatus); the camera: \(Self.text(folder.file("camera-1.log")))")
                let first = log.all
                #expect(first.allSatisfy { $0.image.width == 1280 && $0.image.height == 720 })
                // The camera's clock: consecutive frames 1/15 s apart (RTP's 90 kHz timestamps), skipped ones counted;
                // an FFmpeg restarted by a stall starts its pts again (from the new session's timestamps, which may
                // be later), so pairs across one are left out.
                let boundaries = restarts.value
                let pairs = zip(first, first.dropFirst()).filter { a, b in
                    (b.pts ?? 0) > (a.pts ?? 0) && !boundaries.contains { a.frame < $0 && $0 <= b.frame }
                }
                #expect(pairs.count >= 5)
                for (a, b) in pairs {
                    let expected = Double(b.frame - a.frame) / 15
                    #expect(abs(((b.pts ?? 0) - (a.pts ?? 0)) - expected) < 0.002, "frames \(a.frame), \(b.frame)")
                }
                // What the camera shows is the photo, re-encoded as JPEG: its clear detections (≥ 0.6) are the
                // photo's own, box for box, and the photo's clear ones are all there.
                let direct = try await slot.detect(imageBytes: Array(Data(contentsOf: URL(fileURLWithPath:
                    Self.cameraPhoto)))).result.detections
                #expect(direct.contains { $0.confidence >= 0.6 })
                for result in first {
                    #expect(Self.matches(result.detections, direct) && Self.matches(direct, result.detections),
                        "frame \(result.frame): \(Self.describe(result.detections)) vs \(Self.describe(direct))")
                }

                // The camera goes away: its connection drops, the stream reconnects and goes on once it is back.
                camera = try await Self.restart(camera, of: stream, thenFrames: 10) {
                    try Self.rtspCamera(port: port, log: folder.file("camera-2.log"))
                }
                let frames = log.all.map(\.frame)
                #expect(zip(frames, frames.dropFirst()).allSatisfy { $0 < $1 })
            } catch {
                await stream.stop()
                await manager.shutdown()
                throw error
            }
            await stream.stop()
            #expect(stream.currentStatus.state == .stopped)
            await manager.shutdown()
        }

        /// Whether every detection of `clear` at confidence ≥ 0.6 has one in `other` of its class, at ≥ 0.4, whose box
        /// overlaps it with IoU ≥ 0.8 (a margin either side of the threshold: no detection near it decides).
        static func matches(_ clear: [Detection], _ other: [Detection]) -> Bool {
            clear.filter { $0.confidence >= 0.6 }.allSatisfy { d in
                other.contains { $0.classID == d.classID && $0.confidence >= 0.4 && $0.box.iou(d.box) >= 0.8 }
            }
        }

        static func describe(_ detections: [Detection]) -> String {
            detections.map { "\($0.className) \(String(format: "%.3f", $0.confidence))" }.joined(separator: ", ")
        }

        static func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
    }
}
