import ArgumentParser
import Foundation
import HotSwap
import ONNXRuntime
import ORTBackend

/// Writes ONNX Runtime's optimized graph of a model: what the optimized-model cache runs in a child process on a miss,
/// so that the optimizer's memory peak (and any crash of ORT on the model) stays out of the serving process.
struct OptimizeModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "optimize-model",
        abstract: "Write ONNX Runtime's optimized graph of a model (the optimized-model cache runs this in a child "
            + "process).",
        discussion: "Prints {\"peak_rss_bytes\": n, \"seconds\": s} on stdout. The output is specific to this ORT "
            + "version and this kind of CPU.")

    @Option(help: "The ONNX model to optimize.") var input: String
    @Option(help: "Where to write the optimized model.") var output: String
    @Option(help: "Graph optimization level: disabled, basic, extended or all.") var optimization = "all"
    @Option(help: "Path to libonnxruntime.so.") var ortLibrary: String?
    @Option(help: "Exit as soon as this process is no longer the parent (the process that started it died).")
    var parentPid: Int32?

    func validate() throws {
        guard GraphOptimizationLevel(rawValue: optimization) != nil else {
            throw ValidationError("--optimization must be one of "
                + GraphOptimizationLevel.allCases.map(\.rawValue).joined(separator: ", "))
        }
    }

    func run() throws {
        let start = ContinuousClock.now
        if let parentPid { Self.exitWhenOrphaned(parent: parentPid) }
        let environment = try ORTEnvironment(library: try ORTLibrary.load(explicitPath: ortLibrary))
        var options = SessionOptions(intraOpThreads: 1)
        options.optimization = GraphOptimizationLevel(rawValue: optimization)!
        options.optimizedModelPath = output
        _ = try ORTSession(path: input, environment: environment, options: options, label: input)
        let report: [String: Any] = [
            "peak_rss_bytes": ProcessMemory.peakResidentBytes() ?? 0,
            "seconds": (ContinuousClock.now - start).milliseconds / 1000,
        ]
        print(String(
            decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self))
    }
}

extension OptimizeModelCommand {
    /// Ends this process (status 75, EX_TEMPFAIL) once `parent` is no longer its parent: a serving process killed with
    /// SIGKILL cannot stop its child, and an orphaned optimizer would go on writing into the cache for nobody. Linux
    /// re-parents an orphan at once, so a thread of its own polls `getppid()` every 50 ms (a variadic `prctl`, which
    /// would have the kernel send a signal instead, cannot be called from Swift).
    static func exitWhenOrphaned(parent: Int32) {
        let watcher = Thread {
            while getppid() == parent { usleep(50_000) }
            _exit(75)
        }
        watcher.name = "parent-watch"
        watcher.start()
    }
}

extension OptimizedModelCache {
    /// A cache in `directory` whose misses are optimized by this executable's `optimize-model` in a child process
    /// (`inChild`), or in this process.
    ///
    /// Its secret is the file `<directory>.key` beside the folder (`<state_dir>/optimized-models.key`), created 0600
    /// on first use, so that restarts keep their entries and the cache folder holds nothing that vouches for itself;
    /// with `persistentSecret` false (a cache removed when the process ends), a random key kept in memory.
    /// - Throws: `CacheSecretError` when the secret file cannot be read or created.
    static func yoloswap(directory: String, inChild: Bool = true, persistentSecret: Bool = true)
        throws(CacheSecretError) -> OptimizedModelCache
    {
        let secret = persistentSecret
            ? try Secret.loadOrCreate(atPath: URL(fileURLWithPath: directory).standardizedFileURL.path + ".key")
            : Secret.random()
        var cache = OptimizedModelCache(directory: directory, secret: secret)
        if inChild {
            let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            // 10 minutes at most; the child ends with this process.
            cache.optimizer = .childProcess(command: [executable, "optimize-model", "--parent-pid", "\(getpid())"])
        }
        // Temporary files of a previous run killed while it wrote an entry (under this process's id too: a container's
        // PID 1 is the same at every start).
        cache.removeAbandonedFiles(atStart: true)
        return cache
    }
}
