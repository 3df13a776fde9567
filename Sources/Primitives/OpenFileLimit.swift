#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's limit on open file descriptors (`RLIMIT_NOFILE`), which bounds how many connections a server can
/// hold: each is a descriptor, beside the files, sockets and pipes the process needs for itself.
public enum OpenFileLimit {
    /// The soft limit, raised towards `wanted` as far as the hard limit allows (an unprivileged process may raise its
    /// soft limit up to the hard one; systemd's default soft limit of 1024 would otherwise cap a server near 1000
    /// connections). Never lowers the limit.
    /// - Returns: the soft limit now in force, or nil when it cannot be read.
    @discardableResult
    public static func raise(toAtLeast wanted: Int) -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let target = min(rlim_t(max(wanted, 0)), limit.rlim_max)
        if target > limit.rlim_cur {
            var raised = limit
            raised.rlim_cur = target
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }
}
