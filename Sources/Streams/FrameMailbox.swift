import Foundation
import VideoDecoding

/// What a stream does when frames arrive faster than its model answers them.
public enum BackPressure: String, Sendable, Codable, CaseIterable {
    /// Never drop: the decoder waits for the model (files; FFmpeg stops reading while its pipe is full).
    case block
    /// Keep only the newest frame: older ones waiting are dropped and counted (live sources).
    case latest
}

/// The hand-off between a stream's decoder thread and its detection loop: a bounded queue that, when full, either
/// makes the decoder wait (`block`) or drops the oldest frame (`latest`).
///
/// The producer is a dedicated thread and may block; the consumer is a task and suspends, never blocking a thread of
/// the cooperative pool.
///
/// Thread-safety: `push` and `finish` from the producer thread, `next` from one consumer task, `close` from anywhere.
final class FrameMailbox: @unchecked Sendable {
    // @unchecked: every stored var is read and written with `condition` locked.
    let policy: BackPressure
    let capacity: Int
    private let condition = NSCondition()
    private var frames: [VideoFrame] = []
    private var waiter: CheckedContinuation<VideoFrame?, Never>?
    private var finished = false
    private var closed = false
    private var droppedCount = 0

    /// - Parameter capacity: frames held at most (≥ 1); `latest` holds one.
    init(policy: BackPressure, capacity: Int = 2) {
        self.policy = policy
        self.capacity = policy == .latest ? 1 : max(1, capacity)
    }

    /// Frames dropped under `latest`.
    var dropped: Int {
        condition.lock()
        defer { condition.unlock() }
        return droppedCount
    }

    /// Hands a frame over; with `block`, waits while the mailbox is full. Returns false once the consumer has closed
    /// it (the frame is discarded).
    func push(_ frame: VideoFrame) -> Bool {
        condition.lock()
        if closed {
            condition.unlock()
            return false
        }
        if let waiter {
            self.waiter = nil
            condition.unlock()
            waiter.resume(returning: frame)
            return true
        }
        switch policy {
        case .block:
            while frames.count >= capacity && !closed { condition.wait() }
            if closed {
                condition.unlock()
                return false
            }
        case .latest:
            if frames.count >= capacity {
                frames.removeFirst()
                droppedCount += 1
            }
        }
        frames.append(frame)
        condition.unlock()
        return true
    }

    /// The producer has no more frames: `next` returns nil once the queued ones are taken.
    func finish() {
        condition.lock()
        finished = true
        let waiter = self.waiter
        self.waiter = nil
        condition.unlock()
        waiter?.resume(returning: nil)
    }

    /// The consumer stops: queued frames are discarded, a waiting producer is released, `next` returns nil.
    func close() {
        condition.lock()
        closed = true
        finished = true
        frames.removeAll()
        let waiter = self.waiter
        self.waiter = nil
        condition.broadcast()
        condition.unlock()
        waiter?.resume(returning: nil)
    }

    /// Whether the producer has finished (or the mailbox was closed) and no frame is left: `next` would return nil.
    var isDrained: Bool {
        condition.lock()
        defer { condition.unlock() }
        return finished && frames.isEmpty
    }

    /// The next frame in decode order; nil at the end.
    func next() async -> VideoFrame? {
        await withCheckedContinuation { (continuation: CheckedContinuation<VideoFrame?, Never>) in
            condition.lock()
            if !frames.isEmpty {
                let frame = frames.removeFirst()
                condition.signal()
                condition.unlock()
                continuation.resume(returning: frame)
            } else if finished {
                condition.unlock()
                continuation.resume(returning: nil)
            } else {
                waiter = continuation
                condition.unlock()
            }
        }
    }
}
