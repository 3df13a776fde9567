import Dispatch

/// A serial queue for blocking work (SQLite writes with fsync, file reads, `/proc` reads) that async code awaits
/// without holding a thread of Swift's cooperative pool.
///
/// Work runs in submission order on one Dispatch queue, one item at a time; the awaiting task is suspended meanwhile.
/// Use one queue per resource whose calls must not overlap (one database, one log).
///
/// Thread-safety: all members may be used from any thread or task.
public final class BlockingQueue: Sendable {
    private let queue: DispatchQueue

    /// - Parameter label: names the queue's thread in debuggers and crash reports.
    public init(label: String) {
        queue = DispatchQueue(label: label, qos: .utility)
    }

    /// Runs `work` on the queue and returns its result (or rethrows its error).
    public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work() }) }
        }
    }

    /// Runs non-throwing `work` on the queue and returns its result.
    public func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }
}
