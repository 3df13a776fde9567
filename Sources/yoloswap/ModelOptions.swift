import ArgumentParser
import Foundation
import HotSwap
import ONNXRuntime
import ORTBackend
import YOLO

/// Options shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Path to a YOLO ONNX model.")
    var model: String

    @Option(help: "Input size for dynamic-input models, N or HxW (default: the model's metadata imgsz).")
    var imgsz: String?

    @Option(name: .customLong("output-format"), help: "Force the output layout: yolov5, yolov8 or yolov10.")
    var outputFormat: String?

    @Option(help: "Intra-op threads for ONNX Runtime (0 = one per core).")
    var threads: Int = 0

    @Option(help: "Execution provider: cpu, cuda[:id] or tensorrt[:id].")
    var provider: String = "cpu"

    @Option(help: """
        Path to libonnxruntime.so (else ORT_DYLIB_PATH, beside the binary, its package's .ort/lib, the system).
        """)
    var ortLibrary: String?

    @Option(help: ArgumentHelp(
        "When idle ORT intra-op threads spin-wait for work: never, during-run (stop when a Run returns) or always.",
        valueName: "when"))
    var spin: IntraOpSpinning = .duringRun

    /// The most threads a thread flag takes: the service's own bound (`serving_threads`, `intra_op_threads`). ORT
    /// makes every intra-op thread asked for, each with its stack, before the first Run.
    static let maxThreads = 256

    func validate() throws {
        guard (0...Self.maxThreads).contains(threads) else {
            throw ValidationError("--threads lies in 0...\(Self.maxThreads) (0: one per core)")
        }
    }

    func parsedImageSize() throws -> ImageSize? {
        guard let imgsz else { return nil }
        // Every part a number: `640xfoo` or `640x` is refused, not read as 640.
        let parts = imgsz.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0) ?? 0 }
        switch parts.count {
        case 1 where parts[0] > 0: return ImageSize(width: parts[0], height: parts[0])
        case 2 where parts[0] > 0 && parts[1] > 0: return ImageSize(width: parts[1], height: parts[0])
        default: throw ValidationError("--imgsz must be N or HxW with positive integers, got '\(imgsz)'")
        }
    }

    /// Refuses `--imgsz` and `--output-format` for a command that loads its model as the service does (through the
    /// slot's load pipeline, which reads both from the model): given, they would be dropped without a word.
    func refuseDetectorOverrides(command: String) throws {
        for (flag, value) in [("--imgsz", imgsz), ("--output-format", outputFormat)] where value != nil {
            throw ValidationError("\(command) loads the model as the service does, whose input size and output "
                + "format come from the model: \(flag) is not taken")
        }
    }

    func parsedFormat() throws -> OutputFormat? {
        guard let outputFormat else { return nil }
        guard let format = OutputFormat(rawValue: outputFormat.lowercased()) else {
            throw ValidationError("--output-format must be one of yolov5, yolov8, yolov10; got '\(outputFormat)'")
        }
        return format
    }

    func sessionOptions() throws -> SessionOptions {
        guard let provider = ExecutionTarget(parsing: provider).map(ExecutionProvider.init) else {
            throw ValidationError("--provider must be cpu, cuda[:id] or tensorrt[:id]; got '\(self.provider)'")
        }
        try validate()
        return SessionOptions(intraOpThreads: threads, provider: provider, spinning: spin)
    }

    /// Loads ORT and the model the way the service does: the file's digest, then a session made by `ORTModelLoader`
    /// from bytes with that digest, then the YOLO detector over it.
    /// - Returns: the verified file, the detector and the ORT environment.
    func load() throws -> (file: ModelFile, detector: Detector, environment: ORTEnvironment) {
        let library = try ORTLibrary.load(explicitPath: ortLibrary)
        let environment = try ORTEnvironment(library: library)
        let options = try sessionOptions()
        let file = try ModelFile(verifying: model)
        let backend = try ORTModelLoader(environment: environment, options: options)
            .makeBackend(for: file, label: model, intraOpThreads: options.intraOpThreads)
        do {
            let detector = try Detector(backend: backend, imgsz: try parsedImageSize(), format: try parsedFormat())
            return (file, detector, environment)
        } catch let error as ModelSchemaError {
            throw failure("model \(model) is not a supported YOLO detector: \(error)")
        }
    }
}

extension IntraOpSpinning: ExpressibleByArgument {}

/// Writes a line to standard error.
func printError(_ message: String) {
    // Not `write(_:)`, which traps when the write fails (a closed pipe, a full disk).
    try? FileHandle.standardError.write(contentsOf: Data((message + "\n").utf8))
}

/// Says why a command failed (not how it was called: that is a `ValidationError`, exit 64 with the usage) and gives
/// the exit status 1 to throw.
func failure(_ message: String) -> ExitCode {
    printError("yoloswap: \(message)")
    return .failure
}
