import Foundation
import Synchronization

/// Releases retired models on its own thread, each only after its last request has finished.
///
/// A model that leaves every role in its slot (active, staged, standby) is handed to `retire(_:)`. The releaser
/// holds the last strong reference; once the model's in-flight count is zero it drops that reference on the
/// releaser thread, so the ORT session is freed there — never on a request thread, never while a Run is in flight —
/// and then returns freed heap to the OS (`malloc_trim`).
///
/// Thread-safety: all methods may be called from any thread.
public final class ModelReleaser: Sendable {
    private struct State {
        var retiring: [ModelInstance] = []
        var waiters: [ObjectIdentifier: [CheckedContinuation<Void, Never>]] = [:]
        var stopped = false
        var released = 0
    }

    private let state = Mutex(State())
    private let condition = NSCondition()
    /// How often the in-flight counts of retiring models are checked.
    private let pollInterval: TimeInterval
    public let threadName: String

    public init(label: String = "yoloswap.releaser", pollInterval: Duration = .milliseconds(2)) {
        self.threadName = label
        self.pollInterval = Double(pollInterval.components.attoseconds) / 1e18 + Double(pollInterval.components.seconds)
        let thread = Thread { [self] in self.loop() }
        thread.name = label
        thread.start()
    }

    /// Models waiting for their requests to drain.
    public var pendingCount: Int { state.withLock { $0.retiring.count } }
    /// Models released so far.
    public var releasedCount: Int { state.withLock { $0.released } }

    /// Takes a model that has left every role; it is released once its in-flight count is zero.
    public func retire(_ model: ModelInstance) {
        state.withLock { $0.retiring.append(model) }
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    /// Retires `model` and waits until it has been released (its memory returned).
    public func retireAndWait(_ model: ModelInstance) async {
        let id = ObjectIdentifier(model)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.withLock { $0.waiters[id, default: []].append(continuation) }
            retire(model)
        }
    }

    /// Stops the thread after releasing everything retired so far (waiting for their requests).
    public func shutdown() {
        state.withLock { $0.stopped = true }
        condition.lock()
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            let (idle, stopped) = state.withLock { ($0.retiring.isEmpty, $0.stopped) }
            if idle && stopped { return }
            condition.lock()
            if idle {
                condition.wait()
            } else {
                _ = condition.wait(until: Date(timeIntervalSinceNow: pollInterval))
            }
            condition.unlock()
            releaseDrained()
        }
    }

    /// Drops the models whose requests have all finished. The strong references leave the lock first, so that the
    /// models' deinit (and the ORT session release) runs here, outside the lock.
    private func releaseDrained() {
        var drained: [ModelInstance] = state.withLock { s in
            var ready: [ModelInstance] = []
            s.retiring.removeAll { model in
                guard model.inFlight.current == 0 else { return false }
                ready.append(model)
                return true
            }
            return ready
        }
        guard !drained.isEmpty else { return }
        let ids = drained.map(ObjectIdentifier.init)
        drained.removeAll()  // the last references: sessions are freed here, on this thread
        ProcessMemory.trim()
        let continuations = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.released += ids.count
            return ids.flatMap { s.waiters.removeValue(forKey: $0) ?? [] }
        }
        continuations.forEach { $0.resume() }
    }
}
