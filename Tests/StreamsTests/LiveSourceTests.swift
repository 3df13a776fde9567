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
            init(_ executable: String, _ arguments: [String]) throws {
                process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = arguments
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
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
        static func rtspCamera(port: Int) throws -> SourceProcess {
            try SourceProcess("/usr/bin/python3", [Repository.path("tools/rtsp_camera.py"), "--photo", cameraPhoto,
                "--port", "\(port)", "--fps", "15"])
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
        /// 3 s and retries quickly.
        static func liveSetUp(url: String, model: String) async throws
            -> (manager: ModelManager, slot: ModelSlot, configuration: StreamConfiguration)
        {
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1, intraOpThreads: 1,
                warmupRuns: 1), loader: streamLoader)
            let slot = try await manager.createSlot("cam")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "cam", path: Repository.path(model)))
            var configuration = StreamConfiguration(source: .network(url: url), slot: "cam")
            configuration.stallTimeout = .seconds(3)
            configuration.reconnectInitial = .milliseconds(100)
            configuration.reconnectMaximum = .milliseconds(500)
            return (manager, slot, configuration)
        }

        @Test("latest back-pressure follows the source, counting every frame it drops; the stream reconnects after the publisher restarts")
        func followsDropsAndReconnects() async throws {
            let port = Int.random(in: 20_000...60_000)
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

        @Test("an RTSP camera (RTSP over TCP, MJPEG): frames at its rate with their pts and the photo's detections; the camera restarts, the stream reconnects")
        func rtspCamera() async throws {
            let port = Int.random(in: 20_000...60_000)
            let (manager, slot, configuration) = try await Self.liveSetUp(url: "rtsp://127.0.0.1:\(port)/cam",
                model: "models/yolov3-tiny-coco-416.onnx")
            let log = ResultLog()
            let stream = VideoStream(id: "rtsp", configuration: configuration, slot: slot, sink: { log.append($0) })
            // The stream may start before the server listens: it retries, as it would for a camera that boots.
            var camera = try Self.rtspCamera(port: port)
            stream.start()
            defer { camera.stop() }

            #expect(await eventually(timeout: .seconds(60)) { stream.currentStatus.frames_detected >= 10 },
                "\(stream.currentStatus)")
            let first = log.all
            #expect(first.allSatisfy { $0.image.width == 1280 && $0.image.height == 720 })
            // The camera's clock: consecutive frames 1/15 s apart (RTP's 90 kHz timestamps), skipped ones counted.
            for (a, b) in zip(first, first.dropFirst()) {
                let expected = Double(b.frame - a.frame) / 15
                #expect(abs(((b.pts ?? 0) - (a.pts ?? 0)) - expected) < 0.002, "frames \(a.frame), \(b.frame)")
            }
            // What the camera shows is the photo, re-encoded as JPEG: the confident detections are the photo's own.
            let direct = try await slot.detect(imageBytes: Array(Data(contentsOf: URL(fileURLWithPath:
                Self.cameraPhoto))))
            func confident(_ detections: [Detection]) -> [String] {
                detections.filter { $0.confidence >= 0.5 }.map(\.className).sorted()
            }
            #expect(!confident(direct.result.detections).isEmpty)
            #expect(first.allSatisfy { confident($0.detections) == confident(direct.result.detections) },
                "\(first.map { confident($0.detections) }) vs \(confident(direct.result.detections))")

            // The camera goes away: its connection drops, the stream reconnects and goes on once the camera is back.
            camera = try await Self.restart(camera, of: stream, thenFrames: 10) { try Self.rtspCamera(port: port) }
            let frames = log.all.map(\.frame)
            #expect(zip(frames, frames.dropFirst()).allSatisfy { $0 < $1 })
            await stream.stop()
            #expect(stream.currentStatus.state == .stopped)
            await manager.shutdown()
        }
    }
}
