import Dispatch
import Foundation
import Primitives

/// An MQTT client (3.1.1 or 5) over libmosquitto, with async publishing and the received messages and connection
/// events as `AsyncStream`s.
///
/// `start()` runs libmosquitto's network loop on a thread of its own: it connects, keeps the connection alive,
/// reconnects with exponential backoff after a failure or a loss (re-subscribing each time), and resends unacknowledged
/// QoS 1 publications when the session resumes. libmosquitto's callbacks run on that thread; they only copy what they
/// are given into Swift values and hand them on (yield to a stream, resume a continuation), so they never block it and
/// never wait on Swift's cooperative pool.
///
/// ```swift
/// let client = try MQTTClient(configuration: .init(host: "broker", clientID: "line-a-01"))
/// client.subscribe("yoloswap/v1/line-a-01/command")
/// client.start()
/// for await message in client.messages { … }
/// try await client.publish("yoloswap/v1/line-a-01/status", payload, retain: true)  // returns on PUBACK
/// await client.stop()
/// ```
///
/// Thread-safety: all members may be used from any thread or task, also while the network thread runs.
public final class MQTTClient: Sendable {
    private let connection: MosquittoConnection
    /// Messages received on the subscriptions, in arrival order. Bounded by `messageBufferCapacity` (beyond it new
    /// messages are dropped and reported in `events`); it ends once the client has stopped.
    public let messages: AsyncStream<MQTTMessage>
    /// Connection events, in order (the newest 256 are kept for a slow reader); it ends once the client has stopped.
    public let events: AsyncStream<MQTTConnectionEvent>

    /// Makes a client and applies the configuration; nothing is connected until `start()`.
    /// - Throws: `MQTTError` when libmosquitto refuses a setting (a TLS file it cannot read, a bad will topic).
    public init(configuration: MQTTClientConfiguration) throws {
        let (messages, messageContinuation) = AsyncStream<MQTTMessage>.makeStream(
            bufferingPolicy: .bufferingOldest(max(configuration.messageBufferCapacity, 1)))
        let (events, eventContinuation) = AsyncStream<MQTTConnectionEvent>.makeStream(
            bufferingPolicy: .bufferingNewest(256))
        self.messages = messages
        self.events = events
        connection = try MosquittoConnection(configuration: configuration, messages: messageContinuation,
            events: eventContinuation)
    }

    deinit { connection.requestStop() }

    /// The client id the broker knows the session by.
    public var clientID: String { connection.configuration.clientID }

    /// Whether the broker has accepted the current connection.
    public var isConnected: Bool { connection.state.withLock { $0.connected } }

    /// Received messages dropped so far (too large, or the buffer was full).
    public var droppedMessageCount: Int { connection.state.withLock { $0.droppedMessages } }

    /// Starts the network thread, which connects and stays connected until `stop()`. Calling it again does nothing.
    public func start() { connection.start() }

    /// Subscribes to a topic filter, now if connected and again on every later connection.
    public func subscribe(_ filter: String, qos: MQTTQoS = .atLeastOnce) {
        connection.subscribe(filter, qos: qos)
    }

    /// Publishes a message. With QoS 1 or 2 it returns once the broker has acknowledged it. Nothing is sent before the
    /// broker has accepted the connection (a PUBLISH ahead of the CONNECT would make it drop the connection): until
    /// then, and while the client is disconnected, the message waits in the client and goes out, in order, after the
    /// subscriptions, once the connection is accepted; one that was sent and not acknowledged when the connection
    /// broke is sent again when it resumes. With QoS 0 it returns once the message is queued; it fails until the
    /// client is connected and the waiting publications are handed over.
    /// - Throws: `MQTTError` (payload over the bound, too many waiting or awaiting acknowledgement, stopped, not
    ///   connected for QoS 0, or refused by libmosquitto), `CancellationError` when the task is cancelled while waiting
    ///   (the message still goes out, and counts as waiting until it is acknowledged).
    public func publish(_ topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce, retain: Bool = false)
        async throws
    {
        try await connection.publish(topic, payload: payload, qos: qos, retain: retain)
    }

    /// Disconnects cleanly (the broker then drops the will) and waits until the network thread has ended — unless it
    /// is in a connect that blocks (a broker that never answers the handshake), which it does not wait for: the
    /// thread ends once the connect returns. Either way `messages` and `events` have ended when it returns (for a
    /// client never started too). Messages not acknowledged by then stay unacknowledged: their `publish` calls fail
    /// with `.stopped`.
    public func stop() async { await connection.stop() }
}
