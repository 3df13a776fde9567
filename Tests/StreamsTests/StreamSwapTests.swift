import Foundation
import HotSwap
import Primitives
import Streams
import TestSupport
import Testing
import VideoDecoding
import YOLO

extension StreamSuite {
    @Suite("A stream through swaps and rollbacks")
    struct SwapTests {
        static let modelA = Repository.path("models/yolov3-tiny-coco-320.onnx")
        static let modelB = Repository.path("models/yolov3-tiny-coco-416.onnx")

        /// The operations performed while the stream runs: 11 swaps (loads that activate, alternating models) and 5
        /// rollbacks to the warm standby.
        enum Operation { case swap, rollback }
        static let plan: [Operation] = Array(repeating: [Operation.swap, .swap, .rollback], count: 5).flatMap { $0 }
            + [.swap]

        /// With 2 frames in flight, two frames are detected at once on the slot's two workers: the later one can take
        /// its lease first, and the stream must still hand on results in order with generations that never go down.
        @Test("300 H.264 frames through 11 swaps and 5 rollbacks: each frame once, in order, generations monotone and matching the swap log, detections equal `yoloswap detect`",
            arguments: [1, 2])
        func framesThroughSwaps(framesInFlight: Int) async throws {
            let video = TestVideos.h264
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: framesInFlight,
                intraOpThreads: 1, warmupRuns: 1), loader: streamLoader)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Self.modelA))

            // Operation i runs once frame 17·(i+1) has been detected, beside the stream. The sink holds the stream only
            // when an operation lags more than one step behind, so every one lands inside the 300 frames.
            let log = ResultLog()
            let progress = OperationProgress()
            let stream = VideoStream(id: "cam-1",
                configuration: StreamConfiguration(source: .file(path: video), slot: "line", backPressure: .block,
                    framesInFlight: framesInFlight),
                slot: slot, sink: { result in
                    log.append(result)
                    progress.frameDone(result.frame)
                    while progress.completed < min(Self.plan.count, result.frame / 17 - 1) {
                        try? await Task.sleep(for: .milliseconds(2))
                    }
                })
            let operations = Task { () -> [String] in
                var failures: [String] = []
                var framesAtLastOperation = 0
                for (i, operation) in Self.plan.enumerated() {
                    // Also two frames past the previous operation: one of them leased its model after it, so each
                    // operation shows as its own switch point.
                    while progress.frames < max(17 * (i + 1), framesAtLastOperation + 2) {
                        try? await Task.sleep(for: .milliseconds(2))
                    }
                    do {
                        switch operation {
                        case .swap:
                            // To the model that is not active now.
                            let target = slot.roles.active?.identity.path == Self.modelA ? Self.modelB : Self.modelA
                            let status = try await manager.loadAndActivate(LoadRequest(slot: "line", path: target))
                            if status.stage != .ready { failures.append("swap \(i): \(status.stage)") }
                        case .rollback:
                            _ = try await manager.rollback(slot: "line")
                        }
                    } catch {
                        failures.append("operation \(i): \(error)")
                    }
                    framesAtLastOperation = progress.frames
                    progress.operationDone()
                }
                return failures
            }
            let events = stream.subscribe(buffer: 10_000)
            let switchEvents = Task { () -> [StreamEvent] in
                var switches: [StreamEvent] = []
                for await case .event(let event) in events where event.type == .switched { switches.append(event) }
                return switches
            }
            stream.start()
            await stream.waitUntilFinished()
            let failures = await operations.value
            let status = stream.currentStatus
            let results = log.all
            let switches = await switchEvents.value
            #expect(status.state == .ended, "\(status.last_error ?? "")")
            #expect(failures.isEmpty, "\(failures)")
            #expect(progress.completed == Self.plan.count)

            // Exactly frames 0…299, once each, in order; their pts 1/30 s apart.
            #expect(results.map(\.frame) == Array(0..<300))
            #expect(status.frames_dropped == 0 && status.frames_decoded == 300 && status.frames_detected == 300)
            for result in results {
                let expected = Double(result.frame) / 30
                #expect(abs((result.pts ?? -1) - expected) < 1e-3, "frame \(result.frame): pts \(result.pts ?? -1)")
            }

            // Generations never go down; every change is one switch event at that frame, and each generation was
            // produced by the swap log's operation with that generation, with the same model.
            let generations = results.map(\.model.generation)
            #expect(zip(generations, generations.dropFirst()).allSatisfy { $0 <= $1 })
            let changes = zip(results, results.dropFirst()).filter { $0.model.generation != $1.model.generation }
            #expect(changes.map(\.1.frame) == switches.map { $0.frame ?? -1 })
            #expect(switches.count >= Self.plan.count, "\(switches.count) switches seen")
            #expect(status.switch_count == switches.count && status.switches == switches)
            let swapLog = manager.recentEvents(slot: "line", limit: 1000).filter { $0.result == .succeeded }
            let byGeneration = Dictionary(swapLog.compactMap { e in e.generation.map { ($0, e) } },
                uniquingKeysWith: { first, _ in first })
            for generation in Set(generations) where generation > 1 {
                let event = try #require(byGeneration[generation], "no swap event for generation \(generation)")
                let stamp = try #require(results.first { $0.model.generation == generation }).model
                #expect(event.to?.sha256 == stamp.sha256, "generation \(generation)")
                #expect([.switch, .rollback, .load, .activate].contains(event.operation))
            }
            let rollbackGenerations = swapLog.filter { $0.operation == .rollback }.compactMap(\.generation)
            #expect(rollbackGenerations.count == 5)
            #expect(rollbackGenerations.allSatisfy(Set(generations).contains))

            // Sampled frames — the first, the first after each of three switches, the last — give the same detections
            // as `yoloswap detect` on that frame, extracted by ffmpeg as a PNG, with the model that answered it.
            let folder = try TemporaryDirectory()
            let samples = [results[0], results[299]] + changes.prefix(3).map(\.1)
            var compared = 0
            for sample in samples {
                let png = folder.file("frame-\(sample.frame).png")
                try TestVideos.extractPNG(video, frame: sample.frame, to: png)
                let model = sample.model.sha256 == (try Fixtures.sha256(Self.modelA)) ? Self.modelA : Self.modelB
                let cli = try await runProcess(yoloswapBinary, ["detect", "--model", model, "--threads", "1",
                    "--format", "json", png])
                #expect(cli.status == 0, "\(cli.stderr)")
                let record = try JSONDecoder().decode(DetectRecord.self, from: Data(cli.stdout.utf8))
                #expect(record.detections == sample.detections, "frame \(sample.frame)")
                compared += record.detections.count
            }
            #expect(compared > 0, "the sampled frames had no detections to compare")
            await manager.shutdown()
        }
    }
}

/// The part of `yoloswap detect --format json`'s line compared here.
struct DetectRecord: Decodable { var detections: [Detection] }

/// How far the stream and the operations beside it have come.
final class OperationProgress: Sendable {
    private let counts = Locked((frames: 0, operations: 0))
    /// Frames detected so far.
    var frames: Int { counts.value.frames }
    /// Operations finished so far.
    var completed: Int { counts.value.operations }
    func frameDone(_ index: Int) { counts.withLock { $0.frames = index + 1 } }
    func operationDone() { counts.withLock { $0.operations += 1 } }
}
