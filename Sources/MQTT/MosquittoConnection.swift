internal import CMosquitto
import Dispatch
import Foundation
import Primitives

/// Owns one libmosquitto client handle, runs its network loop on a thread of its own, and receives its callbacks.
///
/// libmosquitto's own `mosquitto_loop_start` thread gives up for good after some errors (a TLS failure, a protocol
/// error), which a device that must ride out broker restarts cannot afford; so the thread here runs the loop itself
/// (`yoloswap_mosquitto_loop_poll`: `mosquitto_loop` on poll(2), which, unlike its select(2), takes descriptors
/// numbered 1024 and up) and reconnects after every failure, with backoff. `mosquitto_threaded_set(true)` tells libmosquitto that
/// other threads call it meanwhile: it then guards its state with its own mutexes, and a publication from another
/// thread is queued instead of being written from the caller's thread; the caller then wakes the loop (`loopWake`).
///
/// Callbacks run on the network thread, with `self` as libmosquitto's user data: the thread's closure holds `self`
/// for as long as it runs, and no callback is made outside the thread's calls into libmosquitto.
///
/// Nothing is handed to libmosquitto before the broker has accepted the connection (its CONNACK): libmosquitto writes
/// a publication queued while its socket is open but its CONNECT not yet queued (the TLS handshake running) ahead of
/// the CONNECT, and the broker then drops the connection as a protocol error — with publications arriving all the
/// time (a stream's results), at every attempt. QoS 1/2 publications made meanwhile wait in the `outbox` and go out,
/// in order, once the connection is accepted; `publish` and `subscribe` call libmosquitto with `state` locked, so
/// the network thread cannot begin a new connection in between. (Lock order: `state`, then libmosquitto's mutexes;
/// libmosquitto calls back without holding the mutexes `mosquitto_publish` and `mosquitto_subscribe` take; the calls
/// that connect, loop or disconnect make callbacks, which take `state`, so they are never made with it locked.)
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
    /// An eventfd that ends the network loop's wait for its socket: signalled after each call from another thread
    /// that queues a packet (a publication, a subscription, the DISCONNECT).
    private let loopWake: Int32

    struct State {
        var started = false
        /// The broker has accepted the current connection (CONNACK), until it is lost.
        var connected = false
        /// Publications go straight to libmosquitto: connected, and the outbox handed over.
        var publishing = false
        var stopping = false
        var finished = false
        /// The network thread is in `mosquitto_connect`, which blocks (name lookup, TCP handshake: a broker that drops
        /// SYNs holds it about two minutes) and cannot be cut short: a stop does not wait for it.
        var connecting = false
        /// When the broker accepted the current connection: one that lasted `stableConnection` starts the next
        /// backoff from the first delay again.
        var connectedAt: ContinuousClock.Instant?
        /// The current attempt's failure was reported (a refused CONNACK), so its end is not reported again.
        var attemptFailureReported = false
        var subscriptions: [String: MQTTQoS] = [:]
        /// Subscriptions sent and not yet answered (SUBACK), by message id.
        var subscribing: [Int32: String] = [:]
        /// QoS 1/2 publications made while not `publishing`, oldest first.
        var outbox: [Publication] = []
        /// QoS 1/2 publications handed to libmosquitto, by message id, until their acknowledgement.
        var unacknowledged: [Int32: Publication] = [:]
        var nextKey = 0
        /// `stop()` calls waiting for the thread's end (resumed with false: not cut short by a blocked connect).
        var stopWaiters: [CheckedContinuation<Bool, Never>] = []
        var droppedMessages = 0

        var pendingPublications: Int { outbox.count + unacknowledged.count }
    }

    /// A QoS 1/2 publication and its `publish` call, waiting.
    struct Publication {
        /// Finds the publication when its task is cancelled.
        let key: Int
        let topic: String
        /// Emptied once handed to libmosquitto, which keeps its own copy.
        var payload: [UInt8]
        let qos: MQTTQoS
        let retain: Bool
        /// Nil once the call was cancelled: the message still goes out (it stays counted until acknowledged, so what
        /// cancelled callers leave behind stays bounded too), nobody waits for it.
        var continuation: CheckedContinuation<Void, any Error>?
    }

    /// How long a connection must last for the next reconnect to start from the first delay again.
    static let stableConnection: Duration = .seconds(10)

    /// `mosquitto_lib_init`, once per process.
    private static let libraryInitialized: Bool = {
        _ = mosquitto_lib_init()
        return true
    }()

    init(configuration: MQTTClientConfiguration, messages: AsyncStream<MQTTMessage>.Continuation,
         events: AsyncStream<MQTTConnectionEvent>.Continuation) throws(MQTTError) {
        _ = Self.libraryInitialized
        let loopWake = yoloswap_mosquitto_wake_fd()
        guard loopWake >= 0 else {
            throw MQTTError(.library(code: Int32(MOSQ_ERR_ERRNO.rawValue)), operation: "create a client",
                reason: "eventfd failed: \(String(cString: strerror(errno)))")
        }
        guard let handle = mosquitto_new(configuration.clientID, configuration.cleanSession, nil) else {
            close(loopWake)
            throw MQTTError(.library(code: Int32(MOSQ_ERR_INVAL.rawValue)), operation: "create a client",
                reason: "mosquitto_new failed (an empty client id with a persistent session, or out of memory)")
        }
        self.handle = handle
        self.loopWake = loopWake
        self.configuration = configuration
        self.messages = messages
        self.events = events
        // Every stored property is set: if this throws, `deinit` runs and destroys the handle (destroying it here too
        // was a double free).
        try configure()
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_with_flags_callback_set(handle, onConnect)
        mosquitto_disconnect_callback_set(handle, onDisconnect)
        // The v5 callback carries the acknowledgement's reason code (always 0 under 3.1.1): libmosquitto reports a
        // refused MQTT 5 publication (0x87, not authorized by the broker's ACL) as published too.
        mosquitto_publish_v5_callback_set(handle, onPublish)
        mosquitto_subscribe_callback_set(handle, onSubscribe)
        mosquitto_message_callback_set(handle, onMessage)
    }

    deinit {
        mosquitto_destroy(handle)
        close(loopWake)
    }

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
        // Started only when a thread is: after a stop, `started` stays false (a later stop has no thread to wait for).
        let first = state.withLock { s -> Bool in
            guard !s.started, !s.stopping else { return false }
            s.started = true
            return true
        }
        guard first else { return }
        do { try SystemThread.detach(name: "mqtt \(configuration.clientID)") { [self] in runLoop() } } catch {
            // No network thread (the process's or its container's thread limit): the client ends at once, as a
            // stopped one does — what waits to be published fails, its streams end — rather than wait for good;
            // its users are told why first.
            events.yield(.connectFailed(reason: "\(error)"))
            state.withLock { $0.started = false }
            requestStop()
            finish()
        }
    }

    /// Asks the network thread to disconnect and end, without waiting.
    func requestStop() {
        let (running, unsent) = state.withLock { s in
            s.stopping = true
            // Never started: no network thread will fail what waits for a connection.
            defer { if !s.started { s.outbox = [] } }
            return (s.started && !s.finished, s.started ? [] : s.outbox)
        }
        for publication in unsent {
            publication.continuation?.resume(throwing: MQTTError(.stopped, operation: "publish to \(publication.topic)",
                reason: "the client stopped before it connected"))
        }
        guard running else { return }
        _ = mosquitto_disconnect(handle)
        yoloswap_mosquitto_wake(loopWake)
        wake.signal()
    }

    /// Stops and waits for the network thread to end — unless it is in a blocking connect, which ends on its own
    /// (the thread then sees the stop and ends; a service's shutdown must not wait minutes for a broker that is away).
    func stop() async {
        requestStop()
        let blocked = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let (done, blocked) = state.withLock { s -> (Bool, Bool) in
                if s.finished { return (true, false) }
                // Never started: no thread will end the streams; they end here (as for a blocked connect).
                if !s.started { return (true, true) }
                if s.connecting { return (true, true) }
                s.stopWaiters.append(continuation)
                return (false, false)
            }
            if done { continuation.resume(returning: blocked) }
        }
        // Ended for its users now — its messages and events end, what waits to be published fails — as the thread
        // will end it once the connect returns (a second `finish` changes nothing); a client never started, too.
        if blocked { finish() }
    }

    // MARK: The network thread

    private func runLoop() {
        var delay = configuration.reconnectDelay
        var needsConnect = true
        var flushDeadline: ContinuousClock.Instant?
        while true {
            // Marked under the same lock as the stop is read: a stop either comes before (and the loop ends) or sees
            // the connect under way.
            let stopping = state.withLock { s in
                if !s.stopping, needsConnect { s.connecting = true }
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
                // Every attempt is a full connect: `mosquitto_reconnect` would send the CONNECT without the MQTT 5
                // properties (it passes none).
                let rc = connect()
                // Stopped while it blocked: nothing more (no turn of the loop: no outbox handed over, no message
                // taken from a persistent session for a client that is leaving).
                if state.withLock({ s in s.connecting = false; return s.stopping }) { break }
                guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) else {
                    events.yield(.connectFailed(reason: MQTTError.message(rc)))
                    backoff(&delay)
                    continue
                }
                needsConnect = false
            }
            let rc = yoloswap_mosquitto_loop_poll(handle, loopWake, 250)
            guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) else {
                needsConnect = true
                let (wasConnected, reported, stoppingNow, connectedAt) = state.withLock { s in
                    defer {
                        s.connected = false
                        s.publishing = false
                        s.subscribing = [:]
                        s.attemptFailureReported = false
                        s.connectedAt = nil
                    }
                    return (s.connected, s.attemptFailureReported, s.stopping, s.connectedAt)
                }
                // Only a connection that held resets the backoff: one taken over at once (another client with the same
                // id) would otherwise reconnect every first delay, for good.
                if let connectedAt, ContinuousClock.now - connectedAt >= Self.stableConnection {
                    delay = configuration.reconnectDelay
                }
                if stoppingNow { break }
                if wasConnected {
                    events.yield(.disconnected(reason: MQTTError.message(rc)))
                } else if !reported {
                    // Before any CONNACK (the broker closed the connection, TLS failed): a failed attempt, said so.
                    events.yield(.connectFailed(reason: "the connection ended before the broker accepted it: "
                        + MQTTError.message(rc)))
                }
                backoff(&delay)
                continue
            }
            handOverOutbox()
        }
        finish()
    }

    /// Once the broker has accepted the connection (the CONNACK was handled in the loop turn that just ended, after
    /// libmosquitto's own resends): hands the outbox to libmosquitto in order and lets `publish` hand its publications
    /// over directly from now on.
    private func handOverOutbox() {
        let failures = state.withLock { s -> [(Publication, MQTTError)] in
            guard s.connected, !s.publishing else { return [] }
            s.publishing = true
            defer { s.outbox = [] }
            return s.outbox.compactMap { publication in hand(publication, in: &s).map { (publication, $0) } }
        }
        for (publication, error) in failures { publication.continuation?.resume(throwing: error) }
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
            s.publishing = false
            defer {
                s.stopWaiters = []
                s.outbox = []
                s.unacknowledged = [:]
            }
            return (s.stopWaiters, s.outbox + s.unacknowledged.values)
        }
        for publication in publications {
            publication.continuation?.resume(throwing: MQTTError(.stopped, operation: "publish to \(publication.topic)",
                reason: "the client stopped before the broker acknowledged the message"))
        }
        messages.finish()
        events.finish()
        for waiter in waiters { waiter.resume(returning: false) }
    }

    // MARK: Subscribing and publishing (any thread)

    func subscribe(_ filter: String, qos: MQTTQoS) {
        state.withLock { s in
            s.subscriptions[filter] = qos
            // Locked: the network thread cannot start another connection meanwhile (see the type's comment).
            if s.connected { send(filter, qos, in: &s) }
        }
    }

    func publish(_ topic: String, payload: [UInt8], qos: MQTTQoS, retain: Bool) async throws {
        let operation = "publish to \(topic)"
        guard payload.count <= configuration.maxPayloadBytes else {
            throw MQTTError(.payloadTooLarge, operation: operation, reason: "the payload has \(payload.count) bytes; "
                + "at most \(configuration.maxPayloadBytes) are sent")
        }
        let stopped = MQTTError(.stopped, operation: operation, reason: "the client is stopping")
        if qos == .atMostOnce {
            let rc = try state.withLock { s throws(MQTTError) -> Int32 in
                if s.finished || s.stopping { throw stopped }
                guard s.publishing else { return Int32(MOSQ_ERR_NO_CONN.rawValue) }
                defer { yoloswap_mosquitto_wake(loopWake) }
                return payload.withUnsafeBytes {
                    mosquitto_publish(handle, nil, topic, Int32(payload.count), $0.baseAddress, qos.rawValue, retain)
                }
            }
            try MQTTError.check(rc, operation)
            return
        }
        let key = state.withLock { s in
            s.nextKey += 1
            return s.nextKey
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let publication = Publication(key: key, topic: topic, payload: payload, qos: qos, retain: retain,
                    continuation: continuation)
                let failure = state.withLock { s -> (any Error)? in
                    if s.finished || s.stopping { return stopped }
                    // Cancelled before this point, the cancellation handler found nothing to cancel.
                    if Task.isCancelled { return CancellationError() }
                    guard s.pendingPublications < configuration.maxPendingPublications else {
                        return MQTTError(.tooManyInFlight, operation: operation, reason: "\(s.pendingPublications) "
                            + "publications await their acknowledgement already")
                    }
                    guard s.publishing else {
                        s.outbox.append(publication)
                        return nil
                    }
                    return hand(publication, in: &s)
                }
                if let failure { continuation.resume(throwing: failure) }
            }
        } onCancel: {
            // The message stays where it is and still goes out; only the call stops waiting.
            let cancelled = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                if let index = s.outbox.firstIndex(where: { $0.key == key }) {
                    defer { s.outbox[index].continuation = nil }
                    return s.outbox[index].continuation
                }
                guard let mid = s.unacknowledged.first(where: { $0.value.key == key })?.key else { return nil }
                defer { s.unacknowledged[mid]?.continuation = nil }
                return s.unacknowledged[mid]?.continuation
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }

    /// Hands a QoS 1/2 publication to libmosquitto and files it under its message id until the acknowledgement, or
    /// returns why libmosquitto refused it. Called with `state` locked and `publishing` set: no acknowledgement can be
    /// handled before the publication is filed.
    private func hand(_ publication: Publication, in s: inout State) -> MQTTError? {
        var mid: Int32 = 0
        defer { yoloswap_mosquitto_wake(loopWake) }
        let rc = publication.payload.withUnsafeBytes {
            mosquitto_publish(handle, &mid, publication.topic, Int32(publication.payload.count), $0.baseAddress,
                publication.qos.rawValue, publication.retain)
        }
        // Disconnected meanwhile, libmosquitto keeps a QoS 1/2 message in the session (numbered) and sends it after
        // the next CONNACK, but still reports MOSQ_ERR_NO_CONN: that message is on its way, so wait for its
        // acknowledgement.
        guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) || (rc == Int32(MOSQ_ERR_NO_CONN.rawValue) && mid != 0) else {
            return MQTTError(.library(code: rc), operation: "publish to \(publication.topic)",
                reason: MQTTError.message(rc))
        }
        var filed = publication
        filed.payload = []
        s.unacknowledged[mid] = filed
        return nil
    }

    // MARK: Callbacks (the network thread)

    fileprivate func connected(rc: Int32, flags: Int32) {
        guard rc == 0 else {
            let reason = configuration.protocolVersion == .v5
                ? String(cString: mosquitto_reason_string(rc)) : MQTTError.connackMessage(rc)
            state.withLock { $0.attemptFailureReported = true }
            // A refusal for now (the broker unavailable or busy, a quota or rate, a server moved) is said so: a caller
            // that gives up at "refused" (a wrong password) retries these.
            let passing = configuration.protocolVersion == .v5
                ? [0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F].contains(rc) : rc == 3
            events.yield(.connectFailed(reason: (passing ? "the broker turned the connection away for now: "
                : "the broker refused the connection: ") + reason))
            return
        }
        state.withLock { s in
            s.connected = true
            s.connectedAt = .now
            for (filter, qos) in s.subscriptions.sorted(by: { $0.key < $1.key }) { send(filter, qos, in: &s) }
        }
        events.yield(.connected(sessionPresent: flags & 1 != 0))
    }

    fileprivate func disconnected(rc: Int32) {
        let wasConnected = state.withLock { s in
            defer {
                s.connected = false
                s.publishing = false
                s.subscribing = [:]  // sent again, under new ids, on the next connection
            }
            // Reported here: the loop's failure that follows is no failed attempt to report as well.
            if s.connected { s.attemptFailureReported = true }
            return s.connected
        }
        guard wasConnected else { return }
        events.yield(.disconnected(reason: rc == 0 ? "disconnected by the client" : MQTTError.message(rc)))
    }

    /// Sends a SUBSCRIBE and files its message id for the answer; one libmosquitto refuses is reported now.
    /// Called with `state` locked.
    private func send(_ filter: String, _ qos: MQTTQoS, in s: inout State) {
        var mid: Int32 = 0
        let rc = mosquitto_subscribe(handle, &mid, filter, qos.rawValue)
        yoloswap_mosquitto_wake(loopWake)
        if rc == Int32(MOSQ_ERR_SUCCESS.rawValue) {
            s.subscribing[mid] = filter
        } else {
            events.yield(.subscriptionRefused(filter: filter, reason: MQTTError.message(rc)))
        }
    }

    fileprivate func subscribed(mid: Int32, granted: [Int32]) {
        guard let filter = state.withLock({ $0.subscribing.removeValue(forKey: mid) }) else { return }
        // A granted QoS of 0x80 or more is a refusal (an ACL without read access): nothing will arrive on it.
        if let code = granted.first(where: { $0 >= 0x80 }) {
            events.yield(.subscriptionRefused(filter: filter, reason: configuration.protocolVersion == .v5
                ? String(cString: mosquitto_reason_string(code)) : "the broker refused it (SUBACK 0x80)"))
        }
    }

    fileprivate func published(mid: Int32, reasonCode: Int32) {
        // QoS 0 sends are not filed.
        let continuation = state.withLock { $0.unacknowledged.removeValue(forKey: mid) }?.continuation
        guard reasonCode < 0x80 else {
            continuation?.resume(throwing: MQTTError(.refused(reasonCode: reasonCode), operation: "publish",
                reason: "the broker refused it: \(String(cString: mosquitto_reason_string(reasonCode))) "
                    + "(reason code 0x\(String(reasonCode, radix: 16)))"))
            return
        }
        continuation?.resume()
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

private let onPublish: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, Int32, OpaquePointer?)
    -> Void = { _, user, mid, reasonCode, _ in connection(user)?.published(mid: mid, reasonCode: reasonCode) }

private let onSubscribe: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, Int32,
                                         UnsafePointer<Int32>?) -> Void = { _, user, mid, count, granted in
    let codes = granted.map { Array(UnsafeBufferPointer(start: $0, count: Int(max(count, 0)))) } ?? []
    connection(user)?.subscribed(mid: mid, granted: codes)
}

private let onMessage: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, UnsafePointer<mosquitto_message>?)
    -> Void = { _, user, message in
        guard let message else { return }
        connection(user)?.received(message)
    }
