/// A one-time event that tasks await: `open()` once, and every `wait()`, before or after it, returns.
///
/// Thread-safety: all members may be used from any thread or task; `open()` resumes the waiters outside the lock.
public final class Latch: Sendable {
    private let state = Locked<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    public init() {}

    /// Whether `open()` has been called.
    public var isOpen: Bool { state.withLock { $0.open } }

    /// Opens the latch, resuming every waiter. Calling it again does nothing.
    public func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            defer { s = (true, []) }
            return s.waiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once the latch is open.
    public func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let open = state.withLock { s -> Bool in
                if !s.open { s.waiters.append(continuation) }
                return s.open
            }
            if open { continuation.resume() }
        }
    }
}
