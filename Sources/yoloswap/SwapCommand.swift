import ArgumentParser
import AuditLog
import Foundation
import HotSwap
import ORTBackend
import Server
import ONNXRuntime
import Primitives
import YOLO

/// Applies one control-plane operation to a slot whose committed state lives in a state directory, then prints the
/// slot's state as JSON. Restores the committed state first (re-verified by SHA-256), as the server does at start.
struct SwapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swap",
        abstract: "Restore a slot from its state directory, apply one operation (load, switch, rollback), "
            + "print the state.")

    @Option(help: "Folder of the SQLite state (created if missing).") var stateDir: String = "var"
    @Option(help: "Slot name.") var slot: String = "default"
    @Option(help: "Model to activate when the slot has no committed state.") var initial: String?
    @Option(help: "Load this model in the background (staged unless --activate).") var load: String?
    @Option(help: "Expected SHA-256 of the model to load.") var sha256: String?
    @Option(help: "Version label of the model to load.") var version: String?
    @Flag(help: "Switch the loaded model in as soon as it is ready.") var activate = false
    @Flag(help: "Accept a model whose classes, task or output format differ.") var allowSchemaChange = false
    @Flag(name: .customLong("switch"), help: "Switch the staged model in.") var switchStaged = false
    @Flag(help: "Roll back to the standby (or the previous model).") var rollback = false
    @Option(help: "Swap policy: availability-preserving, resource-preserving or auto.") var policy: String?
    @Option(help: "Intra-op threads per model.") var threads: Int = 1
    @Option(help: "Path to libonnxruntime.so.") var ortLibrary: String?

    func validate() throws {
        guard (1...ModelOptions.maxThreads).contains(threads) else {
            throw ValidationError("--threads lies in 1...\(ModelOptions.maxThreads)")
        }
        let operations = [load != nil, switchStaged, rollback].filter { $0 }.count
        guard operations <= 1 else { throw ValidationError("give at most one of --load, --switch, --rollback") }
        // They qualify the model --load loads (before, dropped without a word otherwise).
        let loadFlags = [("--sha256", sha256 != nil), ("--version", version != nil), ("--activate", activate),
                         ("--allow-schema-change", allowSchemaChange)]
        if load == nil, let (flag, _) = loadFlags.first(where: \.1) {
            throw ValidationError("\(flag) qualifies the model --load loads: give --load")
        }
        if let policy, SwapPolicy(rawValue: policy) == nil {
            throw ValidationError(
                "--policy must be one of \(SwapPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() async throws {
        try PrivateFiles.createDirectory(atPath: stateDir)
        let store = try StateStore(directory: stateDir)
        var configuration = HotSwapConfiguration(intraOpThreads: threads)
        configuration.policy = policy.flatMap(SwapPolicy.init(rawValue:)) ?? .availabilityPreserving
        let library = try ORTLibrary.load(explicitPath: ortLibrary)
        let loader = ORTModelLoader(environment: try ORTEnvironment(library: library),
            cache: try .yoloswap(
                directory: URL(fileURLWithPath: stateDir).appendingPathComponent("optimized-models").path))
        let manager = ModelManager(configuration: configuration, loader: loader, store: store)
        let audit = CommandAudit(trail: AuditTrail(log: try AuditLog(directory: stateDir)), slot: slot)
        var failed = false
        // Only --slot: another slot's models are neither loaded nor their committed state touched.
        for event in try await manager.restore(only: [slot]) {
            printError("yoloswap: restore \(event.slot): \(event.result.rawValue)"
                + (event.to.map { " \($0.id) (\($0.sha256.prefix(12)))" } ?? "")
                + (event.reason.map { ": \($0)" } ?? ""))
            failed = failed || event.result != .succeeded
        }
        if manager.slot(slot) == nil {
            try await manager.createSlot(slot)
            if let initial {
                // A change like any other: its intent recorded first, its outcome after.
                try await audit.record("load", "intent", path: initial, reason: "activate (--initial)")
                let status = await ProgressReporter.follow(try await manager.load(LoadRequest(slot: slot,
                    path: initial, activate: true)))
                try await audit.record("load", status.stage == .ready ? "succeeded" : status.stage.rawValue,
                    path: initial, sha256: status.identity?.sha256, reason: status.failure?.description)
                if status.stage != .ready {
                    printError("yoloswap: --initial \(initial): \(status.failure.map { "\($0)" } ?? "not loaded")")
                    await manager.shutdown()
                    throw ExitCode(1)
                }
            }
        }
        if let load {
            try await audit.record("load", "intent", path: load, reason: activate ? "activate" : "stage")
            let op = try await manager.load(LoadRequest(
                slot: slot, path: load, version: version, expectedSHA256: sha256, activate: activate,
                allowSchemaChange: allowSchemaChange))
            let status = await ProgressReporter.follow(op)
            try await audit.record("load", status.stage == .ready ? "succeeded" : status.stage.rawValue, path: load,
                sha256: status.identity?.sha256, reason: status.failure?.description)
            failed = failed || status.stage != .ready
        } else if switchStaged {
            try await audit.change("switch", model: manager.slot(slot)?.roles.staged?.identity) {
                try await manager.switchStaged(slot: slot)
            }
        } else if rollback {
            try await audit.change("rollback", model: manager.slot(slot)?.roles.standby?.identity) {
                try await manager.rollback(slot: slot)
            }
        }
        print(try SlotStateJSON.encode(manager.slot(slot)!))
        await manager.shutdown()
        if failed { throw ExitCode(1) }
    }
}

/// The audit trail of `yoloswap swap`: the same log as the server's, the actor `cli:<user>`; an intent before each
/// change (a change that cannot be recorded is not made), its outcome after.
struct CommandAudit {
    let trail: AuditTrail
    let slot: String
    let actor = "cli:" + (ProcessInfo.processInfo.environment["USER"] ?? "unknown")

    func record(_ action: String, _ result: String, path: String?, sha256: String? = nil, reason: String? = nil)
        async throws
    {
        try await trail.record(AuditEntry(actor: actor, action: action, slot: slot, modelPath: path, sha256: sha256,
            result: result, reason: reason))
    }

    /// Records the intent, makes the change, records its outcome.
    func change(_ action: String, model: ModelIdentity?, _ body: () async throws -> SwapEvent) async throws {
        try await record(action, "intent", path: model?.path, sha256: model?.sha256)
        do {
            let event = try await body()
            try await record(action, event.result.rawValue, path: event.to?.path, sha256: event.to?.sha256,
                reason: event.reason)
        } catch {
            try? await record(action, "failed", path: model?.path, sha256: model?.sha256, reason: "\(error)")
            throw error
        }
    }
}

/// Prints a load's stage and elapsed time to stderr while it runs.
enum ProgressReporter {
    static func follow(_ op: LoadOperation) async -> LoadOperation.Status {
        let waiter = Task { await op.wait() }
        var last: LoadStage?
        while true {
            let status = op.status
            if status.stage != last {
                printError(String(format: "yoloswap: load %@: %@ (%.2f s)", op.request.path, status.stage.rawValue,
                    op.elapsed))
                last = status.stage
            }
            if status.stage.isTerminal { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let status = await waiter.value
        if let failure = status.failure { printError("yoloswap: load failed: \(failure)") }
        return status
    }
}

/// A slot's roles as JSON.
enum SlotStateJSON {
    static func encode(_ slot: ModelSlot) throws -> String {
        let roles = slot.roles
        func model(_ m: ModelInstance?) -> Any {
            guard let m else { return NSNull() }
            return ["id": m.identity.id, "path": m.identity.path, "version": m.identity.version,
                "sha256": m.identity.sha256, "memory_bytes": m.memoryBytes] as [String: Any]
        }
        let object: [String: Any] = [
            "slot": slot.name, "generation": roles.generation, "active": model(roles.active),
            "staged": model(roles.staged), "standby": model(roles.standby),
        ]
        return String(
            decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
}
