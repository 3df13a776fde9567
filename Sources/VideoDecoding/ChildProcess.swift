import Foundation
import Primitives

#if canImport(Glibc)
    import Glibc
#endif

/// A child program with its stdout and stderr on pipes (and its stdin, when asked), killed and reaped exactly once.
///
/// Started with `posix_spawn` (no fork of a multi-threaded process), in a process group of its own with default signal
/// dispositions: should this process die without killing it (SIGKILL), the child lives on until it next writes to its
/// broken pipe (SIGPIPE) — at once for a file, at the next frame for a live source. The pipes are close-on-exec, so no
/// other child keeps them open and a reader waiting after this child died; the child gets no descriptor but its three
/// (and a file passed to it as its fourth). The child is reaped in two steps: `waitid(WNOWAIT)` waits for its exit
/// while leaving the zombie in place, so that a concurrent `kill` never reaches a reused pid; the zombie is then reaped
/// under the lock that `kill` takes.
///
/// Thread-safety: `terminate` and `waitForExit` may be called from any thread, any number of times; the output
/// handles are meant for one reader each, and the reader of `stderr` must close it.
final class ChildProcess: Sendable {
    let pid: pid_t
    /// The parent's read ends of the child's stdout and stderr.
    let stdout: Int32
    let stderr: Int32
    /// The parent's write end of the child's stdin (-1 when stdin is /dev/null); closed by `closeStdin()`.
    let stdin: Int32

    private struct State {
        var exitStatus: Int32?
        var reaped = false
        var stdinClosed = false
    }
    private let state = Locked(State())

    /// Starts `arguments[0]` (looked up on `PATH`) with the rest as its arguments; stdin is /dev/null, or a pipe the
    /// parent writes (`stdin`) with `writableStdin`. A `file` descriptor becomes the child's descriptor 3 (the
    /// parent's stays open: the caller closes it), so that the child reaches a file the parent opened and checked
    /// rather than opening a path again (`/proc/self/fd/3` names it for a program that wants a path).
    /// - Throws: `VideoDecodeError.cannotStart` with the errno and its text.
    init(_ arguments: [String], writableStdin: Bool = false, file: Int32? = nil) throws(VideoDecodeError) {
        guard let program = arguments.first else { throw .cannotStart(program: "", reason: "empty command") }
        // A descriptor that is 3 already is given a number above 3 first: dup2 onto itself would leave it
        // close-on-exec.
        var passed = file
        if let given = file, given <= 3 {
            passed = fcntl(given, F_DUPFD_CLOEXEC, 4)
            guard let copy = passed, copy >= 0 else { throw Self.failure(program, errno) }
        }
        defer { if let passed, passed != file { close(passed) } }
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1], inPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw Self.failure(program, errno) }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw Self.failure(program, errno)
        }
        if writableStdin, pipe(&inPipe) != 0 {
            for fd in outPipe + errPipe { close(fd) }
            throw Self.failure(program, errno)
        }
        // Glibc's module does not export pipe2: close-on-exec is set right after (a program another thread spawns in
        // between could inherit the ends until it execs; posix_spawn-based spawners close them there).
        for fd in outPipe + errPipe + inPipe where fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if writableStdin {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        // dup2 onto 1 and 2 clears close-on-exec on the child's copies only.
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        if let passed { posix_spawn_file_actions_adddup2(&actions, passed, 3) }
        // Nothing else of this process reaches FFmpeg: a descriptor some library opened without close-on-exec (a
        // client's socket, a file being written) would otherwise stay open for as long as the stream runs.
        if let addCloseFrom = Self.addCloseFrom, case let failed = addCloseFrom(&actions, passed == nil ? 3 : 4),
            failed != 0
        {
            for fd in outPipe + errPipe + inPipe where fd >= 0 { close(fd) }
            throw Self.failure(program, failed)
        }
        // A process group of its own: a Ctrl-C typed at a terminal reaches this process, which stops the stream, not
        // FFmpeg behind its back. The signals this process traps or ignores get their default dispositions back (an
        // ignored one would stay ignored across exec) and none is blocked.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t(), unblocked = sigset_t()
        sigemptyset(&defaults)
        for number in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE] { sigaddset(&defaults, number) }
        sigemptyset(&unblocked)
        let set = [posix_spawnattr_setsigdefault(&attributes, &defaults),
                   posix_spawnattr_setsigmask(&attributes, &unblocked),
                   posix_spawnattr_setpgroup(&attributes, 0),
                   posix_spawnattr_setflags(&attributes,
                       Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))]
        if let failed = set.first(where: { $0 != 0 }) {
            for fd in outPipe + errPipe + inPipe where fd >= 0 { close(fd) }
            throw Self.failure(program, failed)
        }
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawnp(&child, program, &actions, &attributes, argv, environ)
        close(outPipe[1])
        close(errPipe[1])
        if writableStdin { close(inPipe[0]) }
        guard status == 0 else {
            close(outPipe[0]); close(errPipe[0])
            if writableStdin { close(inPipe[1]) }
            throw Self.failure(program, status)
        }
        pid = child
        stdout = outPipe[0]
        stderr = errPipe[0]
        stdin = inPipe[1]
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later; Swift's Glibc module does not export it),
    /// looked up once; without it the child inherits what is not close-on-exec, as before.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? =
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np").map {
            unsafeBitCast($0, to: AddCloseFrom.self)
        }

    /// Kills and reaps the child, and closes stdout. Stderr is left to its reader, which closes it at its end of
    /// file (the child is dead by then): closing it under a reader blocked in `read` could hand the number to a new
    /// file that the reader would then read.
    deinit {
        closeStdin()
        terminate()
        _ = waitForExit()
        close(stdout)
    }

    /// Closes the write end of the child's stdin (its end of file). Idempotent.
    func closeStdin() {
        guard stdin >= 0 else { return }
        let first = state.withLock { s -> Bool in
            defer { s.stdinClosed = true }
            return !s.stdinClosed
        }
        if first { close(stdin) }
    }

    /// Sends SIGKILL unless the child has already been reaped.
    func terminate() {
        state.withLock { s in
            if !s.reaped { kill(pid, SIGKILL) }
        }
    }

    /// Blocks until the child has exited and reaps it; returns its wait status (as `waitpid` reports it).
    @discardableResult
    func waitForExit() -> Int32 {
        if let status = state.withLock({ $0.exitStatus }) { return status }
        var info = siginfo_t()
        // Waits without reaping: the pid stays the child's until the reap below, so `terminate` stays safe.
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        return state.withLock { s in
            if let status = s.exitStatus { return status }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            s.exitStatus = status
            s.reaped = true
            return status
        }
    }

    /// A wait status in words: "exit status 1", "killed by signal 9".
    static func describe(_ status: Int32) -> String {
        let signal = status & 0x7f
        return signal == 0 ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
    }

    /// Whether a wait status is a clean exit (status 0).
    static func succeeded(_ status: Int32) -> Bool { status == 0 }

    /// A failed start with the system's error number and its text.
    private static func failure(_ program: String, _ code: Int32) -> VideoDecodeError {
        .cannotStart(program: program, reason: String(cString: strerror(code)), code: code)
    }

    /// The most a frame pipe is widened to: 1 MiB, Linux's default ceiling for an unprivileged process
    /// (`/proc/sys/fs/pipe-max-size`), and a whole 640×480 RGB frame.
    static let maxFramePipeBytes = 1 << 20

    /// Asks the kernel to grow a pipe to hold one frame of `frameBytes` (`F_SETPIPE_SZ`): the next power of two, at
    /// most ``maxFramePipeBytes``, halving the request while it is refused. With the default 64 KiB a frame crosses
    /// the pipe in pieces, and the writer and the reader wake each other for every piece.
    ///
    /// Best effort: the pipe works at any size, which only changes how many wake-ups a frame costs. Each pipe's pages
    /// count against the user's pipe quota (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default); past it the
    /// kernel refuses to widen, and gives the user's new pipes 8 KiB. Hence one frame, not the ceiling, per pipe.
    /// - Returns: the pipe's capacity afterwards (`F_GETPIPE_SZ`), or nil where that cannot be read.
    @discardableResult
    static func widen(pipe fd: Int32, toHold frameBytes: Int) -> Int? {
        #if os(Linux)
            // F_SETPIPE_SZ and F_GETPIPE_SZ are Linux's 1031 and 1032 (F_LINUX_SPECIFIC_BASE + 7 and + 8); Swift's
            // Glibc module does not export them.
            var size = 65536
            while size < frameBytes, size < maxFramePipeBytes { size *= 2 }
            while size > 65536, fcntl(fd, 1031, Int32(size)) < 0 { size /= 2 }
            let capacity = fcntl(fd, 1032)
            return capacity > 0 ? Int(capacity) : nil
        #else
            return nil
        #endif
    }
}

/// Reads exactly `count` bytes from `fd` into `buffer` starting at `offset`; returns how many arrived before end of
/// file (less than `count` only at the end).
func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, count: Int) -> Int {
    var done = 0
    while done < count {
        let n = read(fd, buffer.baseAddress! + done, count - done)
        if n > 0 {
            done += n
        } else if n == 0 || errno != EINTR {
            break
        }
    }
    return done
}
