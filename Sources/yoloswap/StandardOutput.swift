// C's `stdout` is a mutable global, which Swift 6 refuses to read outside an isolation domain; imported with
// `@preconcurrency`, it is read here, once a command is done and no other thread writes to it.
#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Darwin)
    @preconcurrency import Darwin
#endif

/// What `print` wrote: whether all of it reached standard output.
enum StandardOutput {
    /// Flushes what `print` buffered; true when that, or an earlier write of it, failed (a full disk, a closed
    /// stdout). Call it once the command is done.
    static func failed() -> Bool { fflush(stdout) != 0 || ferror(stdout) != 0 }
}
