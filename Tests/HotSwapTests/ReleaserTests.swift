import Foundation
import HotSwapTesting
import Primitives
import TestSupport
import Testing
import YOLO

@testable import HotSwap

extension HotSwapSuite {
    /// The releaser's thread never misses a model handed to it, however `retire` and `retireAndWait` interleave with
    /// its own checks.
    @Suite("Releaser under contention")
    struct ReleaserTests {
        private static let detector: Detector = {
            do { return try Detector(backend: FakeBackend(rows: 1)) } catch { fatalError("fake detector: \(error)") }
        }()

        private static func model(_ index: Int) -> ModelInstance {
            ModelInstance(identity: ModelIdentity(name: "m\(index)", version: "1", sha256: "", path: "m\(index)"),
                detector: detector, memoryBytes: 0, signatureKeyID: nil, onRelease: { _ in })
        }

        @Test("8 threads, each with its releaser, retire 20 000 models one after another: each is released")
        func backToBack() async {
            // Each model is retired right after the previous one was released, as the releaser's thread goes back to
            // waiting: the moment where a retire landing between the thread's check and its wait would be lost, and
            // the model never released. Eight releasers and eight threads on a small machine get preempted at every
            // possible point. OS threads, not tasks: the rounds do not depend on the cooperative pool's other work.
            let rounds = 20_000
            let outcomes = Locked<[String]>([])
            for thread in 0..<8 {
                Thread.detachNewThread {
                    let releaser = ModelReleaser(pollInterval: .milliseconds(1))
                    defer { releaser.shutdown() }
                    for index in 0..<rounds {
                        releaser.retire(Self.model(index))
                        let deadline = Date().addingTimeInterval(10)
                        while releaser.releasedCount <= index, Date() < deadline { sched_yield() }
                        if releaser.releasedCount <= index {
                            outcomes.withLock { $0.append("thread \(thread): model \(index) not released in 10 s") }
                            return
                        }
                    }
                    outcomes.withLock { $0.append("ok") }
                }
            }
            #expect(await eventually(timeout: .seconds(300)) { outcomes.value.count == 8 })
            #expect(outcomes.value.filter { $0 != "ok" } == [])
        }

        @Test("8 tasks, each with its releaser, retireAndWait 500 models one after another: every wait returns")
        func retireAndWaitBackToBack() async {
            let releasers = (0..<8).map { _ in ModelReleaser(pollInterval: .milliseconds(1)) }
            let finished = Locked(0)
            for releaser in releasers {
                Task {
                    for index in 0..<500 { await releaser.retireAndWait(Self.model(index)) }
                    finished.withLock { $0 += 1 }
                }
            }
            let allReturned = await eventually(timeout: .seconds(120)) { finished.value == releasers.count }
            #expect(allReturned, "a retireAndWait hung: released \(releasers.map(\.releasedCount)) of 500 each")
            releasers.forEach { $0.shutdown() }
        }

        @Test("8 tasks waiting and 4 threads retiring on one releaser, 4000 models: every one released, every wait returns")
        func manyThreads() async {
            let releaser = ModelReleaser(pollInterval: .milliseconds(1))
            let threadsDone = Locked(0)
            for thread in 0..<4 {
                Thread.detachNewThread {
                    for index in 0..<500 { releaser.retire(Self.model(10_000 * (thread + 1) + index)) }
                    threadsDone.withLock { $0 += 1 }
                }
            }
            let waitsDone = Locked(0)
            for task in 0..<8 {
                Task {
                    for index in 0..<250 { await releaser.retireAndWait(Self.model(100_000 * (task + 1) + index)) }
                    waitsDone.withLock { $0 += 1 }
                }
            }
            let done = await eventually(timeout: .seconds(60)) {
                threadsDone.value == 4 && waitsDone.value == 8 && releaser.releasedCount == 4000
            }
            #expect(done, "released \(releaser.releasedCount) of 4000; \(waitsDone.value) of 8 waiting tasks done")
            #expect(releaser.pendingCount == 0)
            releaser.shutdown()
        }
    }
}
