import Foundation
import Primitives

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A plain TCP client for a streaming HTTP response (`GET /v1/events/stream`): sends one request and keeps what
/// arrives as text, so a test can wait for a given message while the response is still open. URLSession collects a
/// body whole, which a stream never ends.
///
/// Reads block on a thread of the client's own queue (with a short receive timeout), never on the cooperative pool.
///
/// Thread-safety: the received text is behind a lock; `read(until:)` calls must not overlap.
public final class EventStreamClient: Sendable {
    private let fd: Int32
    private let queue = BlockingQueue(label: "yoloswap.test.event-stream")
    private let state = Locked((text: "", closed: false))

    /// Connects to 127.0.0.1:`port` and sends `GET path`.
    /// - Parameter receiveBuffer: a small `SO_RCVBUF` makes a client that does not read fill up fast (slow-client
    ///   tests).
    public init(port: Int, path: String, headers: [String: String] = [:], receiveBuffer: Int32? = nil) throws {
        // 127.0.0.1, else ::1 (a server bound to "localhost" may have taken either).
        var connectedFD: Int32 = -1
        for family in [AF_INET, AF_INET6] where connectedFD < 0 {
            connectedFD = Self.connect(family: family, port: port, receiveBuffer: receiveBuffer)
        }
        guard connectedFD >= 0 else { throw POSIXError(.ECONNREFUSED) }
        fd = connectedFD
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else {
            close(fd)
            throw POSIXError(.EIO)
        }
    }

    deinit { close(fd) }

    /// A connected socket to the loopback address of `family`, or -1.
    private static func connect(family: Int32, port: Int, receiveBuffer: Int32?) -> Int32 {
        #if canImport(Glibc)
            let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        #else
            let fd = socket(family, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return -1 }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result: Int32
        if family == AF_INET {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        } else {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            address.sin6_addr = in6addr_loopback
            result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        guard result == 0 else {
            close(fd)
            return -1
        }
        return fd
    }

    /// Everything received so far (status line, headers, chunked body as sent).
    public var text: String { state.withLock { $0.text } }
    /// Whether the server has closed the connection or ended the response.
    public var closed: Bool { state.withLock { $0.closed } }

    /// Reads until `condition` holds for the text received so far, the connection closes, or `timeout` passes.
    /// - Returns: whether the condition held.
    @discardableResult
    public func read(until condition: @escaping @Sendable (String) -> Bool, timeout: Duration = .seconds(30))
        async -> Bool
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(text) { return true }
            if closed { return false }
            let fd = self.fd
            let chunk = await queue.run { () -> [UInt8]? in
                var buffer = [UInt8](repeating: 0, count: 65536)
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 { return Array(buffer[0..<n]) }
                if n == 0 { return nil }
                return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? [] : nil
            }
            state.withLock { s in
                guard let chunk else {
                    s.closed = true
                    return
                }
                s.text += String(decoding: chunk, as: UTF8.self)
                // The last chunk of a chunked body: the response has ended.
                if s.text.hasSuffix("\r\n0\r\n\r\n") { s.closed = true }
            }
        }
        return condition(text)
    }

    /// The server-sent messages received so far, in order: `(event, id, data)` (chunk-size lines removed).
    public var messages: [(event: String, id: String?, data: String)] {
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        var lines: [String] = []
        // Chunked encoding: a size line, then the chunk (here always whole messages, one or more per chunk).
        for part in body.components(separatedBy: "\r\n") where !part.isEmpty {
            if part.allSatisfy(\.isHexDigit) { continue }
            lines.append(part)
        }
        var messages: [(String, String?, String)] = []
        for block in lines.joined().components(separatedBy: "\n\n") {
            var event: String?
            var id: String?
            var data: [String] = []
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
                if line.hasPrefix("data: ") { data.append(String(line.dropFirst(6))) }
            }
            if let event { messages.append((event, id, data.joined(separator: "\n"))) }
        }
        return messages
    }
}
