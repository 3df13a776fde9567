import Foundation
import HotSwap
import Primitives
import Streams
import TestSupport
import Testing
import VideoDecoding
import YOLO

extension StreamSuite {
    @Suite("A live UDP MPEG-TS source")
    struct LiveSourceTests {
        /// `ffmpeg -re` publishing the test video in a loop, at its real rate, to a UDP port on loopback.
        final class Publisher: Sendable {
            let process: Process
            init(port: Int) throws {
                process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
                process.arguments = ["-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                    "-i", TestVideos.transportStream, "-c", "copy", "-f", "mpegts",
                    "udp://127.0.0.1:\(port)?pkt_size=1316"]
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
            }
            /// Kills the publisher (SIGKILL: a publisher that vanishes, as a camera that loses power does).
            func stop() {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
            }
        }

        @Test("latest back-pressure follows the source, counting every frame it drops; the stream reconnects after the publisher restarts")
        func followsDropsAndReconnects() async throws {
            let port = Int.random(in: 20_000...60_000)
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1, intraOpThreads: 1,
                warmupRuns: 1), loader: streamLoader)
            let slot = try await manager.createSlot("cam")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "cam",
                path: Repository.path("models/yolov3-tiny-coco-320.onnx")))
            var configuration = StreamConfiguration(source: .network(url: "udp://127.0.0.1:\(port)"), slot: "cam")
            configuration.stallTimeout = .seconds(3)
            configuration.reconnectInitial = .milliseconds(100)
            configuration.reconnectMaximum = .milliseconds(500)
            #expect(configuration.backPressure == .latest)
            // An overloaded consumer: each frame's result takes at least 150 ms to hand on, a 30 fps source is faster.
            let log = ResultLog()
            let stream = VideoStream(id: "udp", configuration: configuration, slot: slot, sink: { result in
                log.append(result)
                try? await Task.sleep(for: .milliseconds(150))
            })
            var publisher = try Publisher(port: port)
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
            publisher.stop()
            #expect(await eventually(timeout: .seconds(30)) { stream.currentStatus.reconnects >= 1 })
            let before = stream.currentStatus.frames_detected
            publisher = try Publisher(port: port)
            #expect(await eventually(timeout: .seconds(60)) {
                let s = stream.currentStatus
                return s.frames_detected >= before + 5 && s.state == .running
            }, "\(stream.currentStatus)")
            await stream.stop()
            #expect(stream.currentStatus.state == .stopped)
            await manager.shutdown()
        }
    }
}
