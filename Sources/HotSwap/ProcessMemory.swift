import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Memory figures of this process, for reporting what loading and releasing a model costs.
///
/// Reads `/proc/self/statm` and `/proc/self/status` (Linux); elsewhere the figures are `nil`.
/// Thread-safety: all members are thread-safe (each call reads the kernel's current figures).
public enum ProcessMemory {
    /// Resident set size of this process in bytes: resident pages from `/proc/self/statm` × the page size.
    ///
    /// - Returns: `nil` where `/proc` is unavailable or unreadable.
    public static func residentBytes() -> Int? {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        // Fields: size resident shared text lib data dt (pages).
        let fields = statm.split(separator: " ")
        guard fields.count >= 2, let residentPages = Int(fields[1]), let pageSize else { return nil }
        return residentPages * pageSize
    }

    /// Peak resident set size of this process in bytes (`VmHWM` from `/proc/self/status`).
    ///
    /// - Returns: `nil` where `/proc` is unavailable or has no `VmHWM` line.
    public static func peakResidentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            // "VmHWM:\t  123456 kB"
            let parts = line.dropFirst("VmHWM:".count).split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let value = parts.first.flatMap({ Int($0) }) else { return nil }
            let unit = parts.dropFirst().first.map(String.init) ?? "kB"
            return unit == "kB" ? value * 1024 : value
        }
        return nil
    }

    /// Returns freed heap memory to the OS where the allocator supports it (glibc `malloc_trim(0)`).
    ///
    /// Call it after releasing a model so that RSS measurements reflect what was really freed.
    /// - Returns: `true` if some memory was released to the OS; `false` if none was, or if unsupported.
    @discardableResult
    public static func trim() -> Bool {
        #if canImport(Glibc)
            return glibcMallocTrim(0) != 0
        #else
            return false
        #endif
    }

    /// Caps the number of glibc malloc arenas (`mallopt(M_ARENA_MAX, n)`). Call once at process start.
    ///
    /// glibc gives threads their own arenas; with worker, loader and releaser threads each allocating and freeing
    /// ORT sessions, freed memory stays scattered across arenas and RSS creeps up swap after swap (README, Performance:
    /// the hot-swap figures).
    /// - Returns: `true` if the allocator accepted the setting.
    @discardableResult
    public static func limitAllocatorArenas(_ count: Int) -> Bool {
        #if canImport(Glibc)
            return glibcMallopt(-8, Int32(count)) == 1  // M_ARENA_MAX
        #else
            return false
        #endif
    }

    private static var pageSize: Int? {
        #if canImport(Glibc)
            let size = sysconf(Int32(_SC_PAGESIZE))
            return size > 0 ? size : nil
        #else
            return nil
        #endif
    }
}

#if canImport(Glibc)
    /// glibc's `int malloc_trim(size_t pad)`. `<malloc.h>` is not part of Swift's Glibc module and HotSwap has no C
    /// shim, so the symbol is bound by name; the signature (one word-sized integer in, a 32-bit integer out) is
    /// passed the same way by the Swift and C calling conventions on x86_64 and arm64.
    @_silgen_name("malloc_trim")
    private func glibcMallocTrim(_ pad: Int) -> Int32

    /// glibc's `int mallopt(int param, int value)`, bound by name for the same reason.
    @_silgen_name("mallopt")
    private func glibcMallopt(_ param: Int32, _ value: Int32) -> Int32
#endif
