#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// libFuzzer's entry point for programs that have their own `main` (compiler-rt's `FuzzerDriver.cpp`): it parses
/// libFuzzer's flags from `argv` and calls `callback` once per input. Linked in by `-sanitize=fuzzer`.
///
/// SwiftPM links an executable with `--defsym main=<Module>_main`, so a target cannot take libFuzzer's own `main`
/// (with `-parse-as-library` the link fails); each target has a Swift `@main` that calls this instead.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// The target's body, called by the C callback, which cannot capture it. libFuzzer calls the callback on the main
/// thread, one input at a time, so this is written once before the driver starts and only read afterwards.
nonisolated(unsafe) private var fuzzBody: ((UnsafeBufferPointer<UInt8>) -> Void)?

/// Runs libFuzzer with the process's arguments, calling `body` with each input, and exits with libFuzzer's status.
///
/// `body` must not keep the buffer (libFuzzer reuses it), and returns normally for every input the code under test
/// handles, errors included: a crash, a sanitizer report, a leak or a timeout is what libFuzzer reports as a finding.
public func runFuzzer(_ body: @escaping (UnsafeBufferPointer<UInt8>) -> Void) -> Never {
    fuzzBody = body
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    let status = LLVMFuzzerRunDriver(&argc, &argv) { data, count in
        fuzzBody?(UnsafeBufferPointer(start: data, count: data == nil ? 0 : count))
        return 0
    }
    exit(status)
}
