import Foundation
import HotSwap
import Primitives

extension HotSwapConfiguration {
    /// Settings for tests: one warm-up run, a timeout no healthy test model comes near.
    public static func testing(
        servingThreads: Int = 2, queueCapacity: Int = 64, warmupRuns: Int = 1, warmupTimeout: Duration = .seconds(20),
        standbyRetention: StandbyRetention = .keep, memoryBudgetBytes: Int? = nil,
        policy: SwapPolicy = .availabilityPreserving
    ) -> HotSwapConfiguration {
        HotSwapConfiguration(servingThreads: servingThreads, queueCapacity: queueCapacity, warmupRuns: warmupRuns,
            warmupTimeout: warmupTimeout, standbyRetention: standbyRetention, memoryBudgetBytes: memoryBudgetBytes,
            policy: policy)
    }
}

/// Collects a manager's events as they are emitted.
///
/// Thread-safety: all members may be used from any thread.
public final class EventRecorder: Sendable {
    private let received = Locked<[SwapEvent]>([])
    private let task: Task<Void, Never>

    public init(_ stream: AsyncStream<SwapEvent>) {
        let received = self.received
        task = Task {
            for await event in stream { received.withLock { $0.append(event) } }
        }
    }

    deinit { task.cancel() }

    public var events: [SwapEvent] { received.value }

    /// Waits until at least `count` events have arrived (or `timeout` has passed); returns what arrived.
    public func waitFor(_ count: Int, timeout: Duration = .seconds(10)) async -> [SwapEvent] {
        let deadline = ContinuousClock.now + timeout
        while events.count < count, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(2)) }
        return events
    }
}

/// Records the models a manager releases (pass `observer` as its `releaseObserver`).
///
/// Thread-safety: all members may be used from any thread.
public final class ReleaseRecorder: Sendable {
    private let log = Locked<[ModelRelease]>([])

    public init() {}

    /// The closure to hand the manager.
    public var observer: @Sendable (ModelRelease) -> Void { { [log] release in log.withLock { $0.append(release) } } }

    /// Every release so far, in order.
    public var all: [ModelRelease] { log.value }
}
