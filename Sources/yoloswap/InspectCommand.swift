import ArgumentParser
import Foundation
import YOLO

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Print a model's schema: tensors, layout, classes, metadata.")

    @OptionGroup var modelOptions: ModelOptions

    func run() throws {
        let (file, detector, environment) = try modelOptions.load()
        let sig = detector.schema
        func dims(_ shape: [Int]) -> String { "[" + shape.map { $0 < 0 ? "?" : "\($0)" }.joined(separator: ", ") + "]" }
        print("model:         \(file.path)")
        print("sha256:        \(file.sha256)")
        print("size:          \(file.byteCount) bytes")
        print("runtime:       ONNX Runtime \(environment.library.version) (\(environment.library.path))")
        print("input:         \(sig.input.name) \(sig.input.dataType.rawValue) \(dims(sig.input.shape))"
            + (sig.dynamicInput ? " (dynamic; using \(sig.inputSize.height)x\(sig.inputSize.width))" : ""))
        print("output:        \(sig.output.name) \(sig.output.dataType.rawValue) \(dims(sig.output.shape))")
        print("format:        \(sig.outputFormat.rawValue)")
        print("input size:    \(sig.inputSize.height)x\(sig.inputSize.width) (HxW), stride \(sig.stride)")
        print("preprocessing: \(sig.channelOrder.rawValue.uppercased()), \(sig.normalization.rawValue), "
            + "letterbox pad 114")
        print("task:          \(sig.task)")
        print("classes:       \(sig.classCount)")
        for (i, name) in sig.classNames.enumerated() { print(String(format: "  %3d  %@", i, name as NSString)) }
        let custom = detector.backend.metadata.filter { $0.key != "names" }
        if !custom.isEmpty {
            print("metadata:")
            for (key, value) in custom.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
        }
    }
}
