import Crypto
import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import HotSwap
import ONNXRuntime
import Primitives
import YOLO

/// Graph-optimized copies of verified models, written by ONNX Runtime the first time a model is loaded and loaded from
/// disk on every later load of the same model (a swap back, a rollback that reloads, a restart).
///
/// Why: creating a session from the original ONNX makes ORT optimize the graph (fusions, NCHWc layout), and that
/// costs about twice the memory of loading the already optimized file, which is also faster to load (README,
/// Performance). Swaps between known models therefore stay close to "old + new" in memory.
///
/// Layout: `<key>.onnx` (written by ORT through `SessionOptions.optimizedModelPath`) and `<key>.json` (what it was
/// made from, the file's own SHA-256 and size, and an HMAC-SHA256 binding them together). The key hashes the source
/// model's SHA-256, the ORT version, the optimization level and this CPU's model name and feature flags: ORT's layout
/// optimizations are specific to the hardware, so an entry is never used by another ORT or another kind of CPU.
///
/// Trust: an entry is derived from bytes that passed verification (digest, signature). Its manifest carries an
/// HMAC-SHA256, under a secret kept outside the cache folder (`Secret`), of the verified source's digest, the
/// optimized file's digest and size, the ORT version, the optimization level and the CPU fingerprint; someone who can
/// write the cache folder but not read the secret cannot make another graph pass for a verified model's. Before every
/// use the entry is read once into memory, its digest and the manifest's code are checked, and the session is created
/// from those bytes, never by re-opening the path (which may name another file by then). Entries are only written in a
/// folder this user owns and nobody else may write (a miss in any other is loaded from the verified bytes): writing
/// one reads and writes files by path. An entry that does not
/// match, or that ORT cannot load, is removed and rebuilt from the verified source. Any cache problem (a read-only
/// directory, a full disk) falls back to an ordinary load from the verified bytes: the cache never makes a load fail.
/// What the cache creates only this user may open: folders 0700, files 0600 (`PrivateFiles`).
///
/// Thread-safety: a stateless value. Concurrent loads of one model may both build an entry; each writes its own
/// temporary files and renames them into place, so readers see either no entry or a complete one.
public struct OptimizedModelCache: Sendable {
    public let directory: String
    /// Authenticates the manifests; kept outside `directory`.
    public let secret: Secret
    /// Entries kept; the least recently used beyond this are removed after a new one is written.
    public var maxEntries: Int
    /// Where a miss's graph optimization runs (default: in this process).
    public var optimizer: GraphOptimizer = .inProcess
    /// What the optimizer did; shared by copies of this value.
    public let statistics = OptimizerStatistics()

    /// How a session was made.
    public enum Outcome: String, Sendable {
        /// Loaded from an optimized entry.
        case hit
        /// Optimized from the verified bytes; the entry is written for next time.
        case miss
        /// Loaded from the verified bytes without the cache (a non-CPU provider, optimizations off, or the cache
        /// could not be written).
        case bypassed
    }

    /// - Parameters:
    ///   - directory: created on first use.
    ///   - secret: authenticates the manifests. Keep it outside `directory` (`Secret.loadOrCreate(atPath:)` beside
    ///     it); entries written under another secret are rebuilt.
    ///   - maxEntries: entries kept (default 32).
    public init(directory: String, secret: Secret, maxEntries: Int = 32) {
        self.directory = directory
        self.secret = secret
        self.maxEntries = maxEntries
    }

    /// Creates a session for a verified model file, from its optimized entry when there is a valid one.
    /// - Parameters:
    ///   - file: the verified model; its content is read (and its digest re-checked) only on a miss.
    ///   - environment: the ORT environment.
    ///   - options: the session's options; entries exist for CPU sessions with graph optimizations on.
    ///   - label: names the model in errors.
    ///   - cancellation: the load's; once cancelled, a child optimizer still running is killed.
    /// - Throws: `ModelLoadError` when the model cannot be read or ORT refuses it; `.optimizerCrashed` or
    ///   `.optimizerTimedOut` when a child optimizer was killed by a signal or ran past its timeout (the model is not
    ///   loaded in this process then); `.optimizerCancelled` when `cancellation` killed it.
    public func session(for file: ModelFile, environment: ORTEnvironment, options: SessionOptions, label: String,
                        cancellation: RunCancellation? = nil)
        throws(ModelLoadError) -> (session: ORTSession, outcome: Outcome)
    {
        func fromBytes(_ bytes: [UInt8], options: SessionOptions) throws(ModelLoadError) -> ORTSession {
            do { return try ORTSession(bytes: bytes, environment: environment, options: options, label: label) }
            catch { throw .runtime(path: file.path, error) }
        }
        func verifiedBytes() throws(ModelLoadError) -> [UInt8] {
            do { return try file.readVerifiedBytes() } catch { throw .file(error) }
        }
        guard options.provider == .cpu, options.optimization != .disabled, options.optimizedModelPath == nil else {
            return (try fromBytes(try verifiedBytes(), options: options), .bypassed)
        }
        let key = Self.key(sourceSHA256: file.sha256, ortVersion: environment.library.version,
            optimization: options.optimization)
        let entry = URL(fileURLWithPath: directory).appendingPathComponent("\(key).onnx").path
        let manifest = URL(fileURLWithPath: directory).appendingPathComponent("\(key).json").path

        if let session = loadEntry(entry, manifest: manifest, source: file, environment: environment,
            options: options, label: label)
        {
            return (session, .hit)
        }

        // Miss: ORT optimizes a private copy of the verified file (read by path, so no whole-model buffer of ours
        // sits beside ORT's own while it optimizes), here or in a child process (`optimizer`), and writes the entry;
        // then the entry itself is loaded, which leaves less resident than the session that did the optimizing.
        // Anything wrong on the way (other than the model file having changed, or a child optimizer crashing on it)
        // falls back to a plain load from the verified bytes.
        let unique = Self.temporaryTag()
        let sourceCopy = "\(entry).\(unique).source.tmp", temporary = "\(entry).\(unique).tmp"
        defer {
            try? FileManager.default.removeItem(atPath: sourceCopy)
            try? FileManager.default.removeItem(atPath: temporary)  // moved into place on success
        }
        var writing = options
        writing.optimizedModelPath = temporary
        // Only in a folder nobody else may write: ORT reads the copy and writes the optimized file by path, and the
        // entry's code is made for what is read back, so someone who could replace either file in between (or
        // rename the folder's entries) would have their own graph vouched for as the verified model's.
        if whyEntriesCannotBeWritten() == nil {
            do { try file.copyVerified(to: sourceCopy) } catch {
                if case .changedSinceVerification = error { throw .file(error) }
            }
            if FileManager.default.fileExists(atPath: sourceCopy),
                try optimize(sourceCopy, environment: environment, options: writing, label: label,
                    cancellation: cancellation),
                store(temporary, as: entry, manifest: manifest, source: file, ortVersion: environment.library.version,
                    optimization: options.optimization),
                let session = loadEntry(entry, manifest: manifest, source: file, environment: environment,
                    options: options, label: label)
            {
                prune()
                return (session, .miss)
            }
        }
        return (try fromBytes(try verifiedBytes(), options: options), .bypassed)
    }

    /// Why no entry can be written (every miss is then a plain load from the verified bytes, `.bypassed`; entries are
    /// read whatever the folder: each is read once into memory and checked against its manifest's code), or nil when
    /// they can: the folder cannot be created, or is not one this user owns and nobody else may write, or the folder
    /// above it (its links resolved) lets someone else replace it while ORT writes there by path (see
    /// `PrivateFiles.isSafeParentDirectory`). Creates the folder when it is missing. A service calls it at its start
    /// to say so in its log.
    public func whyEntriesCannotBeWritten() -> String? {
        do { try PrivateFiles.createDirectory(atPath: directory) } catch {
            return "\(error)"
        }
        guard PrivateFiles.isPrivateDirectory(atPath: directory) else {
            return "\(directory) is not a folder this user owns and nobody else may write (a link, another owner, "
                + "or group or others may write it)"
        }
        let parent = URL(fileURLWithPath: directory).deletingLastPathComponent().resolvingSymlinksInPath().path
        guard PrivateFiles.isSafeParentDirectory(atPath: parent) else {
            return "\(parent), the folder above the cache, lets others replace it (another owner, or group or others "
                + "may write it without the sticky bit)"
        }
        return nil
    }

    /// Has ORT optimize the model at `path` and write the result to `options.optimizedModelPath`, with the configured
    /// optimizer (a child that cannot be started is replaced by an in-process run). Returns whether it succeeded.
    private func optimize(_ path: String, environment: ORTEnvironment, options: SessionOptions, label: String,
                          cancellation: RunCancellation?) throws(ModelLoadError) -> Bool
    {
        if case .childProcess(let command, let timeout) = optimizer, let output = options.optimizedModelPath {
            switch GraphOptimizer.runChild(command, timeout: timeout, input: path, output: output,
                optimization: options.optimization, library: environment.library.path, cancellation: cancellation)
            {
            case .succeeded(let peak):
                statistics.recordChild(peakBytes: peak)
                return FileManager.default.fileExists(atPath: output)
            case .failed: return false
            case .crashed(let signal, let stderr):
                throw .optimizerCrashed(path: label, signal: signal, detail: stderr)
            case .timedOut(let stderr):
                throw .optimizerTimedOut(path: label, timeout: timeout, detail: stderr)
            case .cancelled: throw .optimizerCancelled(path: label)
            case .notStarted: break
            }
        }
        statistics.recordInProcess()
        return (try? ORTSession(path: path, environment: environment, options: options, label: label)) != nil
    }

    /// The entry's key (hex SHA-256).
    static func key(sourceSHA256: String, ortVersion: String, optimization: GraphOptimizationLevel) -> String {
        let text = ["yoloswap-optimized-v1", sourceSHA256, ortVersion, optimization.rawValue, cpuFingerprint]
            .joined(separator: "\n")
        return SHA256.hash(data: Data(text.utf8)).hexString
    }

    /// This CPU's model name and feature flags (Linux `/proc/cpuinfo`), or "unknown".
    static let cpuFingerprint: String = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        let lines = info.split(separator: "\n")
        let wanted = ["model name", "flags", "Features", "CPU implementer", "CPU part"]
        var seen = Set<String>()
        var parts: [String] = []
        for line in lines {
            let field = line.split(separator: ":", maxSplits: 1).first.map {
                $0.trimmingCharacters(in: .whitespaces)
            } ?? ""
            if wanted.contains(field), seen.insert(field).inserted { parts.append(String(line)) }
        }
        return parts.isEmpty ? "unknown" : parts.joined(separator: "\n")
    }()

    /// What an entry's manifest records. `mac` is the hex HMAC-SHA256 of `boundFields`, under `secret`.
    struct Manifest: Codable {
        var source_sha256: String
        var optimized_sha256: String
        var optimized_byte_count: Int
        var ort_version: String
        var optimization: String
        var cpu: String
        var mac: String
    }

    /// What a manifest's code authenticates, in order.
    static func boundFields(sourceSHA256: String, optimizedSHA256: String, optimizedByteCount: Int, ortVersion: String,
                            optimization: GraphOptimizationLevel) -> [String] {
        [sourceSHA256, optimizedSHA256, String(optimizedByteCount), ortVersion, optimization.rawValue, cpuFingerprint]
    }

    /// Bytes of a manifest read at most.
    private static let manifestLimit = 1 << 16

    /// Loads a valid entry; removes an invalid one. Nil when there is none (or it was invalid).
    ///
    /// Valid: the manifest's code verifies under `secret` for the verified source's digest, this ORT, this
    /// optimization level and this CPU, and the entry's bytes — read once, no more than the size the code vouches
    /// for — have the digest it vouches for. The session is created from those bytes.
    private func loadEntry(_ entry: String, manifest: String, source: ModelFile, environment: ORTEnvironment,
                           options: SessionOptions, label: String) -> ORTSession? {
        guard FileManager.default.fileExists(atPath: entry), FileManager.default.fileExists(atPath: manifest) else {
            return nil
        }
        guard let data = try? RegularFile(openingForReading: manifest).readAll(limit: Self.manifestLimit),
            let recorded = try? JSONDecoder().decode(Manifest.self, from: data),
            let code = Hex.bytes(recorded.mac),
            secret.isValid(code, for: Self.boundFields(sourceSHA256: source.sha256,
                optimizedSHA256: recorded.optimized_sha256, optimizedByteCount: recorded.optimized_byte_count,
                ortVersion: environment.library.version, optimization: options.optimization)),
            let bytes = try? RegularFile(openingForReading: entry).readAll(limit: recorded.optimized_byte_count),
            bytes.count == recorded.optimized_byte_count,
            SHA256.hash(data: bytes).hexString == recorded.optimized_sha256,
            // The bytes read and hashed, not a copy of them: a second copy would add the model's size to the
            // load's peak while ORT parses it.
            let session = try? ORTSession(bytes: bytes, environment: environment, options: options,
                label: label)
        else {
            remove(entry, manifest)
            return nil
        }
        // Least recently used goes first when pruning.
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: manifest)
        return session
    }

    /// Moves a freshly written optimized model into place with its authenticated manifest. False if that failed.
    private func store(_ temporary: String, as entry: String, manifest: String, source: ModelFile,
                       ortVersion: String, optimization: GraphOptimizationLevel) -> Bool {
        guard let optimized = try? ModelFile(verifying: temporary) else {
            try? FileManager.default.removeItem(atPath: temporary)
            return false
        }
        let code = secret.authenticationCode(for: Self.boundFields(sourceSHA256: source.sha256,
            optimizedSHA256: optimized.sha256, optimizedByteCount: optimized.byteCount, ortVersion: ortVersion,
            optimization: optimization))
        guard let json = try? JSONEncoder().encode(Manifest(source_sha256: source.sha256,
                optimized_sha256: optimized.sha256, optimized_byte_count: optimized.byteCount,
                ort_version: ortVersion, optimization: optimization.rawValue, cpu: Self.cpuFingerprint,
                mac: Hex.string(code)))
        else {
            try? FileManager.default.removeItem(atPath: temporary)
            return false
        }
        let manifestTemporary = "\(manifest).\(Self.temporaryTag()).tmp"
        // Both files 0600 before they get their names (ORT wrote the model with the umask's mode). The model first: a
        // manifest only ever sits next to a complete model file (rename is atomic).
        guard PrivateFiles.restrict(fileAtPath: temporary),
            (try? PrivateFiles.createFileIfMissing(atPath: manifestTemporary)) != nil,
            (try? json.write(to: URL(fileURLWithPath: manifestTemporary))) != nil,
            rename(temporary, entry) == 0, rename(manifestTemporary, manifest) == 0
        else {
            try? FileManager.default.removeItem(atPath: temporary)
            try? FileManager.default.removeItem(atPath: manifestTemporary)
            return false
        }
        return true
    }

    private func remove(_ entry: String, _ manifest: String) {
        try? FileManager.default.removeItem(atPath: manifest)
        try? FileManager.default.removeItem(atPath: entry)
    }

    /// Removes the least recently used entries beyond `maxEntries`, and the temporary files of writers that are gone.
    private func prune() {
        removeAbandonedFiles()
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return }
        func modified(_ name: String) -> Date {
            ((try? fm.attributesOfItem(atPath: "\(directory)/\(name)"))?[.modificationDate] as? Date) ?? .distantPast
        }
        let manifests = names.filter { $0.hasSuffix(".json") }.sorted { modified($0) > modified($1) }
        for name in manifests.dropFirst(maxEntries) {
            let key = name.dropLast(".json".count)
            remove("\(directory)/\(key).onnx", "\(directory)/\(name)")
        }
    }

    // MARK: Temporary files

    /// What names a writer's temporary files: `<key>.onnx.<pid>-<uuid>.tmp` (with `.source.tmp` for the source copy,
    /// `.tmp.stdout` / `.tmp.stderr` for a child optimizer's output) and `<key>.json.<pid>-<uuid>.tmp`.
    static func temporaryTag() -> String { "\(getpid())-\(UUID().uuidString)" }

    /// The process that wrote a temporary file, from its name (`nil` when the name is not a temporary one, or has no
    /// process id).
    static func writer(ofTemporary name: String) -> (pid: Int32?, isTemporary: Bool) {
        let isTemporary = name.hasSuffix(".tmp") || name.hasSuffix(".tmp.stdout") || name.hasSuffix(".tmp.stderr")
        let parts = name.split(separator: ".")
        guard isTemporary, parts.count >= 4 else { return (nil, isTemporary) }
        return (Int32(parts[2].prefix { $0 != "-" }), true)
    }

    /// Removes the temporary files a writer left behind when it died (SIGKILL, a crash, power loss) in the middle of
    /// writing an entry: those whose writing process no longer runs, and those without a process id in their name
    /// once they are an hour old. A writer that is still running keeps its files. Call it when a service starts; every
    /// new entry also calls it.
    /// - Parameter atStart: nothing of this process writes yet, so files under its own process id are a previous
    ///   process's: a container's entry point is PID 1 at every start, and one killed mid-write (SIGKILL past the
    ///   grace period, the OOM killer during an optimization) left its files to every later start for good.
    public func removeAbandonedFiles(atStart: Bool = false) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else { return }
        for name in names {
            let (pid, isTemporary) = Self.writer(ofTemporary: name)
            guard isTemporary else { continue }
            let path = "\(directory)/\(name)"
            let abandoned: Bool
            if let pid, pid > 0 {
                // ESRCH: no such process. (EPERM means it runs under another user: it is alive.)
                abandoned = pid == getpid() ? atStart : kill(pid, 0) != 0 && errno == ESRCH
            } else {
                let modified = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date ?? .distantPast
                abandoned = modified < Date(timeIntervalSinceNow: -3600)
            }
            if abandoned { try? fm.removeItem(atPath: path) }
        }
    }
}
