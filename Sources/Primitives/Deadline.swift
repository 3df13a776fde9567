/// An operation's time ran out before it finished.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the deadline passed before the operation finished" }
}

/// The result of `operation`, or `DeadlineExceeded` when `deadline` passes first.
///
/// The operation runs in a child task that is cancelled when the deadline passes, and awaited: it must end soon after
/// cancellation (an `AsyncSequence` from SwiftNIO, `Task.sleep` and the like do).
public func withDeadline<T: Sendable>(
    _ deadline: ContinuousClock.Instant, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(until: deadline, clock: .continuous)
            return nil
        }
        defer { group.cancelAll() }
        // The first child to finish decides: a value, the operation's error, or the timer's nil.
        guard let first = try await group.next(), let value = first else { throw DeadlineExceeded() }
        return value
    }
}
