internal import CMosquitto
import Dispatch
import Foundation
import Primitives

/// Owns one libmosquitto client handle, runs its network loop on a thread of its own, and receives its callbacks.
///
/// libmosquitto's own `mosquitto_loop_start` thread gives up for good after some errors (a TLS failure, a protocol
/// error), which a device that must ride out broker restarts cannot afford; so the thread here runs `mosquitto_loop`
/// itself and reconnects after every failure, with backoff. `mosquitto_threaded_set(true)` tells libmosquitto that
/// other threads call it meanwhile: it then guards its state with its own mutexes, and a publication from another
/// thread is queued and the loop woken instead of being written from the caller's thread.
///
/// Callbacks run on the network thread, with `self` as libmosquitto's user data: the thread's closure holds `self`
/// for as long as it runs, and no callback is made outside the thread's calls into libmosquitto.
///
/// Thread-safety: all members may be used from any thread (see above for `handle`; the rest is in `state`, a lock,
/// or immutable).
final class MosquittoConnection: @unchecked Sendable {
    // @unchecked: `handle` is used as libmosquitto documents for threaded use (see above); everything mutable is in
    // `state`.
    let handle: OpaquePointer
    let configuration: MQTTClientConfiguration
    let state = Locked(State())
    private let messages: AsyncStream<MQTTMessage>.Continuation
    private let events: AsyncStream<MQTTConnectionEvent>.Continuation
    /// Signalled to cut a backoff wait short when stopping.
    private let wake = DispatchSemaphore(value: 0)

    struct State {
        var started = false
        var connected = false
        var stopping = false
        var finished = false
        /// Set by a successful CONNACK: the next backoff starts from the first delay again.
        var resetBackoff = false
        var subscriptions: [String: MQTTQoS] = [:]
        var publications: [Int32: Publication] = [:]
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
        var droppedMessages = 0
    }

    /// A QoS 1/2 publication by message id: its `publish` call waiting, or its acknowledgement having come first.
    enum Publication {
        case waiting(CheckedContinuation<Void, any Error>)
        case acknowledged
    }

    /// `mosquitto_lib_init`, once per process.
    private static let libraryInitialized: Bool = {
        _ = mosquitto_lib_init()
        return true
    }()

    init(configuration: MQTTClientConfiguration, messages: AsyncStream<MQTTMessage>.Continuation,
         events: AsyncStream<MQTTConnectionEvent>.Continuation) throws(MQTTError) {
        _ = Self.libraryInitialized
        guard let handle = mosquitto_new(configuration.clientID, configuration.cleanSession, nil) else {
            throw MQTTError(.library(code: Int32(MOSQ_ERR_INVAL.rawValue)), operation: "create a client",
                reason: "mosquitto_new failed (an empty client id with a persistent session, or out of memory)")
        }
        self.handle = handle
        self.configuration = configuration
        self.messages = messages
        self.events = events
        do throws(MQTTError) { try configure() } catch {
            mosquitto_destroy(handle)
            throw error
        }
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_with_flags_callback_set(handle, onConnect)
        mosquitto_disconnect_callback_set(handle, onDisconnect)
        mosquitto_publish_callback_set(handle, onPublish)
        mosquitto_message_callback_set(handle, onMessage)
    }

    deinit { mosquitto_destroy(handle) }

    private func configure() throws(MQTTError) {
        let c = configuration
        try MQTTError.check(mosquitto_threaded_set(handle, true), "declare the client threaded")
        let version = c.protocolVersion == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311
        try MQTTError.check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, Int32(version)),
            "select MQTT \(c.protocolVersion.rawValue)")
        if c.username != nil || c.password != nil {
            try MQTTError.check(mosquitto_username_pw_set(handle, c.username ?? "", c.password),
                "set the user name and password")
        }
        if let tls = c.tls {
            try MQTTError.check(mosquitto_tls_set(handle, tls.caFile, nil, tls.certificateFile, tls.keyFile, nil),
                "set the TLS files (CA \(tls.caFile))")
        }
        if let will = c.will {
            let rc = will.payload.withUnsafeBytes {
                mosquitto_will_set(handle, will.topic, Int32(will.payload.count), $0.baseAddress, will.qos.rawValue,
                    will.retain)
            }
            try MQTTError.check(rc, "set the last will on \(will.topic)")
        }
    }

    // MARK: Starting and stopping

    func start() {
        let first = state.withLock { s in
            defer { s.started = true }
            return !s.started && !s.stopping
        }
        guard first else { return }
        let thread = Thread { [self] in runLoop() }
        thread.name = "mqtt \(configuration.clientID)"
        thread.start()
    }

    /// Asks the network thread to disconnect and end, without waiting.
    func requestStop() {
        let running = state.withLock { s in
            s.stopping = true
            return s.started && !s.finished
        }
        guard running else { return }
        _ = mosquitto_disconnect(handle)
        wake.signal()
    }

    func stop() async {
        requestStop()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s in
                if s.finished || !s.started { return true }
                s.stopWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: The network thread

    private func runLoop() {
        var delay = configuration.reconnectDelay
        var needsConnect = true
        var flushDeadline: ContinuousClock.Instant?
        while true {
            let stopping = state.withLock { s in
                if s.resetBackoff {
                    s.resetBackoff = false
                    delay = configuration.reconnectDelay
                }
                return s.stopping
            }
            if stopping {
                // Not connected: nothing to flush. Connected: the DISCONNECT queued by `requestStop` goes out within
                // the next loop turns; a second at most.
                if needsConnect { break }
                if let deadline = flushDeadline, ContinuousClock.now >= deadline { break }
                if flushDeadline == nil { flushDeadline = ContinuousClock.now + .seconds(1) }
            }
            if needsConnect {
                // Every attempt is a full connect, the MQTT 5 properties given again, rather than
                // `mosquitto_reconnect` with what libmosquitto kept: in a CI run under load, after a first MQTT 5
                // attempt failed in the TLS handshake, the broker refused every later CONNECT as a protocol error.
                let rc = connect()
                guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) else {
                    events.yield(.connectFailed(reason: MQTTError.message(rc)))
                    backoff(&delay)
                    continue
                }
                needsConnect = false
            }
            let rc = mosquitto_loop(handle, 250, 1)
            guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) else {
                needsConnect = true
                let (wasConnected, stoppingNow) = state.withLock { s in
                    defer { s.connected = false }
                    return (s.connected, s.stopping)
                }
                if stoppingNow { break }
                if wasConnected { events.yield(.disconnected(reason: MQTTError.message(rc))) }
                backoff(&delay)
                continue
            }
        }
        finish()
    }

    /// One connection attempt: the broker's address and, with MQTT 5, the CONNECT properties (session expiry, the
    /// largest packet this client takes).
    private func connect() -> Int32 {
        let c = configuration
        let keepAlive = Int32(clamping: c.keepAliveSeconds)
        guard c.protocolVersion == .v5 else {
            return mosquitto_connect(handle, c.host, Int32(clamping: c.port), keepAlive)
        }
        var properties: OpaquePointer?
        defer { mosquitto_property_free_all(&properties) }
        if !c.cleanSession {
            _ = mosquitto_property_add_int32(&properties, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue),
                c.sessionExpirySeconds)
        }
        // Room for the fixed header, the topic and the properties beside the payload.
        let packetLimit = UInt32(clamping: c.maxPayloadBytes) &+ 64 * 1024
        _ = mosquitto_property_add_int32(&properties, Int32(MQTT_PROP_MAXIMUM_PACKET_SIZE.rawValue),
            max(packetLimit, UInt32(c.maxPayloadBytes)))
        return mosquitto_connect_bind_v5(handle, c.host, Int32(clamping: c.port), keepAlive, nil, properties)
    }

    /// Waits `delay` (cut short by `requestStop`), then doubles it up to the configured maximum.
    private func backoff(_ delay: inout Duration) {
        let nanoseconds = delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
        _ = wake.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds)))
        delay = min(delay * 2, configuration.reconnectDelayMax)
    }

    private func finish() {
        let (waiters, publications) = state.withLock { s in
            s.finished = true
            s.connected = false
            defer {
                s.stopWaiters = []
                s.publications = [:]
            }
            return (s.stopWaiters, s.publications)
        }
        for case .waiting(let continuation) in publications.values {
            continuation.resume(throwing: MQTTError(.stopped, operation: "publish", reason: "the client stopped "
                + "before the broker acknowledged the message"))
        }
        messages.finish()
        events.finish()
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Subscribing and publishing (any thread)

    func subscribe(_ filter: String, qos: MQTTQoS) {
        let connected = state.withLock { s in
            s.subscriptions[filter] = qos
            return s.connected
        }
        if connected { _ = mosquitto_subscribe(handle, nil, filter, qos.rawValue) }
    }

    func publish(_ topic: String, payload: [UInt8], qos: MQTTQoS, retain: Bool) async throws {
        let operation = "publish to \(topic)"
        guard payload.count <= configuration.maxPayloadBytes else {
            throw MQTTError(.payloadTooLarge, operation: operation, reason: "the payload has \(payload.count) bytes; "
                + "at most \(configuration.maxPayloadBytes) are sent")
        }
        let (stopped, pending) = state.withLock { s in
            (s.finished || s.stopping, s.publications.values.count { if case .waiting = $0 { true } else { false } })
        }
        if stopped { throw MQTTError(.stopped, operation: operation, reason: "the client is stopping") }
        if qos != .atMostOnce && pending >= configuration.maxPendingPublications {
            throw MQTTError(.tooManyInFlight, operation: operation, reason: "\(pending) publications await their "
                + "acknowledgement already")
        }
        var messageID: Int32 = 0
        let rc = payload.withUnsafeBytes {
            mosquitto_publish(handle, &messageID, topic, Int32(payload.count), $0.baseAddress, qos.rawValue, retain)
        }
        // Disconnected, libmosquitto keeps a QoS 1/2 message in the session (numbered) and sends it on reconnection,
        // but still reports MOSQ_ERR_NO_CONN: that message is on its way, so wait for its acknowledgement.
        let queuedWhileAway = rc == Int32(MOSQ_ERR_NO_CONN.rawValue) && qos != .atMostOnce && messageID != 0
        if !queuedWhileAway { try MQTTError.check(rc, operation) }
        let mid = messageID
        if qos == .atMostOnce {
            state.withLock { _ = $0.publications.removeValue(forKey: mid) }
            return
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let acknowledged = state.withLock { s in
                    if case .acknowledged = s.publications[mid] {
                        s.publications[mid] = nil
                        return true
                    }
                    s.publications[mid] = .waiting(continuation)
                    return false
                }
                if acknowledged { continuation.resume() }
            }
        } onCancel: {
            let waiting = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard case .waiting(let continuation) = s.publications[mid] else { return nil }
                s.publications[mid] = nil
                return continuation
            }
            waiting?.resume(throwing: CancellationError())
        }
    }

    // MARK: Callbacks (the network thread)

    fileprivate func connected(rc: Int32, flags: Int32) {
        guard rc == 0 else {
            let reason = configuration.protocolVersion == .v5
                ? String(cString: mosquitto_reason_string(rc)) : MQTTError.connackMessage(rc)
            events.yield(.connectFailed(reason: "the broker refused the connection: \(reason)"))
            return
        }
        let subscriptions = state.withLock { s in
            s.connected = true
            s.resetBackoff = true
            return s.subscriptions
        }
        for (filter, qos) in subscriptions.sorted(by: { $0.key < $1.key }) {
            _ = mosquitto_subscribe(handle, nil, filter, qos.rawValue)
        }
        events.yield(.connected(sessionPresent: flags & 1 != 0))
    }

    fileprivate func disconnected(rc: Int32) {
        let wasConnected = state.withLock { s in
            defer { s.connected = false }
            return s.connected
        }
        guard wasConnected else { return }
        events.yield(.disconnected(reason: rc == 0 ? "disconnected by the client" : MQTTError.message(rc)))
    }

    fileprivate func published(mid: Int32) {
        let waiting = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if case .waiting(let continuation) = s.publications[mid] {
                s.publications[mid] = nil
                return continuation
            }
            // QoS 0 sends and acknowledgements that overtake their `publish` call land here; keep the table bounded.
            if s.publications.count >= 2 * configuration.maxPendingPublications {
                s.publications = s.publications.filter { if case .waiting = $0.value { true } else { false } }
            }
            s.publications[mid] = .acknowledged
            return nil
        }
        waiting?.resume()
    }

    fileprivate func received(_ message: UnsafePointer<mosquitto_message>) {
        let m = message.pointee
        let topic = m.topic.map { String(cString: $0) } ?? ""
        let length = Int(m.payloadlen)
        guard length >= 0, length <= configuration.maxPayloadBytes else {
            state.withLock { $0.droppedMessages += 1 }
            events.yield(.messageDropped(topic: topic, reason: "\(length) bytes; at most "
                + "\(configuration.maxPayloadBytes) are accepted"))
            return
        }
        let payload = m.payload.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
        let result = messages.yield(MQTTMessage(topic: topic, payload: payload,
            qos: MQTTQoS(rawValue: m.qos) ?? .atMostOnce, retained: m.retain))
        if case .dropped = result {
            state.withLock { $0.droppedMessages += 1 }
            events.yield(.messageDropped(topic: topic, reason: "the receive buffer is full"))
        }
    }
}

// MARK: - C callbacks

private func connection(_ user: UnsafeMutableRawPointer?) -> MosquittoConnection? {
    user.map { Unmanaged<MosquittoConnection>.fromOpaque($0).takeUnretainedValue() }
}

private let onConnect: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, Int32) -> Void = {
    _, user, rc, flags in connection(user)?.connected(rc: rc, flags: flags)
}

private let onDisconnect: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32) -> Void = {
    _, user, rc in connection(user)?.disconnected(rc: rc)
}

private let onPublish: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32) -> Void = {
    _, user, mid in connection(user)?.published(mid: mid)
}

private let onMessage: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, UnsafePointer<mosquitto_message>?)
    -> Void = { _, user, message in
        guard let message else { return }
        connection(user)?.received(message)
    }
