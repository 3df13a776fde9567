import Foundation
import Synchronization

/// What a program that ran to completion left: its exit status and everything it wrote.
public struct ProcessResult: Sendable {
    /// The exit status (or the signal number, when the program was killed by one).
    public var status: Int32
    /// Whether a signal ended the program (a crash, a trap, a kill) rather than an exit.
    public var killedBySignal: Bool
    /// Standard output, decoded as UTF-8.
    public var stdout: String
    /// Standard error, decoded as UTF-8.
    public var stderr: String
}

/// Runs a program to completion and collects its output; for tests that check a tool's answer (the CLI, Python
/// references, coreutils) against the library's.
///
/// - Parameters:
///   - executable: the program's path (no PATH lookup).
///   - arguments: its arguments.
///   - environment: its whole environment; `nil` inherits the test process's.
///   - directory: its working directory, the repository root unless given, so relative paths in arguments mean
///     the same wherever the tests were started from.
/// - Throws: when the program cannot be started; a non-zero exit is not an error but a `status` to check.
public func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
    in directory: URL = Repository.root
) throws -> ProcessResult {
    let out = Pipe()
    let err = Pipe()
    let process = try startRetryingBusyText {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        if let environment { process.environment = environment }
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return process
    }
    // Read both pipes while the program runs, so that neither fills up and blocks it.
    let errors = Collected()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        let data = err.fileHandleForReading.readDataToEndOfFile()
        errors.data.withLock { $0 = data }
        group.leave()
    }
    let output = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessResult(
        status: process.terminationStatus, killedBySignal: process.terminationReason == .uncaughtSignal,
        stdout: String(decoding: output, as: UTF8.self),
        stderr: String(decoding: errors.data.withLock { $0 }, as: UTF8.self))
}

/// `runProcess` for async callers: the program is run and waited for on a thread of its own. Swift's concurrency pool
/// has one thread per core (two on CI), and every test of the process shares it: a test that waited for a
/// 40-second child on one of them held back every other test's tasks (CI saw a stream's viewer connect 1.6 s late).
public func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
    in directory: URL = Repository.root
) async throws -> ProcessResult {
    try await onOwnThread {
        let blocking: (String, [String], [String: String]?, URL) throws -> ProcessResult = runProcess
        return try blocking(executable, arguments, environment, directory)
    }
}

/// Starts a program, trying again for up to 10 s while `execve` answers ETXTBSY ("Text file busy").
///
/// A program a test has just copied can be busy for a moment although the copy is closed: another test's child forked
/// while the copy was open for writing holds that descriptor until it execs (CI saw this once: Foundation's `copyItem`
/// opens the copy without close-on-exec, and a long-lived FFmpeg child held it). `copyExecutable` narrows the window
/// to a fork-to-exec; this closes the rest.
public func startRetryingBusyText(_ start: () throws -> Process) throws -> Process {
    let deadline = Date().addingTimeInterval(10)
    while true {
        do {
            return try start()
        } catch let error as NSError where isBusyText(error) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }
}

private func isBusyText(_ error: NSError) -> Bool {
    if error.domain == NSPOSIXErrorDomain { return error.code == Int(ETXTBSY) }
    guard let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError else { return false }
    return isBusyText(underlying)
}

/// Copies a program to `destination` (which must not exist) with mode 0755, through a descriptor opened close-on-exec
/// so that no child another test starts meanwhile keeps the copy open for writing (which makes running it fail with
/// ETXTBSY for as long as that child lives).
public func copyExecutable(from source: String, to destination: String) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: source))
    let fd = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o755)
    guard fd >= 0 else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: destination,
            NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(errno))])
    }
    defer { close(fd) }
    try data.withUnsafeBytes { bytes in
        var written = 0
        while written < bytes.count {
            let n = write(fd, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: destination,
                    NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(errno))])
            }
            written += n
        }
    }
}

/// Runs blocking work (waiting for a child, reading a socket) on a new thread, and resumes the caller when it is
/// done, so that the concurrency pool's threads stay free for the other tests' tasks.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// Bytes handed from the thread that drains standard error to the caller.
private final class Collected: Sendable {
    let data = Mutex(Data())
}
