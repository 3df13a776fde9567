import Foundation
import HotSwap
import Primitives
@testable import Releases
import TestSupport
import Testing
import YOLO

@Suite("Release engine: canary, A/B schedule, gates", .serialized)
struct ReleaseEngineTests {
    static let start = Date(timeIntervalSince1970: 1_780_000_000)

    static func canary(_ steps: [ReleaseSpec.Step], sticky: Bool = true) -> ReleaseSpec {
        var spec = ReleaseSpec(model: "cand.onnx", strategy: .canary)
        spec.steps = steps
        if sticky { spec.sticky_header = "X-Work-Order" }
        return spec
    }

    @Test("canary at 5 %: 2000 random work orders give the candidate a share within the binomial bound")
    func canaryShare() async throws {
        let models = try await TwoModels.make()
        defer { Task { await models.manager.shutdown() } }
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 5)]), at: Self.start),
            clock: ManualClock(Self.start))
        let roles = models.roles
        var candidate = 0
        for _ in 0..<2000 {
            let key = "WO-\(UInt64.random(in: 0...UInt64.max))"
            let choice = try #require(engine.choose(roles, request: RoutingContext(key: key)))
            if choice.variant == "candidate" {
                candidate += 1
                #expect(choice.model === roles.staged)
            } else {
                #expect(choice.model === roles.active)
            }
        }
        // n = 2000, p = 0.05: mean 100, σ ≈ 9.75; 4.5 σ either side (a false failure about once in 150 000 runs).
        #expect((56...144).contains(candidate), "candidate answered \(candidate) of 2000")
    }

    @Test("the same work order gets the same variant while the step is unchanged; a candidate key stays on it")
    func stickiness() async throws {
        let models = try await TwoModels.make()
        defer { Task { await models.manager.shutdown() } }
        let clock = ManualClock(Self.start)
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 20, hold_s: 10),
            .init(percent: 50, hold_s: 10)]), at: Self.start), clock: clock)
        let roles = models.roles
        let keys = (0..<300).map { "order-\($0)" }
        let first = keys.map { engine.choose(roles, request: RoutingContext(key: $0))?.variant }
        for _ in 0..<5 {
            #expect(keys.map { engine.choose(roles, request: RoutingContext(key: $0))?.variant } == first)
        }
        #expect(first.contains("candidate") && first.contains("baseline"))
        clock.advance(by: 10)
        #expect(engine.tick() == [.advanced(index: 1, percent: 50)])
        let second = keys.map { engine.choose(roles, request: RoutingContext(key: $0))?.variant }
        for (a, b) in zip(first, second) where a == "candidate" { #expect(b == "candidate") }
        #expect(second.filter { $0 == "candidate" }.count > first.filter { $0 == "candidate" }.count)
    }

    @Test("a ramp advances only once its hold and its minimum requests are both reached")
    func rampAfterHold() {
        let clock = ManualClock(Self.start)
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 1, hold_s: 600, min_requests: 3),
            .init(percent: 25, hold_s: 600)]), at: Self.start), clock: clock)
        clock.advance(by: 599)
        for _ in 0..<3 { #expect(engine.record(variant: "candidate", VariantSample(result([]))).isEmpty) }
        #expect(engine.tick().isEmpty)
        #expect(engine.record.stepIndex == 0)
        clock.advance(by: 1)
        #expect(engine.tick() == [.advanced(index: 1, percent: 25)])
        #expect(engine.record.candidatePercent(at: clock.now) == 25)
        // The new step's hold starts now: nothing more until 600 s later.
        clock.advance(by: 599)
        #expect(engine.tick().isEmpty)
        #expect(!engine.record.stepsComplete)
        clock.advance(by: 1)
        // A decision of its own, which the controller persists (before, none: a restart forgot it).
        #expect(engine.tick() == [.stepsComplete])
        #expect(engine.record.stepsComplete)
        #expect(engine.tick().isEmpty)
    }

    /// With 60 failed promotions of the paused release (120 transitions) the pause itself is no longer in the
    /// 100-entry history: the record's `pausedAt` still says when it began.
    @Test("a paused canary holds its step, and the pause does not count towards the hold (also once failed promotions pushed it out of the history)",
          arguments: [0, 60])
    func pauseHolds(failedPromotions: Int) {
        let clock = ManualClock(Self.start)
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 5, hold_s: 100),
            .init(percent: 50)]), at: Self.start), clock: clock)
        clock.advance(by: 50)
        #expect(engine.transition(from: [.running], to: .paused, action: "pause", by: "op") != nil)
        let pausedAt = clock.now
        clock.advance(by: 500)
        #expect(engine.tick().isEmpty)
        for _ in 0..<failedPromotions {
            #expect(engine.transition(from: [.paused], to: .promoting, action: "promote", by: "op") != nil)
            #expect(engine.transition(from: [.promoting], to: .paused, action: "promote-failed", by: "op") != nil)
        }
        #expect(engine.record.history.contains { $0.action == "pause" } == (failedPromotions == 0))
        #expect(engine.record.pausedAt == pausedAt)
        #expect(engine.transition(from: [.paused], to: .running, action: "resume", by: "op") != nil)
        #expect(engine.record.pausedAt == nil)
        clock.advance(by: 49)
        #expect(engine.tick().isEmpty)
        clock.advance(by: 1)
        #expect(engine.tick() == [.advanced(index: 1, percent: 50)])
    }

    @Test("entering promoting records the phase it came from: paused after a manual pause, else running")
    func promotedFrom() {
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 5)]), at: Self.start),
            clock: ManualClock(Self.start))
        for (from, action) in [(ReleasePhase.running, "resume"), (.paused, "pause"), (.running, "resume")] {
            if engine.phase != from {
                #expect(engine.transition(from: [.running, .paused], to: from, action: action, by: "op") != nil)
            }
            #expect(engine.transition(from: [.running, .paused], to: .promoting, action: "promote", by: "op") != nil)
            #expect(engine.record.promotedFrom == from)
            let back = engine.record.promotedFrom ?? .running
            #expect(engine.transition(from: [.promoting], to: back, action: "promote-failed", by: "op") != nil)
            #expect(engine.phase == from)
        }
    }

    @Test("abort returns all traffic to the baseline at once")
    func abortReturnsTraffic() async throws {
        let models = try await TwoModels.make()
        defer { Task { await models.manager.shutdown() } }
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 100)]), at: Self.start),
            clock: ManualClock(Self.start))
        let roles = models.roles
        #expect(engine.choose(roles, request: RoutingContext(key: "a"))?.variant == "candidate")
        #expect(engine.transition(from: [.running, .paused], to: .aborted, action: "abort", by: "op") != nil)
        for i in 0..<200 {
            let choice = engine.choose(roles, request: RoutingContext(key: "k\(i)"))
            #expect(choice?.variant == "baseline" && choice?.model === roles.active)
        }
        // A failed candidate request is retried on the baseline even while the candidate serves.
        let running = ReleaseEngine(record: record(Self.canary([.init(percent: 100)]), at: Self.start))
        #expect(running.choose(roles, request: RoutingContext(key: "a", preferActive: true))?.variant == "baseline")
    }

    // MARK: A/B

    static func ab(_ schedule: ABSchedule) -> ReleaseSpec {
        var spec = ReleaseSpec(model: "cand.onnx", strategy: .ab)
        spec.variant_names = .init(baseline: "v8s", candidate: "v10n")
        spec.schedule = schedule
        return spec
    }

    /// 2026-06-01 at `hh:mm:ss` in Berlin (UTC+2 in summer).
    static func berlin(_ h: Int, _ m: Int, _ s: Int = 0) -> Date {
        var c = DateComponents(year: 2026, month: 6, day: 1, hour: h, minute: m, second: s)
        c.timeZone = TimeZone(identifier: "Europe/Berlin")
        return Calendar(identifier: .gregorian).date(from: c)!
    }

    @Test("A/B windows in a time zone pick the right variant at the edges, across a restart")
    func abWindowsAcrossRestart() async throws {
        let models = try await TwoModels.make()
        defer { Task { await models.manager.shutdown() } }
        let spec = Self.ab(ABSchedule(timeZone: "Europe/Berlin",
            windows: [.init(from: "08:00", to: "20:00", variant: "v10n")], default: "v8s"))
        try spec.validate()
        let clock = ManualClock(Self.berlin(7, 59, 59))
        let engine = ReleaseEngine(record: record(spec, at: clock.now), clock: clock)
        let roles = models.roles
        func variant(_ e: ReleaseEngine) -> String? { e.choose(roles, request: RoutingContext())?.variant }
        #expect(variant(engine) == "v8s")
        clock.set(Self.berlin(8, 0))
        #expect(variant(engine) == "v10n")
        // A restart: the record goes through the store and a new engine reads it.
        let store = ReleaseStore(directory: models.directory.file("releases"))
        try store.save(engine.record)
        let reloaded = try #require(store.load().records.first)
        #expect(reloaded == engine.record)
        let restarted = ReleaseEngine(record: reloaded, clock: clock)
        #expect(variant(restarted) == "v10n")
        clock.set(Self.berlin(19, 59, 59))
        #expect(variant(restarted) == "v10n")
        clock.set(Self.berlin(20, 0))
        #expect(variant(restarted) == "v8s")
        clock.set(Self.berlin(23, 59, 59))
        #expect(variant(restarted) == "v8s")
    }

    @Test("the store replaces a record whole, owner-only, leaving no temporary file; a write that fails says where and keeps the last record")
    func storeReplacesRecord() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = ReleaseStore(directory: folder.path)
        var first = record(Self.canary([.init(percent: 5)]), at: Self.start)
        try store.save(first)
        first.stepIndex = 1
        try store.save(first)
        #expect(store.load().records == [first])
        let file = folder.path + "/\(first.slot).json"
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["\(first.slot).json"])
        // A folder named like the record's file: the rename over it fails.
        var other = first
        other.slot = "other"
        try FileManager.default.createDirectory(atPath: folder.path + "/other.json", withIntermediateDirectories: false)
        #expect { try store.save(other) } throws: { "\($0)".contains("/other.json") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
            == ["\(first.slot).json", "other.json"])
        #expect(store.load().records == [first])
    }

    @Test("each slot name has its own record file: a dotted name and a plain one spelling its old hex, two long dotted names alike in their first 100 bytes; a record under the old name is moved")
    func storeFileNamesDistinct() throws {
        let folder = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = ReleaseStore(directory: folder.path)
        let long = String(repeating: "a", count: 100)
        let names = ["a.b", "x-612e62", long + ".one", long + ".two", "line-1"]
        #expect(Set(names.map(ReleaseStore.fileName)).count == names.count)
        #expect(ReleaseStore.fileName("line-1") == "line-1")
        // A record an earlier version saved for "a.b" (under the hex of its name), and one of the plain slot that
        // spells it: saving "a.b" replaces its own old record only.
        var dotted = record(Self.canary([.init(percent: 5)]), at: Self.start)
        dotted.slot = "a.b"
        try JSONEncoder.yoloswap.encode(dotted).write(to: URL(fileURLWithPath: folder.path + "/x-612e62.json"))
        dotted.stepIndex = 1
        try store.save(dotted)
        #expect(store.load().records == [dotted])
        var plain = dotted
        plain.slot = "x-612e62"
        try store.save(plain)
        try store.save(dotted)
        #expect(Set(store.load().records.map(\.slot)) == ["a.b", "x-612e62"])
        // Cut off between the write and the removal: the record under the old name is the older one, and goes.
        var older = dotted
        older.stepIndex = 0
        try JSONEncoder.yoloswap.encode(older).write(to: URL(fileURLWithPath: folder.path + "/x-612e62.json"))
        #expect(store.load().records.filter { $0.slot == "a.b" } == [dotted])
        #expect(!FileManager.default.fileExists(atPath: folder.path + "/x-612e62.json"))
    }

    @Test("A/B rotation every 30 minutes flips exactly at the edges, the same after a restart")
    func abRotation() async throws {
        let models = try await TwoModels.make()
        defer { Task { await models.manager.shutdown() } }
        let spec = Self.ab(ABSchedule(timeZone: "Europe/Berlin", rotateEveryMinutes: 30))
        let clock = ManualClock(Self.berlin(10, 29, 59))
        let roles = models.roles
        let first = ReleaseEngine(record: record(spec, at: clock.now), clock: clock)
        let before = first.choose(roles, request: RoutingContext())?.variant
        clock.set(Self.berlin(10, 30))
        let after = first.choose(roles, request: RoutingContext())?.variant
        #expect(before != after)
        #expect(Set([before, after]) == Set(["v8s", "v10n"]))
        let restarted = ReleaseEngine(record: first.record, clock: clock)
        #expect(restarted.choose(roles, request: RoutingContext())?.variant == after)
        clock.set(Self.berlin(11, 0))
        #expect(restarted.choose(roles, request: RoutingContext())?.variant == before)
    }

    // MARK: Gates

    @Test("an error rate past the rule rolls back once the window has its minimum samples, with the figures")
    func errorRateRollback() {
        var spec = Self.canary([.init(percent: 50)])
        spec.rules = ReleaseRules(window: 20, min_samples: 10, rollback_if: .init(error_rate: 0.2))
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        // The one step (no hold) completes at the first sample; no rollback before the minimum.
        for _ in 0..<9 { #expect(!engine.record(variant: "candidate", .failure()).contains { $0 != .stepsComplete }) }
        let decisions = engine.record(variant: "candidate", .failure())
        guard case .rolledBack(let breach) = decisions.first else {
            Issue.record("expected a rollback, got \(decisions)")
            return
        }
        #expect(breach.rule == "error_rate > 0.2")
        #expect(breach.value == 1)
        #expect(breach.figures["candidate_samples"] == 10)
        #expect(engine.phase == .rolledBack)
        #expect(engine.record.reason?.contains("error_rate") == true)
    }

    @Test("a window smaller than the default minimum samples is judged once full (it never was)")
    func smallWindowJudged() {
        var spec = Self.canary([.init(percent: 50)])
        spec.rules = ReleaseRules(window: 20, rollback_if: .init(error_rate: 0.2))
        #expect(spec.rules?.minSamples == 20)
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        // The one step (no hold) completes at the first sample; no rollback before the minimum.
        for _ in 0..<19 { #expect(!engine.record(variant: "candidate", .failure()).contains { $0 != .stepsComplete }) }
        guard case .rolledBack(let breach) = engine.record(variant: "candidate", .failure()).first else {
            Issue.record("expected a rollback once the window of 20 was full")
            return
        }
        #expect(breach.rule == "error_rate > 0.2")
    }

    @Test("a candidate whose detections disagree rolls back on agreement_f1; promote_after promotes a good one")
    func agreementGate() {
        var spec = ReleaseSpec(model: "c.onnx", strategy: .shadow)
        spec.rules = ReleaseRules(window: 50, min_samples: 5, rollback_if: .init(agreement_f1: 0.9),
            promote_after: .init(min_requests: 8))
        let good = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        let bad = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        let base = result([detection("bolt", 10, 10), detection("nut", 50, 50)])
        var promoted = false
        for i in 0..<8 {
            let (pair, decisions) = good.recordPair(baseline: base, candidate: base)
            #expect(pair.agrees)
            if i == 7 { promoted = decisions.contains { if case .promote = $0 { true } else { false } } }
        }
        #expect(promoted)
        #expect(good.phase == .promoting)
        #expect(good.status().agreement?.f1 == 1)
        var rolledBack = false
        for _ in 0..<5 {
            let wrong = result([detection("washer", 10, 10), detection("nut", 50, 50)])
            let (_, decisions) = bad.recordPair(baseline: base, candidate: wrong)
            rolledBack = rolledBack || decisions.contains { if case .rolledBack = $0 { true } else { false } }
        }
        #expect(rolledBack)
        #expect(bad.phase == .rolledBack)
        #expect(bad.record.breach?.rule == "agreement_f1 < 0.9")
        #expect(bad.status().agreement?.unmatched_confusion == ["bolt → washer": 5])
    }

    @Test("failed candidate runs are no answers: they count towards neither a step's minimum nor promote_after's min_requests")
    func failuresAreNoAnswers() {
        let clock = ManualClock(Self.start)
        var spec = Self.canary([.init(percent: 5, hold_s: 0, min_requests: 3), .init(percent: 100)])
        spec.rules = ReleaseRules(min_samples: 3, promote_after: .init(steps_complete: false, min_requests: 3))
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: clock)
        var decisions: [ReleaseDecision] = []
        for _ in 0..<10 { decisions += engine.record(variant: "candidate", .failure()) }
        decisions += engine.tick()
        #expect(decisions.isEmpty, "\(decisions)")
        #expect(engine.record.stepIndex == 0 && engine.record.phase == .running)
        for _ in 0..<3 { decisions += engine.record(variant: "candidate", VariantSample(result([]))) }
        #expect(decisions.contains(.advanced(index: 1, percent: 100)), "\(decisions)")
        #expect(decisions.contains { if case .promote = $0 { true } else { false } }, "\(decisions)")
    }

    @Test("promote_after waits until every rule has its minimum samples (it promoted on no evidence)")
    func promotionNeedsJudgedRules() {
        var spec = ReleaseSpec(model: "c.onnx", strategy: .shadow)
        spec.rules = ReleaseRules(window: 50, min_samples: 5, rollback_if: .init(agreement_f1: 0.9),
            promote_after: .init(min_requests: 1))
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        let base = result([detection("bolt", 10, 10)])
        for i in 0..<5 {
            let (_, decisions) = engine.recordPair(baseline: base, candidate: base)
            let promoted = decisions.contains { if case .promote = $0 { true } else { false } }
            #expect(promoted == (i == 4), "pair \(i + 1): \(decisions)")
        }
    }

    @Test("rules a release cannot feed do not hold promotion back: p99_ratio at a 100 % step, agreement_f1 in a canary")
    func promotionWithUnfedRules() {
        var spec = Self.canary([.init(percent: 100)])
        spec.rules = ReleaseRules(window: 50, min_samples: 5,
            rollback_if: .init(p99_ratio: 1.5, agreement_f1: 0.9),
            promote_after: .init(steps_complete: false, min_requests: 1))
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        var promoted = false
        for _ in 0..<5 {
            let decisions = engine.record(variant: "candidate", VariantSample(result([detection("bolt", 0, 0)])))
            promoted = promoted || decisions.contains { if case .promote = $0 { true } else { false } }
        }
        #expect(promoted, "the baseline serves nothing to compare with, and a canary has no pairs")
    }

    @Test("a schedule that gives the baseline other hours holds promotion until its rules have both windows, though the candidate serves now")
    func scheduledPromotionWaitsForBaseline() {
        // 09:00 in Berlin, inside the candidate's window: the baseline serves from 20:00 to 08:00.
        let clock = ManualClock(Self.berlin(9, 0))
        var spec = Self.ab(ABSchedule(timeZone: "Europe/Berlin",
            windows: [.init(from: "08:00", to: "20:00", variant: "v10n")]))
        spec.rules = ReleaseRules(window: 50, min_samples: 5, rollback_if: .init(p99_ratio: 1.2),
            promote_after: .init(min_requests: 5))
        let engine = ReleaseEngine(record: record(spec, at: clock.now), clock: clock)
        func promotes(_ variant: String) -> Bool {
            engine.record(variant: variant, VariantSample(result([detection("bolt", 0, 0)])))
                .contains { if case .promote = $0 { true } else { false } }
        }
        // It promoted here, the p99 rule never judged: the candidate's hours made the baseline count as unserved.
        #expect(!(0..<20).contains { _ in promotes("v10n") })
        clock.set(Self.berlin(21, 0))
        #expect((0..<5).contains { _ in promotes("v8s") }, "both windows full, no rule breached")
        // A schedule whose windows leave the baseline no minute of the day promotes without it, as a 100 % step does.
        var always = Self.ab(ABSchedule(windows: [.init(from: "00:00", to: "24:00", variant: "v10n")]))
        always.rules = spec.rules
        let alone = ReleaseEngine(record: record(always, at: clock.now), clock: clock)
        #expect((0..<5).contains { _ in
            alone.record(variant: "v10n", VariantSample(result([detection("bolt", 0, 0)])))
                .contains { if case .promote = $0 { true } else { false } }
        })
    }

    @Test("A/B weights near Double's largest give the share their ratio (it was inf: every request to the candidate, the status unencodable)")
    func hugeWeights() async throws {
        var spec = ReleaseSpec(model: "cand.onnx", strategy: .ab)
        spec.weights = ["baseline": 1e307, "candidate": 1e307]
        try spec.validate()
        #expect(spec.abCandidatePercent == 50)
        spec.weights = ["baseline": 1e307, "candidate": 3e307]
        #expect(spec.abCandidatePercent == 75)
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        #expect(throws: Never.self) { try JSONEncoder.yoloswap.encode(engine.status(energy: nil)) }
        // A share below the split's resolution (0.01 %): served as 0.01 % (ten times 0.001), or never (underflowed).
        for weights in [["baseline": 99.999, "candidate": 0.001], ["baseline": 1e300, "candidate": 1e-30]] {
            spec.weights = weights
            #expect(throws: ReleaseError.self, "\(weights)") { try spec.validate() }
        }
        spec.weights = ["baseline": 99.99, "candidate": 0.01]
        #expect(throws: Never.self) { try spec.validate() }
    }

    @Test("a release body's unknown keys are refused with their paths (a misspelt gate was dropped without a word)")
    func unknownKeysRefused() throws {
        let body = #"{"model": "m.onnx", "strategy": "canary", "steps": [{"percent": 5, "hold": 60}], "rules": "#
            + #"{"rollbackIf": {"error_rate": 0.01}, "promote_after": {"min_s": 600}}, "golden_gate": null}"#
        #expect(throws: StrictJSON.UnknownKeys(paths: ["rules.rollbackIf", "steps[0].hold"])) {
            try StrictJSON.decode(ReleaseSpec.self, from: Data(body.utf8))
        }
        // Every known key, some of them null, with dictionaries of free keys: accepted, equal to a plain decode.
        let good = #"{"model": "m.onnx", "strategy": "ab", "weights": {"A": 1, "B": 3}, "variant_names": "#
            + #"{"baseline": "A", "candidate": "B"}, "rules": {"window": 10, "rollback_if": {"p99_ratio": 2}}, "#
            + #""version": null, "iou_threshold": 0.6}"#
        let spec = try StrictJSON.decode(ReleaseSpec.self, from: Data(good.utf8))
        #expect(spec == (try JSONDecoder().decode(ReleaseSpec.self, from: Data(good.utf8))))
        #expect(spec.abCandidatePercent == 75)
    }

    /// 2^53 + 1 written with 120 zeros after the point: Foundation's `JSONDecoder` traps decoding it as an integer.
    static let trappingNumber = "0." + String(repeating: "0", count: 120) + "9007199254740993e136"

    @Test("a number token too long for JSONDecoder's integer path (it trapped: a precondition, the process gone) is refused before decoding; long digits in strings pass")
    func longNumbersRefused() throws {
        let body = #"{"model": "m.onnx", "strategy": "canary", "rules": {"window": \#(Self.trappingNumber)}}"#
        #expect(throws: JSONNumbers.TooLong(length: Self.trappingNumber.utf8.count, offset: 62)) {
            try StrictJSON.decode(ReleaseSpec.self, from: Data(body.utf8))
        }
        // 64 characters still pass the guard (a Double's shortest form has at most 24); inside strings, escaped
        // quotes included, nothing is a number.
        let longest = "1" + String(repeating: "0", count: 61) + "e0"
        try JSONNumbers.check(Array(#"[\#(longest), "\#(Self.trappingNumber)", "\"\#(Self.trappingNumber)\""]"#.utf8))
        #expect(throws: JSONNumbers.TooLong.self) { try JSONNumbers.check(Array("[\(longest)0]".utf8)) }
        #expect(throws: JSONNumbers.TooLong.self) {
            try JSONNumbers.check(Array(#"["a\\", \#(Self.trappingNumber)]"#.utf8))
        }
    }

    @Test("no automatic promotion on no evidence: a candidate that fails every request, one whose p99 rule has no figure, a shadow whose copies were all shed — however long they hold")
    func noPromotionWithoutAnswers() {
        let clock = ManualClock(Self.start)
        // A canary at 50 % whose candidate fails every request (each retried on the baseline): 60 s and 50 failures
        // in, `promote_after: {}` and a p99 rule it never had a figure for promoted it.
        var canary = Self.canary([.init(percent: 50, hold_s: 60)])
        canary.rules = ReleaseRules(rollback_if: .init(p99_ratio: 1.5), promote_after: .init())
        let failing = ReleaseEngine(record: record(canary, at: Self.start), clock: clock)
        var decisions: [ReleaseDecision] = []
        for _ in 0..<60 {
            decisions += failing.record(variant: "candidate", .failure())
            decisions += failing.record(variant: "baseline", VariantSample(result([])))
        }
        clock.advance(by: 3600)
        decisions += failing.tick()
        #expect(!decisions.contains { if case .promote = $0 { true } else { false } }, "\(decisions)")
        #expect(failing.phase == .running)
        // A shadow whose copies were all shed, with a rule that needs no sample and an hour's hold.
        var shadow = ReleaseSpec(model: "c.onnx", strategy: .shadow)
        shadow.rules = ReleaseRules(rollback_if: .init(non_finite_outputs: 0), promote_after: .init(min_s: 600))
        let shed = ReleaseEngine(record: record(shadow, at: Self.start), clock: clock)
        for _ in 0..<100 { shed.recordShed(saturated: true) }
        clock.advance(by: 3600)
        #expect(!shed.tick().contains { if case .promote = $0 { true } else { false } })
        #expect(shed.phase == .running)
        // Given answers, the same shadow is promoted: what held it back was the evidence.
        let base = result([detection("bolt", 10, 10)])
        var promoted = false
        for _ in 0..<60 where !promoted {
            promoted = shed.recordPair(baseline: base, candidate: base).1
                .contains { if case .promote = $0 { true } else { false } }
        }
        #expect(promoted)
    }

    @Test("an automatic promotion that fails is tried again after 5 s, then 10 s, not at every tick")
    func failedAutomaticPromotionBacksOff() {
        var spec = ReleaseSpec(model: "c.onnx", strategy: .shadow)
        spec.rules = ReleaseRules(window: 50, min_samples: 2, promote_after: .init(min_requests: 2))
        let clock = ManualClock(Self.start)
        let engine = ReleaseEngine(record: record(spec, at: Self.start), clock: clock)
        let base = result([detection("bolt", 10, 10)])
        _ = engine.recordPair(baseline: base, candidate: base)
        let promoting = engine.recordPair(baseline: base, candidate: base).1
        #expect(promoting.contains { if case .promote = $0 { true } else { false } })
        #expect(engine.record.promotedFrom == .running)
        func promotes() -> Bool { engine.tick().contains { if case .promote = $0 { true } else { false } } }
        // What the controller does when the flip cannot be committed.
        func fail(backoff: TimeInterval) {
            #expect(engine.promotionFailed() == backoff)
            #expect(engine.transition(from: [.promoting], to: .running, action: "promote-failed", by: "system")
                != nil)
        }
        fail(backoff: 5)
        clock.advance(by: 4)
        #expect(!promotes(), "promoted again before the backoff ended")
        clock.advance(by: 1)
        #expect(promotes())
        fail(backoff: 10)
        clock.advance(by: 9)
        #expect(!promotes())
        clock.advance(by: 1)
        #expect(promotes())
        #expect(engine.phase == .promoting)
    }

    @Test("p99 ratio and detections drift rules compare the variants' windows")
    func latencyAndDrift() {
        var spec = Self.canary([.init(percent: 50)])
        spec.rules = ReleaseRules(window: 100, min_samples: 20, rollback_if: .init(p99_ratio: 1.5))
        let slow = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        for _ in 0..<20 { _ = slow.record(variant: "baseline", VariantSample(result([], ms: 10))) }
        var decisions: [ReleaseDecision] = []
        for _ in 0..<20 { decisions += slow.record(variant: "candidate", VariantSample(result([], ms: 16))) }
        #expect(decisions.count == 1)
        #expect(slow.record.breach?.rule == "p99_ratio > 1.5")
        #expect(abs((slow.record.breach?.value ?? 0) - 1.6) < 1e-9)

        spec.rules = ReleaseRules(window: 100, min_samples: 20, rollback_if: .init(detections_per_image_drift: 0.3))
        let drifting = ReleaseEngine(record: record(spec, at: Self.start), clock: ManualClock(Self.start))
        let two = result([detection("a", 0, 0), detection("a", 30, 30)])
        let one = result([detection("a", 0, 0)])
        for _ in 0..<20 { _ = drifting.record(variant: "baseline", VariantSample(two)) }
        for _ in 0..<19 { #expect(drifting.record(variant: "candidate", VariantSample(one)).isEmpty) }
        #expect(drifting.record(variant: "candidate", VariantSample(one)).count == 1)
        #expect(drifting.record.breach?.rule == "detections_per_image_drift > 0.3")
    }

    @Test("per-variant figures: requests, errors, percentiles, detections per image, class counts")
    func figures() {
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 50)]), at: Self.start),
            clock: ManualClock(Self.start))
        for ms in 1...100 {
            _ = engine.record(variant: "candidate", VariantSample(result([detection("nut", 0, 0, conf: 0.5)],
                ms: Double(ms))))
        }
        _ = engine.record(variant: "candidate", .failure())
        let status = engine.status()
        let c = status.variants["candidate"]
        #expect(c?.requests == 101)
        #expect(c?.errors == 1)
        #expect(abs((c?.p50_ms ?? 0) - 50) < 0.1)
        #expect(abs((c?.p99_ms ?? 0) - 99) < 0.1)
        #expect(c?.detections_per_image == 1)
        #expect(abs((c?.mean_confidence ?? 0) - 0.5) < 1e-6)
        #expect(c?.class_counts == ["nut": 100])
        #expect(status.variants["baseline"]?.requests == 0)
        #expect(status.energy.available == false && status.energy.reason != nil)
    }

    // MARK: Agreement and validation

    @Test("greedy matching per class at the IoU threshold: precision, recall, mean IoU, confusion")
    func matching() {
        let base = [detection("bolt", 0, 0), detection("bolt", 100, 100), detection("nut", 200, 200)]
        // One exact bolt, one bolt shifted by half its side (IoU 1/3: no match at 0.5), one nut called a washer.
        let cand = [detection("bolt", 0, 0, conf: 0.8), detection("bolt", 105, 100, conf: 0.7),
            detection("washer", 200, 200)]
        let pair = PairComparison(baseline: base, candidate: cand, iouThreshold: 0.5)
        #expect(pair.matched == 1)
        #expect(!pair.agrees)
        #expect(abs(pair.confidenceDeltaSum - 0.1) < 1e-6)
        #expect(pair.confusion == ["nut → washer": 1, "(none) → bolt": 1, "bolt → (none)": 1])
        var totals = AgreementTotals()
        totals.add(pair, baselineMs: 10, candidateMs: 15)
        #expect(abs(totals.precision - 1.0 / 3) < 1e-12)
        #expect(abs(totals.recall - 1.0 / 3) < 1e-12)
        #expect(totals.latencyRatio == 1.5)
        #expect(totals.meanIoU == 1)
        // At IoU 0.3 the shifted bolt matches too.
        #expect(PairComparison(baseline: base, candidate: cand, iouThreshold: 0.3).matched == 2)
        // Nothing on either side agrees.
        var empty = AgreementTotals()
        empty.add(PairComparison(baseline: [], candidate: [], iouThreshold: 0.5), baselineMs: 1, candidateMs: 1)
        #expect(empty.f1 == 1)
    }

    @Test("invalid release requests are refused with the field named", arguments: [
        #"{"model": "m.onnx", "strategy": "canary", "steps": [{"percent": 50}, {"percent": 5}]}"#,
        #"{"model": "m.onnx", "strategy": "canary", "steps": [{"percent": 101}]}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "mirror_percent": -1}"#,
        #"{"model": "m.onnx", "strategy": "canary", "mirror_percent": 10}"#,
        #"{"model": "m.onnx", "strategy": "ab", "schedule": {"rotate_every_min": 0}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "schedule": {"windows": [{"from": "25:00", "to": "08:00", "variant": "baseline"}]}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "schedule": {"time_zone": "Mars/Olympus", "rotate_every_min": 5}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "weights": {"nobody": 1}}"#,
        // Each finite, their sum not: the share was inf/inf.
        #"{"model": "m.onnx", "strategy": "ab", "weights": {"baseline": 1.7e308, "candidate": 1e307}}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "sticky_header": "X Bad"}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "rules": {"window": 10, "min_samples": 11}}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "iou_threshold": 0}"#,
        // Mirrored copies run at lowered priority: their latency is no measure of the candidate's.
        #"{"model": "m.onnx", "strategy": "shadow", "rules": {"rollback_if": {"p99_ratio": 1.5}}}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "version": "\#(String(repeating: "v", count: 129))"}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "sha256": "0123"}"#,
        // Never judged outside a shadow (no pairs): the release promoted past it.
        #"{"model": "m.onnx", "strategy": "canary", "rules": {"rollback_if": {"agreement_f1": 0.9}}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "rules": {"rollback_if": {"agreement_f1": 0.9}}}"#,
        // Fractions: 5 % written as 5 never trips; 90 trips at once.
        #"{"model": "m.onnx", "strategy": "canary", "rules": {"rollback_if": {"error_rate": 5}}}"#,
        #"{"model": "m.onnx", "strategy": "shadow", "rules": {"rollback_if": {"agreement_f1": 90}}}"#,
        // No evidence at all: nothing mirrored, a candidate never served; a share below the split's resolution.
        #"{"model": "m.onnx", "strategy": "shadow", "mirror_percent": 0}"#,
        #"{"model": "m.onnx", "strategy": "ab", "weights": {"baseline": 1, "candidate": 0}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "weights": {"baseline": 1}}"#,
        #"{"model": "m.onnx", "strategy": "canary", "steps": [{"percent": 0.001}]}"#,
        // Schedules that never give the candidate a minute: a rotation without it, windows all the baseline's.
        #"{"model": "m.onnx", "strategy": "ab", "schedule": {"rotate_every_min": 60, "order": ["baseline"]}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "schedule": {"windows": [{"from": "08:00", "to": "20:00", "variant": "baseline"}]}}"#,
        #"{"model": "m.onnx", "strategy": "ab", "schedule": {"windows": [{"from": "00:00", "to": "24:00", "variant": "baseline"}], "default": "candidate"}}"#,
    ])
    func validation(_ body: String) throws {
        let spec = try JSONDecoder().decode(ReleaseSpec.self, from: Data(body.utf8))
        #expect(throws: ReleaseError.self) { try spec.validate() }
    }

    @Test("RAPL energy: read from a powercap folder, wrapping counters handled; unavailable without one")
    func energy() throws {
        let dir = try TemporaryDirectory(prefix: "rapl")
        let zone = dir.file("intel-rapl:0")
        try FileManager.default.createDirectory(atPath: zone, withIntermediateDirectories: true)
        try "1000000\n".write(toFile: zone + "/energy_uj", atomically: true, encoding: .utf8)
        try "10000000\n".write(toFile: zone + "/max_energy_range_uj", atomically: true, encoding: .utf8)
        let meter = EnergyMeter(root: dir.path)
        try "3500000\n".write(toFile: zone + "/energy_uj", atomically: true, encoding: .utf8)
        #expect(meter.reading().joules == 2.5)
        try "500000\n".write(toFile: zone + "/energy_uj", atomically: true, encoding: .utf8)
        #expect(meter.reading().joules == 9.5)
        // Each reading counts from the one before: a counter that wraps again between two readings is counted.
        try "9000000\n".write(toFile: zone + "/energy_uj", atomically: true, encoding: .utf8)
        #expect(meter.reading().joules == 18)
        try "2000000\n".write(toFile: zone + "/energy_uj", atomically: true, encoding: .utf8)
        #expect(meter.reading().joules == 21)
        let none = EnergyMeter(root: dir.file("absent"))
        #expect(none.reading().joules == nil && none.reading().unavailable != nil)
    }

    @Test("ground-truth feedback: per-variant precision, recall and mAP@0.5 (101-point), each answer judged once")
    func feedback() {
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 50)]), at: Self.start),
            clock: ManualClock(Self.start))
        let answer = [detection("bolt", 0, 0, conf: 0.9), detection("bolt", 50, 50, conf: 0.8)]
        let id = engine.rememberAnswer(variant: "candidate", detections: answer)
        let truths = [TrueBox(class_name: "bolt", box: Box(x1: 1, y1: 0, x2: 11, y2: 10)),
            TrueBox(class_name: "bolt", box: Box(x1: 80, y1: 80, x2: 90, y2: 90))]
        #expect(engine.feedback(requestID: id, truths: truths) == FeedbackOutcome(variant: "candidate",
            true_positives: 1, false_positives: 1, false_negatives: 1))
        #expect(engine.feedback(requestID: id, truths: truths) == nil)
        #expect(engine.feedback(requestID: "unknown", truths: truths) == nil)
        let figures = engine.status().feedback["candidate"]
        #expect(figures?.images == 1)
        #expect(figures?.precision == 0.5 && figures?.recall == 0.5)
        // Recall 0.5 at precision 1, then no more recall: 51 of the 101 recall points have precision 1.
        #expect(abs((figures?.map50 ?? 0) - 51.0 / 101) < 1e-12)
        #expect(engine.status().feedback["baseline"] == nil)
    }

    /// Past the cap on scored detections whole images are left out of the AP: their true boxes were still counted
    /// while their detections were not, and every class's AP fell with each image after.
    @Test("feedback past the scored-detection cap leaves the mAP where it was, precision and recall still counted")
    func feedbackPastTheCap() {
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 50)]), at: Self.start),
            clock: ManualClock(Self.start))
        let bolt = TrueBox(class_name: "bolt", box: Box(x1: 0, y1: 0, x2: 10, y2: 10))
        // One matched bolt, and unmatched nuts up to the cap (no nut truths: nuts get no AP).
        var first = [detection("bolt", 0, 0)]
        first += (1..<200_000).map { detection("nut", Double($0 % 1000) * 20, 500, conf: 0.5) }
        let id = engine.rememberAnswer(variant: "candidate", detections: first)
        #expect(engine.feedback(requestID: id, truths: [bolt])?.true_positives == 1)
        #expect(engine.status().feedback["candidate"]?.map50 == 1)
        let next = engine.rememberAnswer(variant: "candidate", detections: [detection("bolt", 0, 0)])
        #expect(engine.feedback(requestID: next, truths: [bolt])?.true_positives == 1)
        var figures = engine.status().feedback["candidate"]
        #expect(figures?.images == 2 && figures?.recall == 1)
        #expect(figures?.map50 == 1, "the second image's bolt counted without its detection")
        // Nor later images with no detection at all: their bolts alone would pull the AP down.
        let empty = engine.rememberAnswer(variant: "candidate", detections: [])
        #expect(engine.feedback(requestID: empty, truths: [bolt])?.false_negatives == 1)
        figures = engine.status().feedback["candidate"]
        #expect(figures?.images == 3 && figures?.map50 == 1)
    }

    @Test("answers kept for feedback are bounded by their detections too; an ended release keeps none and takes none")
    func feedbackAnswersBounded() {
        let engine = ReleaseEngine(record: record(Self.canary([.init(percent: 50)]), at: Self.start),
            clock: ManualClock(Self.start))
        let bolt = TrueBox(class_name: "bolt", box: Box(x1: 0, y1: 0, x2: 10, y2: 10))
        let big = (0..<(ReleaseEngine.feedbackDetectionsKept / 2)).map {
            detection("nut", Double($0 % 1000) * 20, 500, conf: 0.5)
        }
        let first = engine.rememberAnswer(variant: "candidate", detections: big)
        let second = engine.rememberAnswer(variant: "candidate", detections: big)
        // A third answer of that size puts the total past the bound: the oldest goes.
        let third = engine.rememberAnswer(variant: "candidate", detections: big)
        #expect(engine.feedback(requestID: first, truths: [bolt]) == nil)
        #expect(engine.feedback(requestID: second, truths: [bolt]) != nil)
        let kept = engine.rememberAnswer(variant: "candidate", detections: [detection("bolt", 0, 0)])
        engine.transition(from: [.loading, .running], to: .aborted, action: "abort", by: "op")
        #expect(engine.feedback(requestID: third, truths: [bolt]) == nil)
        #expect(engine.feedback(requestID: kept, truths: [bolt]) == nil)
        let after = engine.rememberAnswer(variant: "candidate", detections: [detection("bolt", 0, 0)])
        #expect(engine.feedback(requestID: after, truths: [bolt]) == nil)
        #expect(engine.feedbackStoreSize == (0, 0))

        // A line that judges every answer: the ids judged answers leave behind are bounded too.
        let judged = ReleaseEngine(record: record(Self.canary([.init(percent: 50)]), at: Self.start),
            clock: ManualClock(Self.start))
        for _ in 0..<(ReleaseEngine.feedbackAnswersKept * 5) {
            let id = judged.rememberAnswer(variant: "candidate", detections: [detection("bolt", 0, 0)])
            _ = judged.feedback(requestID: id, truths: [bolt])
        }
        #expect(judged.feedbackStoreSize.answers == 0)
        #expect(judged.feedbackStoreSize.ids <= 2 * ReleaseEngine.feedbackAnswersKept,
            "\(judged.feedbackStoreSize.ids) ids kept")
    }
}

@Suite("Sample windows")
struct SampleWindowTests {
    @Test("a window's running figures equal the figures recomputed from its last samples, as samples come and go",
          arguments: [1, 7, 50])
    func runningFiguresMatch(capacity: Int) {
        var random = SeededGenerator(seed: UInt64(capacity))
        var window = SampleWindow(capacity: capacity)
        var all: [VariantSample] = []
        for _ in 0..<500 {
            let failed = Int.random(in: 0..<10, using: &random) == 0
            // Repeated values too (whole milliseconds), and now and then none or a non-finite one.
            let choices: [Double] = [Double(Int.random(in: 1...30, using: &random)), .nan, .infinity]
            let pick = Int.random(in: 0..<20, using: &random) == 0 ? Int.random(in: 1...2, using: &random) : 0
            let ms: Double? = failed ? nil : choices[pick]
            let sample = VariantSample(milliseconds: ms, failed: failed, detections: Int.random(in: 0...5, using: &random),
                confidenceSum: 0, nonFinite: Int.random(in: 0..<30, using: &random) == 0 ? 1 : 0, classCounts: [:])
            window.add(sample)
            all.append(sample)
            let last = all.suffix(capacity)
            #expect(window.count == last.count)
            #expect(window.errorRate == Double(last.count { $0.failed }) / Double(last.count))
            #expect(window.nonFinite == last.reduce(0) { $0 + $1.nonFinite })
            let answered = last.filter { !$0.failed }
            #expect(window.detectionsPerImage == (answered.isEmpty ? nil
                : Double(answered.reduce(0) { $0 + $1.detections }) / Double(answered.count)))
            let sorted = last.compactMap(\.milliseconds).filter(\.isFinite).sorted()
            let rank = Int((0.99 * Double(sorted.count)).rounded(.up))
            #expect(window.p99 == (sorted.isEmpty ? nil : sorted[max(0, min(sorted.count - 1, rank - 1))]))
        }
    }
}
