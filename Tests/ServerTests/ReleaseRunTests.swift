import Foundation
import Releases
@testable import Server
import Testing

/// When a release's slot is free again: not when its phase turns terminal (a rule breached routes every request to the
/// baseline at once) but once its end has been carried out — an operator's switch in between flipped in the candidate
/// whose rule had tripped.
@Suite("Release runs: the slot is free once the end is carried out")
struct ReleaseRunTests {
    private func run(_ record: ReleaseRecord) -> ReleaseRun {
        ReleaseRun(engine: ReleaseEngine(record: record), disagreementsFolder: nil)
    }

    @Test("a run whose phase turned terminal is over only once settled; one made for an ended release is over")
    func overOnceSettled() {
        let record = ReleaseRecord(slot: "default", spec: ReleaseSpec(model: "c.onnx", strategy: .shadow),
            candidatePath: "/m/c.onnx", startedBy: "alice", createdAt: Date())
        let live = run(record)
        #expect(!live.isOver)
        #expect(live.engine.transition(from: [.loading], to: .aborted, action: "abort", by: "alice") != nil)
        #expect(live.engine.phase.isTerminal && !live.isOver, "free before the candidate was discarded")
        // Aborted while its candidate loads: settled by the abort, not over until the bring-up has ended (its load
        // stages the candidate, which the bring-up's end discards).
        live.markBringingUp(true)
        live.markSettled()
        #expect(!live.isOver)
        live.markBringingUp(false)
        #expect(live.isOver)
        // Settled early (a bring-up's refusal carried out) but not terminal: still the release's.
        let running = run(record)
        running.markSettled()
        #expect(!running.isOver)
        // After a restart, a record that had ended: nothing left to carry out.
        var ended = record
        ended.phase = .rolledBack
        #expect(run(ended).isOver)
    }
}
