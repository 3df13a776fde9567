import ArgumentParser
import Foundation

/// `yoloswap models release start|status|promote|pause|resume|abort`: a client of `/v1/slots/{slot}/release`.
struct ReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release", abstract: "Release a candidate model to real traffic: canary, shadow or A/B.",
        subcommands: [Start.self, Status.self, Promote.self, Pause.self, Resume.self, Abort.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a release of a candidate beside the slot's active model (prints its status).")
        @OptionGroup var connection: ModelsCommand.Connection
        @Option(help: "Slot name.") var slot = "default"
        @Option(help: "shadow, canary or ab (default: the spec's, else shadow).") var strategy: String?
        @Option(help: "Version label.") var version: String?
        @Option(help: "Expected SHA-256 of the candidate file.") var sha256: String?
        @Option(help: "Assign variants by this request header (sticky), e.g. X-Work-Order.") var stickyHeader: String?
        @Option(help: "Canary step PERCENT[:HOLD_S[:MIN_REQUESTS]] (repeatable, in order).") var step: [String] = []
        @Option(help: "Shadow: share of requests mirrored to the candidate (0-100).") var mirrorPercent: Double?
        @Option(help: "A/B weight NAME=WEIGHT (repeatable).") var weight: [String] = []
        @Option(help: "A/B by time: rotate the variants every N minutes.") var rotateEveryMin: Double?
        @Option(help: "A/B by time: a window HH:MM-HH:MM=NAME (repeatable).") var window: [String] = []
        @Option(help: "A/B by time: the variant outside the windows.") var defaultVariant: String?
        @Option(help: "A/B by time: the schedule's time zone (e.g. Europe/Berlin).") var timeZone: String?
        @Option(help: "Gate rules as JSON (see README → Releases).") var rules: String?
        @Option(help: "The whole request body as a JSON file (other options are added to it).") var spec: String?
        @Flag(help: "Wait until the candidate takes traffic (or fails).") var wait = false
        @Argument(help: "Candidate model path relative to the server's model repository.") var model: String?

        func run() async throws {
            var body: [String: Any] = [:]
            if let spec {
                guard let data = FileManager.default.contents(atPath: spec),
                      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                    throw ValidationError("--spec \(spec) is not a readable JSON object")
                }
                body = object
            }
            if let model { body["model"] = model }
            // Given, the flag wins over the spec file's strategy, as the other options do (before, it was dropped).
            if let strategy { body["strategy"] = strategy } else if body["strategy"] == nil { body["strategy"] = "shadow" }
            if let version { body["version"] = version }
            if let sha256 { body["sha256"] = sha256 }
            if let stickyHeader { body["sticky_header"] = stickyHeader }
            if !step.isEmpty { body["steps"] = try step.map(Self.parseStep) }
            if let mirrorPercent { body["mirror_percent"] = mirrorPercent }
            if !weight.isEmpty {
                var weights: [String: Double] = [:]
                for w in weight {
                    let kv = w.split(separator: "=", maxSplits: 1).map(String.init)
                    guard kv.count == 2, let value = Double(kv[1]) else {
                        throw ValidationError("--weight takes NAME=WEIGHT, got '\(w)'")
                    }
                    weights[kv[0]] = value
                }
                body["weights"] = weights
            }
            if rotateEveryMin != nil || !window.isEmpty {
                var schedule: [String: Any] = [:]
                if let rotateEveryMin { schedule["rotate_every_min"] = rotateEveryMin }
                if !window.isEmpty { schedule["windows"] = try window.map(Self.parseWindow) }
                if let defaultVariant { schedule["default"] = defaultVariant }
                if let timeZone { schedule["time_zone"] = timeZone }
                body["schedule"] = schedule
            }
            if let rules {
                guard let object = try? JSONSerialization.jsonObject(with: Data(rules.utf8)) else {
                    throw ValidationError("--rules must be a JSON object")
                }
                body["rules"] = object
            }
            guard body["model"] != nil else { throw ValidationError("give the candidate model (or --spec)") }
            try await connection.client.print("POST",
                "/v1/slots/\(slot.pathEscaped)/release" + (wait ? "?wait=true" : ""), body: body)
        }

        static func parseStep(_ text: String) throws -> [String: Any] {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard (1...3).contains(parts.count), let percent = Double(parts[0]) else {
                throw ValidationError("--step takes PERCENT[:HOLD_S[:MIN_REQUESTS]], got '\(text)'")
            }
            var step: [String: Any] = ["percent": percent]
            if parts.count > 1 {
                guard let hold = Double(parts[1]) else { throw ValidationError("--step: bad hold in '\(text)'") }
                step["hold_s"] = hold
            }
            if parts.count > 2 {
                guard let min = Int(parts[2]) else { throw ValidationError("--step: bad min_requests in '\(text)'") }
                step["min_requests"] = min
            }
            return step
        }

        static func parseWindow(_ text: String) throws -> [String: Any] {
            let kv = text.split(separator: "=", maxSplits: 1).map(String.init)
            let times = kv.first?.split(separator: "-").map(String.init) ?? []
            guard kv.count == 2, times.count == 2 else {
                throw ValidationError("--window takes HH:MM-HH:MM=NAME, got '\(text)'")
            }
            return ["from": times[0], "to": times[1], "variant": kv[1]]
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the slot's release with its live figures.")
        @OptionGroup var connection: ModelsCommand.Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await connection.client.print("GET", "/v1/slots/\(slot.pathEscaped)/release") }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Promote the candidate: it becomes active, the baseline the warm standby.")
        @OptionGroup var connection: ModelsCommand.Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await post(connection, slot, "promote") }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hold the release where it is (no step advances, no automatic promotion).")
        @OptionGroup var connection: ModelsCommand.Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await post(connection, slot, "pause") }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a paused release.")
        @OptionGroup var connection: ModelsCommand.Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await post(connection, slot, "resume") }
    }

    struct Abort: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Abort the release: every request goes to the baseline, the candidate is dropped.")
        @OptionGroup var connection: ModelsCommand.Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await post(connection, slot, "abort") }
    }

    static func post(_ connection: ModelsCommand.Connection, _ slot: String, _ action: String) async throws {
        try await connection.client.print("POST", "/v1/slots/\(slot.pathEscaped)/release/\(action)")
    }
}
