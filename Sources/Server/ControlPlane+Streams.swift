import Foundation
import Streams

// The audit records of video streams: who started or stopped which stream, with what source and outputs, and how far
// it got. Best effort, as a stream changes no model: an entry that cannot be written is logged, the call goes on.
extension ControlPlane {
    /// Records `action` (`stream.start`, `stream.stop`) for a stream, at the stream's start for `stream.start` and now
    /// for `stream.stop` (entries stay in time order, and `GET /v1/audit?since=` finds the stop). (A refused start is
    /// recorded by the route, as `stream.start` with result `refused` and the reason.)
    func auditStream(_ action: String, _ status: StreamStatus, by principal: Principal, from remote: String?,
                     reason: String? = nil) async {
        let figures = action == "stream.start"
            ? "source \(status.source), back_pressure \(status.back_pressure.rawValue), outputs "
                + status.outputs.joined(separator: ", ")
            : "\(status.frames_detected) frames detected, \(status.frames_dropped) dropped, "
                + "\(status.switch_count) switches, "
                + String(format: "ran %.1f s, ", (status.ended_at ?? Date()).timeIntervalSince(status.started_at))
                + "state \(status.state.rawValue)"
        try? await audit(principal, remote, action, status.slot, result: "succeeded",
            reason: "stream \(status.id): \(figures)" + (reason.map { "; \($0)" } ?? ""),
            started: action == "stream.start" ? status.started_at : Date())
    }
}
