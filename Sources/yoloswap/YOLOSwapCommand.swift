import ArgumentParser

@main
struct YOLOSwapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "yoloswap",
        abstract: "YOLO object detection on ONNX Runtime, with seamless model hot-swap.",
        subcommands: [DetectCommand.self, InspectCommand.self, BenchCommand.self])
}
