import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension ORTSwapSuite {
    /// Bad models, each rejected by ONNX Runtime, the schema check or the warm-up with its reason, while the active
    /// model keeps serving.
    @Suite("Bad models")
    struct BadModelTests {
        /// A bad model and what its load must fail with.
        struct Case: Sendable, CustomStringConvertible {
            var file: String
            var matches: @Sendable (LoadFailure) -> Bool
            var description: String { file }
        }

        static let cases: [Case] = [
            Case(file: "truncated.onnx") { if case .runtime = $0 { true } else { false } },
            Case(file: "not-onnx.onnx") { if case .runtime = $0 { true } else { false } },
            Case(file: "wrong-rank.onnx") { if case .unsupportedModel = $0 { true } else { false } },
            Case(file: "yolov5-nc80-320-other-names.onnx") {
                if case .incompatible(_, let differences) = $0 {
                    differences.contains { $0.hasPrefix("class names") }
                        && !differences.contains { $0.hasPrefix("class count") }
                } else { false }
            },
            Case(file: "yolov5-nc2-416.onnx") {
                if case .incompatible(_, let differences) = $0 {
                    differences.contains { $0.hasPrefix("class count") }
                } else { false }
            },
            Case(file: "nan.onnx") {
                if case .warmupFailed(_, let reason) = $0 { reason.contains("non-finite") } else { false }
            },
            Case(file: "bad-scores.onnx") {
                if case .warmupFailed(_, let reason) = $0 { reason.contains("outside [0, 1]") } else { false }
            },
        ]

        /// Loads `path` with activate, expects it to fail as `matches` says, and checks the original model still
        /// answers with its original stamp.
        private func expectRejected(_ path: String, manager: ModelManager, slot: ModelSlot, original: ModelStamp,
                                    warmupTimeout: Duration? = nil,
                                    matches: (LoadFailure) -> Bool) async throws -> LoadOperation.Status {
            let op = try await manager.load(LoadRequest(slot: slot.name, path: path, activate: true,
                warmupTimeout: warmupTimeout))
            let status = await op.wait()
            #expect(status.stage == .failed, "\(path)")
            let failure = try #require(status.failure, "\(path) did not fail")
            #expect(matches(failure), "\(path) failed with \(failure)")
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(answer.model == original, "\(path): the active model changed")
            #expect(slot.roles.staged == nil)
            return status
        }

        @Test("corrupt, incompatible, NaN, bad-score and slow models are rejected; the active model serves on; memory comes back")
        func badModelsWithORT() async throws {
            let manager = ModelManager(
                configuration: HotSwapConfiguration.testing(warmupRuns: 3),
                loader: ortLoader)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            let original = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            // One rejected load before the baseline, so that ORT's lazily made process-wide state is counted in it.
            _ = try await expectRejected(Fixtures.synthetic(Self.cases[0].file), manager: manager, slot: slot,
                original: original, matches: Self.cases[0].matches)
            ProcessMemory.trim()
            let baseline = try #require(ProcessMemory.residentBytes())

            for failure in Self.cases {
                _ = try await expectRejected(Fixtures.synthetic(failure.file), manager: manager, slot: slot,
                    original: original, matches: failure.matches)
            }

            // slow.onnx: each Run takes ~1.5 s; three warm-up runs would take 4.5 s. This load's 2 s timeout aborts the
            // Run in flight (ORT terminate), so the load ends soon after it. (The other loads keep the default timeout:
            // a healthy model's warm-up at low priority can take seconds on a loaded machine.)
            let clock = ContinuousClock()
            let start = clock.now
            let slow = try await expectRejected(Fixtures.synthetic("slow.onnx"), manager: manager, slot: slot,
                original: original, warmupTimeout: .seconds(2)) { if case .warmupTimeout = $0 { true } else { false } }
            let elapsed = clock.now - start
            print("slow.onnx load ended \(slow.failure.map { "\($0)" } ?? "") after \(elapsed)")
            #expect(elapsed < .seconds(4), "the warm-up was not aborted")
            #expect(slot.roles.active?.identity.sha256 == original.sha256)
            #expect(slot.roles.generation == original.generation)

            // Everything the failed loads allocated was freed: RSS comes back near the baseline.
            var after = 0
            let margin = 30 << 20
            let recovered = await eventually(timeout: .seconds(5)) {
                ProcessMemory.trim()
                after = ProcessMemory.residentBytes() ?? .max
                return after - baseline < margin
            }
            print("failure injection: RSS baseline \(baseline >> 20) MiB, after \(Self.cases.count + 1) failed loads",
                "\(after >> 20) MiB (\((after - baseline) / 1024) KiB more)")
            #expect(recovered, "RSS grew by \((after - baseline) >> 20) MiB")
            await manager.shutdown()
        }
    }
}
