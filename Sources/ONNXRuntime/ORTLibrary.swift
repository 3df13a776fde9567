internal import CONNXRuntime
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The ONNX Runtime shared library, loaded at run time with `dlopen`, and its C API table.
///
/// The package builds without the library (only ORT's header is needed), and one binary works with any ORT whose
/// C API version is at least the header's `ORT_API_VERSION`. Lookup order (first that loads wins):
/// 1. an explicit path (`--ort-library`),
/// 2. `ORT_DYLIB_PATH`,
/// 3. `libonnxruntime.so*` beside the executable,
/// 4. the repository's `.ort/lib` (found by walking up from the executable and the working directory),
/// 5. the system's `libonnxruntime.so.1` (the dynamic loader's search path).
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

    private init(handle: UnsafeMutableRawPointer, api: UnsafePointer<OrtApi>, path: String, version: String) {
        self.handle = handle
        self.api = api
        self.path = path
        self.version = version
    }

    private static let cache = Mutex<[String: ORTLibrary]>([:])

    /// Loads the library (once per resolved path per process) following the lookup order above.
    /// - Parameter explicitPath: a path given by the user; when set, only it and the later fallbacks are tried.
    /// - Throws: `ORTError` `.libraryNotFound` naming every path tried, or `.apiVersionUnsupported`.
    public static func load(explicitPath: String? = nil) throws -> ORTLibrary {
        let candidates = candidatePaths(explicitPath: explicitPath)
        var tried: [String] = []
        for candidate in candidates {
            if let loaded = cache.withLock({ $0[candidate] }) { return loaded }
            guard let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) else {
                let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
                tried.append("\(candidate): \(reason)")
                continue
            }
            guard let symbol = dlsym(handle, "OrtGetApiBase") else {
                tried.append("\(candidate): no OrtGetApiBase symbol")
                continue
            }
            typealias GetApiBase = @convention(c) () -> UnsafePointer<OrtApiBase>?
            let getApiBase = unsafeBitCast(symbol, to: GetApiBase.self)
            guard let base = getApiBase() else {
                tried.append("\(candidate): OrtGetApiBase returned NULL")
                continue
            }
            let version = base.pointee.GetVersionString.flatMap { $0() }.map { String(cString: $0) } ?? "unknown"
            guard let api = base.pointee.GetApi?(UInt32(ORT_API_VERSION)) else {
                throw ORTError(
                    .apiVersionUnsupported(required: Int(ORT_API_VERSION), libraryVersion: version),
                    operation: "loading \(candidate)", message: "GetApi(\(ORT_API_VERSION)) returned NULL")
            }
            let library = ORTLibrary(handle: handle, api: api, path: candidate, version: version)
            cache.withLock { $0[candidate] = library }
            return library
        }
        throw ORTError(.libraryNotFound(tried: tried), operation: "loading ONNX Runtime", message: "")
    }

    /// The paths `load(explicitPath:)` tries, in order.
    public static func candidatePaths(explicitPath: String?) -> [String] {
        var paths: [String] = []
        if let explicitPath, !explicitPath.isEmpty { paths.append(explicitPath) }
        if let env = ProcessInfo.processInfo.environment["ORT_DYLIB_PATH"], !env.isEmpty { paths.append(env) }
        let executableDir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
            .deletingLastPathComponent()
        paths.append(executableDir.appendingPathComponent("libonnxruntime.so.1").path)
        var seen = Set<String>()
        for start in [executableDir, URL(fileURLWithPath: FileManager.default.currentDirectoryPath)] {
            var dir = start
            for _ in 0..<8 {
                let lib = dir.appendingPathComponent(".ort/lib/libonnxruntime.so.1").path
                if FileManager.default.fileExists(atPath: lib), seen.insert(lib).inserted {
                    paths.append(lib)
                    break
                }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        paths.append("libonnxruntime.so.1")
        return paths
    }

    /// Execution providers compiled into this library, e.g. `["CPUExecutionProvider"]`.
    public func availableProviders() throws -> [String] {
        var list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        var count: Int32 = 0
        try check(api.pointee.GetAvailableProviders!(&list, &count), "listing execution providers")
        defer { _ = api.pointee.ReleaseAvailableProviders!(list, count) }
        return (0..<Int(count)).compactMap { i in list?[i].map { String(cString: $0) } }
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
