import ArgumentParser
import AuditLog
import Foundation
import Primitives

/// `yoloswap audit verify|list --state-dir DIR`: reads the server's audit log.
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Verify or list the tamper-evident audit log.",
        subcommands: [Verify.self, List.self])

    struct StateDirectory: ParsableArguments {
        @Option(name: .customLong("state-dir"), help: "The server's state directory (holds audit.sqlite).")
        var stateDir = "./var"

        func open() throws -> AuditLog {
            do { return try AuditLog(directory: stateDir, readOnly: true) } catch {
                printError("\(error)")
                throw ExitCode.failure
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the hash chain; report the first broken link (exit 1) or OK.")
        @OptionGroup var state: StateDirectory
        @Option(help: ArgumentHelp(
            "A head recorded earlier (GET /v1/audit/head or the log; the yoloswap_audit_head_sequence metric has only "
                + "its sequence): the log must still hold that entry with that hash, which shows a log cut back "
                + "behind it.",
            valueName: "SEQ:HASH"))
        var expectHead: String?

        func validate() throws {
            if let expectHead, AuditHead(expectHead) == nil {
                throw ValidationError("--expect-head takes SEQ:HASH (an entry number and its 64-digit hash)")
            }
        }

        func run() throws {
            let log = try state.open()
            let outcome: AuditVerification
            do { outcome = try log.verify() } catch {
                printError("audit verify failed: \(error)")
                throw ExitCode.failure
            }
            print(outcome.description)
            if case .intact(_, let head) = outcome { print("head hash: \(head)") }
            if !outcome.isIntact { throw ExitCode.failure }
            if let expected = expectHead.flatMap(AuditHead.init) {
                let problem: String?
                do { problem = try log.check(expectedHead: expected) } catch {
                    printError("audit verify failed: \(error)")
                    throw ExitCode.failure
                }
                if let problem {
                    print("audit log does not hold the expected head \(expected.description): \(problem)")
                    throw ExitCode.failure
                }
                print("expected head \(expected.entryID) present")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print entries, newest first.")
        @OptionGroup var state: StateDirectory
        @Option(help: "Only entries about this slot.") var slot: String?
        @Option(help: "At most this many entries.") var limit = 100
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            let log = try state.open()
            let entries: [AuditEntry]
            do { entries = try log.entries(slot: slot, limit: limit) } catch {
                printError("audit list failed: \(error)")
                throw ExitCode.failure
            }
            let encoder = JSONEncoder.yoloswap
            for entry in entries {
                print(json ? String(decoding: try encoder.encode(entry), as: UTF8.self) : entry.textLine)
            }
        }
    }
}
