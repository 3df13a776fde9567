import Foundation
import MQTT
import Primitives
import TestSupport
import Testing

/// The libmosquitto client against a real Mosquitto broker (TLS, password file) started by each test.
@Suite("MQTT client against a real Mosquitto broker", .serialized, .timeLimit(.minutes(3)))
struct MQTTClientTests {
    static func configuration(_ broker: MosquittoBroker, id: String, version: MQTTClientConfiguration.ProtocolVersion,
                              password: String = MosquittoBroker.password) -> MQTTClientConfiguration {
        var c = MQTTClientConfiguration(host: "127.0.0.1", port: broker.port, clientID: id)
        c.protocolVersion = version
        c.username = MosquittoBroker.username
        c.password = password
        c.tls = .init(caFile: broker.caFile)
        c.reconnectDelay = .milliseconds(100)
        c.reconnectDelayMax = .milliseconds(500)
        c.maxPayloadBytes = 64 << 10
        return c
    }

    /// Waits for the first event that `matches`, at most `timeout`.
    static func next(_ events: inout AsyncStream<MQTTConnectionEvent>.Iterator, timeout: Duration = .seconds(30),
                     where matches: (MQTTConnectionEvent) -> Bool) async -> MQTTConnectionEvent? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let event = await events.next() else { return nil }
            if matches(event) { return event }
        }
        return nil
    }

    static var hardOpenFileLimit: rlim_t {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return limit.rlim_max
    }

    static func connected(_ event: MQTTConnectionEvent) -> Bool {
        if case .connected = event { true } else { false }
    }

    @Test("TLS + password: publish with QoS 1 returns on PUBACK and the subscriber receives it", arguments: [
        MQTTClientConfiguration.ProtocolVersion.v311, .v5,
    ])
    func publishSubscribe(version: MQTTClientConfiguration.ProtocolVersion) async throws {
        try await exchange(version)
    }

    /// A subscriber and a publisher connect; one retained QoS 1 message goes from one to the other; `whileConnected`
    /// runs before they stop.
    func exchange(_ version: MQTTClientConfiguration.ProtocolVersion, whileConnected: () throws -> Void = {})
        async throws
    {
        let broker = try MosquittoBroker()
        let subscriber = try MQTTClient(configuration: Self.configuration(broker, id: "sub", version: version))
        let publisher = try MQTTClient(configuration: Self.configuration(broker, id: "pub", version: version))
        subscriber.subscribe("test/+/data")
        var events = subscriber.events.makeAsyncIterator()
        subscriber.start()
        publisher.start()
        #expect(await Self.next(&events, where: Self.connected) != nil, "\(broker.log)")
        // The SUBACK may trail the CONNACK: publish until the subscriber has the message.
        var messages = subscriber.messages.makeAsyncIterator()
        let payload = Array("hello \(version.rawValue)".utf8)
        try await publisher.publish("test/a/data", payload: payload, qos: .atLeastOnce, retain: true)
        let received = await messages.next()
        #expect(received?.topic == "test/a/data")
        #expect(received?.payload == payload)
        #expect(received?.qos == .atLeastOnce)
        try whileConnected()
        await publisher.stop()
        await subscriber.stop()
        #expect(!subscriber.isConnected)
    }

    /// libmosquitto reports an MQTT 5 PUBACK carrying a failure code as published: the client must tell, or a device
    /// would say "published" for what the broker dropped. (Under 3.1.1 mosquitto acknowledges and drops: nothing a
    /// client can see.)
    @Test("an MQTT 5 publication the broker does not authorize fails the publish, with the reason code")
    func brokerRefusesPublication() async throws {
        let broker = try MosquittoBroker(acl: "user \(MosquittoBroker.username)\ntopic readwrite open/#\n")
        let client = try MQTTClient(configuration: Self.configuration(broker, id: "acl", version: .v5))
        var events = client.events.makeAsyncIterator()
        client.start()
        #expect(await Self.next(&events, where: Self.connected) != nil, "\(broker.log)")
        try await client.publish("open/a", payload: [1], qos: .atLeastOnce, retain: false)
        let error = await #expect(throws: MQTTError.self) {
            try await client.publish("closed/a", payload: [1], qos: .atLeastOnce, retain: false)
        }
        #expect(error?.kind == .refused(reasonCode: 0x87), "\(String(describing: error))\n\(broker.log)")
        await client.stop()
    }

    @Test("a wrong password is refused by the broker, reported, and retried without connecting")
    func wrongPassword() async throws {
        let broker = try MosquittoBroker()
        let client = try MQTTClient(configuration: Self.configuration(broker, id: "bad", version: .v311,
            password: "wrong"))
        var events = client.events.makeAsyncIterator()
        client.start()
        let failures = [await Self.next(&events) { if case .connectFailed = $0 { true } else { false } },
                        await Self.next(&events) { if case .connectFailed = $0 { true } else { false } }]
        for case .connectFailed(let reason)? in failures { #expect(reason.contains("refused"), "\(reason)") }
        #expect(failures.allSatisfy { $0 != nil })
        #expect(!client.isConnected)
        await client.stop()
    }

    /// A service with thousands of connections gives the client's socket a number past select(2)'s FD_SETSIZE (1024),
    /// where libmosquitto's own `mosquitto_loop` fails every turn: the client never came up, and said nothing.
    @Test("descriptors numbered past 1024: the client connects, publishes and receives",
          .enabled(if: hardOpenFileLimit >= 1200, "the hard open-file limit is too low for this test"))
    func highDescriptors() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let raised = rlimit(rlim_cur: max(limit.rlim_cur, min(limit.rlim_max, 4096)), rlim_max: limit.rlim_max)
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), [raised])
        defer { setrlimit(Int32(RLIMIT_NOFILE.rawValue), [limit]) }
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        // Every number up to 1100 taken: the clients' sockets get higher ones (the lowest free number is used).
        repeat {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            try #require(fd >= 0, "open: \(errno) (limit \(raised.rlim_cur))")
            held.append(fd)
        } while held[held.count - 1] < 1100
        try await exchange(.v311) {
            // The clients' sockets are numbered past the descriptors held (another test freeing low numbers
            // meanwhile would leave this test testing nothing).
            let sockets = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap(Int32.init)
                .filter { $0 > 1100 && (try? FileManager.default.destinationOfSymbolicLink(
                    atPath: "/proc/self/fd/\($0)"))?.hasPrefix("socket:") == true }
            #expect(sockets.count >= 2, "\(sockets)")
        }
    }

    /// The client freed its libmosquitto handle twice when its configuration was refused (a CA file that does not
    /// exist): glibc does not always notice, AddressSanitizer does (`make test-asan` runs this suite).
    /// A broker that is away can hold `mosquitto_connect` for minutes (a host that drops the handshake: about two
    /// minutes of SYN retries); a service's shutdown waited for it.
    @Test("a stop while the connect blocks (the handshake dropped by a full listen queue) returns without waiting for it")
    func stopDuringBlockingConnect() async throws {
        // A listening socket with a backlog of 0, its queue filled by connections nobody accepts: further SYNs are
        // dropped, and a connect blocks on its retries.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0
                && listen(listener, 0) == 0 && getsockname(listener, $0, &length) == 0 }
        }
        try #require(bound)
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<4 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) }
            }
            fillers.append(filler)
        }
        // Another handshake to it is still unanswered after a second: the listener drops it, as it will the client's.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        defer { close(probe) }
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, length) }
        }
        var writable = pollfd(fd: probe, events: Int16(POLLOUT), revents: 0)
        try #require(poll(&writable, 1, 1000) == 0, "the test's listener did not drop the handshake")
        var configuration = MQTTClientConfiguration(host: "127.0.0.1", port: Int(UInt16(bigEndian: address.sin_port)),
            clientID: "blocked")
        configuration.reconnectDelay = .milliseconds(100)
        let client = try MQTTClient(configuration: configuration)
        client.start()
        try await Task.sleep(for: .seconds(1))
        let asked = ContinuousClock.now
        await client.stop()
        #expect(ContinuousClock.now - asked < .seconds(20), "the stop waited for the blocked connect")
        // Ended for its users too: a fleet agent reading its messages is not held until the connect returns.
        var messages = client.messages.makeAsyncIterator()
        #expect(await messages.next() == nil)
        #expect(ContinuousClock.now - asked < .seconds(20), "the messages went on until the connect returned")
    }

    @Test("a client never started ends its streams when stopped; started after a stop, a second stop does not wait forever")
    func stopWithoutStart() async throws {
        let client = try MQTTClient(configuration: MQTTClientConfiguration(host: "127.0.0.1", port: 1,
            clientID: "never-started"))
        await client.stop()
        var messages = client.messages.makeAsyncIterator()
        #expect(await messages.next() == nil)
        var events = client.events.makeAsyncIterator()
        #expect(await events.next() == nil)
        client.start()  // after the stop: no thread
        // Answered at once (it used to wait for a thread that was never started, for ever).
        let returned = Locked(false)
        Task { await client.stop(); returned.withLock { $0 = true } }
        #expect(await eventually(timeout: .seconds(10)) { returned.value }, "the second stop did not return")
    }

    @Test("a refused TLS configuration throws, and frees the client once")
    func refusedConfiguration() throws {
        var c = MQTTClientConfiguration(host: "127.0.0.1", port: 1, clientID: "tls")
        c.tls = .init(caFile: "/nonexistent/ca.pem")
        for _ in 0..<3 {
            #expect(throws: MQTTError.self) { _ = try MQTTClient(configuration: c) }
        }
    }

    @Test("persistent session: QoS 1 messages published while the client is away are delivered when it returns",
          arguments: [MQTTClientConfiguration.ProtocolVersion.v311, .v5])
    func persistentSession(version: MQTTClientConfiguration.ProtocolVersion) async throws {
        let broker = try MosquittoBroker()
        let first = try MQTTClient(configuration: Self.configuration(broker, id: "device-1", version: version))
        first.subscribe("device-1/command")
        var firstEvents = first.events.makeAsyncIterator()
        first.start()
        #expect(await Self.next(&firstEvents, where: Self.connected) == .connected(sessionPresent: false))
        // Make sure the subscription is in place before leaving: a message to it comes back.
        var firstMessages = first.messages.makeAsyncIterator()
        try await first.publish("device-1/command", payload: Array("probe".utf8))
        #expect(await firstMessages.next()?.payload == Array("probe".utf8))
        await first.stop()

        let operatorClient = try MQTTClient(configuration: Self.configuration(broker, id: "operator", version: version))
        operatorClient.start()
        try await operatorClient.publish("device-1/command", payload: Array("while away".utf8))
        await operatorClient.stop()

        let again = try MQTTClient(configuration: Self.configuration(broker, id: "device-1", version: version))
        var events = again.events.makeAsyncIterator()
        var messages = again.messages.makeAsyncIterator()
        again.start()
        #expect(await Self.next(&events, where: Self.connected) == .connected(sessionPresent: true))
        #expect(await messages.next()?.payload == Array("while away".utf8))
        await again.stop()
    }

    @Test("broker restart: the client reconnects, re-subscribes; publications made meanwhile arrive, a cancelled one too")
    func brokerRestart() async throws {
        let broker = try MosquittoBroker()
        let client = try MQTTClient(configuration: Self.configuration(broker, id: "survivor", version: .v311))
        client.subscribe("restart/topic")
        var events = client.events.makeAsyncIterator()
        var messages = client.messages.makeAsyncIterator()
        client.start()
        #expect(await Self.next(&events, where: Self.connected) != nil)
        try await client.publish("restart/topic", payload: Array("before".utf8))
        #expect(await messages.next()?.payload == Array("before".utf8))

        broker.stop()
        #expect(await Self.next(&events) { if case .disconnected = $0 { true } else { false } } != nil)
        // Published while the broker is down: kept in the client, sent once the client is back, in order — also one
        // whose caller stopped waiting.
        let impatient = Task { try await client.publish("restart/topic", payload: Array("given up on".utf8)) }
        try await Task.sleep(for: .milliseconds(200))
        impatient.cancel()
        await #expect(throws: CancellationError.self) { try await impatient.value }
        async let during: Void = client.publish("restart/topic", payload: Array("during".utf8))
        try broker.start()
        #expect(await Self.next(&events, where: Self.connected) != nil, "\(broker.log)")
        try await during
        // QoS 1 is at least once: the broker may deliver "before" again after its restart (it restores in-flight
        // messages from its persistence file), but nothing else comes before the two.
        var received = await messages.next()
        while received?.payload == Array("before".utf8) { received = await messages.next() }
        #expect(received?.payload == Array("given up on".utf8))
        #expect(await messages.next()?.payload == Array("during".utf8))
        await client.stop()
    }

    @Test("publications made while connecting wait for the CONNACK: no protocol error, one connection a broker start",
          arguments: [MQTTClientConfiguration.ProtocolVersion.v311, .v5])
    func publishingWhileConnecting(version: MQTTClientConfiguration.ProtocolVersion) async throws {
        let broker = try MosquittoBroker()
        let client = try MQTTClient(configuration: Self.configuration(broker, id: "busy", version: version))
        var events = client.events.makeAsyncIterator()
        // As a device's streams and status do: publications all the time, before, during and after each connection.
        // The QoS 0 one publishes every 200 µs, so some of its calls fall into each TLS handshake.
        let publishers = (0..<4).map { n in
            Task {
                var accepted = 0
                while !Task.isCancelled {
                    let qos: MQTTQoS = n == 0 ? .atMostOnce : .atLeastOnce
                    if (try? await client.publish("busy/\(n)", payload: [UInt8](repeating: 7, count: 200), qos: qos))
                        != nil { accepted += 1 }
                    if n == 0 { try? await Task.sleep(for: .microseconds(200)) }
                }
                return accepted
            }
        }
        client.start()
        #expect(await Self.next(&events, timeout: .seconds(20), where: Self.connected) != nil, "\(broker.log)")
        try await Task.sleep(for: .milliseconds(300))
        broker.stop()
        try broker.start()
        #expect(await Self.next(&events, timeout: .seconds(20), where: Self.connected) != nil, "\(broker.log)")
        try await Task.sleep(for: .milliseconds(300))
        for publisher in publishers { publisher.cancel() }
        await client.stop()
        var accepted: [Int] = []
        for publisher in publishers { accepted.append(await publisher.value) }
        let log = broker.log.split(separator: "\n")
        // A PUBLISH ahead of the CONNECT: "Client <unknown> disconnected due to protocol error.", and another attempt.
        #expect(log.filter { $0.contains("protocol error") }.isEmpty, "\(broker.log)")
        #expect(log.count { $0.contains("New client connected") && $0.contains(" as busy ") } == 2, "\(broker.log)")
        #expect(accepted.allSatisfy { $0 > 0 }, "\(accepted)")
    }

    @Test("payload bounds: too large to publish is refused; too large a message received is dropped and reported")
    func payloadBounds() async throws {
        let broker = try MosquittoBroker()
        var small = Self.configuration(broker, id: "small", version: .v311)
        small.maxPayloadBytes = 1024
        let client = try MQTTClient(configuration: small)
        client.subscribe("big/#")
        var events = client.events.makeAsyncIterator()
        var messages = client.messages.makeAsyncIterator()
        client.start()
        #expect(await Self.next(&events, where: Self.connected) != nil)
        await #expect(throws: MQTTError.self) {
            try await client.publish("big/out", payload: [UInt8](repeating: 1, count: 1025))
        }
        let other = try MQTTClient(configuration: Self.configuration(broker, id: "other", version: .v311))
        other.start()
        try await other.publish("big/in", payload: [UInt8](repeating: 2, count: 4096))
        try await other.publish("big/in", payload: [UInt8](repeating: 3, count: 16))
        let dropped = await Self.next(&events) { if case .messageDropped = $0 { true } else { false } }
        #expect(dropped == .messageDropped(topic: "big/in", reason: "4096 bytes; at most 1024 are accepted"))
        #expect(await messages.next()?.payload == [UInt8](repeating: 3, count: 16))
        #expect(client.droppedMessageCount == 1)
        await other.stop()
        await client.stop()
    }
}
