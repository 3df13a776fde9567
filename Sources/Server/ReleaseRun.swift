import Foundation
import HotSwap
import Primitives
import Releases

/// One release of a slot as the server runs it: the engine (router, figures, gates), the mirror pool, the kept
/// disagreements, the energy meter, and the tasks that bring the candidate up and tick the time-based gates.
///
/// Thread-safety: immutable references to thread-safe parts; the tasks sit behind a lock.
final class ReleaseRun: Sendable {
    let engine: ReleaseEngine
    /// Mirrored requests run here: one background-priority thread, a queue of two — a copy that does not fit is shed.
    let mirror: InferenceExecutor
    let disagreements: DisagreementStore
    let energy: EnergyMeter
    /// Bringing the candidate up, then the ticker; the decisions being carried out.
    let tasks = Locked<[Task<Void, Never>]>([])
    /// Bringing the candidate up (load, verify, warm up, gate): done once the release routes traffic or has failed.
    let bringUp = Locked<Task<Void, Never>?>(nil)
    /// Serializes the carrying-out of decisions and manual actions of this release (commit, audit, event).
    let actions = ActionChain()
    private let stopping = Locked(false)
    /// Set by `stop()` (a shutdown, or a newer release replacing this finished one): work under way ends early.
    var isStopping: Bool { stopping.withLock { $0 } }
    /// Set once the release's end has been carried out (the candidate discarded or promoted, the outcome recorded);
    /// a run made for a release that had ended already is settled from the start.
    private let settled: Locked<Bool>

    /// Set while the candidate is being brought up (its load, verification, warm-up, gate).
    private let bringingUp = Locked(false)

    /// Whether the release is over and its end carried out: only then is its slot free. The engine's phase turns
    /// terminal at once (a breached rule routes every request to the baseline under the engine's lock), but the
    /// candidate is discarded afterwards, in the action chain: until then an operator's switch would flip in the very
    /// candidate whose rule tripped (and the rollback, finding it gone from the staged role, discard nothing). Nor
    /// while a bring-up still runs: a release aborted while its candidate loads is settled by the abort, but the load
    /// then stages the candidate, which the bring-up's end discards.
    var isOver: Bool { engine.phase.isTerminal && settled.withLock { $0 } && !bringingUp.withLock { $0 } }

    /// Marks the release's end carried out.
    func markSettled() { settled.withLock { $0 = true } }

    /// Marks the bring-up begun (before its task is made) and ended (as it returns, whichever way).
    func markBringingUp(_ running: Bool) { bringingUp.withLock { $0 = running } }

    init(engine: ReleaseEngine, disagreementsFolder: String?) {
        self.engine = engine
        settled = Locked(engine.phase.isTerminal)
        let slot = engine.record.slot
        mirror = InferenceExecutor(label: "mirror-\(slot)", threads: 1, queueCapacity: 2, priority: .background)
        disagreements = DisagreementStore(directory: disagreementsFolder,
            capacity: engine.spec.disagreementsKept)
        energy = EnergyMeter()
    }

    func keep(_ task: Task<Void, Never>) {
        tasks.withLock { list in
            list.removeAll { $0.isCancelled }
            list.append(task)
        }
    }

    /// Stops the ticker and waits for the work under way.
    func stop() async {
        stopping.withLock { $0 = true }
        let list = tasks.withLock { $0 }
        list.forEach { $0.cancel() }
        for task in list { await task.value }
        await mirror.shutdown()
    }
}

/// Runs async steps one after another, in the order they were queued (a release's actions must not interleave: a
/// manual abort and an automatic rollback would otherwise both discard the candidate).
///
/// Thread-safety: all members may be called from any task.
final class ActionChain: Sendable {
    private let tail = Locked<Task<Void, Never>?>(nil)

    /// Queues `body` behind everything queued before and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = tail.withLock { tail -> Task<T, any Error> in
            let previous = tail
            let task = Task {
                await previous?.value
                return try await body()
            }
            tail = Task { _ = try? await task.value }
            return task
        }
        return try await task.value
    }
}
