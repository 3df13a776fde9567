/// A value computed once, by the first caller that asks, and shared with every later one.
///
/// The computation runs outside the lock (it may be long): two callers that ask at the same moment may both compute,
/// and the first to finish wins. Callers that take turns (one serial queue) compute it once.
///
/// Thread-safety: all members may be used from any thread.
public final class Memo<Value: Sendable>: Sendable {
    private let stored = Locked<Value?>(nil)

    public init() {}

    /// The value, computed by `make` unless a caller before has.
    public func value<E: Error>(_ make: () throws(E) -> Value) throws(E) -> Value {
        if let value = stored.value { return value }
        let made = try make()
        return stored.withLock { current in
            if let current { return current }
            current = made
            return made
        }
    }
}
