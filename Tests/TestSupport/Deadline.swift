import Foundation
import Primitives

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs blocking `work` on a thread of its own and waits for it at most `timeout`, so that a test of code which could
/// block for ever (opening a FIFO, reading `/dev/zero`) fails instead of hanging the suite.
///
/// - Returns: what `work` returned, or nil when it had not returned by the deadline (its thread is left running).
public func finishing<T: Sendable>(within timeout: Duration, _ work: @escaping @Sendable () -> T) async -> T? {
    let result = Locked<T?>(nil)
    let thread = Thread {
        let value = work()
        result.withLock { $0 = value }
    }
    thread.start()
    _ = await eventually(timeout: timeout) { result.withLock { $0 != nil } }
    return result.withLock { $0 }
}

/// A named pipe (FIFO) at `path`: opening it for reading blocks until a writer opens it, unless the open does not
/// wait (`O_NONBLOCK`).
public func makeFIFO(at path: String) throws {
    guard mkfifo(path, 0o600) == 0 else {
        throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO, userInfo: [NSFilePathErrorKey: path])
    }
}

/// Releases a reader blocked opening the FIFO at `path`: opens the FIFO for writing and closes it at once, so that
/// the reader's open returns and its first read sees the end of the file. For tests that timed out on a FIFO and must
/// not leave the suite's threads stuck. Does nothing when no reader is waiting.
public func releaseFIFOReaders(at path: String) {
    let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
    if fd >= 0 { close(fd) }
}
