import Foundation
import HotSwap
import ORTBackend
import Synchronization
import YOLO

// MARK: - Gate

/// A gate that fake inference runs pass through: open by default; while closed, `pass()` blocks the calling thread.
///
/// Thread-safety: all members may be used from any thread.
final class Gate: @unchecked Sendable {
    // @unchecked: `isOpen`, `waiting` and `passedThreads` are only read or written with `condition` locked.
    private let condition = NSCondition()
    private var isOpen: Bool
    private var waiting = 0
    private var passedThreads: [String] = []

    init(open: Bool = true) { isOpen = open }

    /// Makes later (and waiting) `pass()` calls block until `open()`.
    func close() {
        condition.lock()
        isOpen = false
        condition.unlock()
    }

    /// Lets every blocked and later `pass()` through.
    func open() {
        condition.lock()
        isOpen = true
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks while the gate is closed; records the calling thread's name.
    func pass() {
        condition.lock()
        waiting += 1
        while !isOpen { condition.wait() }
        waiting -= 1
        passedThreads.append(Thread.current.name ?? "unnamed")
        condition.unlock()
    }

    /// Threads blocked in `pass()` now.
    var waitingCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return waiting
    }

    /// Names of the threads that went through, in order.
    var threadsPassed: [String] {
        condition.lock()
        defer { condition.unlock() }
        return passedThreads
    }
}

// MARK: - Backend

/// An in-memory `InferenceBackend` shaped like a yolov5-layout, 80-class COCO detector (the signature of
/// yolov3-tiny-coco-416): `images [1, 3, S, S]` → `output0 [1, rows, 85]`, with Ultralytics-style `names` metadata.
///
/// Every run returns the same output: one box in the middle of the input (objectness 0.9, class 0 at 0.8), zeros
/// elsewhere. Runs may be held at a `Gate` or slowed by a delay.
///
/// Thread-safety: immutable; `run` may be called concurrently.
struct FakeBackend: InferenceBackend {
    static let cocoNames = [
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
    struct Cancelled: Error {}

    let inputs: [TensorSpec]
    let outputs: [TensorSpec]
    let metadata: [String: String]
    let inputSize: Int
    let rows: Int
    let classCount: Int
    let gate: Gate?
    let runDelay: Duration?

    init(inputSize: Int = 416, rows: Int = 16, names: [String] = Self.cocoNames, gate: Gate? = nil,
         runDelay: Duration? = nil) {
        self.inputSize = inputSize
        self.rows = rows
        self.classCount = names.count
        self.gate = gate
        self.runDelay = runDelay
        inputs = [TensorSpec(name: "images", dataType: .float32, shape: [1, 3, inputSize, inputSize])]
        outputs = [TensorSpec(name: "output0", dataType: .float32, shape: [1, rows, 5 + names.count])]
        let dictionary = names.enumerated().map { "\($0.offset): '\($0.element)'" }.joined(separator: ", ")
        metadata = ["names": "{\(dictionary)}", "stride": "32", "task": "detect",
            "imgsz": "[\(inputSize), \(inputSize)]"]
    }

    func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
        gate?.pass()
        if let runDelay { Thread.sleep(forTimeInterval: runDelay.seconds) }
        if cancellation?.isCancelled == true { throw Cancelled() }
        let width = 5 + classCount
        var values = [Float](repeating: 0, count: rows * width)
        let centre = Float(inputSize) / 2, side = Float(inputSize) / 4
        values.replaceSubrange(0..<6, with: [centre, centre, side, side, 0.9, 0.8])
        return ArrayOutput(shape: [1, rows, width], values: values)
    }
}

// MARK: - Loader

/// A `ModelLoader` that ignores the bytes and returns `FakeBackend`s; counts and records its calls.
///
/// Thread-safety: all members may be used from any thread.
final class FakeLoader: ModelLoader {
    /// One `makeBackend` call: which model (the label is the file path) and when it began.
    struct Call: Sendable {
        var label: String
        var startedAt: Date
    }

    private let delay: Duration?
    private let backend: @Sendable (_ label: String) -> FakeBackend
    private let log = Locked<[Call]>([])

    /// - Parameters:
    ///   - delay: how long each `makeBackend` sleeps (a slow session creation).
    ///   - backend: the backend for a model, by label (file path).
    init(delay: Duration? = nil,
         backend: @escaping @Sendable (_ label: String) -> FakeBackend = { _ in FakeBackend() }) {
        self.delay = delay
        self.backend = backend
    }

    var makeBackendCalls: Int { log.withLock { $0.count } }
    var calls: [Call] { log.withLock { $0 } }

    func makeBackend(for file: ModelFile, label: String, intraOpThreads: Int) throws -> any InferenceBackend {
        log.withLock { $0.append(Call(label: label, startedAt: Date())) }
        if let delay { Thread.sleep(forTimeInterval: delay.seconds) }
        return backend(label)
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
