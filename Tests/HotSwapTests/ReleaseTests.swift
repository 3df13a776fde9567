import Foundation
import HotSwap
import HotSwapTesting
import Primitives
import TestSupport
import Testing

extension HotSwapSuite {
    /// A model that leaves every role is released only once its last request has finished, on the releaser's thread.
    @Suite("Release after drain")
    struct ReleaseTests {
        @Test("a retired model is released only after its running request ends, on the releaser thread")
        func releaseWaitsForTheLastRequest() async throws {
            let gate = Gate()
            let pathA = Fixtures.identity416, pathB = Fixtures.identity320
            let loader = FakeLoader { label in label == pathA ? FakeBackend(gate: gate) : FakeBackend() }
            let releases = ReleaseRecorder()
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(standbyRetention: .release),
                loader: loader, releaseObserver: releases.observer)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: pathA))
            let modelA = try #require(slot.roles.active?.identity)

            // A request on A, held inside its inference run.
            gate.close()
            let request = Task { try await slot.detect(imageBytes: Fixtures.busJPEG) }
            #expect(await eventually { gate.waitingCount == 1 })

            // Switch to B; with `.release` retention A leaves every role at once.
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: pathB))
            let roles = slot.roles
            #expect(roles.active?.identity.path == pathB)
            #expect(roles.standby == nil && roles.staged == nil)

            // Give the releaser (polling every 2 ms) ample chances to get it wrong.
            try await Task.sleep(for: .milliseconds(150))
            #expect(!releases.all.contains { $0.identity == modelA }, "released while a request was running")
            #expect(manager.releaser.pendingCount == 1)

            // New requests already go to B while A's request is still running.
            let onB = try await slot.detect(imageBytes: Fixtures.busJPEG)
            #expect(onB.model.sha256 == (try Fixtures.sha256(pathB)))
            #expect(manager.releaser.pendingCount == 1)

            gate.open()
            let answer = try await request.value
            #expect(answer.model.sha256 == modelA.sha256, "the request finished on the model it started with")
            #expect(await eventually { releases.all.contains { $0.identity == modelA } })
            let release = try #require(releases.all.first { $0.identity == modelA })
            #expect(release.inFlightAtRelease == 0)
            #expect(release.threadName.hasPrefix("yoloswap.releas"))
            #expect(release.threadName == manager.releaser.threadName)
            let requestThread = try #require(gate.threadsPassed.last)
            #expect(requestThread.hasPrefix("slot-default"))
            #expect(release.threadName != requestThread)
            #expect(manager.releaser.pendingCount == 0)
            await manager.shutdown()
        }

        @Test("a load that fails after its session was made frees the session on a load thread (warm-up refused, schema incompatible), not on the cooperative pool")
        func failedLoadFreedOffPool() async throws {
            let freedOn = Locked<[String: [String]]>([:])
            let incompatible = Fixtures.synthetic("yolov5-nc2-416.onnx")
            let loader = FakeLoader { label in
                let record: @Sendable (String) -> Void = { thread in
                    freedOn.withLock { $0[label, default: []].append(thread) }
                }
                switch label {
                case Fixtures.identity320: return FakeBackend(inputSize: 320, nonFinite: true, onRelease: record)
                case incompatible: return FakeBackend(names: ["bolt"], onRelease: record)
                default: return FakeBackend(onRelease: record)
                }
            }
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: loader)
            _ = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            for path in [Fixtures.identity320, incompatible] {
                let status = await (try await manager.load(LoadRequest(slot: "default", path: path, activate: true)))
                    .wait()
                #expect(status.stage == .failed, "\(path): \(status)")
                #expect(await eventually { freedOn.withLock { $0[path] } != nil })
                let threads = freedOn.withLock { $0[path] ?? [] }
                #expect(threads.count == 1 && threads.allSatisfy { $0.hasPrefix("yoloswap.load") },
                    "\(path) freed on \(threads)")
            }
            await manager.shutdown()
        }

        @Test("shutdown releases every model once drained")
        func shutdownReleasesEverything() async throws {
            let releases = ReleaseRecorder()
            let manager = ModelManager(configuration: HotSwapConfiguration.testing(), loader: FakeLoader(), releaseObserver: releases.observer)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity320))
            #expect(slot.roles.standby != nil)
            await manager.shutdown()
            #expect(await eventually { releases.all.count == 2 })
            #expect(releases.all.allSatisfy { $0.inFlightAtRelease == 0 && $0.threadName == manager.releaser.threadName })
        }
    }
}

extension HotSwapSuite {
    /// A switching load frees the standby it will displace before its own session exists (old + new, not three).
    @Suite("Standby during a load")
    struct StandbyDuringLoadTests {
        /// Loads A, then B (A becomes the standby), then switches to a third model and reports when the standby was
        /// released relative to the third model's session creation.
        private func standbyReleasedBeforeLoad(release: Bool) async throws -> Bool {
            let directory = try Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let copy = directory.appendingPathComponent("third.onnx").path
            try FileManager.default.copyItem(atPath: Fixtures.identity416, toPath: copy)
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: copy)))
            bytes.append(0)  // a different digest, the same model (trailing bytes are ignored by the fake)
            try Data(bytes).write(to: URL(fileURLWithPath: copy))

            let loader = FakeLoader()
            var configuration = HotSwapConfiguration.testing()
            configuration.releaseStandbyBeforeLoad = release
            let releases = ReleaseRecorder()
            let manager = ModelManager(configuration: configuration, loader: loader, releaseObserver: releases.observer)
            let slot = try await manager.createSlot("default")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: Fixtures.identity320))
            let standby = try #require(slot.roles.standby?.identity)
            #expect(standby.path == Fixtures.identity416)

            _ = try await manager.loadAndActivate(LoadRequest(slot: "default", path: copy))
            #expect(await eventually { releases.all.contains { $0.identity == standby } })
            let released = try #require(releases.all.first { $0.identity == standby }).releasedAt
            let loadStarted = try #require(loader.calls.last { $0.label == copy }).startedAt
            await manager.shutdown()
            return released <= loadStarted
        }

        @Test("by default the displaced standby is released before the new session is created")
        func releasedFirst() async throws {
            #expect(try await standbyReleasedBeforeLoad(release: true))
        }

        @Test("standby_during_load keep: the standby stays until the flip")
        func keptUntilFlip() async throws {
            #expect(try await !standbyReleasedBeforeLoad(release: false))
        }
    }
}
