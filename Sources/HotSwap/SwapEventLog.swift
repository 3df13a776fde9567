import Foundation
import Primitives

/// A swap event with its place in this run's event log: `sequence` counts from 1 in the order events were recorded.
///
/// Thread-safety: a value.
public struct SequencedSwapEvent: Sendable, Equatable {
    public var sequence: UInt64
    public var event: SwapEvent
}

/// A subscription to the event log that began after a known event (`ModelManager.subscribeEvents(after:deliver:)`).
///
/// Thread-safety: a value; `cancel` may be called from any thread, more than once.
public struct SwapEventSubscription: Sendable {
    /// Identifies this run of the log: a sequence number means nothing to another run (a restarted server).
    public let run: String
    /// Whether the events after the requested one could all be delivered: false when none was requested, or when it
    /// belongs to another run or has left the log's memory — the subscriber then missed events and should re-read
    /// the state instead of trusting its own.
    public let resumed: Bool
    /// The sequence number of the newest event when the subscription began (0 for an empty log).
    public let head: UInt64
    let cancellation: @Sendable () -> Void

    /// Ends the subscription: `deliver` is not called again once this returns.
    public func cancel() { cancellation() }
}

/// The manager's recent events (newest 1000, in memory, numbered in the order recorded) and their subscribers.
///
/// Persisting events is the manager's job (it appends them to its `SlotStateStore` off the cooperative pool); this
/// type only keeps, numbers and fans them out. Subscribers are called under the log's lock, in sequence order, so
/// each sees every event once and in order; a subscriber's `deliver` must not block (it yields to a stream).
///
/// Thread-safety: all members may be used from any thread; state lives behind one lock.
final class SwapEventLog: Sendable {
    private struct State {
        var recent: [SequencedSwapEvent] = []
        var sequence: UInt64 = 0
        /// Each `deliver` returns false to be removed (its reader is gone or too slow); `finish` ends it.
        var subscribers: [UUID: Subscriber] = [:]
    }
    private struct Subscriber: Sendable {
        var deliver: @Sendable (SequencedSwapEvent) -> Bool
        var finish: @Sendable () -> Void
    }
    private let state = Locked(State())
    /// Events kept in memory.
    static let capacity = 1000
    /// This run's identity: random, so that sequence numbers of an earlier run are not mistaken for this one's.
    let run = String(UUID().uuidString.lowercased().prefix(8))

    /// Keeps `event`, numbers it and hands it to every subscriber.
    func record(_ event: SwapEvent) {
        state.withLock { s in
            s.sequence += 1
            let sequenced = SequencedSwapEvent(sequence: s.sequence, event: event)
            s.recent.append(sequenced)
            if s.recent.count > Self.capacity { s.recent.removeFirst(s.recent.count - Self.capacity) }
            s.subscribers = s.subscribers.filter { $0.value.deliver(sequenced) }
        }
    }

    /// The most recent events, newest first.
    func recent(slot: String?, limit: Int) -> [SwapEvent] {
        let recent = state.withLock { $0.recent }
        return Array(recent.reversed().lazy.map(\.event).filter { slot == nil || $0.slot == slot }
            .prefix(max(0, limit)))
    }

    /// A stream of every event recorded from now on (the newest 1000 are buffered for a slow reader).
    func subscribe() -> AsyncStream<SwapEvent> {
        let (stream, continuation) = AsyncStream<SwapEvent>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        let subscription = subscribe(after: nil, finish: { continuation.finish() }) { sequenced in
            if case .terminated = continuation.yield(sequenced.event) { return false }
            return true
        }
        continuation.onTermination = { _ in subscription.cancel() }
        return stream
    }

    /// Calls `deliver` with the events recorded after `after` that the log still holds (when `after` names an event
    /// of this run), then with every event recorded from now on, in order, until it returns false or the
    /// subscription is cancelled. Replay and registration happen under one lock: no event is missed or repeated
    /// between them.
    /// - Parameters:
    ///   - after: the last event the subscriber saw, as `(run, sequence)`; nil for live events only.
    ///   - finish: called once when the log ends (the manager shuts down), unless the subscription ended before.
    ///   - deliver: called under the log's lock; must not block. Returns false to end the subscription.
    func subscribe(after: (run: String, sequence: UInt64)?, finish: @escaping @Sendable () -> Void,
                   deliver: @escaping @Sendable (SequencedSwapEvent) -> Bool) -> SwapEventSubscription
    {
        let id = UUID()
        let (resumed, head) = state.withLock { s -> (Bool, UInt64) in
            var resumed = false
            var open = true
            if let after, after.run == run, after.sequence <= s.sequence {
                // Resumable when nothing between `after` and the oldest event held has been dropped from memory.
                let oldest = s.recent.first?.sequence ?? s.sequence + 1
                if after.sequence + 1 >= oldest {
                    resumed = true
                    for event in s.recent where event.sequence > after.sequence && open { open = deliver(event) }
                }
            }
            if open { s.subscribers[id] = Subscriber(deliver: deliver, finish: finish) }
            return (resumed, s.sequence)
        }
        return SwapEventSubscription(run: run, resumed: resumed, head: head) { [state] in
            state.withLock { _ = $0.subscribers.removeValue(forKey: id) }
        }
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

extension ModelManager {
    /// Subscribes to the event log, resuming after the last event a subscriber saw where the log still holds what
    /// followed it (see `SwapEventSubscription.resumed`): for clients that reconnect, such as a browser's event
    /// stream sending `Last-Event-ID`.
    /// - Parameters:
    ///   - after: the last event seen, as the log's `run` and the event's `sequence`; nil for live events only.
    ///   - finish: called once when the manager shuts down and the log ends.
    ///   - deliver: called for each event, in order, under the log's lock: it must not block. Returns false to end the
    ///     subscription (a bounded buffer that is full: the reader is too slow).
    public nonisolated func subscribeEvents(after: (run: String, sequence: UInt64)?,
                                            finish: @escaping @Sendable () -> Void,
                                            deliver: @escaping @Sendable (SequencedSwapEvent) -> Bool)
        -> SwapEventSubscription
    {
        eventLog.subscribe(after: after, finish: finish, deliver: deliver)
    }
}
