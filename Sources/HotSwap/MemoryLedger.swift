import Foundation
import Primitives

/// Memory costs per model and device, the budget per device (the host's RAM and each GPU's memory), and the check a
/// load must pass.
///
/// A model's host cost is measured (RSS growth over its load and warm-up) and remembered per digest and execution
/// target; until measured it is estimated as `unknownCostFactor` × the file's size. A GPU model's cost on its GPU is
/// not measured (ORT does not report it): it is the slot's CUDA arena cap when one is set (what the session may grow
/// to), else the same file-size estimate.
///
/// Thread-safety: guarded by a mutex.
final class MemoryLedger: Sendable {
    /// Budgets by device; a device without one is not limited.
    let budgets: [ComputeDevice: Int]
    private let measured = Locked<[Key: Int]>([:])
    /// What loads under way are expected to take, per load, from their budget check until they end: a model that
    /// is loading or warming up holds memory but no role in a slot yet.
    private let reservations = Locked<[UUID: [ComputeDevice: Int]]>([:])
    /// A model not measured yet is assumed to cost this many times its file size (weights plus ORT's buffers).
    static let unknownCostFactor = 2

    private struct Key: Hashable {
        var sha256: String
        var target: ExecutionTarget
    }

    init(hostBudget: Int?, gpuBudgets: [Int: Int] = [:]) {
        var budgets: [ComputeDevice: Int] = [:]
        budgets[.host] = hostBudget
        for (id, bytes) in gpuBudgets { budgets[.gpu(id)] = bytes }
        self.budgets = budgets
    }

    /// Measured host costs of models run on the CPU, by digest.
    var costs: [String: Int] {
        measured.withLock { m in
            Dictionary(m.filter { $0.key.target == .cpu }.map { ($0.key.sha256, $0.value) }, uniquingKeysWith: max)
        }
    }

    /// Whether the host cost of a digest run on a target has been measured (its estimate is not the file-size guess).
    func isMeasured(sha256: String, target: ExecutionTarget) -> Bool {
        measured.withLock { $0[Key(sha256: sha256, target: target)] != nil }
    }

    func record(sha256: String, target: ExecutionTarget, bytes: Int) {
        measured.withLock { $0[Key(sha256: sha256, target: target)] = bytes }
    }

    /// What a model would take on each device it needs: the host always, its GPU when it runs on one.
    /// - Parameters:
    ///   - sha256: the model's digest, when known (a measured cost is used then).
    ///   - byteCount: the file's size.
    func estimate(sha256: String?, byteCount: Int, execution: ModelExecution) -> [ComputeDevice: Int] {
        let host = sha256.flatMap { sha in measured.withLock { $0[Key(sha256: sha, target: execution.target)] } }
        var estimate: [ComputeDevice: Int] = [.host: host ?? byteCount * Self.unknownCostFactor]
        if case .gpu = execution.target.device {
            estimate[execution.target.device] = Self.deviceCost(byteCount: byteCount, execution: execution)
        }
        return estimate
    }

    /// A GPU model's cost on its GPU (see the type's comment).
    static func deviceCost(byteCount: Int, execution: ModelExecution) -> Int {
        execution.gpuMemoryLimitBytes ?? byteCount * unknownCostFactor
    }

    /// The figures compared for each device in `estimate`, host first.
    func figures(estimate: [ComputeDevice: Int], inUse: [ComputeDevice: Int]) -> [DeviceMemoryFigures] {
        estimate.keys.sorted().map { device in
            DeviceMemoryFigures(device: device, inUseBytes: inUse[device] ?? 0, estimateBytes: estimate[device] ?? 0,
                budgetBytes: budgets[device])
        }
    }

    /// What the loads under way have reserved, per device.
    var reserved: [ComputeDevice: Int] {
        reservations.withLock { $0.values.reduce(into: [:]) { $0.merge($1, uniquingKeysWith: +) } }
    }

    /// Checks `estimate` against the budgets, counting `inUse` and what other loads have reserved, and reserves it
    /// in the same step: two loads checked at once cannot both pass on memory only one of them fits in. The
    /// reservation ends with `MemoryReservation.release()`.
    /// - Throws: as `check`, reserving nothing.
    /// - Parameter inUse: what the slots' models hold, read under the reservations' lock: a model that took its role
    ///   (and ended its reservation) since another check read it is counted one way or the other.
    func reserve(_ estimate: [ComputeDevice: Int], inUse: () -> [ComputeDevice: Int], path: String)
        throws(LoadFailure) -> MemoryReservation
    {
        let id = UUID()
        let failure: LoadFailure? = reservations.withLock { table in
            let others = table.values.reduce(into: inUse()) { $0.merge($1, uniquingKeysWith: +) }
            do throws(LoadFailure) { try Self.check(figures(estimate: estimate, inUse: others), path: path) } catch {
                return error
            }
            table[id] = estimate
            return nil
        }
        if let failure { throw failure }
        return MemoryReservation(table: reservations, id: id)
    }

    /// Reserves `amounts` without checking them against the budgets: memory a load already had and gives back (a
    /// failed resource-preserving swap restoring the model it released), which no other load may take meanwhile.
    func hold(_ amounts: [ComputeDevice: Int]) -> MemoryReservation {
        let id = UUID()
        reservations.withLock { $0[id] = amounts }
        return MemoryReservation(table: reservations, id: id)
    }

    /// Throws for the first device whose budget the figures exceed.
    /// - Throws: `LoadFailure.overMemoryBudget` (the host) or `.overDeviceMemoryBudget` (a GPU).
    static func check(_ figures: [DeviceMemoryFigures], path: String) throws(LoadFailure) {
        guard let over = figures.first(where: { !$0.fits }), let budget = over.budgetBytes else { return }
        if over.device == .host {
            throw .overMemoryBudget(path: path, neededBytes: over.estimateBytes, budgetBytes: budget,
                inUseBytes: over.inUseBytes)
        }
        throw .overDeviceMemoryBudget(path: path, device: over.device.description, neededBytes: over.estimateBytes,
            budgetBytes: budget, inUseBytes: over.inUseBytes)
    }

    /// The size of the file at `path` (0 when it cannot be read). Blocking.
    static func fileSize(_ path: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    }
}

/// A load's reserved memory (`MemoryLedger.reserve`), held until `release()` (idempotent) or until it is freed — a
/// load that fails, or a model dropped before it took a role.
///
/// Thread-safety: `release` and `resize` may be called from any thread.
final class MemoryReservation: Sendable {
    private let table: Locked<[UUID: [ComputeDevice: Int]]>
    private let id: UUID

    init(table: Locked<[UUID: [ComputeDevice: Int]]>, id: UUID) {
        self.table = table
        self.id = id
    }

    func release() { _ = table.withLock { $0.removeValue(forKey: id) } }

    /// Reserves `amounts` instead, in one step (no other load's check can come between a release and a new reservation): false when already released.
    func resize(to amounts: [ComputeDevice: Int]) -> Bool {
        table.withLock { table in
            guard table[id] != nil else { return false }
            table[id] = amounts
            return true
        }
    }

    /// Raises the reserved amounts to at least `floor`'s, per device (nothing once released).
    func raise(toAtLeast floor: [ComputeDevice: Int]) {
        table.withLock { table in
            guard let amounts = table[id] else { return }
            table[id] = amounts.merging(floor, uniquingKeysWith: max)
        }
    }

    deinit { release() }
}
