import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

extension HotSwapSuite {
    /// Execution providers per slot, the same-device rule, the ledger per device and the policy each load reports,
    /// over fake backends: the fake loader records where each model was to run; GPU costs are the configured CUDA
    /// arena caps, so the figures compared are exact.
    @Suite("Execution providers and devices")
    struct ExecutionProviderTests {
        static let mib = 1 << 20

        /// A manager whose slot `line` runs on `cuda:0` with a 100 MiB arena cap and may be asked for `targets`.
        static func manager(targets: [String] = [], gpuBudgets: [Int: Int] = [:], policy: SwapPolicy = .auto,
                            standby: StandbyRetention = .keep, releaseStandbyBeforeLoad: Bool = true)
            -> (ModelManager, FakeLoader)
        {
            let loader = FakeLoader()
            var configuration = HotSwapConfiguration.testing(standbyRetention: standby, policy: policy)
            configuration.gpuMemoryBudgets = gpuBudgets
            configuration.releaseStandbyBeforeLoad = releaseStandbyBeforeLoad
            configuration.slotExecution["line"] = SlotExecution(
                target: ExecutionTarget(provider: .cuda, deviceID: 0),
                allowedTargets: targets.map { ExecutionTarget(parsing: $0)! }, intraOpThreads: 3,
                gpuMemoryLimitBytes: 100 * mib, tensorRTEngineCacheDirectory: "/var/cache/trt")
            return (ModelManager(configuration: configuration, loader: loader), loader)
        }

        @Test("targets parse as the CLI's --provider does; a slot permits its target and the listed ones")
        func parsing() throws {
            #expect(ExecutionTarget(parsing: "cpu") == .cpu)
            #expect(ExecutionTarget(parsing: "CUDA") == ExecutionTarget(provider: .cuda, deviceID: 0))
            #expect(ExecutionTarget(parsing: "tensorrt:2")?.device == .gpu(2))
            #expect(ExecutionTarget(parsing: "cuda:1")?.description == "cuda:1")
            for bad in ["gpu", "cuda:", "cuda:x", "cpu:1", "cuda:-1", "", "tensorrt:1:2"] {
                #expect(ExecutionTarget(parsing: bad) == nil, "'\(bad)' parsed")
            }
            let slot = SlotExecution(target: .cpu, allowedTargets: [ExecutionTarget(parsing: "cuda:1")!])
            #expect(slot.permittedTargets.map(\.description) == ["cpu", "cuda:1"])
            let json = try JSONEncoder().encode([ComputeDevice.host, .gpu(3)])
            #expect(String(decoding: json, as: UTF8.self) == #"["host","gpu:3"]"#)
            #expect(try JSONDecoder().decode([ComputeDevice].self, from: json) == [.host, .gpu(3)])
        }

        @Test("a load runs where its slot says, with the slot's settings; the stamp names provider and device")
        func slotConfiguration() async throws {
            let (manager, loader) = Self.manager(targets: ["cpu"])
            let slot = try await manager.createSlot("line")
            let status = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            let call = try #require(loader.calls.last)
            #expect(call.execution == ModelExecution(target: ExecutionTarget(provider: .cuda, deviceID: 0),
                intraOpThreads: 3, gpuMemoryLimitBytes: 100 * Self.mib,
                tensorRTEngineCacheDirectory: "/var/cache/trt"))
            #expect(status.execution?.target.description == "cuda:0")
            let stamp = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            #expect(stamp.provider == "cuda:0" && stamp.device == "gpu:0")
            #expect(manager.memoryInUse[.gpu(0)] == 100 * Self.mib)
            // A slot not configured runs on the CPU with the manager's intra-op threads.
            _ = try await manager.createSlot("plain")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "plain", path: Fixtures.identity416))
            #expect(loader.calls.last?.execution == ModelExecution(target: .cpu, intraOpThreads: 1))
            #expect(try await manager.slot("plain")!.detect(imageBytes: Fixtures.busJPEG).model.device == "host")
            await manager.shutdown()
        }

        @Test("a target the slot does not permit is refused before anything is loaded")
        func notPermitted() async throws {
            let (manager, loader) = Self.manager(targets: ["cpu"])
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            let before = loader.makeBackendCalls
            let status = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320,
                activate: true, target: ExecutionTarget(parsing: "tensorrt:1"), allowDeviceChange: true))).wait()
            #expect(status.stage == .failed)
            #expect(status.failure == .providerNotAllowed(path: Fixtures.identity320, requested: "tensorrt:1",
                allowed: ["cuda:0", "cpu"]))
            #expect(loader.makeBackendCalls == before)
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.provider == "cuda:0")
            await manager.shutdown()
        }

        @Test("the same-device rule: another device is refused unless the load allows moving the slot")
        func sameDevice() async throws {
            let (manager, loader) = Self.manager(targets: ["cpu", "cuda:1"], policy: .availabilityPreserving)
            let events = EventRecorder(manager.events())
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            let before = loader.makeBackendCalls

            for target in ["cpu", "cuda:1"] {
                let refused = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320,
                    activate: true, target: ExecutionTarget(parsing: target)))).wait()
                #expect(refused.stage == .failed)
                #expect(refused.failure == .deviceChange(path: Fixtures.identity320, active: "cuda:0",
                    requested: target))
                #expect(refused.failure?.description.contains("allow_device_change") == true)
            }
            #expect(loader.makeBackendCalls == before, "a refused load made a backend")
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.provider == "cuda:0")
            // A load naming no target stays on the active model's device.
            let staying = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320))).wait()
            #expect(staying.stage == .ready && staying.execution?.target.description == "cuda:0")

            let moved = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320,
                version: "moved", activate: true, target: .cpu, allowDeviceChange: true))).wait()
            #expect(moved.stage == .ready)
            #expect(loader.calls.last?.execution.target == .cpu)
            let answer = try await slot.detect(imageBytes: Fixtures.busJPEG).model
            #expect(answer.provider == "cpu" && answer.device == "host" && answer.version == "moved")
            // Now on the CPU, a load naming no target stays there, and the rollback goes back to cuda:0.
            let rolledBack = try await manager.rollback(slot: "line")
            #expect(rolledBack.provider == "cuda:0" && rolledBack.device == "gpu:0")
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.provider == "cuda:0")

            let recorded = await events.waitFor(6).filter { $0.operation == .activate }
            #expect(recorded.filter { $0.result == .failed }.count == 2)
            #expect(recorded.last?.provider == "cpu" && recorded.last?.device == "host")
            await manager.shutdown()
        }

        @Test("the ledger is per device: a move is checked against the target GPU's budget, not the host's")
        func budgetPerDevice() async throws {
            let (manager, loader) = Self.manager(targets: ["cuda:1"],
                gpuBudgets: [0: 150 * Self.mib, 1: 150 * Self.mib], policy: .availabilityPreserving)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            // gpu:0 holds 100 MiB: a second model there (100 + 100 > 150) does not fit ...
            let full = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320))).wait()
            #expect(full.failure == .overDeviceMemoryBudget(path: Fixtures.identity320, device: "gpu:0",
                neededBytes: 100 * Self.mib, budgetBytes: 150 * Self.mib, inUseBytes: 100 * Self.mib))
            // ... but on gpu:1, empty, it does.
            let moved = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320,
                activate: true, target: ExecutionTarget(parsing: "cuda:1"), allowDeviceChange: true))).wait()
            #expect(moved.stage == .ready)
            #expect(manager.memoryInUse[.gpu(0)] == 100 * Self.mib, "the standby stays on gpu:0")
            #expect(manager.memoryInUse[.gpu(1)] == 100 * Self.mib)
            // gpu:1 now holds the active model: another one there no longer fits.
            let second = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity416))).wait()
            guard case .overDeviceMemoryBudget(_, let device, _, _, let inUse) = second.failure else {
                Issue.record("expected overDeviceMemoryBudget, got \(String(describing: second.failure))")
                return
            }
            #expect(device == "gpu:1" && inUse == 100 * Self.mib)
            #expect(loader.makeBackendCalls == 2)
            #expect(try await slot.detect(imageBytes: Fixtures.busJPEG).model.device == "gpu:1")
            await manager.shutdown()
        }

        @Test("auto does not count the slot's standby when the load releases it first (the default)")
        func autoLeavesOutTheStandbyReleasedFirst() async throws {
            let (manager, _) = Self.manager(gpuBudgets: [0: 250 * Self.mib])
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity320))
            #expect(slot.roles.standby != nil && manager.memoryInUse[.gpu(0)] == 200 * Self.mib)
            // 200 held, but the standby goes before the new session exists: 100 + 100 ≤ 250, nothing unloaded first.
            let third = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity416,
                version: "third", activate: true))).wait()
            let decision = try #require(third.policy)
            #expect(decision.policy == .availabilityPreserving, "\(decision.reason)")
            #expect(decision.figures?.first { $0.device == .gpu(0) }?.inUseBytes == 100 * Self.mib)
            #expect(slot.roles.standby?.identity.path == Fixtures.identity320)
            await manager.shutdown()
        }

        @Test("auto chooses each policy from the figures per device, and says so in the operation and the event")
        func autoChoosesEachPolicy() async throws {
            // gpu:0 may hold 250 MiB; every model there is taken to hold its 100 MiB arena cap. The standby is kept
            // through a load (`standby_during_load: keep`), so it counts.
            let (manager, _) = Self.manager(gpuBudgets: [0: 250 * Self.mib], releaseStandbyBeforeLoad: false)
            let events = EventRecorder(manager.events())
            let slot = try await manager.createSlot("line")
            let first = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Fixtures.identity416))
            #expect(first.policy?.policy == .availabilityPreserving)
            #expect(first.policy?.reason.contains("no active model") == true)

            // 100 in use + 100 ≤ 250: the new model loads beside the active one, which stays as the standby.
            let beside = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320,
                activate: true))).wait()
            let fits = try #require(beside.policy)
            #expect(fits.policy == .availabilityPreserving && fits.requested == .auto)
            let gpu = try #require(fits.figures?.first { $0.device == .gpu(0) })
            #expect(gpu.inUseBytes == 100 * Self.mib && gpu.estimateBytes == 100 * Self.mib)
            #expect(gpu.budgetBytes == 250 * Self.mib && gpu.fits)
            #expect(fits.figures?.first?.device == .host && fits.figures?.first?.budgetBytes == nil)
            #expect(fits.reason.contains("both fit") && fits.reason.contains("gpu:0"))
            #expect(slot.roles.standby != nil)

            // 200 in use (active + standby) + 100 > 250: the active model is unloaded first.
            let first416 = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity416,
                version: "again", activate: true))).wait()
            let over = try #require(first416.policy)
            #expect(first416.stage == .ready)
            #expect(over.policy == .resourcePreserving && over.requested == .auto)
            let gpuOver = try #require(over.figures?.first { $0.device == .gpu(0) })
            #expect(gpuOver.inUseBytes == 200 * Self.mib && !gpuOver.fits)
            #expect(over.reason.contains("do not both fit on gpu:0"))
            #expect(slot.roles.standby == nil, "resource-preserving keeps no standby")
            #expect(manager.memoryInUse[.gpu(0)] == 100 * Self.mib)

            // An explicit policy runs as asked, and says whose choice it was.
            let asked = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity320,
                version: "asked", activate: true, policy: .resourcePreserving))).wait()
            #expect(asked.policy == PolicyDecision(policy: .resourcePreserving, requested: .resourcePreserving,
                reason: "the policy the load asked for"))
            // A load that only stages never unloads anything.
            let staged = await (try await manager.load(LoadRequest(slot: "line", path: Fixtures.identity416))).wait()
            #expect(staged.policy?.policy == .availabilityPreserving)
            #expect(staged.policy?.reason.contains("stages") == true)

            let activations = await events.waitFor(5).filter { $0.operation == .activate }
            #expect(activations.compactMap(\.policy?.policy)
                == [.availabilityPreserving, .availabilityPreserving, .resourcePreserving, .resourcePreserving])
            let encoded = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(activations[2]))
                as? [String: Any]
            let policy = try #require(encoded?["policy"] as? [String: Any])
            #expect(policy["policy"] as? String == "resource-preserving")
            let figures = try #require(policy["figures"] as? [[String: Any]])
            #expect(figures.contains { $0["device"] as? String == "gpu:0" && $0["fits"] as? Bool == false
                && $0["in_use_bytes"] as? Int == 200 * Self.mib })
            #expect(encoded?["provider"] as? String == "cuda:0")
            await manager.shutdown()
        }
    }
}
