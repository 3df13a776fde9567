internal import CONNXRuntime
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The ONNX Runtime shared library, loaded at run time with `dlopen`, and its C API table.
///
/// The package builds without the library (only ORT's header is needed), and one binary works with any ORT of release
/// 1.`minimumMinorVersion` or newer (see there) whose C API version is at least the header's `ORT_API_VERSION`. Lookup order (first that loads wins):
/// 1. an explicit path (`--ort-library`),
/// 2. `ORT_DYLIB_PATH`,
/// 3. `libonnxruntime.so.1` beside the executable,
/// 4. the package's own `.ort/lib`, for an executable built in the package: one under its build folder
///    (`<package>/.build…/`, e.g. `.build/debug/yoloswap`, or the test bundle beside it), where `scripts/setup` put
///    the library in `<package>/.ort/lib`,
/// 5. the system's `libonnxruntime.so.1` (the dynamic loader's search path).
///
/// Never the working directory or a folder above it: whoever can write there would choose the code this process runs.
/// The executable's location is the system's (`/proc/self/exe`), not `argv[0]`, which a caller may set to anything.
///
/// Thread-safety: immutable after loading; safe to share between threads. The library is never unloaded.
public final class ORTLibrary: @unchecked Sendable {
    // @unchecked: `api` points into the loaded library's static, immutable function table; `handle` is never
    // closed. Nothing here is mutated after init.
    let api: UnsafePointer<OrtApi>
    private let handle: UnsafeMutableRawPointer

    /// The path the library was loaded from.
    public let path: String
    /// The library's own version string, e.g. "1.32.0".
    public let version: String
    /// The C API version this binary requested (the header's `ORT_API_VERSION`).
    public static let requiredAPIVersion = Int(ORT_API_VERSION)
    /// The oldest release loaded (1.`minimumMinorVersion`): older ones offer the C API but load a model's external
    /// data from an absolute path, or from a memory address the model names (`_ORT_MEM_ADDR_`), whatever the session
    /// options — bytes the verified digest does not cover (a key file read into a tensor; a crash). The hostile-model
    /// checks pass from 1.32.0 (the version setup fetches).
    public static let minimumMinorVersion = 32

    /// Whether `version` ("1.32.0", "1.33.0-dev") is 1.`minimumMinorVersion` or newer; false when it cannot be read.
    static func isSupported(version: String) -> Bool {
        let parts = version.split(separator: ".", maxSplits: 2).map { $0.prefix { $0.isASCII && $0.isNumber } }
        guard parts.count >= 2, let major = Int(parts[0]), let minor = Int(parts[1]) else { return false }
        return major > 1 || (major == 1 && minor >= minimumMinorVersion)
    }

    private init(handle: UnsafeMutableRawPointer, api: UnsafePointer<OrtApi>, path: String, version: String) {
        self.handle = handle
        self.api = api
        self.path = path
        self.version = version
    }

    private static let cache = Mutex<[String: ORTLibrary]>([:])

    /// The variable that makes ORT read each session's options from the model (refused by `load`).
    static let configFromModelVariable = "ORT_LOAD_CONFIG_FROM_MODEL"

    /// Loads the library (once per resolved path per process) following the lookup order above.
    /// - Parameter explicitPath: a path given by the user; when set, only it and the later fallbacks are tried.
    /// - Throws: `ORTError` `.libraryNotFound` naming every path tried, `.unsafeEnvironment` when
    ///   `ORT_LOAD_CONFIG_FROM_MODEL` is set.
    public static func load(explicitPath: String? = nil) throws -> ORTLibrary {
        // With it set, ORT builds every session's options from the model's own `ort_config` metadata, dropping the
        // ones given — the external-data refusal among them: a model could read files beside the working directory.
        if let value = getenv(Self.configFromModelVariable), String(cString: value) != "0" {
            throw ORTError(.unsafeEnvironment(variable: Self.configFromModelVariable),
                operation: "loading ONNX Runtime", message: "ONNX Runtime would take every session's options from the "
                    + "model (its `ort_config` metadata), dropping the service's — the refusal of external data among "
                    + "them; unset it")
        }
        let candidates = candidatePaths(explicitPath: explicitPath)
        var tried: [String] = []
        for candidate in candidates {
            if let loaded = cache.withLock({ $0[candidate] }) { return loaded }
            guard let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) else {
                let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
                tried.append("\(candidate): \(reason)")
                continue
            }
            // A refused library is closed: left open, a later bare name with its SONAME (`libonnxruntime.so.1`, the
            // system's fallback) would be given that same library back.
            func refuse(_ reason: String) {
                tried.append("\(candidate): \(reason)")
                dlclose(handle)
            }
            guard let symbol = dlsym(handle, "OrtGetApiBase") else {
                refuse("no OrtGetApiBase symbol")
                continue
            }
            typealias GetApiBase = @convention(c) () -> UnsafePointer<OrtApiBase>?
            let getApiBase = unsafeBitCast(symbol, to: GetApiBase.self)
            guard let base = getApiBase() else {
                refuse("OrtGetApiBase returned NULL")
                continue
            }
            let version = base.pointee.GetVersionString.flatMap { $0() }.map { String(cString: $0) } ?? "unknown"
            // Listed with the other paths tried (a mistyped path before an old system library says both).
            guard isSupported(version: version) else {
                refuse("ONNX Runtime \(version) is older than 1.\(minimumMinorVersion).0, whose releases load "
                    + "external data a model names outside it (absolute paths, memory addresses)")
                continue
            }
            guard let api = base.pointee.GetApi?(UInt32(ORT_API_VERSION)) else {
                // A later candidate may serve (a build without this API level: a newer major version).
                refuse("ONNX Runtime \(version) does not serve C API level \(ORT_API_VERSION) (GetApi returned NULL)")
                continue
            }
            let library = ORTLibrary(handle: handle, api: api, path: candidate, version: version)
            cache.withLock { $0[candidate] = library }
            return library
        }
        throw ORTError(.libraryNotFound(tried: tried), operation: "loading ONNX Runtime", message: "")
    }

    /// The paths `load(explicitPath:)` tries, in order (see the type's documentation).
    /// - Parameters:
    ///   - explicitPath: a path given by the user.
    ///   - environment: where `ORT_DYLIB_PATH` is read (the process's environment).
    ///   - executable: the running executable's absolute path, links resolved (nil when the system cannot tell).
    public static func candidatePaths(
        explicitPath: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        executable: String? = executablePath
    ) -> [String] {
        var paths: [String] = []
        if let explicitPath, !explicitPath.isEmpty { paths.append(explicitPath) }
        if let env = environment["ORT_DYLIB_PATH"], !env.isEmpty { paths.append(env) }
        if let executable {
            let folder = URL(fileURLWithPath: executable).deletingLastPathComponent()
            paths.append(folder.appendingPathComponent("libonnxruntime.so.1").path)
            let components = folder.pathComponents
            if let build = components.lastIndex(where: { $0.hasPrefix(".build") }), build > 0 {
                let package = NSString.path(withComponents: Array(components[..<build]))
                paths.append(URL(fileURLWithPath: package).appendingPathComponent(".ort/lib/libonnxruntime.so.1").path)
            }
        }
        paths.append("libonnxruntime.so.1")
        return paths
    }

    /// The running executable's absolute path with links resolved, as the system knows it; nil when it cannot tell.
    public static let executablePath: String? = {
        #if os(Linux)
            if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
                return path
            }
        #endif
        return Bundle.main.executableURL?.resolvingSymlinksInPath().path
    }()

    /// Execution providers compiled into this library, e.g. `["CPUExecutionProvider"]`.
    public func availableProviders() throws -> [String] {
        var list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        var count: Int32 = 0
        try check(api.pointee.GetAvailableProviders!(&list, &count), "listing execution providers")
        defer { ignore(api.pointee.ReleaseAvailableProviders!(list, count)) }
        return (0..<Int(count)).compactMap { i in list?[i].map { String(cString: $0) } }
    }

    /// Releases the status of a call whose failure changes nothing for the caller (a free): a status left unreleased
    /// leaks.
    func ignore(_ status: OpaquePointer?) {
        if let status { api.pointee.ReleaseStatus!(status) }
    }

    /// The one place an `OrtStatus` becomes a Swift error: releases the status and throws ORT's message.
    func check(_ status: OpaquePointer?, _ operation: @autoclosure () -> String) throws(ORTError) {
        guard let status else { return }
        let code = Int(api.pointee.GetErrorCode!(status).rawValue)
        let message = api.pointee.GetErrorMessage!(status).map { String(cString: $0) } ?? "(no message)"
        api.pointee.ReleaseStatus!(status)
        throw ORTError(.runtime(code: code), operation: operation(), message: message)
    }
}
