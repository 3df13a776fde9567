import ArgumentParser
import Foundation

/// `yoloswap apply -f desired.yaml`: sends a desired-state document to a running server, which brings its slots and
/// routes to it (like `kubectl apply`). Prints the plan that was carried out and each slot's condition; exits 1 when
/// the document is refused or a slot did not converge.
struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Apply a desired-state document (YAML or JSON) to a running server.")
    @OptionGroup var connection: ModelsCommand.Connection
    @Option(name: .shortAndLong, help: "The desired-state document (- for standard input).") var file: String

    func run() async throws {
        let answer = try await DesiredDocumentUpload(file: file, connection: connection).send(dryRun: false)
        DesiredDocumentUpload.printPlan(answer, dryRun: false)
        let status = answer["status"] as? [String: Any] ?? [:]
        for (slot, value) in (status["slots"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            let conditions = ((value as? [String: Any])?["conditions"] as? [[String: Any]]) ?? []
            let current = conditions.first { $0["status"] as? String == "True" }
            let message = (current?["message"] as? String).map { ": \($0)" } ?? ""
            print("slot \(slot): \(current?["type"] ?? "?") (\(current?["reason"] ?? ""))\(message)")
        }
        print("generation \(answer["generation"] ?? "?")  sha256 \(answer["content_sha256"] ?? "?")")
        if answer["converged"] as? Bool != true { throw ExitCode(1) }
    }
}

/// `yoloswap diff -f desired.yaml`: what applying the document would change on a running server (a dry run: the
/// server checks the document in full and plans, and changes nothing). Exits 0 when nothing would change, 1 when
/// something would (as `kubectl diff`), 2 when the document is refused.
struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff", abstract: "Show what applying a desired-state document would change.")
    @OptionGroup var connection: ModelsCommand.Connection
    @Option(name: .shortAndLong, help: "The desired-state document (- for standard input).") var file: String

    func run() async throws {
        let answer: [String: Any]
        do { answer = try await DesiredDocumentUpload(file: file, connection: connection).send(dryRun: true) } catch {
            // What went wrong is printed (a refusal, an unreachable server print their own).
            if !(error is ExitCode) { printError("yoloswap diff: \(error)") }
            throw ExitCode(2)
        }
        DesiredDocumentUpload.printPlan(answer, dryRun: true)
        if !((answer["plan"] as? [Any]) ?? []).isEmpty { throw ExitCode(1) }
    }
}

/// Reads a document and sends it to `PUT /v1/desired`.
private struct DesiredDocumentUpload {
    let file: String
    let connection: ModelsCommand.Connection

    func send(dryRun: Bool) async throws -> [String: Any] {
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw failure("cannot read \(file)")
            }
            data = contents
        }
        let type = file.hasSuffix(".json") ? "application/json" : "application/yaml"
        return try await connection.client.json("PUT", "/v1/desired" + (dryRun ? "?dry_run=true" : ""), data: data,
            contentType: type)
    }

    static func printPlan(_ answer: [String: Any], dryRun: Bool) {
        let plan = (answer["plan"] as? [[String: Any]]) ?? []
        if plan.isEmpty { print(dryRun ? "no changes" : "unchanged") }
        for step in plan {
            let target = (step["slot"] as? String).map { " \($0)" } ?? ""
            print("\(dryRun ? "would " : "")\(step["action"] ?? "?")\(target)")
            print("  - \(step["from"] as? String ?? "(nothing)")")
            print("  + \(step["to"] as? String ?? "?")")
        }
    }
}
