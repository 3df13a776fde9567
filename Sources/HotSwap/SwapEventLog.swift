import Foundation
import Primitives

/// The manager's recent events (newest 1000, in memory) and the streams subscribed to them.
///
/// Persisting events is the manager's job (it appends them to its `SlotStateStore` off the cooperative pool); this
/// type only keeps and fans them out.
///
/// Thread-safety: all members may be used from any thread; state lives behind one lock.
final class SwapEventLog: Sendable {
    private struct State {
        var recent: [SwapEvent] = []
        var subscribers: [UUID: AsyncStream<SwapEvent>.Continuation] = [:]
    }
    private let state = Locked(State())
    /// Events kept in memory.
    static let capacity = 1000

    /// Keeps `event` and yields it to every subscriber.
    func record(_ event: SwapEvent) {
        let subscribers = state.withLock { s in
            s.recent.append(event)
            if s.recent.count > Self.capacity { s.recent.removeFirst(s.recent.count - Self.capacity) }
            return Array(s.subscribers.values)
        }
        subscribers.forEach { $0.yield(event) }
    }

    /// The most recent events, newest first.
    func recent(slot: String?, limit: Int) -> [SwapEvent] {
        let recent = state.withLock { $0.recent }
        return Array(recent.reversed().filter { slot == nil || $0.slot == slot }.prefix(limit))
    }

    /// A stream of every event recorded from now on (the newest 1000 are buffered for a slow reader).
    func subscribe() -> AsyncStream<SwapEvent> {
        let (stream, continuation) = AsyncStream<SwapEvent>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        let id = UUID()
        continuation.onTermination = { [state] _ in state.withLock { _ = $0.subscribers.removeValue(forKey: id) } }
        state.withLock { $0.subscribers[id] = continuation }
        return stream
    }

    /// Ends every subscriber's stream.
    func finish() {
        let subscribers = state.withLock { s in
            defer { s.subscribers.removeAll() }
            return Array(s.subscribers.values)
        }
        subscribers.forEach { $0.finish() }
    }
}
