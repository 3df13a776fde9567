import Dispatch
import Foundation
import Primitives
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Internals

/// One unit of submitted work. Exactly one of `execute` / `reject` is called, by whoever dequeues it.
struct Job: Sendable {
    let id: UInt64
    let enqueuedAt: ContinuousClock.Instant
    let deadline: ContinuousClock.Instant?
    /// Runs the work and returns what delivers its result; the worker updates its counters in between, so that
    /// a caller who got its result sees `running` / `completed` already updated.
    let execute: @Sendable () -> @Sendable () -> Void
    /// Delivers an error without running the work.
    let reject: @Sendable (any Error) -> Void
}

/// Holds a `runBlocking` result between the worker and the blocked caller.
final class ResultBox<T: Sendable>: Sendable {
    private let value = Locked<Result<T, any Error>?>(nil)
    func set(_ result: Result<T, any Error>) { value.withLock { $0 = result } }
    func take() -> Result<T, any Error> { value.withLock { $0.take()! } }
}

/// The shared state of an executor. Its threads, timers and in-flight calls hold it, the ``InferenceExecutor``
/// does not let them hold itself, so releasing the executor can shut the threads down.
///
/// Thread-safety: `state` is behind a lock; `wakeups` is a counting semaphore holding at least one permit per
/// queued item (items removed by timers or cancellation leave extra permits, which cause harmless empty wake-ups).
final class ExecutorCore: Sendable {
    struct State {
        /// FIFO of waiting items. Small and bounded by `queueCapacity`, so an array is fine.
        var queue: [Job] = []
        var running = 0
        var completed = 0
        var nextID: UInt64 = 0
        var liveThreads: Int
        var isShuttingDown = false
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        /// Exponentially weighted mean service time in seconds, for `retryAfter` hints.
        var meanServiceSeconds: Double?
    }

    let state: Locked<State>
    let wakeups = DispatchSemaphore(value: 0)
    let threads: Int
    let queueCapacity: Int

    init(threads: Int, queueCapacity: Int) {
        self.threads = threads
        self.queueCapacity = queueCapacity
        self.state = Locked(State(liveThreads: threads))
    }

    func makeID() -> UInt64 {
        state.withLock { state in
            state.nextID &+= 1
            return state.nextID
        }
    }

    /// Queues `job`, or rejects it at once (overloaded, shut down, past deadline, task cancelled).
    func submit(_ job: Job, checkTaskCancellation: Bool) {
        let now = ContinuousClock.now
        let refusal: (any Error)? = state.withLock { state in
            if state.isShuttingDown { return ExecutorError.shutDown }
            // Checked under the lock: a concurrent `cancel(id:)` either ran before (and the flag is visible
            // here) or runs after and finds the job in the queue.
            if checkTaskCancellation && Task.isCancelled { return CancellationError() }
            if let deadline = job.deadline, now >= deadline { return ExecutorError.deadlineExceeded(waited: .zero) }
            if state.queue.count >= queueCapacity {
                return ExecutorError.overloaded(
                    queueDepth: state.queue.count, retryAfter: retryAfter(state, waiting: state.queue.count))
            }
            state.queue.append(job)
            return nil
        }
        if let refusal {
            job.reject(refusal)
            return
        }
        wakeups.signal()
        if let deadline = job.deadline { armTimer(id: job.id, deadline: deadline) }
    }

    private func retryAfter(_ state: State, waiting: Int) -> Duration {
        let floor = 0.010
        let mean = state.meanServiceSeconds ?? floor
        let seconds = max(floor, mean * Double(waiting + 1) / Double(threads))
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }

    /// Answers the job with `deadlineExceeded` when its deadline passes, if it is still queued then.
    private func armTimer(id: UInt64, deadline: ContinuousClock.Instant) {
        let remaining = max(.zero, deadline - .now)
        let (seconds, attoseconds) = remaining.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000) + 1
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { [weak self] in
            self?.expire(id: id, deadline: deadline)
        }
    }

    private func expire(id: UInt64, deadline: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        guard now >= deadline else {
            // Dispatch's clock ran slightly ahead of ContinuousClock: try again.
            armTimer(id: id, deadline: deadline)
            return
        }
        let expired: Job? = state.withLock { state in
            guard let index = state.queue.firstIndex(where: { $0.id == id }) else { return nil }
            return state.queue.remove(at: index)
        }
        if let expired {
            expired.reject(ExecutorError.deadlineExceeded(waited: now - expired.enqueuedAt))
        }
    }

    /// Removes a still-queued job and answers it with `CancellationError`; no effect once it has started.
    func cancel(id: UInt64) {
        let cancelled: Job? = state.withLock { state in
            guard let index = state.queue.firstIndex(where: { $0.id == id }) else { return nil }
            return state.queue.remove(at: index)
        }
        cancelled?.reject(CancellationError())
    }

    /// Refuses new work and wakes every thread so that each exits once the queue is empty.
    func beginShutdown(waiter: CheckedContinuation<Void, Never>? = nil) {
        let (wake, resumeNow): (Bool, Bool) = state.withLock { state in
            let first = !state.isShuttingDown
            state.isShuttingDown = true
            guard let waiter else { return (first, false) }
            if state.liveThreads == 0 { return (first, true) }
            state.shutdownWaiters.append(waiter)
            return (first, false)
        }
        if wake {
            for _ in 0..<threads { wakeups.signal() }
        }
        if resumeNow { waiter?.resume() }
    }

    private enum Next {
        case run(Job)
        case idle
        case exit([CheckedContinuation<Void, Never>])
    }

    /// The body of each worker thread.
    func workerLoop(priority: InferenceExecutor.Priority) {
        if priority == .background { lowerThreadPriority() }
        while true {
            wakeups.wait()
            var expired: [(Job, Duration)] = []
            let now = ContinuousClock.now
            let next: Next = state.withLock { state in
                while !state.queue.isEmpty {
                    let job = state.queue.removeFirst()
                    if let deadline = job.deadline, now >= deadline {
                        expired.append((job, now - job.enqueuedAt))
                        continue
                    }
                    state.running += 1
                    return .run(job)
                }
                if state.isShuttingDown {
                    state.liveThreads -= 1
                    if state.liveThreads == 0 {
                        defer { state.shutdownWaiters = [] }
                        return .exit(state.shutdownWaiters)
                    }
                    return .exit([])
                }
                return .idle
            }
            for (job, waited) in expired { job.reject(ExecutorError.deadlineExceeded(waited: waited)) }
            switch next {
            case .idle:
                continue
            case .exit(let waiters):
                for waiter in waiters { waiter.resume() }
                return
            case .run(let job):
                let start = ContinuousClock.now
                let deliver = job.execute()
                let elapsed = ContinuousClock.now - start
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                state.withLock { state in
                    state.running -= 1
                    state.completed += 1
                    state.meanServiceSeconds = state.meanServiceSeconds.map { 0.8 * $0 + 0.2 * seconds } ?? seconds
                }
                deliver()
            }
        }
    }

    /// Sets the calling thread's nice value to 10.
    ///
    /// On Linux the nice value is per thread, and `setpriority(PRIO_PROCESS, 0, …)` applies to the calling
    /// thread only (`who == 0` means the caller, i.e. the current task), so the other threads keep theirs.
    private func lowerThreadPriority() {
        #if os(Linux)
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        #else
            Thread.current.threadPriority = 0.25
        #endif
    }
}
