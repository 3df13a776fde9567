import Foundation
import Server
import TestSupport
import Testing

/// The `mqtt:` section of the configuration.
@Suite("Configuration: the mqtt section")
struct FleetSettingsTests {
    @Test("every key is read; paths resolve against the file's folder; the password comes from its file")
    func fullSection() throws {
        let folder = try TemporaryDirectory(prefix: "mqtt-config")
        try "s3cret\n".write(toFile: folder.file("password"), atomically: true, encoding: .utf8)
        let config = try ServerConfiguration.parse("""
            mqtt:
              host: broker.plant.local
              port: 8883
              protocol: "5"
              device: line-a-01
              group: line-a
              topic_prefix: plant/yoloswap
              tls: {ca_file: ca.crt}
              username: line-a-01
              password_file: password
              trusted_keys: [keys/operator.key.pub]
              keepalive_s: 10
              reconnect_max_s: 5
              max_clock_skew_s: 60
              status_interval_s: 15
            """, base: folder.path)
        let mqtt = try #require(config.mqtt)
        #expect(mqtt.host == "broker.plant.local")
        #expect(mqtt.port == 8883)
        #expect(mqtt.protocolVersion == .v5)
        #expect(mqtt.device == "line-a-01")
        #expect(mqtt.clientID == "line-a-01")
        #expect(mqtt.group == "line-a")
        #expect(mqtt.topics.status(device: mqtt.device) == "plant/yoloswap/line-a-01/status")
        #expect(mqtt.tls?.caFile == folder.file("ca.crt"))
        #expect(mqtt.password == "s3cret")
        #expect(mqtt.trustedKeys == [folder.file("keys/operator.key.pub")])
        #expect(mqtt.keepAliveSeconds == 10 && mqtt.reconnectMaxSeconds == 5)
        #expect(mqtt.maxClockSkewSeconds == 60 && mqtt.statusIntervalSeconds == 15)
        let client = mqtt.clientConfiguration(will: Array("offline".utf8))
        #expect(client.cleanSession == false)
        #expect(client.will?.topic == "plant/yoloswap/line-a-01/status")
        #expect(client.will?.retain == true)
        #expect(try ServerConfiguration.parse("server: {port: 1234}").mqtt == nil)
    }

    @Test("a section that cannot work is refused with the key", arguments: [
        ("{device: d, trusted_keys: [k.pub]}", "mqtt.host is required"),
        ("{host: h, trusted_keys: [k.pub]}", "mqtt.device is required"),
        ("{host: h, device: a/b, trusted_keys: [k.pub]}", "mqtt.device 'a/b'"),
        ("{host: h, device: fleet, trusted_keys: [k.pub]}", "mqtt.device 'fleet'"),
        ("{host: h, device: d}", "mqtt.trusted_keys is empty"),
        ("{host: h, device: d, trusted_keys: [k.pub], protocol: '4'}", "mqtt.protocol must be 3.1.1 or 5"),
        ("{host: h, device: d, trusted_keys: [k.pub], port: 0}", "mqtt.port must be in 1...65535"),
        ("{host: h, device: d, trusted_keys: [k.pub], group: 'a+b'}", "mqtt.group 'a+b'"),
        ("{host: h, device: d, trusted_keys: [k.pub], topic_prefix: 'a/#'}", "mqtt.topic_prefix 'a/#'"),
        ("{host: h, device: d, trusted_keys: [k.pub], tls: {}}", "mqtt.tls.ca_file is required"),
        ("{host: h, device: d, trusted_keys: [k.pub], tls: {ca_file: ca, cert_file: c}}", "go together"),
        ("{host: h, device: d, trusted_keys: [k.pub], tls: {ca_file: ca, key_file: k}}", "go together"),
        ("{host: h, device: d, trusted_keys: [k.pub], password: p, password_file: f}", "not both"),
        ("{host: h, device: d, trusted_keys: [k.pub], password_file: /nonexistent/pw}", "mqtt.password_file"),
        ("{host: h, device: d, trusted_keys: [k.pub], keepalive_s: 1}", "mqtt.keepalive_s must be in 5...3600"),
    ])
    func refusals(section: String, message: String) {
        do {
            _ = try ServerConfiguration.parse("mqtt: \(section)")
            Issue.record("accepted: \(section)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }
}
