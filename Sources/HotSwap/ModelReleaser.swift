import Foundation
import Primitives
import YOLO

/// Releases retired models on its own thread, each only after its last request has finished.
///
/// A model that leaves every role in its slot (active, staged, standby) is handed to `retire(_:)`. The releaser
/// holds a strong reference; once the model's in-flight count is zero and that reference is the only one left, it
/// drops it on the releaser thread, so the ORT session is freed there — never on a request thread, never while a Run
/// is in flight — and then returns freed heap to the OS (`malloc_trim`).
///
/// Thread-safety: all methods may be called from any thread. One condition guards all state and is what the thread
/// waits on, so a `retire` or `shutdown` can never slip in between the thread's check and its wait.
public final class ModelReleaser: @unchecked Sendable {
    // @unchecked: `state` is only read or written with `condition` locked.
    private struct State {
        var retiring: [ModelInstance] = []
        var waiters: [ObjectIdentifier: [CheckedContinuation<Void, Never>]] = [:]
        var stopped = false
        var released = 0
        /// Counts retires and the shutdown: the thread waits a poll interval only if nothing changed since it looked.
        var changes = 0
    }

    private let condition = NSCondition()
    private var state = State()
    /// How often the in-flight counts of retiring models are checked.
    private let pollInterval: TimeInterval
    /// The name of the releaser's thread, as `ModelRelease.threadName` reports it: the label, shortened to the 15
    /// bytes Linux allows for a thread name (a longer one is refused by the OS, not truncated).
    public let threadName: String

    public init(label: String = "yoloswap.releaser", pollInterval: Duration = .milliseconds(2)) {
        var name = Substring(label)
        while name.utf8.count > 15 { name = name.dropLast() }
        let threadName = String(name)
        self.threadName = threadName
        self.pollInterval = pollInterval.timeInterval
        let started = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            // On Linux a name set before `start()` does not reach the OS thread (it keeps its creator's name, and
            // `Thread.current.name` reports that): name it from inside, once `start()` has returned.
            started.wait()
            Thread.current.name = threadName
            self.loop()
        }
        thread.name = threadName
        thread.start()
        started.signal()
    }

    /// Models waiting for their requests to drain.
    public var pendingCount: Int { withState { $0.retiring.count } }
    /// Models released so far.
    public var releasedCount: Int { withState { $0.released } }

    /// Takes a model that has left every role; it is released once its in-flight count is zero.
    public func retire(_ model: ModelInstance) {
        withState {
            $0.retiring.append(model)
            $0.changes += 1
        }
    }

    /// Retires `model` and waits until it has been released (its memory returned).
    ///
    /// Takes the caller's reference: pass the last one (`consume`); a model is only released once the releaser
    /// holds its only reference.
    public func retireAndWait(_ model: consuming ModelInstance) async {
        let id = ObjectIdentifier(model)
        var handoff: ModelInstance? = consume model
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let model = handoff.take()!
            withState {
                $0.waiters[id, default: []].append(continuation)
                $0.retiring.append(model)
                $0.changes += 1
            }
        }
    }

    /// Stops the thread after releasing everything retired so far (waiting for their requests).
    public func shutdown() {
        withState {
            $0.stopped = true
            $0.changes += 1
        }
    }

    /// Runs `body` on the state with the condition locked, then wakes the thread (every change may concern it).
    private func withState<R>(_ body: (inout State) -> R) -> R {
        condition.lock()
        defer {
            condition.signal()
            condition.unlock()
        }
        return body(&state)
    }

    private func loop() {
        while true {
            condition.lock()
            // Checked and waited on under the same lock: no wake-up is lost.
            while state.retiring.isEmpty && !state.stopped { condition.wait() }
            let finished = state.retiring.isEmpty && state.stopped
            condition.unlock()
            if finished { return }
            let (released, seen) = releaseDrained()
            if released { continue }
            // In-flight counts drop without a signal: look again after the poll interval, or at once when a model was
            // retired (or the releaser shut down) since the look, or during the wait.
            condition.lock()
            if state.changes == seen { _ = condition.wait(until: Date(timeIntervalSinceNow: pollInterval)) }
            condition.unlock()
        }
    }

    /// Drops the models whose requests have all finished and that nothing else references any more (a control-plane
    /// task or a status reader may still hold one for a moment): the releaser then holds the last reference, so the
    /// models' deinit (and the ORT session release) runs here, outside the lock. After `shutdown()` a model is
    /// dropped once drained even if still referenced elsewhere, so that the thread can end.
    /// - Returns: whether any model was released, and the state's change count when the models were looked at.
    private func releaseDrained() -> (released: Bool, seen: Int) {
        // The waiters are taken with their models, before the models are freed: a model allocated later at the same
        // address must not take them.
        let (ready, continuations, seen) = withState { s in
            var ready: [ModelInstance] = []
            var index = 0
            while index < s.retiring.count {
                if s.retiring[index].inFlight.current == 0,
                    s.stopped || isKnownUniquelyReferenced(&s.retiring[index])
                {
                    ready.append(s.retiring.remove(at: index))
                } else {
                    index += 1
                }
            }
            let continuations = ready.flatMap { s.waiters.removeValue(forKey: ObjectIdentifier($0)) ?? [] }
            return (ready, continuations, s.changes)
        }
        guard !ready.isEmpty else { return (false, seen) }
        var drained = consume ready
        let count = drained.count
        drained.removeAll()  // the last references: sessions are freed here, on this thread
        ProcessMemory.trim()
        withState { $0.released += count }
        continuations.forEach { $0.resume() }
        return (true, seen)
    }
}
