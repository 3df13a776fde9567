internal import CMosquitto

/// A failed MQTT call: what was being done, and libmosquitto's reason.
public struct MQTTError: Error, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// libmosquitto refused the call (its error code and message are in `reason`).
        case library(code: Int32)
        /// The payload is larger than the configured bound.
        case payloadTooLarge
        /// Too many QoS 1/2 publications await their acknowledgement (or the connection).
        case tooManyInFlight
        /// The client has been stopped.
        case stopped
        /// The broker acknowledged the publication with a failure (MQTT 5 reason code ≥ 0x80: 0x87 not authorized,
        /// 0x97 quota exceeded, …): it was not delivered.
        case refused(reasonCode: Int32)
    }

    public var kind: Kind
    /// What was being done: "publish to yoloswap/v1/line-a/status", "set the TLS files", ….
    public var operation: String
    public var reason: String

    public init(_ kind: Kind, operation: String, reason: String) {
        self.kind = kind
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "MQTT: cannot \(operation): \(reason)" }

    /// The one place a libmosquitto status becomes a Swift error, with libmosquitto's message.
    /// - Throws: `MQTTError` unless `code` is `MOSQ_ERR_SUCCESS`.
    static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws(MQTTError) {
        guard code != Int32(MOSQ_ERR_SUCCESS.rawValue) else { return }
        throw MQTTError(.library(code: code), operation: operation(), reason: message(code))
    }

    /// libmosquitto's text for an error code (for `MOSQ_ERR_ERRNO`, the system's, which it reads from errno).
    static func message(_ code: Int32) -> String { String(cString: mosquitto_strerror(code)) }

    /// The broker's reason for refusing a connection (the CONNACK code).
    static func connackMessage(_ code: Int32) -> String { String(cString: mosquitto_connack_string(code)) }
}
