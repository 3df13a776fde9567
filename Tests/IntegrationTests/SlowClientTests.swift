import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Clients that hold connections without finishing their requests (slow-loris), and more clients than the connection
/// limit, against the real binary: the server keeps answering, and cuts such connections off by itself.
@Suite("Slow clients and the connection limit (real binary)", .serialized)
struct SlowClientTests {
    @Test("1000 connections trickling request heads: /healthz answers meanwhile, and the server closes them all")
    func slowLoris() async throws {
        let server = try await ServerProcess(yaml: "server: { idle_timeout_s: 3, read_timeout_s: 3 }")
        defer { server.stop() }
        var connections: [RawConnection] = []
        defer { connections.forEach { $0.close() } }
        for _ in 0..<1000 {
            let connection = try RawConnection(port: server.port)
            try connection.send("GET /healthz HTTP/1.1\r\nHost: yoloswap\r\nX-Slow: ")
            connections.append(connection)
        }
        // All held, none finished: the service still answers others.
        for _ in 0..<3 {
            let (status, _) = try await server.request("GET", "/healthz")
            #expect(status == 200)
            for connection in connections { try? connection.send("a") }
        }
        // Trickling does not keep a connection: each is closed by the server, not by this test.
        var open = connections
        let deadline = Date().addingTimeInterval(60)
        while !open.isEmpty, Date() < deadline {
            for connection in open { try? connection.send("a") }
            open.removeAll { $0.isClosedByPeer() }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(open.isEmpty, "\(open.count) of 1000 trickling connections still open after 60 s")
        let (status, _) = try await server.request("GET", "/healthz")
        #expect(status == 200)
        #expect(server.process.isRunning)
    }

    @Test("a body trickling in: 408 once the request timeout passes, then the connection is closed")
    func slowBody() async throws {
        let server = try await ServerProcess(yaml: """
            anonymous_detect: true
            server: { read_timeout_s: 4 }
            hotswap: { request_timeout_ms: 1500 }
            """)
        defer { server.stop() }
        let connection = try RawConnection(port: server.port)
        defer { connection.close() }
        try connection.send("POST /v1/detect HTTP/1.1\r\nHost: yoloswap\r\nContent-Type: image/jpeg\r\n"
            + "Content-Length: 100000\r\n\r\n")
        var received = ""
        var closed = false
        let deadline = Date().addingTimeInterval(60)
        while !closed, Date() < deadline {
            try? connection.send(String(repeating: "x", count: 10))
            try await Task.sleep(for: .milliseconds(250))
            switch connection.receiveAvailable() {
            case .data(let text): received += text
            case .closed: closed = true
            case .nothing: break
            }
        }
        #expect(received.hasPrefix("HTTP/1.1 408"), "answer: \(received.prefix(200))")
        #expect(received.contains("request timeout of 1500 ms"))
        #expect(closed, "the connection stayed open while the body kept trickling")
        #expect(server.process.isRunning)
    }

    @Test("past max_connections, new connections wait until one closes; none is refused or lost")
    func connectionLimit() async throws {
        // Readiness is polled here on connections closed after each answer: URLSession would keep one open, and it
        // would count against the limit.
        let server = try await ServerProcess(yaml: "server: { max_connections: 10 }", waitReady: false)
        defer { server.stop() }
        var ready = false
        for _ in 0..<600 where !ready {
            let probe = try RawConnection(port: server.port)
            try probe.send("GET /readyz HTTP/1.1\r\nHost: yoloswap\r\nConnection: close\r\n\r\n")
            ready = try await probe.receiveResponse().hasPrefix("HTTP/1.1 200")
            probe.close()
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(ready, "the server never became ready")
        let request = "GET /healthz HTTP/1.1\r\nHost: yoloswap\r\n\r\n"
        var held: [RawConnection] = []
        defer { held.forEach { $0.close() } }
        for _ in 0..<10 {
            let connection = try RawConnection(port: server.port)
            try connection.send(request)
            #expect(try await connection.receiveResponse().hasPrefix("HTTP/1.1 200"))
            held.append(connection)  // kept alive: each still counts against the limit
        }
        var waiting: [RawConnection] = []
        defer { waiting.forEach { $0.close() } }
        for _ in 0..<5 {
            let connection = try RawConnection(port: server.port)
            try connection.send(request)
            waiting.append(connection)
        }
        // While the ten are open, the five are not served (without a limit they would be within milliseconds).
        try await Task.sleep(for: .milliseconds(1500))
        for connection in waiting {
            let received = connection.receiveAvailable()
            guard case .nothing = received else {
                Issue.record("a connection past the limit of 10 was served while 10 were open: \(received)")
                return
            }
        }
        // Five close: the five waiting are accepted and answered. (When a slot frees, the accept loop may take up
        // to a batch of waiting connections at once: the limit holds to within that batch, see README.)
        for connection in held.prefix(5) { connection.close() }
        held.removeFirst(5)
        for connection in waiting {
            #expect(try await connection.receiveResponse().hasPrefix("HTTP/1.1 200"))
        }
    }
}

/// A blocking TCP connection to the loopback interface, written byte by byte as a client would.
///
/// Thread-safety: none; each test uses its connections from its own task.
final class RawConnection {
    private var fd: Int32

    /// - Parameter receiveBuffer: the socket's receive buffer (`SO_RCVBUF`), set before connecting: a small one makes
    ///   a peer that writes more than it holds wait sooner.
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(fd)
            throw POSIXError(.init(rawValue: code) ?? .EIO)
        }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            sent += n
        }
    }

    func send(bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            sent += n
        }
    }

    /// What has arrived, without waiting: bytes, [] when nothing has, nil once the peer has closed.
    func receiveAvailableBytes() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 { return Array(buffer[..<n]) }
        if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { return nil }
        return []
    }

    enum Received { case data(String), closed, nothing }

    /// What has arrived, without waiting.
    func receiveAvailable() -> Received {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 { return .data(String(decoding: buffer[..<n], as: UTF8.self)) }
        if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { return .closed }
        return .nothing
    }

    /// The next bytes, waiting for them; empty once the peer has closed.
    func receiveBytes() -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(buffer[..<n]) : []
    }

    /// Whether the server has closed the connection (data it sent first is read and dropped).
    func isClosedByPeer() -> Bool {
        while true {
            switch receiveAvailable() {
            case .closed: return true
            case .nothing: return false
            case .data: continue
            }
        }
    }

    /// The next response's bytes once a whole head has arrived (within 60 s).
    func receiveResponse() async throws -> String {
        var text = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            switch receiveAvailable() {
            case .data(let more):
                text += more
                if text.contains("\r\n\r\n") { return text }
            case .closed: return text
            case .nothing: try await Task.sleep(for: .milliseconds(20))
            }
        }
        return text
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}

/// The gRPC endpoint's bounds, spoken to in raw HTTP/2 (frames written and read by hand): a client can leave a
/// request unfinished or a connection idle, or open many, which a gRPC library would not do.
@Suite("Slow clients and the connection limit on the gRPC endpoint (real binary)", .serialized)
struct GRPCSlowClientTests {
    @Test("past max_connections a gRPC connection is closed; a stalled request is reset after read_timeout_s; an idle connection gets GOAWAY and is closed, its PING unanswered")
    func limits() async throws {
        let scratch = try TemporaryDirectory()
        let portFile = scratch.url.appendingPathComponent("grpc.port")
        let server = try await ServerProcess(yaml: """
            server: { max_connections: 3, read_timeout_s: 2, idle_timeout_s: 10 }
            slots:
              default: { model: synthetic/yolov5-nc80-320-identity.onnx }
            grpc: { port: 0 }
            """, arguments: ["--grpc-port-file", portFile.path])
        defer { server.stop() }
        func port() -> Int? { (try? String(contentsOf: portFile, encoding: .utf8)).flatMap { Int($0.trimmed) } }
        #expect(await eventually(timeout: .seconds(30)) { port() != nil }, "no gRPC port: \(server.log.suffix(2000))")
        let grpcPort = try #require(port())

        // A ModelInfer whose message never arrives whole, on a new connection (its idle time has not run: a
        // connection idle for idle_timeout_s is told to go away, and takes no new stream): reset after read_timeout_s.
        let stalled = try HTTP2Peer(port: grpcPort)
        defer { stalled.connection.close() }
        #expect(try await stalled.next { $0.type == 4 } != nil, "no SETTINGS from the server")
        let started = ContinuousClock.now
        try stalled.connection.send(bytes: HTTP2Peer.frame(type: 1, flags: 0x4, stream: 1, payload: HTTP2Peer.headers([
            (":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
            (":authority", "127.0.0.1"), ("content-type", "application/grpc"), ("te", "trailers"),
        ])))
        // A message announced as 1 MiB, of which 100 bytes come.
        try stalled.connection.send(bytes: HTTP2Peer.frame(type: 0, flags: 0, stream: 1,
            payload: [0, 0, 0x10, 0, 0] + [UInt8](repeating: 7, count: 100)))
        let reset = try await stalled.next { $0.type == 3 && $0.stream == 1 }
        let waited = ContinuousClock.now - started
        #expect(reset != nil, "the stalled stream was not reset")
        #expect(waited >= .milliseconds(1900),
            "reset after \(waited), before read_timeout_s (error code \(reset?.payload ?? []))")

        // Two more connections make three, each past the HTTP/2 handshake (the server's SETTINGS read).
        var connections: [HTTP2Peer] = [stalled]
        for _ in 0..<2 {
            let peer = try HTTP2Peer(port: grpcPort)
            let settings = try await peer.next { $0.type == 4 }
            #expect(settings != nil, "no SETTINGS from the server")
            connections.append(peer)
        }
        defer { connections.dropFirst().forEach { $0.connection.close() } }
        // The fourth is closed by the server — unless one of the three was closed meanwhile, for its idle time (15 s
        // with the grace) passed on a machine that slow, which the check tells apart.
        let fourth = try HTTP2Peer(port: grpcPort)
        defer { fourth.connection.close() }
        let fourthServed = try await fourth.next { $0.type == 4 } != nil
        let stillOpen = connections.filter { !$0.hasClosed() }.count
        #expect(!fourthServed || stillOpen < 3, "a connection past max_connections was served")

        // An idle connection is told to go away, then closed.
        let idle = connections[1]
        #expect(try await idle.next { $0.type == 7 } != nil, "no GOAWAY on an idle connection")
        #expect(await idle.closed(), "the idle connection stayed open")
        // Connections that closed no longer count: once every one before is closed (each idle, told to go away in
        // turn; the fourth, when it was served because one had closed early on a slow machine, counted beside the
        // others until it was), a new one is served.
        for peer in connections + [fourth] where !peer.hasClosed() { _ = await peer.closed() }
        let later = try HTTP2Peer(port: grpcPort)
        defer { later.connection.close() }
        #expect(try await later.next { $0.type == 4 } != nil, "a connection after others closed was not served")
        #expect(server.process.isRunning)
    }
}

/// A raw HTTP/2 client: the connection preface and an empty SETTINGS sent at once, then frames as the test writes
/// them; frames read as they come.
final class HTTP2Peer {
    struct Frame { var type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8] }

    let connection: RawConnection
    private var pending: [UInt8] = []
    private var peerClosed = false

    init(port: Int) throws {
        connection = try RawConnection(port: port)
        try connection.send(bytes: Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + Self.frame(type: 4, flags: 0,
            stream: 0, payload: []))
    }

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        let n = UInt32(payload.count)
        var header: [UInt8] = []
        for shift in [16, 8, 0] as [UInt32] { header.append(UInt8(truncatingIfNeeded: n >> shift)) }
        header += [type, flags]
        for shift in [24, 16, 8, 0] as [UInt32] { header.append(UInt8(truncatingIfNeeded: stream >> shift)) }
        header[5] &= 0x7f
        return header + payload
    }

    /// An HPACK header block of literal fields without indexing, new names, no Huffman coding (names and values
    /// shorter than 127 bytes).
    static func headers(_ fields: [(String, String)]) -> [UInt8] {
        var block: [UInt8] = []
        for (name, value) in fields {
            block.append(0x00)
            block.append(UInt8(name.utf8.count))
            block.append(contentsOf: name.utf8)
            block.append(UInt8(value.utf8.count))
            block.append(contentsOf: value.utf8)
        }
        return block
    }

    /// The next frame that `matches` (others are read and dropped), or nil once the peer closed or 30 s passed.
    func next(_ matches: (Frame) -> Bool) async throws -> Frame? {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            while let frame = parse() {
                // The server's SETTINGS are acknowledged, as HTTP/2 requires.
                if frame.type == 4, frame.flags & 1 == 0 {
                    try? connection.send(bytes: Self.frame(type: 4, flags: 1, stream: 0, payload: []))
                }
                if matches(frame) { return frame }
            }
            if peerClosed { return nil }
            guard let more = connection.receiveAvailableBytes() else {
                peerClosed = true
                continue
            }
            if more.isEmpty { try await Task.sleep(for: .milliseconds(20)) } else { pending += more }
        }
        return nil
    }

    /// Whether the peer has closed the connection, without waiting (what arrived is kept for `next`).
    func hasClosed() -> Bool {
        while !peerClosed {
            guard let more = connection.receiveAvailableBytes() else {
                peerClosed = true
                break
            }
            if more.isEmpty { break }
            pending += more
        }
        return peerClosed
    }

    /// Whether the peer closes the connection within 30 s (frames meanwhile dropped).
    func closed() async -> Bool { ((try? await next { _ in false }) ?? nil) == nil && peerClosed }

    private func parse() -> Frame? {
        guard pending.count >= 9 else { return nil }
        let length = pending[0..<3].reduce(0) { $0 << 8 | Int($1) }
        guard pending.count >= 9 + length else { return nil }
        let stream = pending[5..<9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7fff_ffff
        let frame = Frame(type: pending[3], flags: pending[4], stream: stream, payload: Array(pending[9..<9 + length]))
        pending.removeFirst(9 + length)
        return frame
    }
}
