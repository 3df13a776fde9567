internal import CONNXRuntime
import Foundation
import Synchronization

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
/// Thread-safety: the C hooks may be called from any thread; requests are handed to the spawner thread under a lock,
/// and each caller waits for its own thread's creation.
enum PoolThreads {
    /// The spawner, started once, from the first caller's thread (``ORTEnvironment/init(library:logLevel:logID:)``).
    static let spawner = Spawner()

    /// One thread to create: ORT's worker function and its argument, and the outcome.
    final class Request: @unchecked Sendable {
        // @unchecked: `thread` and `failed` are written by the spawner before it signals `done`, and read by the
        // requester only after waiting for it.
        let worker: OrtThreadWorkerFn
        let argument: UnsafeMutableRawPointer?
        var thread = pthread_t()
        var failed: Int32 = 0
        let done = DispatchSemaphore(value: 0)

        init(worker: OrtThreadWorkerFn, argument: UnsafeMutableRawPointer?) {
            self.worker = worker
            self.argument = argument
        }
    }

    /// The long-lived thread that creates the pool threads.
    final class Spawner: Sendable {
        private let pending = Mutex<[Request]>([])
        private let wake = DispatchSemaphore(value: 0)

        init() {
            let thread = Thread { [self] in loop() }
            thread.name = "ort-spawner"
            thread.start()
        }

        /// Creates a thread running `request.worker(request.argument)`; returns once it exists (or failed).
        func spawn(_ request: Request) {
            pending.withLock { $0.append(request) }
            wake.signal()
            request.done.wait()
        }

        private func loop() {
            while true {
                wake.wait()
                guard let request = pending.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
                let context = Unmanaged.passRetained(request).toOpaque()
                request.failed = pthread_create(&request.thread, nil, { context in
                    let request = Unmanaged<Request>.fromOpaque(context!).takeRetainedValue()
                    Thread.current.name = "ort-pool"
                    request.worker(request.argument)
                    return nil
                }, context)
                // Not started: the thread's reference was never taken.
                if request.failed != 0 { Unmanaged<Request>.fromOpaque(context).release() }
                request.done.signal()
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
