import Foundation
import HotSwap
import Primitives
import YOLO

// MARK: - Gate

/// A gate that fake inference runs pass through: open by default; while closed, `pass()` blocks the calling thread.
///
/// Thread-safety: all members may be used from any thread.
public final class Gate: @unchecked Sendable {
    // @unchecked: `isOpen`, `waiting` and `passedThreads` are only read or written with `condition` locked.
    private let condition = NSCondition()
    private var isOpen: Bool
    private var waiting = 0
    private var passedThreads: [String] = []

    public init(open: Bool = true) { isOpen = open }

    /// Makes later (and waiting) `pass()` calls block until `open()`.
    public func close() {
        condition.lock()
        isOpen = false
        condition.unlock()
    }

    /// Lets every blocked and later `pass()` through.
    public func open() {
        condition.lock()
        isOpen = true
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks while the gate is closed; records the calling thread's name.
    public func pass() {
        condition.lock()
        waiting += 1
        while !isOpen { condition.wait() }
        waiting -= 1
        passedThreads.append(Thread.current.name ?? "unnamed")
        condition.unlock()
    }

    /// Threads blocked in `pass()` now.
    public var waitingCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return waiting
    }

    /// Names of the threads that went through, in order.
    public var threadsPassed: [String] {
        condition.lock()
        defer { condition.unlock() }
        return passedThreads
    }
}

// MARK: - Backend

/// An in-memory `InferenceBackend` shaped like a yolov5-layout, 80-class COCO detector (the schema of
/// yolov3-tiny-coco-416): `images [1, 3, S, S]` → `output0 [1, rows, 85]`, with Ultralytics-style `names` metadata.
///
/// Every run returns the same output: one box in the middle of the input (objectness 0.9, class 0 at 0.8), zeros
/// elsewhere. Runs may be held at a `Gate` or slowed by a delay.
///
/// Thread-safety: immutable; `run` may be called concurrently.
public struct FakeBackend: InferenceBackend {
    public static let cocoNames = [
        "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
        "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
        "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
        "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
        "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
        "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
        "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
        "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
        "teddy bear", "hair drier", "toothbrush",
    ]

    /// Thrown by a run whose cancellation was signalled.
    public struct Cancelled: Error {}

    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]
    public let metadata: [String: String]
    public let inputSize: Int
    public let rows: Int
    public let classCount: Int
    public let gate: Gate?
    public let runDelay: Duration?
    /// Makes every output value NaN (a broken model that warm-up must refuse).
    public let nonFinite: Bool
    /// Told the name of the thread that drops the backend's last copy (where a real session would be freed).
    private let releaseProbe: ReleaseProbe?

    /// Calls `onRelease` with the thread's name when the last copy of the backend that made it is dropped.
    final class ReleaseProbe: Sendable {
        let onRelease: @Sendable (String) -> Void
        init(_ onRelease: @escaping @Sendable (String) -> Void) { self.onRelease = onRelease }
        deinit { onRelease(Thread.current.name ?? "unnamed") }
    }

    public init(inputSize: Int = 416, rows: Int = 16, names: [String] = Self.cocoNames, gate: Gate? = nil,
                runDelay: Duration? = nil, nonFinite: Bool = false,
                onRelease: (@Sendable (_ threadName: String) -> Void)? = nil) {
        self.releaseProbe = onRelease.map(ReleaseProbe.init)
        self.inputSize = inputSize
        self.rows = rows
        self.classCount = names.count
        self.gate = gate
        self.runDelay = runDelay
        self.nonFinite = nonFinite
        inputs = [TensorSpec(name: "images", dataType: .float32, shape: [1, 3, inputSize, inputSize])]
        outputs = [TensorSpec(name: "output0", dataType: .float32, shape: [1, rows, 5 + names.count])]
        let dictionary = names.enumerated().map { "\($0.offset): '\($0.element)'" }.joined(separator: ", ")
        metadata = ["names": "{\(dictionary)}", "stride": "32", "task": "detect",
            "imgsz": "[\(inputSize), \(inputSize)]"]
    }

    public func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
        gate?.pass()
        if let runDelay { Thread.sleep(forTimeInterval: runDelay.seconds) }
        if cancellation?.isCancelled == true { throw Cancelled() }
        let width = 5 + classCount
        var values = [Float](repeating: 0, count: rows * width)
        let centre = Float(inputSize) / 2, side = Float(inputSize) / 4
        values.replaceSubrange(0..<6, with: [centre, centre, side, side, 0.9, 0.8])
        if nonFinite { values = values.map { _ in .nan } }
        return ArrayOutput(shape: [1, rows, width], values: values)
    }
}

// MARK: - Loader

/// A `ModelLoader` that ignores the bytes and returns `FakeBackend`s; counts and records its calls.
///
/// Thread-safety: all members may be used from any thread.
public final class FakeLoader: ModelLoader {
    /// One `makeBackend` call: which model (the label is the file path), where it was to run, and when it began.
    public struct Call: Sendable {
        public var label: String
        public var execution: ModelExecution
        public var startedAt: Date
    }

    private let delay: Duration?
    private let gate: Gate?
    private let backend: @Sendable (_ label: String) -> FakeBackend
    private let log = Locked<[Call]>([])

    /// - Parameters:
    ///   - delay: how long each `makeBackend` sleeps (a slow session creation).
    ///   - gate: where each `makeBackend` waits first (a session creation held until the test lets it go).
    ///   - backend: the backend for a model, by label (file path).
    public init(delay: Duration? = nil, gate: Gate? = nil,
         backend: @escaping @Sendable (_ label: String) -> FakeBackend = { _ in FakeBackend() }) {
        self.delay = delay
        self.gate = gate
        self.backend = backend
    }

    public var makeBackendCalls: Int { log.withLock { $0.count } }
    public var calls: [Call] { log.withLock { $0 } }

    public func makeBackend(for file: ModelFile, label: String, execution: ModelExecution) throws
        -> any InferenceBackend
    {
        log.withLock { $0.append(Call(label: label, execution: execution, startedAt: Date())) }
        gate?.pass()
        if let delay { Thread.sleep(forTimeInterval: delay.seconds) }
        return backend(label)
    }
}

// MARK: - State store

/// A `SlotStateStore` in front of a real one whose commits block the calling thread — at a gate, or for a delay —
/// the way a slow or stalled disk would, or fail, the way a full disk would; appends (events) may be delayed too.
/// Reads pass straight through.
///
/// Thread-safety: all members may be used from any thread; the wrapped store's guarantees apply.
public final class SlowStateStore: SlotStateStore {
    public let inner: any SlotStateStore
    /// Commits pass this gate first (nil: none).
    public let commitGate: Gate?
    private let delay: Locked<Duration?>
    private let eventDelay = Locked<Duration?>(nil)
    private let failing = Locked(false)
    private let commits = Locked(0)
    private let started = Locked(0)

    /// What a failing commit throws.
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String { "disk full (injected)" }
    }

    /// Whether commits fail (after the gate and the delay); may be changed at any time.
    public var failCommits: Bool {
        get { failing.value }
        set { failing.withLock { $0 = newValue } }
    }

    public init(_ inner: any SlotStateStore, commitDelay: Duration? = nil, commitGate: Gate? = nil) {
        self.inner = inner
        self.commitGate = commitGate
        self.delay = Locked(commitDelay)
    }

    /// How long each commit blocks its thread before it is written (nil: not at all); may be changed at any time.
    public var commitDelay: Duration? {
        get { delay.value }
        set { delay.withLock { $0 = newValue } }
    }

    /// How long each event append blocks its thread before it is written (nil: not at all); may be changed at any
    /// time.
    public var appendDelay: Duration? {
        get { eventDelay.value }
        set { eventDelay.withLock { $0 = newValue } }
    }

    /// Commits written so far.
    public var commitCount: Int { commits.value }

    /// Commits begun and not yet ended (written or failed).
    public var commitsInProgress: Int { started.value - commits.value - failures.value }
    private let failures = Locked(0)

    public func committedSlots() throws -> [CommittedSlot] { try inner.committedSlots() }

    public func commit(_ state: CommittedSlot) throws {
        started.withLock { $0 += 1 }
        commitGate?.pass()
        if let delay = delay.value { Thread.sleep(forTimeInterval: delay.seconds) }
        do {
            if failing.value { throw Unavailable() }
            try inner.commit(state)
        } catch {
            failures.withLock { $0 += 1 }
            throw error
        }
        commits.withLock { $0 += 1 }
    }

    public func append(_ event: SwapEvent) throws {
        if let delay = eventDelay.value { Thread.sleep(forTimeInterval: delay.seconds) }
        try inner.append(event)
    }
}
