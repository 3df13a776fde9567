import Fleet
import Foundation
import MQTT
import Primitives

/// The `mqtt:` section: this instance as a device of an MQTT fleet (`FleetAgent`).
///
/// Keys and defaults:
/// - `host` (required), `port` (1883; 8883 is usual with TLS), `protocol` (`3.1.1` | `5`, default `3.1.1`)
/// - `device` (required): this device's id, one topic level (`A-Z a-z 0-9 . _ -`, 1…64); `client_id` (the device id):
///   the MQTT client id, which names the persistent session and the audit actor `mqtt:<client id>`
/// - `group` (none): the fleet group whose retained desired state (`<prefix>/fleet/<group>/desired`) this device
///   follows
/// - `topic_prefix` (`yoloswap/v1`)
/// - `tls` (none): `{ca_file, cert_file?, key_file?}`: TLS to the broker, its certificate checked against `ca_file`
/// - `username`, `password` or `password_file` (none)
/// - `trusted_keys` (required, at least one): operators' public key files (`yoloswap keygen`); commands and documents
///   must be signed by one of them
/// - `keepalive_s` (30), `reconnect_max_s` (30: the longest wait between reconnection attempts)
/// - `max_clock_skew_s` (300): how far a command's `issued_at` may be from this machine's clock
/// - `status_interval_s` (60): the retained status is published on every change and at least this often
///
/// Relative paths resolve against the configuration file's folder.
///
/// Thread-safety: a value.
public struct FleetSettings: Sendable, Equatable {
    public var host: String
    public var port = 1883
    public var protocolVersion: MQTTClientConfiguration.ProtocolVersion = .v311
    public var device: String
    public var clientID: String
    public var group: String?
    public var topicPrefix = "yoloswap/v1"
    public var tls: MQTTClientConfiguration.TLS?
    public var username: String?
    public var password: String?
    public var trustedKeys: [String]
    public var keepAliveSeconds = 30
    public var reconnectMaxSeconds = 30
    public var maxClockSkewSeconds = 300
    public var statusIntervalSeconds = 60

    public init(host: String, device: String, trustedKeys: [String]) {
        self.host = host
        self.device = device
        self.clientID = device
        self.trustedKeys = trustedKeys
    }

    /// The topics under this device's prefix.
    public var topics: FleetTopics { FleetTopics(prefix: topicPrefix) }

    /// The MQTT client's configuration; the will marks the device `offline` on its retained status topic.
    public func clientConfiguration(will: [UInt8]) -> MQTTClientConfiguration {
        var c = MQTTClientConfiguration(host: host, port: port, clientID: clientID)
        c.protocolVersion = protocolVersion
        c.cleanSession = false
        c.keepAliveSeconds = keepAliveSeconds
        c.username = username
        c.password = password
        c.tls = tls
        c.will = .init(topic: topics.status(device: device), payload: will, qos: .atLeastOnce, retain: true)
        c.reconnectDelayMax = .seconds(reconnectMaxSeconds)
        c.maxPayloadBytes = SignedEnvelope.maximumByteCount
        return c
    }

    /// Checks and converts the raw section.
    static func parse(_ raw: RawFleetSettings, base: String, fail: (String) -> ConfigurationError) throws
        -> FleetSettings
    {
        guard let host = raw.host, !host.isEmpty else { throw fail("mqtt.host is required") }
        guard let device = raw.device else { throw fail("mqtt.device is required") }
        guard FleetTopics.isValidName(device) else {
            throw fail("mqtt.device '\(device)' must be 1…64 of A-Z a-z 0-9 . _ - (and not 'fleet')")
        }
        let keys = (raw.trusted_keys ?? []).map { ServerConfiguration.resolve($0, against: base) }
        guard !keys.isEmpty else {
            throw fail("mqtt.trusted_keys is empty: every command and desired-state document would be refused")
        }
        var settings = FleetSettings(host: host, device: device, trustedKeys: keys)
        typealias Limits = ServerConfiguration.Limits
        if let port = raw.port { settings.port = try Limits.check(port, "mqtt.port", 1...65535, fail: fail) }
        if let version = raw.protocol {
            guard let parsed = MQTTClientConfiguration.ProtocolVersion(rawValue: version) else {
                throw fail("mqtt.protocol must be 3.1.1 or 5, got '\(version)'")
            }
            settings.protocolVersion = parsed
        }
        if let id = raw.client_id {
            guard (1...128).contains(id.utf8.count), id.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) else {
                throw fail("mqtt.client_id must be 1…128 printable ASCII characters")
            }
            settings.clientID = id
        }
        if let group = raw.group {
            guard FleetTopics.isValidName(group) else {
                throw fail("mqtt.group '\(group)' must be 1…64 of A-Z a-z 0-9 . _ - (and not 'fleet')")
            }
            settings.group = group
        }
        if let prefix = raw.topic_prefix {
            guard FleetTopics.isValidPrefix(prefix) else {
                throw fail("mqtt.topic_prefix '\(prefix.escapingControlCharacters)' must be 1…128 bytes of non-empty "
                    + "levels without + or # or control characters, not starting with $")
            }
            settings.topicPrefix = prefix
        }
        if let tls = raw.tls {
            guard let ca = tls.ca_file else { throw fail("mqtt.tls.ca_file is required with mqtt.tls") }
            // A client certificate goes with its key: libmosquitto refuses one without the other only once the
            // service has started.
            guard (tls.cert_file == nil) == (tls.key_file == nil) else {
                throw fail("mqtt.tls.cert_file and mqtt.tls.key_file go together: give both or neither")
            }
            settings.tls = .init(caFile: ServerConfiguration.resolve(ca, against: base),
                certificateFile: tls.cert_file.map { ServerConfiguration.resolve($0, against: base) },
                keyFile: tls.key_file.map { ServerConfiguration.resolve($0, against: base) })
        }
        settings.username = raw.username
        settings.password = raw.password
        if let file = raw.password_file {
            let path = ServerConfiguration.resolve(file, against: base)
            guard raw.password == nil else { throw fail("mqtt: give password or password_file, not both") }
            do {
                let data = try RegularFile(openingForReading: path).readAll(limit: 4096)
                settings.password = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
            } catch { throw fail("mqtt.password_file \(path): \(error.reason)") }
        }
        if let v = raw.keepalive_s { settings.keepAliveSeconds = try Limits.check(v, "mqtt.keepalive_s", 5...3600,
            fail: fail) }
        if let v = raw.reconnect_max_s {
            settings.reconnectMaxSeconds = try Limits.check(v, "mqtt.reconnect_max_s", 1...3600, fail: fail)
        }
        if let v = raw.max_clock_skew_s {
            settings.maxClockSkewSeconds = try Limits.check(v, "mqtt.max_clock_skew_s", 1...86_400, fail: fail)
        }
        if let v = raw.status_interval_s {
            settings.statusIntervalSeconds = try Limits.check(v, "mqtt.status_interval_s", 1...86_400, fail: fail)
        }
        return settings
    }
}

/// The `mqtt:` section as written.
struct RawFleetSettings: Decodable {
    struct TLS: Decodable {
        var ca_file: String?
        var cert_file: String?
        var key_file: String?
    }
    var host: String?
    var port: Int?
    var `protocol`: String?
    var device: String?
    var client_id: String?
    var group: String?
    var topic_prefix: String?
    var tls: TLS?
    var username: String?
    var password: String?
    var password_file: String?
    var trusted_keys: [String]?
    var keepalive_s: Int?
    var reconnect_max_s: Int?
    var max_clock_skew_s: Int?
    var status_interval_s: Int?
}
