import Foundation
import Metrics
import Releases

/// Release metrics, labelled by slot and variant (a release has two variants: low cardinality).
enum ReleaseMetrics {
    static let helpTexts: [String: String] = [
        "yoloswap_release_requests_total": "Answers (and mirrored runs) per release variant and outcome.",
        "yoloswap_release_model_duration_seconds": "Model time (decode to postprocess) per release variant.",
        "yoloswap_release_mirror_total": "Shadow copies by outcome: mirrored, shed_queue_full, shed_saturated, failed.",
        "yoloswap_release_candidate_percent": "The candidate's share of answers in the slot's release (0-100).",
        "yoloswap_release_agreement_f1": "Shadow agreement F1 of the candidate with the baseline.",
        "yoloswap_release_phase": "The slot's release phase (1 for the current one).",
    ]

    static func answer(slot: String, variant: String, failed: Bool, milliseconds: Double?) {
        Counter(label: "yoloswap_release_requests_total",
            dimensions: [("slot", slot), ("variant", variant), ("outcome", failed ? "error" : "ok")]).increment()
        if let milliseconds {
            Timer(label: "yoloswap_release_model_duration_seconds", dimensions: [("slot", slot), ("variant", variant)],
                preferredDisplayUnit: .seconds).recordMilliseconds(milliseconds)
        }
    }

    static func mirror(slot: String, outcome: String) {
        Counter(label: "yoloswap_release_mirror_total", dimensions: [("slot", slot), ("outcome", outcome)])
            .increment()
    }

    static func agreement(slot: String, f1: Double?) {
        guard let f1 else { return }
        Gauge(label: "yoloswap_release_agreement_f1", dimensions: [("slot", slot)]).record(f1)
    }

    static func phase(_ record: ReleaseRecord) {
        let phases: [ReleasePhase] = [.loading, .running, .paused, .promoting, .promoted, .rolledBack, .aborted,
            .failed]
        for p in phases {
            Gauge(label: "yoloswap_release_phase", dimensions: [("slot", record.slot), ("phase", p.rawValue)])
                .record(p == record.phase ? 1 : 0)
        }
        Gauge(label: "yoloswap_release_candidate_percent", dimensions: [("slot", record.slot)])
            .record(record.candidatePercent(at: Date()))
    }
}
