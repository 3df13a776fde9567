import ArgumentParser
import Foundation
import HotSwap
import Logging

@main
struct YOLOSwapCommand: AsyncParsableCommand {
    /// The only place logging is bootstrapped: to stderr, so stdout carries results (JSON) alone.
    /// The level comes from `YOLOSWAP_LOG_LEVEL` (trace, debug, info, notice, warning, error, critical; default info).
    static func main() async {
        // Fewer malloc arenas keep RSS flat across model swaps (see ProcessMemory.limitAllocatorArenas).
        ProcessMemory.limitAllocatorArenas(2)
        // A closed stdout or stderr (a reader such as `head` gone, the journal restarted under a running service) is a
        // failed write, which each command handles — not SIGPIPE, which would end the process unannounced.
        signal(SIGPIPE, SIG_IGN)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["YOLOSWAP_LOG_LEVEL"]
                .flatMap { Logger.Level(rawValue: $0) } ?? .info
            return handler
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
        // What `print` buffered is written now: a command whose results could not be written (a full disk, a closed
        // stdout) fails, rather than exiting 0 with its output lost.
        if StandardOutput.failed() {
            printError("yoloswap: cannot write to standard output: \(String(cString: strerror(errno)))")
            Foundation.exit(1)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "yoloswap",
        abstract: "YOLO object detection on ONNX Runtime, with seamless model hot-swap.",
        subcommands: [
            ServeCommand.self, ModelsCommand.self, DetectCommand.self, InspectCommand.self, BenchCommand.self,
            SwapCommand.self, BenchSwapCommand.self, OptimizeModelCommand.self, KeygenCommand.self, SignCommand.self,
            VerifyCommand.self, AuditCommand.self, ApplyCommand.self, DiffCommand.self, EvalCommand.self,
            BenchReleaseCommand.self, FleetCommandGroup.self, StreamCommand.self, BenchStreamCommand.self,
        ])
}
