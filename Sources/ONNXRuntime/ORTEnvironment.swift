internal import CONNXRuntime

/// An ONNX Runtime environment (`OrtEnv`): logging and global state shared by the sessions created in it.
///
/// One per process is usual; `shared(library:)` keeps it. Thread-safety: ORT's environment is thread-safe; this
/// class is immutable and releases the handle in `deinit`.
public final class ORTEnvironment: @unchecked Sendable {
    // @unchecked: `handle` is written once in init and only read afterwards; ORT documents OrtEnv as thread-safe.
    public let library: ORTLibrary
    let handle: OpaquePointer

    /// ORT's own log level (its messages go to stderr).
    public enum LogLevel: Int, Sendable { case verbose = 0, info, warning, error, fatal }

    /// Also starts the thread that sessions' pool threads are started from (``PoolThreads``), if not yet running: it
    /// takes the calling thread's scheduling priority, so create the first environment on a thread of normal priority.
    public init(library: ORTLibrary, logLevel: LogLevel = .error, logID: String = "yoloswap") throws(ORTError) {
        self.library = library
        _ = PoolThreads.spawner
        var env: OpaquePointer?
        try library.check(
            library.api.pointee.CreateEnv!(OrtLoggingLevel(UInt32(logLevel.rawValue)), logID, &env),
            "creating the ONNX Runtime environment")
        self.handle = env!
    }

    deinit { library.api.pointee.ReleaseEnv!(handle) }
}
