import Foundation

/// A value behind a lock, for state shared between threads.
///
/// Built on `NSLock` (a pthread mutex) rather than `Synchronization.Mutex`: ThreadSanitizer intercepts pthread
/// mutexes, so accesses inside `withLock` are checked as synchronized, whereas `Mutex`'s futex is invisible to it and
/// every access inside it is reported as a race. Hold it only for short, non-blocking critical sections.
///
/// Thread-safety: all access to the value goes through `withLock`.
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only read or written while `lock` is held.
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    /// Runs `body` with exclusive access to the value.
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

extension Locked where Value: Sendable {
    /// A copy of the value, read under the lock.
    public var value: Value { withLock { $0 } }
}
