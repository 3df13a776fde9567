import Foundation
import HotSwap
import Metrics

/// The service's metrics through swift-metrics (the executable bootstraps the Prometheus backend).
///
/// Names follow Prometheus conventions with units: `_total` counters, `_seconds` durations, `_bytes` sizes.
enum ServerMetrics {
    /// `# HELP` text per metric family. swift-prometheus registers families with empty help (and cannot change it),
    /// so `/metrics` adds these lines; a family missing here fails `promtool check metrics` in the tests.
    static let helpTexts: [String: String] = [
        "yoloswap_requests_total": "Detection requests by slot, model and HTTP status.",
        "yoloswap_request_duration_seconds": "End-to-end duration of successful detection requests.",
        "yoloswap_preprocess_duration_seconds": "Letterbox and tensor preparation time per request.",
        "yoloswap_inference_duration_seconds": "ONNX Runtime Run time per request.",
        "yoloswap_postprocess_duration_seconds": "Output decoding and NMS time per request.",
        "yoloswap_queue_wait_duration_seconds": "Time a request waited for a worker thread (or a model).",
        "yoloswap_swap_events_total": "Completed control-plane operations by slot, operation and result.",
        "yoloswap_model_verify_duration_seconds": "Verifying stage of model loads (read, SHA-256, signature).",
        "yoloswap_model_load_duration_seconds": "Loading stage of model loads (ONNX Runtime session creation).",
        "yoloswap_model_warmup_duration_seconds": "Warm-up stage of model loads.",
        "yoloswap_model_flip_duration_seconds": "Time the slot lock was held to flip the active model.",
        "yoloswap_queue_depth": "Requests waiting in the slot's queue.",
        "yoloswap_in_flight_requests": "Requests running on the slot's worker threads.",
        "yoloswap_model_memory_bytes": "Measured memory of the slot's models by role.",
        "yoloswap_active_model_info": "The active model per slot (1), with id, version and sha256 labels.",
        "yoloswap_slot_generation": "Generation of the slot: increases with every change of the active model.",
        "yoloswap_process_resident_memory_bytes": "Resident set size of the process.",
        "yoloswap_audit_head_sequence": "Sequence number of the audit log's last entry (its head).",
    ]

    /// Inserts a `# HELP` line before each `# TYPE` line of a Prometheus exposition.
    static func addingHelp(to text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count + 2048)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? ""
                if let help = helpTexts[name] ?? DesiredMetrics.helpTexts[name] ?? ReleaseMetrics.helpTexts[name]
                    ?? FleetMetrics.helpTexts[name]
                {
                    out += "# HELP \(name) \(help)\n"
                }
            }
            out += line
            out += "\n"
        }
        if out.hasSuffix("\n\n") { out.removeLast() }
        return out
    }

    static func request(slot: String, model: String, status: Int, seconds: Double) {
        Counter(label: "yoloswap_requests_total",
            dimensions: [("slot", slot), ("model", model), ("status", String(status))]).increment()
        Timer(label: "yoloswap_request_duration_seconds", dimensions: [("slot", slot), ("model", model)],
            preferredDisplayUnit: .seconds).recordSeconds(seconds)
    }

    static func stages(slot: String, preprocess: Double, inference: Double, postprocess: Double, queue: Double) {
        let dims = [("slot", slot)]
        Timer(label: "yoloswap_preprocess_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
            .recordMilliseconds(preprocess)
        Timer(label: "yoloswap_inference_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
            .recordMilliseconds(inference)
        Timer(label: "yoloswap_postprocess_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
            .recordMilliseconds(postprocess)
        Timer(label: "yoloswap_queue_wait_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
            .recordMilliseconds(queue)
    }

    /// A refused call the audit log did not take one by one (over the refusals' rate limit).
    static func refusalNotAudited() {
        Counter(label: "yoloswap_audit_refusals_not_recorded_total").increment()
    }

    static func failedRequest(slot: String, status: Int) {
        Counter(label: "yoloswap_requests_total",
            dimensions: [("slot", slot), ("model", ""), ("status", String(status))]).increment()
    }

    static func swapEvent(_ event: SwapEvent) {
        Counter(label: "yoloswap_swap_events_total",
            dimensions: [("slot", event.slot), ("operation", event.operation.rawValue),
                ("result", event.result.rawValue)]).increment()
        let dims = [("slot", event.slot)]
        if let v = event.timings.verify {
            Timer(label: "yoloswap_model_verify_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
                .recordMilliseconds(v)
        }
        if let v = event.timings.load {
            Timer(label: "yoloswap_model_load_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
                .recordMilliseconds(v)
        }
        if let v = event.timings.warmup {
            Timer(label: "yoloswap_model_warmup_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
                .recordMilliseconds(v)
        }
        if let v = event.timings.flipMicroseconds {
            Timer(label: "yoloswap_model_flip_duration_seconds", dimensions: dims, preferredDisplayUnit: .seconds)
                .recordNanoseconds(Int64(v * 1000))
        }
    }

    /// Gauges sampled periodically: queue depth, in-flight, model info and memory, process RSS.
    /// - Parameter residentBytes: the process's RSS, read by the caller off the cooperative pool (nil: unknown).
    static func sample(manager: ModelManager, residentBytes: Int?, previousInfo: inout [String: [(String, String)]]) {
        for name in manager.slotNames {
            guard let slot = manager.slot(name) else { continue }
            let roles = slot.roles
            Gauge(label: "yoloswap_queue_depth", dimensions: [("slot", name)]).record(slot.executor.queueDepth)
            Gauge(label: "yoloswap_in_flight_requests", dimensions: [("slot", name)])
                .record(slot.executor.running)
            for (role, model) in [("active", roles.active), ("staged", roles.staged), ("standby", roles.standby)] {
                Gauge(label: "yoloswap_model_memory_bytes", dimensions: [("slot", name), ("role", role)])
                    .record(model?.memoryBytes ?? 0)
            }
            if let active = roles.active {
                let dims = [("slot", name), ("id", active.identity.id), ("version", active.identity.version),
                    ("sha256", active.identity.sha256)]
                if let old = previousInfo[name], old.map(\.1) != dims.map(\.1) {
                    Gauge(label: "yoloswap_active_model_info", dimensions: old).record(0)
                }
                Gauge(label: "yoloswap_active_model_info", dimensions: dims).record(1)
                Gauge(label: "yoloswap_slot_generation", dimensions: [("slot", name)]).record(roles.generation)
                previousInfo[name] = dims
            } else if let old = previousInfo.removeValue(forKey: name) {
                // Unloaded (a forced unload over /v2 or gRPC): the model it served is no longer active.
                Gauge(label: "yoloswap_active_model_info", dimensions: old).record(0)
                Gauge(label: "yoloswap_slot_generation", dimensions: [("slot", name)]).record(roles.generation)
            }
        }
        if let rss = residentBytes {
            Gauge(label: "yoloswap_process_resident_memory_bytes").record(rss)
        }
    }
}
