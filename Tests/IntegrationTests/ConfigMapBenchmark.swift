import Foundation
import TestSupport
import Testing

/// The time from a ConfigMap swap (the atomic writer's rename over `..data`) to the slot serving the new model,
/// measured against the real server: `make bench-configmap` (YOLOSWAP_CONFIGMAP_SWAPS swaps, alternating two
/// models, each pinned by its SHA-256). Prints p50 / p99 / max; a benchmark, not a timed test: it only fails when a
/// swap does not converge at all.
@Suite("ConfigMap swap → converged slot (benchmark)", .serialized,
    .enabled(if: ProcessInfo.processInfo.environment["YOLOSWAP_CONFIGMAP_SWAPS"] != nil))
struct ConfigMapBenchmark {
    @Test func renameToConverged() async throws {
        let swaps = Int(ProcessInfo.processInfo.environment["YOLOSWAP_CONFIGMAP_SWAPS"] ?? "") ?? 20
        let folder = try TemporaryDirectory(prefix: "configmap-bench")
        let volume = ConfigMapVolume(directory: folder.path)
        let models = [DesiredStateTests.large, DesiredStateTests.small]
        let digests = try models.map(DesiredStateTests.sha)
        try volume.publish(DesiredStateTests.document(models[0], sha256: digests[0]))
        let server = try await DesiredStateTests.server(watching: volume)
        defer { server.stop() }
        #expect(await eventuallyAsync(timeout: .seconds(60)) {
            (try? await DesiredStateTests.activeSHA(server)) == digests[0]
        })
        var converging: [Double] = []
        var reacting: [Double] = []
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for swap in 1...swaps {
            let next = swap % 2
            let wallClock = Date()
            let renamed = try volume.publish(DesiredStateTests.document(models[next], sha256: digests[next]))
            let converged = await eventuallyAsync(timeout: .seconds(60)) {
                (try? await DesiredStateTests.activeSHA(server)) == digests[next]
            }
            #expect(converged, "swap \(swap) did not converge: \(server.log.suffix(2000))")
            converging.append((ContinuousClock.now - renamed) / .milliseconds(1))
            // When the server began applying the document it read (the watcher's reaction, debounce included).
            let status = try await DesiredStateTests.status(server)
            if let text = status["applied_at"] as? String, let applied = iso.date(from: text) {
                reacting.append(applied.timeIntervalSince(wallClock) * 1000)
            }
        }
        // Nearest rank.
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))]
        }
        #expect(reacting.count == swaps)
        print(String(format: "configmap swap → converged over %d swaps: p50 %.0f ms, p99 %.0f ms, max %.0f ms; "
            + "rename → apply started: p50 %.0f ms, p99 %.0f ms", swaps, percentile(converging, 0.5),
            percentile(converging, 0.99), converging.max() ?? 0, percentile(reacting, 0.5),
            percentile(reacting, 0.99)))
    }
}
