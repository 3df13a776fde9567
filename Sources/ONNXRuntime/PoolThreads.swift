internal import CONNXRuntime
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Starts ONNX Runtime's pool threads (a session's intra-op workers) from one long-lived thread that keeps the
/// scheduling priority of the thread that created it — the process's normal one, since ``ORTEnvironment`` creates it.
///
/// Why: Linux gives a new thread the nice value of the thread that creates it, and ORT creates a session's pool
/// threads while the session is being created. The service creates sessions on its load workers, which run at nice 10
/// so that a background load yields to serving (`HotSwap.InferenceExecutor.Priority.background`). Left to ORT, a
/// model's pool threads would keep nice 10 for the model's life: part of every Run of a loaded model would yield to
/// any busy thread of the machine (a stream's FFmpeg decoder, the next load). Raising a thread's priority back needs
/// `CAP_SYS_NICE`, so the threads are started from here instead, through ORT's custom thread-creation hooks
/// (`SessionOptionsSetCustomCreateThreadFn` / `…JoinThreadFn`). Each is named `ort-pool`.
///
/// The price: with more than one intra-op thread, the pool's share of a Run made while the model loads (its warm-up)
/// or for a shadow copy runs at normal priority too; only the thread calling Run keeps the load's or mirror's nice
/// value. With one intra-op thread ORT makes no pool, and none of this applies.
///
/// Thread-safety: the C hooks may be called from any thread. Requests are handed to the spawner, and the outcome
/// back, under one `NSCondition` (a pthread mutex, which ThreadSanitizer sees).
enum PoolThreads {
    /// The spawner, started once, from the first caller's thread (``ORTEnvironment/init(library:logLevel:logID:)``).
    static let spawner = Spawner()

    /// One thread to create: ORT's worker function and its argument, and the outcome.
    final class Request: @unchecked Sendable {
        // @unchecked: `thread`, `failed` and `done` are written by the spawner and read by the requester, both under
        // the spawner's condition lock.
        let worker: OrtThreadWorkerFn
        let argument: UnsafeMutableRawPointer?
        var thread = pthread_t()
        var failed: Int32 = 0
        var done = false

        init(worker: OrtThreadWorkerFn, argument: UnsafeMutableRawPointer?) {
            self.worker = worker
            self.argument = argument
        }
    }

    /// The long-lived thread that creates the pool threads.
    final class Spawner: @unchecked Sendable {
        // @unchecked: `pending` is only touched under `condition`.
        private let condition = NSCondition()
        private var pending: [Request] = []

        init() {
            let thread = Thread { [self] in loop() }
            thread.name = "ort-spawner"
            thread.start()
        }

        /// Creates a thread running `request.worker(request.argument)`; returns once it exists (or failed).
        func spawn(_ request: Request) {
            condition.lock()
            defer { condition.unlock() }
            pending.append(request)
            condition.broadcast()
            while !request.done { condition.wait() }
        }

        private func loop() {
            while true {
                condition.lock()
                while pending.isEmpty { condition.wait() }
                let request = pending.removeFirst()
                let context = Unmanaged.passRetained(request).toOpaque()
                var thread = pthread_t()
                let failed = pthread_create(&thread, nil, { context in
                    let request = Unmanaged<Request>.fromOpaque(context!).takeRetainedValue()
                    Thread.current.name = "ort-pool"
                    request.worker(request.argument)
                    return nil
                }, context)
                // Not started: the thread's reference was never taken.
                if failed != 0 { Unmanaged<Request>.fromOpaque(context).release() }
                request.thread = thread
                request.failed = failed
                request.done = true
                condition.broadcast()
                condition.unlock()
            }
        }
    }

    /// ORT's create hook: the thread's handle (a heap cell holding its `pthread_t`), or nil when it could not be
    /// created, which fails the session's creation with ORT's message.
    static let create: OrtCustomCreateThreadFn = { _, worker, argument in
        guard let worker else { return nil }
        let request = Request(worker: worker, argument: argument)
        PoolThreads.spawner.spawn(request)
        guard request.failed == 0 else { return nil }
        let cell = UnsafeMutablePointer<pthread_t>.allocate(capacity: 1)
        cell.initialize(to: request.thread)
        return OrtCustomThreadHandle(OpaquePointer(cell))
    }

    /// ORT's join hook: waits for the thread (ORT has told it to end) and frees its handle.
    static let join: OrtCustomJoinThreadFn = { handle in
        guard let handle else { return }
        let cell = UnsafeMutablePointer<pthread_t>(OpaquePointer(handle))
        _ = pthread_join(cell.pointee, nil)
        cell.deinitialize(count: 1)
        cell.deallocate()
    }
}
