import Crypto
import FileWatch
import Foundation
import Logging
import Primitives
import ServiceLifecycle

/// Applies the desired-state document in a file, and again whenever the file changes: `serve --desired-state PATH`.
///
/// Made for a Kubernetes ConfigMap volume, where `PATH` is a symlink `desired.yaml -> ..data/desired.yaml` and kubelet
/// swaps `..data` by renaming a new symlink over it; a plain file that an editor replaces by a rename works the same.
/// The folder is watched with inotify (`DirectoryWatcher`: the key's name and `..data`, nothing else), bursts are
/// debounced, and each change is read through the path after the swap has completed (the rename is atomic, so what
/// is read is a complete document, old or new). Content whose SHA-256 is the one last read is not applied again: a
/// no-op change (kubelet rewriting the same data, a `touch`) does nothing.
///
/// The file is also read every `rescanInterval` (what a watch misses, such as a swapped symbolic link to the folder,
/// is applied then), and a folder that goes away is watched again once it is back, so the service runs until the
/// server stops. The first apply waits until the slots have been brought up. File reads run off the cooperative pool.
///
/// Thread-safety: a `Service`, run once by the service group.
public struct DesiredStateFileService: Service {
    let path: String
    let reconciler: DesiredStateReconciler
    let logger: Logger
    private let reader = BlockingQueue(label: "yoloswap.desired-file")

    public init(path: String, reconciler: DesiredStateReconciler, logger: Logger) {
        self.path = path
        self.reconciler = reconciler
        self.logger = logger
    }

    /// How often the file is read even without an event: a change the watch cannot see (the folder reached through a
    /// symbolic link that a deploy swapped, a network file system) is still applied, at most this late. A read of the
    /// same content does nothing.
    static let rescanInterval: Duration = .seconds(10)
    /// While reads find the file held open by a writer: what the file was and since when (this machine's clock).
    private let heldOpen = Locked(HeldOpen())
    /// How long a writer that holds the file open may go without changing it before it is taken to be done (the
    /// watch's `writeTimeout`).
    static let quietWriter: Duration = .seconds(30)

    public func run() async throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let names: Set<String> = [url.lastPathComponent, "..data"]
        // The first watch must work (a wrong path fails the start); later ones are retried.
        let first = try DirectoryWatcher(directory: folder, names: names)
        let current = Locked<DirectoryWatcher?>(first)
        logger.info("watching the desired state", metadata: ["path": "\(path)"])
        while !reconciler.control.hasStarted {
            try? await Task.sleep(for: .milliseconds(50))
            if Task.isShuttingDownGracefully || Task.isCancelled {
                first.stop()
                return
            }
        }
        let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let logger = self.logger
        // Events, and a new watch whenever the folder goes away (removed, or moved aside by a deploy that puts
        // another in its place): the service goes on, where returning would stop the whole service group.
        let watching = Task {
            var watcher: DirectoryWatcher? = first
            while !Task.isCancelled {
                if let watcher {
                    for await _ in watcher.changes { wake.yield() }
                    if Task.isCancelled { break }
                    logger.warning("the desired state's folder went away; watching for it to come back",
                        metadata: ["folder": "\(folder)"])
                    wake.yield()
                }
                try? await Task.sleep(for: .seconds(1))
                if Task.isCancelled { break }
                watcher = try? DirectoryWatcher(directory: folder, names: names)
                current.withLock { $0 = watcher }
                if watcher != nil { wake.yield() }
            }
        }
        let rescanning = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.rescanInterval)
                wake.yield()
            }
        }
        @Sendable func stop() {
            watching.cancel()
            rescanning.cancel()
            current.withLock { $0?.stop() }
            wake.finish()
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                // Not while the file is being written in place (the rescan's read could find it cut short, and a
                // document cut at a line's end may still parse): its close wakes this again.
                let name = url.lastPathComponent
                func writing() -> Bool { current.value?.isBeingWritten(name) ?? false }
                func writeEvents() -> Int { current.value?.writeEvents ?? 0 }
                var last = writing() ? nil
                    : await applyIfChanged(after: nil, writing: writing, writeEvents: writeEvents)
                for await _ in wakeups where !writing() {
                    last = await applyIfChanged(after: last, writing: writing, writeEvents: writeEvents)
                }
            } onGracefulShutdown: {
                stop()
            }
        } onCancel: {
            stop()
        }
        stop()
    }

    /// Reads the file and applies it unless it reads as it did last time.
    /// - Parameters:
    ///   - last: what the previous read found (the content's SHA-256, or the read error).
    ///   - writing: whether the file is being written in place, and `writeEvents` how many write events there have
    ///     been: asked again after the read, which a write that began (or began and ended) meanwhile could have cut
    ///     short — the read is then dropped (that write's close wakes the caller again).
    /// - Returns: what this read found (`last` when the read was dropped).
    private func applyIfChanged(after remembered: String?, writing: () -> Bool, writeEvents: () -> Int) async
        -> String?
    {
        // After a failed read, what was remembered before it: the file readable again, unchanged, is not a new
        // document (applied again, it would override one accepted since over HTTP or MQTT).
        let failedBefore = remembered.flatMap(FailedRead.init)
        let last = failedBefore.map(\.before) ?? remembered
        let eventsBefore = writeEvents()
        let path = self.path
        // nil: another process has the file open for writing — one that began before this watch, at a start or
        // after the folder came back, whose write events it never saw. Its close wakes the caller again. A writer
        // that leaves the file as it is (size, mtime) for `quietWriter` of this machine's time is taken to be done,
        // as the watch takes a silent one — and so is a network file system that grants no lease (NFS without a
        // delegation, SMB without an oplock), which answers as if one wrote. The file's mtime itself is not compared
        // with the clock: another host's clock, or a stamp from a restore, may be anywhere.
        let heldOpen = self.heldOpen
        let read: Result<[UInt8]?, FileReadError> = await reader.run {
            do throws(FileReadError) {
                let file = try RegularFile(openingForReading: path)
                if file.isOpenForWriting == true, !heldOpen.withLock({ $0.isQuiet(file) }) { return .success(nil) }
                return .success([UInt8](try file.readAll(limit: DesiredState.Limits.bytes)))
            } catch { return .failure(error) }
        }
        if writing() || writeEvents() != eventsBefore { return remembered }
        if case .success(nil) = read {
            // Said once while it lasts (the rescan finds it again every 10 s).
            if heldOpen.withLock({ $0.report() }) {
                logger.info("the desired-state file is open for writing: read once it is closed or left alone",
                    metadata: ["path": "\(path)", "quiet_after": "\(Self.quietWriter)"])
            }
            return remembered
        }
        heldOpen.withLock { $0 = HeldOpen() }
        switch read {
        case .success(let read):
            guard let bytes = read else { return remembered }
            let sha = Hex.string(SHA256.hash(data: bytes))
            guard sha != last else { return sha }
            // A refused document is applied again at the next read (the rescan's, at the latest): what refused it may
            // pass by then, a model file whose copy had not finished, an audit log that could not be written; the
            // same refusal is recorded once. Not once another document has been accepted since (over HTTP or MQTT):
            // the file, unchanged, would then override it.
            let refusedBefore = last.map(RefusedRead.init) ?? nil
            let reread = refusedBefore?.sha256 == sha
            if reread, refusedBefore?.inForce != reconciler.inForceSHA256 { return sha }
            let inForce = reconciler.inForceSHA256
            let accepted = await reconciler.applyFile(bytes, path: path, reread: reread)
            logger.log(level: reread && !accepted ? .debug : .info, "desired state read", metadata: [
                "path": "\(path)", "sha256": "\(sha)", "accepted": "\(accepted)"])
            return accepted ? sha : RefusedRead(sha256: sha, inForce: inForce).text
        case .failure(let error):
            let reason = error.description
            if reason != failedBefore?.reason { await reconciler.refuseUnreadableFile(path: path, reason: reason) }
            return FailedRead(reason: reason, before: last).text
        }
    }
}

/// The file as reads find it held open by a writer: its size and mtime, since when they have been so (by this
/// machine's monotonic clock), and whether that was logged.
private struct HeldOpen {
    var seen: (byteCount: Int, modifiedAt: Date, since: ContinuousClock.Instant)?
    var reported = false

    /// Whether `file` has been as it is now for `quietWriter`; starts the count when it changed or was not held.
    mutating func isQuiet(_ file: RegularFile) -> Bool {
        let now = ContinuousClock.now
        if let seen, seen.byteCount == file.byteCount, seen.modifiedAt == file.modifiedAt {
            return now - seen.since >= DesiredStateFileService.quietWriter
        }
        seen = (file.byteCount, file.modifiedAt, now)
        return false
    }

    /// True the first time it is asked while the file is held.
    mutating func report() -> Bool {
        defer { reported = true }
        return !reported
    }
}

/// What the watcher remembers of a read that failed: why, and what it remembered before.
private struct FailedRead {
    var reason: String
    var before: String?

    init(reason: String, before: String?) {
        (self.reason, self.before) = (reason, before)
    }

    /// Parses `text`; nil for anything else.
    init?(_ text: String) {
        let parts = text.split(separator: "\u{0}", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "failed" else { return nil }
        reason = String(parts[1])
        before = parts[2].isEmpty ? nil : String(parts[2])
    }

    var text: String { "failed\u{0}\(reason)\u{0}\(before ?? "")" }
}

/// What the watcher remembers of a read whose document was refused: its SHA-256 and the document in force then.
private struct RefusedRead {
    var sha256: String
    var inForce: String?

    init(sha256: String, inForce: String?) {
        self.sha256 = sha256
        self.inForce = inForce
    }

    /// Parses `text`; nil for anything else (an accepted document's SHA-256, a read error).
    init?(_ text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "refused" else { return nil }
        sha256 = String(parts[1])
        inForce = parts[2].isEmpty ? nil : String(parts[2])
    }

    var text: String { "refused \(sha256) \(inForce ?? "")" }
}
