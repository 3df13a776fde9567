import Foundation
import HotSwap
import ONNXRuntime
import ORTBackend
import Synchronization
import TestSupport
import Testing
import YOLO

/// The hot-swap tests, run one at a time: several measure process memory, several create many threads, and the
/// machine they run on may have two cores.
@Suite("Hot swap", .serialized)
struct HotSwapSuite {}

/// Files and shared objects the hot-swap tests use: the models and images from `scripts/setup`, ONNX Runtime.
enum Fixtures {
    static func synthetic(_ name: String) -> String { Repository.path("models/synthetic/\(name)") }

    /// Cheap real models with yolov3-tiny-coco's signature and class names (compatible with each other).
    static let identity416 = synthetic("yolov5-nc80-416-identity.onnx")
    static let identity320 = synthetic("yolov5-nc80-320-identity.onnx")
    static let yolov3Tiny416 = Repository.path("models/yolov3-tiny-coco-416.onnx")

    static let busJPEG = Repository.bytes("models/images/bus.jpg")

    /// Loads models into real ONNX Runtime sessions.
    static let ortLoader: ORTModelLoader = {
        do { return ORTModelLoader(environment: try ORTEnvironment(library: ORTLibrary.load())) } catch {
            fatalError("ONNX Runtime could not be loaded (run scripts/setup): \(error)")
        }
    }()

    /// Lower-case hex SHA-256 of a file.
    static func sha256(_ path: String) throws -> String { try ModelBytes(contentsOf: path).sha256 }

    /// A new empty directory under the system temp directory.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("hotswap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Settings for tests: one warm-up run, a timeout no healthy test model comes near.
    static func configuration(
        servingThreads: Int = 2, queueCapacity: Int = 64, warmupRuns: Int = 1, warmupTimeout: Duration = .seconds(20),
        standbyRetention: StandbyRetention = .keep, memoryBudgetBytes: Int? = nil,
        policy: SwapPolicy = .availabilityPreserving
    ) -> HotSwapConfiguration {
        HotSwapConfiguration(servingThreads: servingThreads, queueCapacity: queueCapacity, warmupRuns: warmupRuns, warmupTimeout: warmupTimeout,
            standbyRetention: standbyRetention, memoryBudgetBytes: memoryBudgetBytes, policy: policy)
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns its last value.
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return condition()
}

/// A value behind a lock that closures and tasks can share (YOLO's `Locked`, which ThreadSanitizer understands,
/// plus a `value` reader).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: YOLO.Locked<Value>
    init(_ value: Value) { mutex = YOLO.Locked(value) }
    func withLock<R>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}

/// Collects a manager's events as they are emitted.
final class EventRecorder: Sendable {
    private let received = Locked<[SwapEvent]>([])
    private let task: Task<Void, Never>

    init(_ stream: AsyncStream<SwapEvent>) {
        let received = self.received
        task = Task {
            for await event in stream { received.withLock { $0.append(event) } }
        }
    }

    deinit { task.cancel() }

    var events: [SwapEvent] { received.value }

    /// Waits until at least `count` events have arrived (or 10 s have passed); returns what arrived.
    func waitFor(_ count: Int) async -> [SwapEvent] {
        _ = await eventually { events.count >= count }
        return events
    }
}
