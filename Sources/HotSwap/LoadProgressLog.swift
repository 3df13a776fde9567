import Foundation
import Primitives

/// Fans out the stage changes of loads started through `ModelManager.load` to subscribers (an operator's live view);
/// nothing is kept: progress is a view of the operations, which `ModelManager.operation(_:)` still answers.
///
/// Thread-safety: all members may be used from any thread; subscribers are called under one lock, in the order the
/// changes were recorded, and must not block.
final class LoadProgressLog: Sendable {
    private let subscribers = Locked<[UUID: @Sendable (LoadOperation) -> Bool]>([:])

    /// Hands `operation` (its current status) to every subscriber; one that returns false is removed.
    func record(_ operation: LoadOperation) {
        subscribers.withLock { $0 = $0.filter { $0.value(operation) } }
    }

    /// Calls `deliver` for every change from now on until it returns false or the returned cancel is called.
    func subscribe(_ deliver: @escaping @Sendable (LoadOperation) -> Bool) -> @Sendable () -> Void {
        let id = UUID()
        subscribers.withLock { $0[id] = deliver }
        return { [subscribers] in subscribers.withLock { _ = $0.removeValue(forKey: id) } }
    }
}

extension ModelManager {
    /// Subscribes to the stage changes of loads (`queued → verifying → … → ready | failed | cancelled`) started
    /// through `load(_:)`: `deliver` gets the operation after each change, under a lock, and must not block (it
    /// yields to a bounded buffer). Returns false to end the subscription; the returned closure ends it too.
    public nonisolated func subscribeLoadProgress(_ deliver: @escaping @Sendable (LoadOperation) -> Bool)
        -> @Sendable () -> Void
    {
        loadProgress.subscribe(deliver)
    }
}
