import Foundation
import TestSupport
import Testing

/// The time for a three-device MQTT fleet to converge on a new retained group document: from the operator's publish
/// (paho-mqtt) until all three devices report the document's generation converged on their status topics, with slot
/// `default` serving the new model. `make bench-mqtt` (YOLOSWAP_MQTT_ROLLOUTS rollouts, alternating two models, each
/// pinned by its SHA-256). Prints p50 / p99 / max; a benchmark, not a timed test: it only fails when a rollout does not
/// converge at all.
@Suite("MQTT fleet rollout → three devices converged (benchmark)", .serialized,
    .enabled(if: ProcessInfo.processInfo.environment["YOLOSWAP_MQTT_ROLLOUTS"] != nil))
struct MQTTFleetBenchmark {
    @Test func rolloutToConverged() async throws {
        let rollouts = max(Int(ProcessInfo.processInfo.environment["YOLOSWAP_MQTT_ROLLOUTS"] ?? "") ?? 20, 1)
        let fleet = try MQTTFleet()
        let names = ["bench-1", "bench-2", "bench-3"]
        var devices: [ServerProcess] = []
        for name in names { devices.append(try await fleet.device(name)) }
        defer { for device in devices { device.stop() } }
        // Devices start on the large model; rollouts alternate small, large, ….
        let models = (1...rollouts).map { $0 % 2 == 1 ? MQTTFleet.small : MQTTFleet.large }
        let start = Int(Date().timeIntervalSince1970) - rollouts
        let files = try models.enumerated().map {
            try fleet.signDocument($0.element, generation: $0.offset + 1, issuedAt: start + $0.offset)
        }
        let result = try await fleet.peer(["rollout", "--devices", names.joined(separator: ","), "--topic",
            fleet.desiredTopic, "--files", files.joined(separator: ","), "--sha256s",
            try models.map(MQTTFleet.sha).joined(separator: ",")], timeout: 120)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let seconds = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [Double] ?? []
        #expect(seconds.count == rollouts)
        guard !seconds.isEmpty else { return }
        // Nearest rank.
        func percentile(_ p: Double) -> Double {
            let sorted = seconds.sorted()
            return sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))] * 1000
        }
        print(String(format: "mqtt fleet of 3 publish → all converged over %d rollouts: p50 %.0f ms, p99 %.0f ms, "
            + "max %.0f ms", rollouts, percentile(0.5), percentile(0.99), (seconds.max() ?? 0) * 1000))
    }
}
