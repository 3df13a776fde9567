import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Why a thread could not be started: `pthread_create`'s error (`EAGAIN` when the process, its user or its
/// container's pids limit allows no more threads, or memory for the stack is short).
public struct ThreadStartError: Error, Equatable, CustomStringConvertible {
    public var name: String
    public var code: Int32

    public var description: String { "cannot start thread \(name): \(String(cString: strerror(code))) (errno \(code))" }
}

/// Starts detached threads, saying so when one cannot start: Foundation's `Thread.start()` ignores
/// `pthread_create`'s result, and the work it was given then silently never runs — a stream's decoder never ends, and
/// whoever waits for its end waits for good.
///
/// Thread-safety: stateless.
public enum SystemThread {
    /// Runs `body` on a new detached thread named `name` (the system shows its first 15 bytes: Linux refuses a longer
    /// thread name rather than cut it).
    /// - Parameter stackSize: the thread's stack in bytes (nil: the system's default).
    /// - Throws: `ThreadStartError` when the thread cannot be created; `body` is then never run.
    public static func detach(name: String, stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void)
        throws(ThreadStartError)
    {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        if let stackSize {
            let refused = pthread_attr_setstacksize(&attributes, stackSize)
            if refused != 0 { throw ThreadStartError(name: name, code: refused) }
        }
        let context = Unmanaged.passRetained(Work(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let failed = pthread_create(&thread, &attributes, { raw in
            let work = Unmanaged<Work>.fromOpaque(raw!).takeRetainedValue()
            var shown = Substring(work.name)
            while shown.utf8.count > 15 { shown = shown.dropLast() }
            Thread.current.name = String(shown)
            work.body()
            return nil
        }, context)
        if failed != 0 {
            // Not started: the thread never took its reference.
            Unmanaged<Work>.fromOpaque(context).release()
            throw ThreadStartError(name: name, code: failed)
        }
    }

    private final class Work: Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
}
