import Foundation
import ONNXRuntime
import Synchronization
import YOLO

/// Where ONNX Runtime optimizes a model's graph on an optimized-model cache miss.
///
/// Optimizing is the most memory-hungry thing ORT does with a model: the session that optimizes peaks at about twice
/// what a session made from the optimized file does (README, Performance). In a child process that transient never
/// touches the serving process: its RSS during a first-time swap stays near "old + new", its allocator is not
/// fragmented by the burst, and a model that crashes ORT's optimizer kills the child, not the service. A container's
/// memory limit still counts the child; ``OptimizerStatistics`` reports its peak.
public enum GraphOptimizer: Sendable, Equatable {
    /// A session is created (never run) and destroyed in this process.
    case inProcess
    /// `command` (an executable and its leading arguments, e.g. `[yoloswap, "optimize-model"]`) is run with
    /// `--input <model> --output <file> --optimization <level> --ort-library <path>`; it must write the optimized model
    /// and exit 0 within `timeout` (else it is killed and the load fails), and may print one JSON object
    /// `{"peak_rss_bytes": n}` on stdout.
    case childProcess(command: [String], timeout: Duration = .seconds(600))
}

/// What a child optimizer ended with.
enum ChildOptimization {
    case succeeded(peakBytes: Int?)
    /// It could not be started (missing executable): the caller optimizes in process instead.
    case notStarted(reason: String)
    /// It exited with a non-zero status (e.g. ORT refused the model): the caller falls back to a plain load, which
    /// reports ORT's own error.
    case failed(status: Int32, stderr: String)
    /// It was killed by a signal: ORT crashed on the model, or the kernel's OOM killer stopped it. Never retried in
    /// process.
    case crashed(signal: Int32, stderr: String)
    /// It ran past its timeout and was killed. Never retried in process.
    case timedOut(stderr: String)
    /// The load was cancelled (superseded, or the service is stopping) and the child was killed.
    case cancelled
}

extension GraphOptimizer {
    /// Runs the child optimizer for `input`, writing `output`. Blocks until the child exits: at most `timeout`, and
    /// no longer than `cancellation` takes to be cancelled (the child is killed then).
    static func runChild(_ command: [String], timeout: Duration, input: String, output: String,
                         optimization: GraphOptimizationLevel, library: String,
                         cancellation: RunCancellation? = nil) -> ChildOptimization {
        guard let executable = command.first else { return .notStarted(reason: "empty command") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(command.dropFirst()) + [
            "--input", input, "--output", output, "--optimization", optimization.rawValue, "--ort-library", library,
        ]
        // Both outputs go to files, read once the child has exited: a pipe nobody drains could fill up and block the
        // child, and one inherited by a process the child started could keep a reader waiting after the child died.
        guard let stdoutFile = ChildOutputFile("\(output).stdout"), let stderrFile = ChildOutputFile("\(output).stderr")
        else { return .notStarted(reason: "cannot create its output files beside \(output)") }
        process.standardOutput = stdoutFile.handle
        process.standardError = stderrFile.handle
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return .notStarted(reason: "\(executable): \(error)") }
        // The watchdog kills the child at the deadline, and a cancelled load kills it at once (a shutdown would
        // otherwise wait up to the whole timeout); both stand down as soon as the child has exited. (Only one falling
        // in the microseconds between the child's exit and `exited` being set could signal a reused pid.)
        let pid = process.processIdentifier
        let killed = TimeoutFlag(), cancelled = TimeoutFlag(), exited = TimeoutFlag()
        let watchdog = DispatchWorkItem {
            killed.set()
            kill(pid, SIGKILL)
        }
        let (seconds, attoseconds) = timeout.components
        DispatchQueue.global().asyncAfter(
            deadline: .now() + Double(seconds) + Double(attoseconds) / 1e18, execute: watchdog)
        cancellation?.onCancel {
            guard !exited.isSet else { return }
            cancelled.set()
            kill(pid, SIGKILL)
        }
        process.waitUntilExit()
        exited.set()
        watchdog.cancel()
        let printed = stdoutFile.contents()
        let stderr = String(decoding: stderrFile.contents().suffix(2000), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if cancelled.isSet { return .cancelled }
        if killed.isSet { return .timedOut(stderr: stderr) }
        if process.terminationReason == .uncaughtSignal {
            return .crashed(signal: process.terminationStatus, stderr: stderr)
        }
        guard process.terminationStatus == 0 else { return .failed(status: process.terminationStatus, stderr: stderr) }
        let report = try? JSONSerialization.jsonObject(with: printed) as? [String: Any]
        return .succeeded(peakBytes: report?["peak_rss_bytes"] as? Int)
    }
}

/// A file a child process writes its stdout or stderr to, readable by this user only (it sits in the cache's
/// folder); removed when this is deinitialised.
private final class ChildOutputFile {
    let path: String
    let handle: FileHandle

    init?(_ path: String) {
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: path)
        else { return nil }
        self.path = path
        self.handle = handle
    }

    deinit {
        try? handle.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    func contents() -> Data { FileManager.default.contents(atPath: path) ?? Data() }
}

/// Set once (the watchdog or a cancellation killed a child optimizer; the child has exited). Thread-safety: atomic.
private final class TimeoutFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}

/// Counts what the cache's optimizer did, for benchmarks and metrics.
///
/// Thread-safety: all members may be used from any thread.
public final class OptimizerStatistics: Sendable {
    private let state = Mutex<(childRuns: Int, inProcessRuns: Int, childPeakBytes: Int)>((0, 0, 0))

    public init() {}

    /// Optimizations run in a child process.
    public var childRuns: Int { state.withLock { $0.childRuns } }
    /// Optimizations run in this process (the configured optimizer, or the fallback when a child could not start).
    public var inProcessRuns: Int { state.withLock { $0.inProcessRuns } }
    /// The largest peak RSS a child reported, in bytes (0 when none did).
    public var childPeakBytes: Int { state.withLock { $0.childPeakBytes } }

    func recordChild(peakBytes: Int?) {
        state.withLock {
            $0.childRuns += 1
            $0.childPeakBytes = max($0.childPeakBytes, peakBytes ?? 0)
        }
    }

    func recordInProcess() { state.withLock { $0.inProcessRuns += 1 } }
}
