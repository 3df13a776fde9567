import Foundation
import HotSwap
import TestSupport
import Testing

/// The kill -9 chaos loop: the real `yoloswap serve`, under detection load, is killed with SIGKILL at a random moment
/// of a random operation (load and activate a new model, stage and switch, rollback, stage a model with a slow
/// warm-up), then restarted. After every restart the invariants of a crash-safe hot swap must hold:
///
/// - the committed state is the last acknowledged one, or — for the operation the kill interrupted — the one it was
///   making (never a third);
/// - the slot serves exactly the committed model (`GET /v1/slots/default` and the `model.sha256` of a detection);
/// - every committed change has its audit intent and an outcome (written before the kill, or `interrupted` at the
///   restart), and no outcome claims a change that was not committed; no intent is left open;
/// - `yoloswap audit verify --expect-head` passes with the head seen before the kill (nothing cut off);
/// - no temporary file is left in the state directory or the repository, and no process of the killed server
///   outlives it.
///
/// `CHAOS_ITERATIONS` sets the number of kills (10 by default; `make chaos` runs 200). The moment of each kill is
/// drawn uniformly over 1.25 × the duration measured for that kind of operation, so that each phase — before the
/// intent, verification / loading, warm-up, between the commit and the outcome, after the outcome — is hit; the
/// phases hit are counted from what the kill left (the stage last seen, the committed state, the audit log) and
/// printed at the end.
@Suite("Chaos: kill -9 under load (real binary)", .serialized)
struct ChaosTests {
    static var iterations: Int { Int(ProcessInfo.processInfo.environment["CHAOS_ITERATIONS"] ?? "") ?? 10 }
    static let image = Data(Repository.bytes("models/images/bus.jpg"))

    enum Kind: String, CaseIterable {
        case loadActivate = "load+activate", stageSwitch = "stage+switch", rollback, slowStage = "stage(slow warm-up)"
    }

    /// What one operation did before the kill.
    struct Attempt {
        var kind: Kind
        /// The audit action of the operation (`load`, `switch`, `rollback`).
        var action: String
        /// The active model's sha256 if the operation commits.
        var target: String?
        /// Whether the client got the operation's answer (for a load: saw it `ready` or `failed`).
        var answered = false
        /// Whether the answer said the change was made.
        var succeeded = false
        /// The load's last stage seen by polling `GET /v1/operations/{id}`.
        var lastStage: String?
        var duration: Double?
    }

    @Test("SIGKILL at random moments of load / switch / rollback, restart: committed state, served model and audit agree")
    func killLoop() async throws {
        let world = try ChaosWorld()
        defer { world.remove() }
        let started = Date()
        var estimates: [Kind: Double] = [.loadActivate: 2, .stageSwitch: 0.2, .rollback: 0.2, .slowStage: 4]
        var phases: [String: Int] = [:]
        var variants = 0
        var generator = SystemRandomNumberGenerator()

        /// Runs `kind` against `server`, killing the server after `killAfter` seconds (never when nil).
        func attempt(_ kind: Kind, _ server: ServerProcess, killAfter: Double?) async throws -> Attempt {
            let active = try await server.slotView()
            var result: Attempt
            switch kind {
            case .loadActivate, .slowStage:
                let name: String
                if kind == .slowStage {
                    name = "slow.onnx"
                } else {
                    variants += 1
                    name = "v\(variants).onnx"
                    try world.writeVariant(name, of: variants % 2 == 0 ? "a.onnx" : "b.onnx", tag: "\(variants)")
                }
                let sha = try world.sha256(name)
                result = Attempt(kind: kind, action: "load", target: kind == .loadActivate ? sha : nil)
                let body: [String: Any] = ["model": name, "sha256": sha, "activate": kind == .loadActivate]
                result = try await timed(server, killAfter: killAfter, result) { attempt in
                    let (status, op) = try await server.json("POST", "/v1/slots/default/load",
                        token: ServerProcess.operatorToken, body: body)
                    guard status == 202, let id = op["id"] as? String else { return }
                    while true {
                        let (_, now) = try await server.json("GET", "/v1/operations/\(id)",
                            token: ServerProcess.viewerToken)
                        let stage = now["state"] as? String
                        attempt.lastStage = stage ?? attempt.lastStage
                        if stage == "ready" || stage == "failed" || stage == "cancelled" {
                            attempt.answered = true
                            attempt.succeeded = stage == "ready"
                            return
                        }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
            case .stageSwitch:
                variants += 1
                let name = "v\(variants).onnx"
                let sha = try world.writeVariant(name, of: variants % 2 == 0 ? "a.onnx" : "b.onnx", tag: "\(variants)")
                let (status, op) = try await server.json("POST", "/v1/slots/default/load?wait=true",
                    token: ServerProcess.operatorToken, body: ["model": name, "sha256": sha])
                try #require(status == 200, "staging \(name): \(op)")
                result = try await timed(server, killAfter: killAfter, Attempt(kind: kind, action: "switch", target: sha)) {
                    attempt in
                    let (status, _) = try await server.json("POST", "/v1/slots/default/switch",
                        token: ServerProcess.operatorToken)
                    attempt.answered = status != 0
                    attempt.succeeded = status == 200
                }
            case .rollback:
                result = try await timed(server, killAfter: killAfter,
                    Attempt(kind: kind, action: "rollback", target: active.standby?.sha256)) { attempt in
                    let (status, _) = try await server.json("POST", "/v1/slots/default/rollback",
                        token: ServerProcess.operatorToken)
                    attempt.answered = status != 0
                    attempt.succeeded = status == 200
                }
            }
            return result
        }

        // Calibration: each kind once, not killed, measures how long it takes (and fills the optimized-model cache
        // for the base models).
        var server = try await ServerProcess(yaml: world.yaml, stateDirectory: world.state)
        let calibrationLoad = DetectionLoad(server, clients: 2, image: Self.image)
        for kind in [Kind.slowStage, .loadActivate, .stageSwitch, .rollback] {
            try await waitForStandbyIfNeeded(kind, server)
            let done = try await attempt(kind, server, killAfter: nil)
            try #require(done.succeeded, "calibration \(kind.rawValue) failed: \(server.log.suffix(3000))")
            estimates[kind] = done.duration ?? estimates[kind]!
        }
        _ = await calibrationLoad.stop()
        var before = try #require(try world.committed())
        var head = try #require(try await server.auditRecords().last)

        for iteration in 1...Self.iterations {
            let kind = Kind.allCases.randomElement(using: &generator)!
            try await waitForStandbyIfNeeded(kind, server)
            let delay = Double.random(in: 0...(1.25 * estimates[kind]!), using: &generator)
            let load = DetectionLoad(server, clients: 2, image: Self.image)
            let done = try await attempt(kind, server, killAfter: delay)
            server.stop(signal: SIGKILL)
            let answers = await load.stop()
            let context = "iteration \(iteration), \(kind.rawValue) killed after \(Int(delay * 1000)) ms"

            // Requests under way were answered by the model before or the model after, never failed.
            let allowed = Set([before.active.sha256] + (done.target.map { [$0] } ?? []))
            #expect(answers.allSatisfy { $0.status == 0 || $0.status == 200 },
                "\(context): statuses \(Set(answers.map(\.status)))")
            #expect(answers.allSatisfy { $0.sha256 == nil || allowed.contains($0.sha256!) }, "\(context)")

            // The killed server's children end with it (a child optimizer notices within 50 ms, given a CPU: 10 s on
            // a loaded machine); what they wrote goes with them.
            var orphans = world.processesUsingState()
            for _ in 0..<200 where !orphans.isEmpty {
                try await Task.sleep(for: .milliseconds(50))
                orphans = world.processesUsingState()
            }
            #expect(orphans.isEmpty, "\(context): processes outlive the killed server: \(orphans)")
            for pid in orphans { kill(pid, SIGKILL) }

            // Committed: the state before, or the change the operation was making; the change if it was acknowledged.
            let after = try #require(try world.committed(), "\(context): no committed state")
            let changed = after.generation != before.generation
            if changed {
                #expect(after.generation == before.generation + 1, "\(context)")
                #expect(done.target != nil && after.active.sha256 == done.target, "\(context): committed \(after.active)")
            } else {
                #expect(after == before, "\(context): same generation, another state")
            }
            if done.answered, done.target != nil { #expect(changed == done.succeeded, "\(context): answered \(done)") }

            // The audit chain verifies and still holds the head seen before the kill.
            let verify = try await runProcess(Repo.binary, ["audit", "verify", "--state-dir", world.state.path,
                "--expect-head", "\(head.id):\(head.hash)"])
            #expect(verify.status == 0, "\(context): \(verify.stdout)\(verify.stderr)")

            server = try await ServerProcess(yaml: world.yaml, stateDirectory: world.state)
            let view = try await server.slotView()
            #expect(view.active?.sha256 == after.active.sha256 && view.generation == after.generation,
                "\(context): serves \(String(describing: view.active)) gen \(view.generation), committed \(after)")
            let (status, served) = await server.detectModel(Self.image)
            #expect(status == 200 && served == after.active.sha256, "\(context): detection by \(served ?? "-")")

            // The audit entries since the last check: the operation's intent, its outcome, the restart's records.
            let records = try await server.auditRecords()
            let new = records.filter { $0.id > head.id }
            let mine = new.filter { $0.actor == "alice" && $0.action == done.action }
            let intent = mine.first { $0.result == "intent" }
            let outcome = mine.first { $0.result != "intent" && $0.result != "interrupted" }
            let interrupted = new.first { $0.result == "interrupted" }
            if changed {
                #expect(intent?.sha256 == after.active.sha256, "\(context): no intent for the commit: \(new)")
                #expect(outcome?.result == "succeeded" || (outcome == nil && interrupted != nil),
                    "\(context): committed change without its outcome: \(new)")
            } else if done.target != nil {
                #expect(outcome?.result != "succeeded", "\(context): outcome claims an uncommitted change: \(new)")
            }
            // Every intent is closed: by its outcome before the kill, or as interrupted at the restart.
            let open = new.filter { $0.result == "intent" }.count - new.filter { $0.result != "intent"
                && $0.actor == "alice" }.count
            #expect(open == 0, "\(context): intents left open: \(new)")
            #expect(new.contains { $0.action == "restore" && $0.result == "succeeded"
                && $0.sha256 == after.active.sha256 }, "\(context): no restore record: \(new)")

            let phase = Self.phase(done, intent: intent != nil, changed: changed, outcome: outcome != nil)
            phases["\(kind.rawValue): \(phase)", default: 0] += 1
            print("chaos \(iteration): \(kind.rawValue) killed at \(Int(delay * 1000)) of ~\(Int(estimates[kind]! * 1000)) ms: "
                + phase)

            try await waitForIdle(server)
            let leftovers = world.temporaryFiles()
            #expect(leftovers.isEmpty, "\(context): temporary files left: \(leftovers)")

            // The kills spread over the whole operation as it runs now: as long as it last took, and longer when a
            // kill past that still found it unfinished.
            if let duration = done.duration {
                estimates[kind] = duration
            } else if delay > estimates[kind]! {
                estimates[kind] = delay * 1.2
            }
            before = after
            head = try #require(records.last)
        }
        server.stop()
        let seconds = Int(Date().timeIntervalSince(started))
        let summary = phases.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }.joined(separator: "\n")
        print("chaos: \(Self.iterations) kills in \(seconds) s; phases hit:\n\(summary)")
    }

    /// Which phase of its operation a kill hit, from what it left: the stage seen last, whether the intent was
    /// recorded, the committed state, whether the outcome was recorded, whether the client had its answer.
    static func phase(_ done: Attempt, intent: Bool, changed: Bool, outcome: Bool) -> String {
        if done.answered { return outcome || !changed ? "after the answer" : "after the answer, before the outcome" }
        if outcome { return "after the outcome, before the answer" }
        if changed { return "between the commit and the outcome (mid-commit)" }
        if !intent { return "before the intent" }
        switch done.lastStage {
        case "warming": return "warm-up"
        case "ready": return "after ready, before the outcome"
        case nil where done.action != "load": return "between the intent and the commit"
        default: return "queued / verifying / loading (\(done.lastStage ?? "no stage seen"))"
        }
    }

    /// Runs `body`, killing the server after `killAfter` seconds if it has not finished; records its duration.
    func timed(_ server: ServerProcess, killAfter: Double?, _ initial: Attempt,
               _ body: (inout Attempt) async throws -> Void) async throws -> Attempt {
        let start = Date()
        let finished = ManagedFlag()
        let killer = killAfter.map { delay in
            Task {
                let deadline = Date().addingTimeInterval(delay)
                while Date() < deadline, !finished.value { try? await Task.sleep(for: .milliseconds(1)) }
                server.stop(signal: SIGKILL)
            }
        }
        var attempt = initial
        // Once the server is killed, the request under way fails: that is the end of the attempt.
        try? await body(&attempt)
        if attempt.answered { attempt.duration = Date().timeIntervalSince(start) }
        finished.set()
        await killer?.value
        return attempt
    }

    /// A rollback needs a standby: a restarted server brings it back in the background.
    func waitForStandbyIfNeeded(_ kind: Kind, _ server: ServerProcess) async throws {
        guard kind == .rollback else { return }
        for _ in 0..<600 {
            if try await server.slotView().standby != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the standby never came back: \(server.log.suffix(2000))")
    }

    /// Waits until the slot has no load under way (the standby's restore), so that its files are complete.
    func waitForIdle(_ server: ServerProcess) async throws {
        for _ in 0..<600 {
            let (_, slot) = try await server.json("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
            let state = (slot["operation"] as? [String: Any])?["state"] as? String
            if state == nil || ["ready", "failed", "cancelled"].contains(state!) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
