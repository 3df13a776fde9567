/// How an `MQTTClient` connects: broker, protocol, credentials, TLS, session, will, reconnection and size bounds.
///
/// Defaults: port 1883 (8883 is usual with TLS), MQTT 3.1.1, a persistent session (`cleanSession` false: the broker
/// keeps the subscriptions and queues QoS 1 messages while the client is away), keep-alive 30 s, reconnection after
/// 0.5 s doubling up to 30 s, payloads of at most 1 MiB each way, 1024 received messages buffered.
///
/// Thread-safety: a value.
public struct MQTTClientConfiguration: Sendable, Equatable {
    /// The protocol version spoken to the broker.
    public enum ProtocolVersion: String, Sendable, Equatable {
        case v311 = "3.1.1"
        case v5 = "5"
    }

    /// TLS towards the broker: the broker's certificate is checked against `caFile`, its host name against `host`.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the certificate authorities trusted to sign the broker's certificate.
        public var caFile: String
        /// A client certificate and its key (PEM), for brokers that require one.
        public var certificateFile: String?
        public var keyFile: String?

        public init(caFile: String, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    /// The message the broker publishes for the client when its connection ends without a DISCONNECT.
    public struct Will: Sendable, Equatable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: MQTTQoS
        public var retain: Bool

        public init(topic: String, payload: [UInt8], qos: MQTTQoS = .atLeastOnce, retain: Bool = true) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
        }
    }

    public var host: String
    public var port: Int
    /// Names the session on the broker: a persistent session is found again by it. 1…23 characters are what every
    /// broker accepts; Mosquitto takes up to 65535.
    public var clientID: String
    public var protocolVersion: ProtocolVersion = .v311
    /// False keeps the session (subscriptions, queued QoS 1 messages) across connections.
    public var cleanSession = false
    /// MQTT 5 only: how long the broker keeps the session once the connection ends (seconds; MQTT 3.1.1 sessions
    /// last until a clean connect).
    public var sessionExpirySeconds: UInt32 = 7 * 24 * 3600
    public var keepAliveSeconds = 30
    public var username: String?
    public var password: String?
    public var tls: TLS?
    public var will: Will?
    /// The first wait after a failed or lost connection; each further failure doubles it up to `reconnectDelayMax`.
    /// A successful connection resets it.
    public var reconnectDelay: Duration = .milliseconds(500)
    public var reconnectDelayMax: Duration = .seconds(30)
    /// The largest payload accepted in either direction: bigger ones are not published, and received ones are
    /// dropped (and counted) instead of being buffered. MQTT 5 also tells the broker (Maximum Packet Size).
    public var maxPayloadBytes = 1 << 20
    /// Received messages held for the consumer of `messages`; beyond it new ones are dropped (and counted).
    public var messageBufferCapacity = 1024
    /// QoS 1/2 publications awaiting their acknowledgement or the connection at once (those whose `publish` call was
    /// cancelled included); a further `publish` fails with `.tooManyInFlight`.
    public var maxPendingPublications = 4096

    public init(host: String, port: Int = 1883, clientID: String) {
        self.host = host
        self.port = port
        self.clientID = clientID
    }
}

/// MQTT's delivery guarantees.
public enum MQTTQoS: Int32, Sendable, Equatable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2
}

/// A message received on a subscription.
public struct MQTTMessage: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: MQTTQoS
    /// True when the broker sent it as the topic's retained message (on subscribing), not as a new publication.
    public var retained: Bool

    public init(topic: String, payload: [UInt8], qos: MQTTQoS, retained: Bool) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retained = retained
    }
}

/// What happened to the connection, in order.
public enum MQTTConnectionEvent: Sendable, Equatable {
    /// The broker accepted the connection; `sessionPresent` when it still had the session.
    case connected(sessionPresent: Bool)
    /// A connection attempt failed (no route, refused, TLS, bad credentials); the client tries again after a delay.
    case connectFailed(reason: String)
    /// The connection ended; unless the client is stopping, it reconnects after a delay.
    case disconnected(reason: String)
    /// A received message was dropped: larger than `maxPayloadBytes`, or the buffer was full.
    case messageDropped(topic: String, reason: String)
    /// The broker refused a subscription (its ACL grants no read access, say): nothing arrives on that filter.
    case subscriptionRefused(filter: String, reason: String)
}
