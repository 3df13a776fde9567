import Foundation
import Glibc
import Primitives

/// Watches one directory with Linux inotify and reports, debounced, when entries with given names change.
///
/// Made for files that are replaced rather than edited in place: a Kubernetes ConfigMap volume (kubelet's atomic
/// writer renames a new `..data_tmp` symlink over `..data`, so the key file `desired.yaml -> ..data/desired.yaml`
/// changes without an event of its own: watch `..data` too) and a file an editor saves by renaming a temporary file
/// over it. The directory itself is watched, not the file: a watch on a file follows its inode, which a rename
/// replaces. Events for other names (unrelated files, kubelet's timestamped folders) are ignored.
///
/// A file written in place (`curl -o`, a shell redirect) is reported once written: from its creation as a regular file
/// or its first modification until it is closed (`IN_CLOSE_WRITE`), renamed or removed, it is being written
/// (`isBeingWritten`), and a burst holding it is not reported — a read meanwhile could find a truncated document that
/// still parses. A writer that neither writes nor closes for `writeTimeout` is taken to be done.
///
/// Events are read by a dedicated thread blocked in `poll(2)`, never on Swift's cooperative pool. A burst (the
/// several renames of one swap, an editor's write-then-rename) is reported once: after the first relevant event the
/// thread waits until `quiet` passes with no further relevant event, but never longer than `maximumDelay` (unless a
/// file in it is being written).
///
/// Thread-safety: all members may be used from any thread. `changes` is meant for one consumer.
public final class DirectoryWatcher: Sendable {
    /// Why a watch could not be set up.
    public struct WatchError: Error, CustomStringConvertible {
        public var directory: String
        public var call: String
        public var errno: Int32
        public var description: String {
            "cannot watch \(directory): \(call) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }

    public let directory: String
    /// One element per debounced burst: the watched names that changed in it (all of them after an inotify queue
    /// overflow, when what changed is unknown). Finishes when the watcher stops or the directory goes away.
    public let changes: AsyncStream<Set<String>>
    private let descriptors: Descriptors
    private let writes: Writes

    /// Starts watching.
    /// - Parameters:
    ///   - directory: the folder holding the entries.
    ///   - names: the entry names to report (e.g. `["desired.yaml", "..data"]`).
    ///   - quiet: how long a burst must stay silent before it is reported.
    ///   - maximumDelay: the longest a burst is held back, however long it goes on, unless a file in it is being
    ///     written.
    ///   - writeTimeout: how long a file being written may go without an event before it is taken to be done.
    /// - Throws: `WatchError` when inotify cannot be set up or the directory cannot be watched.
    public init(directory: String, names: Set<String>, quiet: Duration = .milliseconds(50),
                maximumDelay: Duration = .milliseconds(300), writeTimeout: Duration = .seconds(30))
        throws(WatchError)
    {
        self.directory = directory
        let inotify = inotify_init1(Int32(IN_CLOEXEC))
        guard inotify >= 0 else { throw WatchError(directory: directory, call: "inotify_init1", errno: errno) }
        var pipeEnds: [Int32] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else {
            let code = errno
            close(inotify)
            throw WatchError(directory: directory, call: "pipe", errno: code)
        }
        for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let descriptors = Descriptors(inotify: inotify, wakeReader: pipeEnds[0], wakeWriter: pipeEnds[1])
        let mask = UInt32(IN_CREATE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE | IN_ATTRIB
            | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
        let watch = inotify_add_watch(inotify, directory, mask)
        guard watch >= 0 else {
            throw WatchError(directory: directory, call: "inotify_add_watch", errno: errno)
        }
        self.descriptors = descriptors
        let writes = Writes(timeout: writeTimeout)
        self.writes = writes
        let (stream, continuation) = AsyncStream.makeStream(of: Set<String>.self, bufferingPolicy: .bufferingNewest(1))
        changes = stream
        let reader = EventReader(descriptors: descriptors, directory: directory, watch: watch, mask: mask,
            names: names, writes: writes, quietMilliseconds: Int(quiet.milliseconds), maximumMilliseconds: Int(maximumDelay.milliseconds),
            continuation: continuation)
        do { try SystemThread.detach(name: "yoloswap.filewatch") { reader.run() } } catch {
            descriptors.wakeReader()
            throw WatchError(directory: directory, call: "pthread_create", errno: error.code)
        }
    }

    /// Stops the reading thread and finishes `changes`. Idempotent.
    public func stop() { descriptors.wakeReader() }

    /// Whether the watched entry `name` is a file being written in place (created or modified, not yet closed), as
    /// the events read so far tell: a read now could find it cut short.
    public func isBeingWritten(_ name: String) -> Bool { writes.contains(name) }

    /// How many in-place write events of watched entries (a write's beginning, each modification, its end) the events
    /// read so far tell of: a read taken between two equal counts (and no write in progress) saw no write at all.
    public var writeEvents: Int { writes.events }

    deinit { descriptors.wakeReader() }
}

// MARK: - Descriptors

/// The inotify descriptor and the pipe whose write wakes the reader to stop; closed when the last owner (the watcher
/// or its thread) lets go, so none is ever used after being closed.
///
/// Thread-safety: `wakeReader` may be called from any thread; the descriptors are only read.
final class Descriptors: Sendable {
    let inotify: Int32
    let wake: Int32
    private let wakeWriter: Int32

    init(inotify: Int32, wakeReader: Int32, wakeWriter: Int32) {
        self.inotify = inotify
        self.wake = wakeReader
        self.wakeWriter = wakeWriter
    }

    /// Makes the reader's `poll` return and the reader stop. A byte stays in the pipe: later calls find it there.
    func wakeReader() {
        var one: UInt8 = 1
        _ = write(wakeWriter, &one, 1)
    }

    deinit {
        close(inotify)
        close(wake)
        close(wakeWriter)
    }
}

// MARK: - Writes in progress

/// The watched files being written in place, each with its last event's time.
///
/// Thread-safety: all members may be used from any thread (a lock).
final class Writes: Sendable {
    private let open = Locked<(files: [String: ContinuousClock.Instant], events: Int)>(([:], 0))
    let timeout: Duration

    init(timeout: Duration) { self.timeout = timeout }

    func began(_ name: String) {
        open.withLock { o in
            o.files[name] = .now
            o.events += 1
        }
    }

    func ended(_ name: String) {
        open.withLock { o in
            if o.files.removeValue(forKey: name) != nil { o.events += 1 }
        }
    }

    /// How many write events (a beginning, each modification, an end) there have been: a read between two equal
    /// counts saw no write.
    var events: Int { open.withLock { $0.events } }

    func contains(_ name: String) -> Bool {
        open.withLock { $0.files[name].map { ContinuousClock.now - $0 < timeout } ?? false }
    }

    /// Whether any of `names` is being written, and when the soonest of those writes times out.
    func pending(among names: Set<String>) -> ContinuousClock.Instant? {
        open.withLock { open in
            names.compactMap { open.files[$0] }.map { $0 + timeout }.filter { $0 > .now }.min()
        }
    }
}

// MARK: - Reader

/// The reading loop, run on the watcher's own thread.
///
/// Thread-safety: used by that one thread only (`Sendable` to be handed to it; all its fields are immutable).
private struct EventReader: Sendable {
    let descriptors: Descriptors
    let directory: String
    /// The directory's watch, and the events it asks for.
    let watch: Int32
    let mask: UInt32
    let names: Set<String>
    let writes: Writes
    let quietMilliseconds: Int
    let maximumMilliseconds: Int
    let continuation: AsyncStream<Set<String>>.Continuation

    func run() {
        defer { continuation.finish() }
        var pending: Set<String> = []
        var burstStart: ContinuousClock.Instant?
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            var timeout: Int32 = -1
            // A burst with a file being written waits for its close (or its write's timeout), however long.
            let writing = burstStart == nil ? nil : writes.pending(among: pending)
            if let writing {
                timeout = Int32(min(60_000, max(1, (writing - .now).milliseconds + 1)))
            } else if let burstStart {
                let held = Int((ContinuousClock.now - burstStart).milliseconds)
                timeout = Int32(max(0, min(quietMilliseconds, maximumMilliseconds - held)))
            }
            var fds = [pollfd(fd: descriptors.inotify, events: Int16(POLLIN), revents: 0),
                pollfd(fd: descriptors.wake, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, 2, timeout)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            let overdue = burstStart.map { Int((ContinuousClock.now - $0).milliseconds) >= maximumMilliseconds }
                ?? false
            if ready == 0 || overdue {
                if writes.pending(among: pending) == nil {
                    if !pending.isEmpty { continuation.yield(pending) }
                    pending = []
                    burstStart = nil
                }
                if ready == 0 { continue }
            }
            guard fds[0].revents & Int16(POLLIN) != 0 else { return }
            let count = buffer.withUnsafeMutableBytes { read(descriptors.inotify, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return
            }
            let parsed = Self.parse(buffer, count: count)
            // An overflow may have taken the directory's own removal with it: watching the path again answers this
            // watch only while it is the same directory (another watch for one made anew — removed again: the
            // watcher's owner makes a new watcher — none for none).
            var replaced = false
            if parsed.overflowed {
                let again = inotify_add_watch(descriptors.inotify, directory, mask)
                if again != watch {
                    replaced = true
                    if again >= 0 { inotify_rm_watch(descriptors.inotify, again) }
                }
            }
            if parsed.directoryGone || replaced {
                if !pending.isEmpty { continuation.yield(pending) }
                return
            }
            for (name, mask) in parsed.events where names.contains(name) {
                if mask & UInt32(IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO) != 0 {
                    writes.ended(name)
                } else if mask & UInt32(IN_MODIFY) != 0 || (mask & UInt32(IN_CREATE) != 0 && isNewFile(name)) {
                    // A symbolic link (a ConfigMap's key) or a hard link to a file elsewhere (`ln`) is created whole;
                    // a regular file of its own is written after.
                    writes.began(name)
                }
            }
            // Events were lost (a close perhaps): no file is known to be still being written. After the events read
            // with the overflow, which the kernel queues last.
            if parsed.overflowed { for name in names { writes.ended(name) } }
            let relevant = parsed.overflowed ? names : parsed.names.intersection(names)
            if !relevant.isEmpty {
                pending.formUnion(relevant)
                if burstStart == nil { burstStart = .now }
            }
        }
    }

    /// Whether `name` is a regular file with no other link: one just created to be written (a hard link made to a
    /// file that exists is not, and sends no close to end its "write").
    private func isNewFile(_ name: String) -> Bool {
        var info = stat()
        return lstat(directory + "/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG && info.st_nlink == 1
    }

    /// The names in a buffer of `struct inotify_event` records, each event's name and mask in order, and whether the
    /// queue overflowed or the watched directory was removed or moved.
    static func parse(_ buffer: [UInt8], count: Int)
        -> (names: Set<String>, events: [(String, UInt32)], overflowed: Bool, directoryGone: Bool)
    {
        var names: Set<String> = []
        var events: [(String, UInt32)] = []
        var overflowed = false
        var gone = false
        let header = MemoryLayout<inotify_event>.size
        buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset + header <= count {
                let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                let length = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                let end = min(offset + header + length, count)
                if mask & UInt32(IN_Q_OVERFLOW) != 0 { overflowed = true }
                if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) != 0 { gone = true }
                if length > 0 {
                    let bytes = raw[(offset + header)..<end].prefix { $0 != 0 }
                    let name = String(decoding: bytes, as: UTF8.self)
                    names.insert(name)
                    events.append((name, mask))
                }
                offset += header + length
            }
        }
        return (names, events, overflowed, gone)
    }
}
