import Dispatch
import Foundation
import Synchronization
import Primitives

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Errors

/// Why an ``InferenceExecutor`` refused or abandoned a piece of work without running it.
public enum ExecutorError: Error, Equatable, CustomStringConvertible {
    /// The queue was full when the work was submitted; nothing was queued.
    ///
    /// `retryAfter` is a hint (mean recent service time × waiting items / threads, at least 10 ms).
    case overloaded(queueDepth: Int, retryAfter: Duration)
    /// The work's deadline passed while it waited in the queue; it never started.
    case deadlineExceeded(waited: Duration)
    /// The executor was shut down before the work was submitted.
    case shutDown

    public var description: String {
        switch self {
        case .overloaded(let depth, let retryAfter):
            "inference executor overloaded: \(depth) items waiting; retry after \(retryAfter)"
        case .deadlineExceeded(let waited):
            "deadline exceeded after waiting \(waited) in the inference queue"
        case .shutDown:
            "inference executor is shut down"
        }
    }
}

// MARK: - Executor

/// Runs blocking work (ORT `Run`, model loads, warm-ups) on dedicated OS threads with a bounded FIFO queue.
///
/// Blocking calls must not run on Swift's cooperative pool: a few of them would starve every other task.
/// Each executor owns `threads` `Thread`s named `"<label>-<n>"` (label shortened to fit Linux's 15-byte thread
/// names; see ``threadName(label:index:)``); callers suspend (``run(deadline:_:)``) or block
/// (``runBlocking(deadline:_:)``) until their work finishes on one of them.
///
/// - Back-pressure: at most `queueCapacity` items wait (running ones do not count). Submitting beyond that
///   fails at once with ``ExecutorError/overloaded(queueDepth:retryAfter:)``.
/// - Deadlines: a queued item whose deadline passes is answered with
///   ``ExecutorError/deadlineExceeded(waited:)`` promptly, even while every worker is busy: each item with a
///   deadline arms a one-shot Dispatch timer that removes it from the queue when it expires. Workers check the
///   deadline again when they dequeue. Work that has started is never interrupted.
/// - Cancellation: cancelling the calling task while its work is still queued removes it and throws
///   `CancellationError`; once started, the work runs to completion and its result is returned.
/// - Priority: ``Priority/background`` workers lower their OS priority (nice 10 on Linux), for loads and
///   warm-ups that must not starve serving threads.
///
/// Thread-safety: all members are thread-safe. State lives behind one lock (`Locked`); continuations are resumed
/// outside it, exactly once, by whoever removes the item from the queue (worker, timer, cancellation).
/// If the executor is released without ``shutdown()``, its threads finish the queued work and exit.
public final class InferenceExecutor: Sendable {
    /// OS scheduling priority of the worker threads.
    public enum Priority: Sendable {
        /// The process's default priority: serving.
        case normal
        /// Nice value 10 on Linux: model loads and warm-ups that should yield to serving.
        case background
    }

    /// The label given at creation; worker threads are named `"<label>-<index>"`, shortened to 15 bytes.
    public let label: String
    /// Number of worker threads.
    public let threads: Int
    /// Maximum number of waiting (not yet running) items.
    public let queueCapacity: Int
    /// OS priority of the worker threads.
    public let priority: Priority

    private let core: ExecutorCore

    /// Starts `threads` worker threads.
    ///
    /// - Parameters:
    ///   - label: Names the threads (`"<label>-0"`, …, shortened to 15 bytes) and appears in logs.
    ///   - threads: Dedicated worker threads (at least 1).
    ///   - queueCapacity: Maximum waiting items, not counting running ones (at least 1).
    ///   - priority: ``Priority/normal`` or ``Priority/background``.
    ///   - stackSize: Stack size of each worker thread in bytes (default 8 MiB, the Linux default).
    public init(
        label: String, threads: Int, queueCapacity: Int, priority: Priority = .normal, stackSize: Int = 8 << 20
    ) {
        precondition(threads >= 1, "InferenceExecutor '\(label)' needs at least one thread")
        precondition(queueCapacity >= 1, "InferenceExecutor '\(label)' needs a queueCapacity of at least 1")
        self.label = label
        self.threads = threads
        self.queueCapacity = queueCapacity
        self.priority = priority
        self.core = ExecutorCore(threads: threads, queueCapacity: queueCapacity)
        for index in 0..<threads {
            let core = self.core
            let name = Self.threadName(label: label, index: index)
            let started = DispatchSemaphore(value: 0)
            let thread = Thread {
                // On Linux a name set before `start()` does not reach the OS thread, and one set by the new
                // thread before `start()` has returned may not either (Foundation records the pthread handle
                // then): name it from inside, once `start()` has returned.
                started.wait()
                Thread.current.name = name
                core.workerLoop(priority: priority)
            }
            thread.name = name
            thread.stackSize = stackSize
            thread.start()
            started.signal()
        }
    }

    deinit {
        core.beginShutdown()
    }

    /// The name of worker `index`: `"<label>-<index>"`, with the label shortened so that the whole fits the
    /// 15 bytes Linux allows for a thread name (longer names are refused by the OS, not truncated).
    static func threadName(label: String, index: Int) -> String {
        let suffix = "-\(index)"
        var prefix = Substring(label)
        while prefix.utf8.count + suffix.utf8.count > 15 { prefix = prefix.dropLast() }
        return prefix + suffix
    }

    /// Runs `work` on a worker thread and suspends the caller until it finishes.
    ///
    /// - Parameters:
    ///   - deadline: If the work is still queued at this instant it is dropped (never started).
    ///   - work: The blocking work. It runs on a dedicated thread, never on the cooperative pool.
    /// - Returns: What `work` returned.
    /// - Throws: What `work` threw; ``ExecutorError/overloaded(queueDepth:retryAfter:)`` at once when the queue is
    ///   full; ``ExecutorError/deadlineExceeded(waited:)``; ``ExecutorError/shutDown``; `CancellationError` if the
    ///   calling task is cancelled before the work starts.
    public func run<T: Sendable>(
        deadline: ContinuousClock.Instant? = nil, _ work: @escaping @Sendable () throws -> T
    ) async throws -> T {
        try Task.checkCancellation()
        let id = core.makeID()
        let core = self.core
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let job = Job(
                    id: id, enqueuedAt: .now, deadline: deadline,
                    execute: {
                        let result = Result { try work() }
                        return { continuation.resume(with: result) }
                    },
                    reject: { continuation.resume(throwing: $0) })
                core.submit(job, checkTaskCancellation: true)
            }
        } onCancel: {
            core.cancel(id: id)
        }
    }

    /// Runs `work` on a worker thread, blocking the calling thread until it finishes.
    ///
    /// For tools and non-async callers; never call it from the cooperative pool.
    /// - Throws: Same as ``run(deadline:_:)`` except `CancellationError`.
    public func runBlocking<T: Sendable>(
        deadline: ContinuousClock.Instant? = nil, _ work: @escaping @Sendable () throws -> T
    ) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        let job = Job(
            id: core.makeID(), enqueuedAt: .now, deadline: deadline,
            execute: {
                box.set(Result { try work() })
                return { done.signal() }
            },
            reject: {
                box.set(.failure($0))
                done.signal()
            })
        core.submit(job, checkTaskCancellation: false)
        done.wait()
        return try box.take().get()
    }

    /// Items waiting in the queue (not yet running).
    public var queueDepth: Int { core.state.withLock { $0.queue.count } }
    /// Items executing now.
    public var running: Int { core.state.withLock { $0.running } }
    /// Whether more than one item is running, or any is waiting: asked from inside an item, whether it has company
    /// (one snapshot under the lock).
    public var hasWorkBesidesOne: Bool { core.state.withLock { $0.running > 1 || !$0.queue.isEmpty } }
    /// Total items that ran to completion (returned or threw) since creation.
    public var completed: Int { core.state.withLock { $0.completed } }
    /// Whether ``shutdown()`` has begun: new work is refused with ``ExecutorError/shutDown``.
    public var isShuttingDown: Bool { core.state.withLock { $0.isShuttingDown } }

    /// Stops accepting work, lets queued and running items finish, and waits until every thread has left its loop
    /// (the OS threads end a moment later; nothing of the executor runs on them any more).
    ///
    /// Work submitted afterwards fails with ``ExecutorError/shutDown``. Calling it again waits for the same end.
    public func shutdown() async {
        let core = self.core
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            core.beginShutdown(waiter: continuation)
        }
    }
}
