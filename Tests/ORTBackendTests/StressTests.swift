import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import YOLO
import Primitives
import Testing

extension ORTSwapSuite {
    /// Many request loops on one slot while its model is swapped and rolled back again and again (real ORT).
    @Suite("Stress")
    struct StressTests {
        /// When a generation of the slot began: issued before its flip, observed after it.
        struct Activation {
            var sha256: String
            var issued: ContinuousClock.Instant
            var observed: ContinuousClock.Instant
        }

        /// One request: when it was sent, when its answer came, and the model that answered.
        struct Sample: Sendable {
            var loop: Int
            var start: ContinuousClock.Instant
            var end: ContinuousClock.Instant
            var stamp: ModelStamp
            var timings: StageTimings
        }

        static let loops = 8
        static let swaps = 50
        static let rollbacks = 10

        @Test("8 request loops during 50 swaps and 10 rollbacks: no errors, every answer from a model active during its request, generations never go back")
        func swapsUnderLoad() async throws {
            let releases = ReleaseRecorder()
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: ortLoader, releaseObserver: releases.observer)
            let slot = try await manager.createSlot("line")
            let first = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            let shaA = try Fixtures.sha256(Fixtures.identity416)
            let shaB = try Fixtures.sha256(Fixtures.identity320)
            #expect(first.identity?.sha256 == shaA)

            let started = ContinuousClock.now
            var activations: [Int: Activation] = [
                try #require(first.generation): Activation(sha256: shaA, issued: started, observed: started)
            ]
            let stop = Locked(false)
            let image = Fixtures.busJPEG

            let (samples, errors) = try await withThrowingTaskGroup(of: ([Sample], [String]).self) { group in
                for loop in 0..<Self.loops {
                    group.addTask {
                        var samples: [Sample] = []
                        var errors: [String] = []
                        while !stop.value || samples.count < 3 {
                            let start = ContinuousClock.now
                            do {
                                let answer = try await slot.detect(imageBytes: image)
                                samples.append(Sample(loop: loop, start: start, end: .now, stamp: answer.model,
                                    timings: answer.result.timings))
                            } catch {
                                errors.append("\(error)")
                                if errors.count > 20 { break }
                            }
                        }
                        return (samples, errors)
                    }
                }

                // The control loop: every 6th operation is a rollback to the standby, the others load the model
                // that is not active and switch it in.
                var swaps = 0, rollbacks = 0
                while swaps < Self.swaps || rollbacks < Self.rollbacks {
                    let issued = ContinuousClock.now
                    if (swaps + rollbacks) % 6 == 5 && rollbacks < Self.rollbacks {
                        let event = try await manager.rollback(slot: "line")
                        let generation = try #require(event.generation)
                        activations[generation] = Activation(
                            sha256: try #require(event.to?.sha256), issued: issued, observed: .now)
                        rollbacks += 1
                    } else {
                        let next = slot.roles.active?.identity.sha256 == shaA
                            ? Fixtures.identity320 : Fixtures.identity416
                        let status = try await manager.loadAndActivate(LoadRequest(slot: "line", path: next))
                        let generation = try #require(status.generation)
                        activations[generation] = Activation(
                            sha256: try #require(status.identity?.sha256), issued: issued, observed: .now)
                        swaps += 1
                    }
                }
                stop.withLock { $0 = true }

                var samples: [Sample] = []
                var errors: [String] = []
                for try await (loopSamples, loopErrors) in group {
                    samples += loopSamples
                    errors += loopErrors
                }
                return (samples, errors)
            }

            print("stress: \(samples.count) requests, \(errors.count) errors, \(activations.count) generations,",
                "\(releases.all.count) releases, in \(ContinuousClock.now - started)")
            let mean = { (stage: KeyPath<StageTimings, Double>) in
                samples.map { $0.timings[keyPath: stage] }.reduce(0, +) / Double(max(1, samples.count))
            }
            print(String(format: "stress: mean stage times (ms): decode %.1f, preprocess %.1f, inference %.1f, postprocess %.1f",
                mean(\.decode), mean(\.preprocess), mean(\.inference), mean(\.postprocess)))
            #expect(errors.isEmpty, "first errors: \(errors.prefix(3))")
            #expect(activations.count == 1 + Self.swaps + Self.rollbacks)
            #expect(Set(samples.map(\.stamp.generation)).count >= 2, "no request overlapped a swap")

            // Every answer came from the model active at its generation, and that generation was active at some
            // moment between the request's start and end: it began before the request ended and the next one
            // began after the request started.
            var misattributed = 0, outsideTheirRequest = 0
            for sample in samples {
                #expect(sample.stamp.slot == "line")
                guard let activation = activations[sample.stamp.generation] else {
                    misattributed += 1
                    continue
                }
                if activation.sha256 != sample.stamp.sha256 { misattributed += 1 }
                let next = activations[sample.stamp.generation + 1]
                if sample.end < activation.issued || (next.map { sample.start > $0.observed } ?? false) {
                    outsideTheirRequest += 1
                }
            }
            #expect(misattributed == 0)
            #expect(outsideTheirRequest == 0)
            #expect(Set(samples.map(\.stamp.sha256)) == [shaA, shaB])

            for loop in 0..<Self.loops {
                let generations = samples.filter { $0.loop == loop }.map(\.stamp.generation)
                #expect(generations == generations.sorted(), "loop \(loop): generations went backwards")
            }

            // Each load displaced a standby: those models were released, drained, on the releaser's thread.
            #expect(await eventually { manager.releaser.pendingCount == 0 })
            let released = releases.all
            #expect(!released.isEmpty)
            #expect(released.allSatisfy { $0.inFlightAtRelease == 0 })
            #expect(released.allSatisfy { $0.threadName == manager.releaser.threadName },
                "released on \(Set(released.map(\.threadName)))")
            await manager.shutdown()
        }
    }
}
