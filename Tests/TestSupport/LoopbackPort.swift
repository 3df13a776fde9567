import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Loopback ports for servers the tests start on a port they choose (Mosquitto, Prometheus).
public enum LoopbackPort {
    /// A port on 127.0.0.1 that nothing listens on now, chosen below the kernel's ephemeral range
    /// (`ip_local_port_range`). A port the system picked for `bind(0)` is an ephemeral one: between the check and the
    /// server's own bind — or while a broker restarts on it — any outgoing connection of the (busy) test process can be
    /// given it as its source port. Below the range only another test choosing the same port at random can collide.
    public static func free() throws -> Int {
        let low = ephemeralRangeStart() ?? 32768
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let port = Int.random(in: 10_000..<max(10_001, low), using: &generator)
            if try canBind(port) { return port }
        }
        throw PortError("no free loopback port in 10000..<\(low) after 200 tries")
    }

    public struct PortError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Whether something accepts TCP connections on the loopback port.
    public static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    private static func ephemeralRangeStart() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        else { return nil }
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) }
    }

    /// Whether a listening socket could bind `port` on 127.0.0.1 now.
    private static func canBind(_ port: Int) throws -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw PortError("socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return bound == 0
    }
}
