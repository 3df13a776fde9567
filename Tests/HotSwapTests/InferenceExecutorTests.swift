import Dispatch
import Foundation
import Synchronization
import Primitives
import Testing
import YOLO

@testable import HotSwap
import HotSwapTesting
import TestSupport

@Suite("InferenceExecutor")
struct InferenceExecutorTests {
    private struct WorkFailed: Error, Equatable { let code: Int }

    // MARK: Helpers

    /// A latch the test opens to let blocked work finish. Work waits at most 120 s, so a failing test cannot hang; the
    /// bound is far above any test's own waits, since a test that polls for the blocked state must see it before the
    /// latch gives up (under load the polling task can be starved for seconds).
    private final class Gate: Sendable {
        private let semaphore = DispatchSemaphore(value: 0)
        func wait() { _ = semaphore.wait(timeout: .now() + 120) }
        func open(_ count: Int = 1) { for _ in 0..<count { semaphore.signal() } }
    }

    /// A value shared between the test and its work.
    private final class Shared<Value: Sendable>: Sendable {
        private let value: Locked<Value>
        init(_ value: Value) { self.value = Locked(value) }
        func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { value.withLock { body(&$0) } }
        var current: Value { value.withLock { $0 } }
    }

    /// Polls `condition` every 2 ms for up to `timeout`. Generous, below the `Gate`'s 120 s: the suite shares two cores
    /// with model-heavy tests, and at the start of a CI run the synchronous tests that run Python or FFmpeg hold both
    /// threads of the cooperative pool for about half a minute, so a task this suite starts (the job that occupies
    /// the worker) may not run before then — 30 s was once not enough.
    private func waitUntil(
        timeout: Duration = .seconds(90), _ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let end = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now > end {
                Issue.record("condition not met within \(timeout)", sourceLocation: sourceLocation)
                return
            }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// How many threads of this process have the OS name `name`.
    private static func threadCount(named name: String) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) == name + "\n"
        }.count
    }

    /// The nice value of the calling thread (field 19 of /proc/thread-self/stat).
    private static func currentThreadNice() -> Int? {
        guard let stat = try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)" come fields 3, 4, …; nice is field 19.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 16 ? Int(fields[16]) : nil
    }

    // MARK: Results and errors

    @Test("results and errors of the work are returned to the caller")
    func propagatesResultsAndErrors() async throws {
        let executor = InferenceExecutor(label: "t-result", threads: 1, queueCapacity: 4)
        #expect(try await executor.run { 6 * 7 } == 42)
        await #expect(throws: WorkFailed(code: 7)) { try await executor.run { throw WorkFailed(code: 7) } }
        #expect(try executor.runBlocking { "blocking" } == "blocking")
        #expect(throws: WorkFailed(code: 8)) { try executor.runBlocking { throw WorkFailed(code: 8) } }
        #expect(executor.completed == 4)
        await executor.shutdown()
    }

    @Test("work runs on the executor's named threads, not the cooperative pool")
    func runsOnDedicatedThreads() async throws {
        let executor = InferenceExecutor(label: "t-names", threads: 2, queueCapacity: 4)
        let name = try await executor.run { Thread.current.name }
        #expect(name == "t-names-0" || name == "t-names-1")
        let blockingName = try executor.runBlocking { Thread.current.name }
        #expect(blockingName?.hasPrefix("t-names-") == true)
        await executor.shutdown()

        // Linux refuses thread names over 15 bytes: long labels are shortened, keeping the index.
        let long = InferenceExecutor(label: "a-rather-long-executor-label", threads: 1, queueCapacity: 1)
        #expect(try await long.run { Thread.current.name } == "a-rather-long-0")
        let comm = try await long.run { try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8) }
        #expect(comm == "a-rather-long-0\n")
        await long.shutdown()
    }

    // MARK: Concurrency and back-pressure

    @Test("work on two threads overlaps")
    func reachesThreadCount() async throws {
        let executor = InferenceExecutor(label: "t-conc", threads: 2, queueCapacity: 4)
        // A rendezvous: each job arrives, then waits (up to 10 s) for the other to arrive. Both can only meet if the
        // two threads run them at the same time; one thread would run them one after the other and both would time out.
        let arrivals = Shared(0)
        let met = Shared(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    try await executor.run {
                        arrivals.withLock { $0 += 1 }
                        let deadline = Date().addingTimeInterval(30)
                        while arrivals.current < 2, Date() < deadline { Thread.sleep(forTimeInterval: 0.001) }
                        if arrivals.current == 2 { met.withLock { $0 += 1 } }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(met.current == 2, "the two jobs never ran at the same time")
        await executor.shutdown()
    }

    @Test("a full queue fails fast with overloaded and a positive retryAfter")
    func overloadedFailsFast() async throws {
        let executor = InferenceExecutor(label: "t-over", threads: 1, queueCapacity: 1)
        let gate = Gate()
        let first = Task { try await executor.run { gate.wait() } }
        try await waitUntil { executor.running == 1 }
        #expect(!executor.hasWorkBesidesOne)  // one running item, nothing waiting
        let second = Task { try await executor.run { 2 } }
        try await waitUntil { executor.queueDepth == 1 }
        #expect(executor.hasWorkBesidesOne)

        let start = ContinuousClock.now
        var refusal: ExecutorError?
        do {
            _ = try await executor.run { 3 }
        } catch let error as ExecutorError {
            refusal = error
        }
        // Refused while the worker is still blocked and the queue still full: it did not wait for room.
        #expect(executor.running == 1 && executor.queueDepth == 1)
        _ = start
        guard case .overloaded(let depth, let retryAfter) = try #require(refusal) else {
            Issue.record("expected overloaded, got \(String(describing: refusal))")
            return
        }
        #expect(depth == 1)
        #expect(retryAfter >= .milliseconds(10))
        #expect(throws: ExecutorError.self) { try executor.runBlocking { 4 } }

        gate.open()
        try await first.value
        #expect(try await second.value == 2)
        await executor.shutdown()
    }

    // MARK: Deadlines and cancellation

    @Test("a queued item past its deadline is answered promptly while the worker is busy")
    func deadlineIsPrompt() async throws {
        let executor = InferenceExecutor(label: "t-deadline", threads: 1, queueCapacity: 4)
        let gate = Gate()
        let blocker = Task { try await executor.run { gate.wait() } }  // stands for a 2 s job
        try await waitUntil { executor.running == 1 }

        let ran = Shared(false)
        let start = ContinuousClock.now
        await #expect(throws: ExecutorError.self) {
            try await executor.run(deadline: start + .milliseconds(200)) { ran.withLock { $0 = true } }
        }
        // Answered at its deadline while the worker is still blocked (the gate opens only below): the refusal did
        // not wait for the running job.
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(195))
        #expect(executor.running == 1, "the blocking job finished before the deadline was answered")
        #expect(executor.queueDepth == 0)

        gate.open()
        try await blocker.value
        await executor.shutdown()
        #expect(ran.current == false)
    }

    @Test("deadlineExceeded reports how long the work waited")
    func deadlineReportsWait() async throws {
        let executor = InferenceExecutor(label: "t-waited", threads: 1, queueCapacity: 4)
        let gate = Gate()
        let blocker = Task { try await executor.run { gate.wait() } }
        try await waitUntil { executor.running == 1 }
        do {
            _ = try await executor.run(deadline: .now + .milliseconds(50)) { 1 }
            Issue.record("expected deadlineExceeded")
        } catch let ExecutorError.deadlineExceeded(waited) {
            #expect(waited >= .milliseconds(45) && waited < .seconds(30))
        }
        // Already past at submission: refused at once, having waited nothing.
        await #expect(throws: ExecutorError.deadlineExceeded(waited: .zero)) {
            try await executor.run(deadline: .now - .milliseconds(1)) { 1 }
        }
        gate.open()
        try await blocker.value
        await executor.shutdown()
    }

    @Test("cancelling the caller removes its queued work")
    func cancellationRemovesQueuedWork() async throws {
        let executor = InferenceExecutor(label: "t-cancel", threads: 1, queueCapacity: 4)
        let gate = Gate()
        let blocker = Task { try await executor.run { gate.wait() } }
        try await waitUntil { executor.running == 1 }

        let ran = Shared(false)
        let queued = Task { try await executor.run { ran.withLock { $0 = true } } }
        try await waitUntil { executor.queueDepth == 1 }
        queued.cancel()
        await #expect(throws: CancellationError.self) { try await queued.value }
        #expect(executor.queueDepth == 0)

        gate.open()
        try await blocker.value
        await executor.shutdown()
        #expect(ran.current == false)
        #expect(executor.completed == 1)
    }

    // MARK: Priority and shutdown

    @Test("background threads run at nice 10, normal ones at the process's nice")
    func backgroundPriority() async throws {
        let background = InferenceExecutor(label: "t-bg", threads: 1, queueCapacity: 2, priority: .background)
        let normal = InferenceExecutor(label: "t-fg", threads: 1, queueCapacity: 2)
        let backgroundNice = try await background.run { Self.currentThreadNice() }
        let normalNice = try await normal.run { Self.currentThreadNice() }
        #expect(backgroundNice == 10)
        #expect(normalNice != nil && normalNice != 10)
        await background.shutdown()
        await normal.shutdown()
    }

    @Test("shutdown lets queued work finish, then refuses new work")
    func shutdownDrains() async throws {
        let executor = InferenceExecutor(label: "t-drain", threads: 1, queueCapacity: 8)
        let gate = Gate()
        let blocker = Task { try await executor.run { gate.wait() } }
        try await waitUntil { executor.running == 1 }
        let queued = (0..<3).map { index in Task { try await executor.run { index } } }
        try await waitUntil { executor.queueDepth == 3 }

        let shutdown = Task { await executor.shutdown() }
        try await waitUntil { executor.isShuttingDown }
        await #expect(throws: ExecutorError.shutDown) { try await executor.run { -1 } }

        gate.open()
        await shutdown.value
        try await blocker.value
        for (index, task) in queued.enumerated() { #expect(try await task.value == index) }
        #expect(executor.completed == 4)
        #expect(executor.queueDepth == 0 && executor.running == 0)
        #expect(throws: ExecutorError.shutDown) { try executor.runBlocking { 0 } }
        // Its thread has left its loop; the OS thread itself ends a moment later.
        try await waitUntil(timeout: .seconds(10)) { Self.threadCount(named: "t-drain-0") == 0 }
        await executor.shutdown()  // a second call returns at once
    }

    @Test("releasing an executor without shutdown lets its threads exit")
    func releaseEndsThreads() async throws {
        do {
            let executor = InferenceExecutor(label: "t-release", threads: 2, queueCapacity: 2)
            #expect(try await executor.run { 1 } == 1)
            try await waitUntil { Self.threadCount(named: "t-release-0") + Self.threadCount(named: "t-release-1") == 2 }
        }
        try await waitUntil { Self.threadCount(named: "t-release-0") + Self.threadCount(named: "t-release-1") == 0 }
    }

    /// Every submission is answered exactly once (a double resume would trap, a lost one would hang) under
    /// concurrent submission, deadlines, cancellation and overload.
    @Test("every submission is answered exactly once under contention")
    func stress() async throws {
        let executor = InferenceExecutor(label: "t-stress", threads: 3, queueCapacity: 8)
        let outcomes = Shared([String: Int]())
        var tasks: [Task<Void, Never>] = []
        for index in 0..<300 {
            let task = Task {
                let deadline: ContinuousClock.Instant? = index % 3 == 0 ? .now + .milliseconds(index % 7) : nil
                let outcome: String
                do {
                    _ = try await executor.run(deadline: deadline) { Thread.sleep(forTimeInterval: 0.0005) }
                    outcome = "ran"
                } catch ExecutorError.overloaded {
                    outcome = "overloaded"
                } catch ExecutorError.deadlineExceeded {
                    outcome = "deadline"
                } catch is CancellationError {
                    outcome = "cancelled"
                } catch {
                    outcome = "other: \(error)"
                }
                outcomes.withLock { $0[outcome, default: 0] += 1 }
            }
            tasks.append(task)
            if index % 5 == 0 { tasks[index / 2].cancel() }  // queued, running, finished or not yet started
        }
        for task in tasks { await task.value }
        let counts = outcomes.current
        #expect(counts.values.reduce(0, +) == 300)
        #expect(counts.keys.allSatisfy { !$0.hasPrefix("other") }, "\(counts)")
        #expect(counts["ran"] == executor.completed)
        #expect((counts["ran"] ?? 0) > 0 && (counts["cancelled"] ?? 0) > 0)
        #expect(executor.queueDepth == 0 && executor.running == 0)
        await executor.shutdown()
    }
}
