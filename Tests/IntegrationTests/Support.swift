import Foundation
import HotSwap
import ONNXRuntime
import ORTBackend
import TestSupport
import Testing
import YOLO

/// Paths of what scripts/setup fetched and `swift build` built, under the repository root.
enum Repo {
    static var python: String { Repository.path(".venv/bin/python") }
    static func model(_ name: String) -> String { Repository.path("models/\(name)") }
    static func image(_ name: String) -> String { Repository.path("models/images/\(name)") }
    /// The `yoloswap` built beside this test bundle — under `make test-asan`, the AddressSanitizer build's — or, when
    /// there is none, the debug build's.
    static let binary: String = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("yoloswap").path
        return FileManager.default.isExecutableFile(atPath: beside) ? beside : Repository.path(".build/debug/yoloswap")
    }()
}

/// ORT, loaded once for the suite.
enum Runtime {
    static let environment: ORTEnvironment = {
        do { return try ORTEnvironment(library: ORTLibrary.load()) } catch {
            fatalError("ONNX Runtime could not be loaded (run scripts/setup): \(error)")
        }
    }()

    /// A detector over a session made the way the service makes it: the file's digest, then `ORTModelLoader`.
    static func load(_ name: String, threads: Int = 1, imgsz: ImageSize? = nil) throws -> Detector {
        let file = try ModelFile(verifying: Repo.model(name))
        let backend = try ORTModelLoader(environment: environment)
            .makeBackend(for: file, label: file.path, intraOpThreads: threads)
        return try Detector(backend: backend, imgsz: imgsz)
    }
}

/// One image's detections as printed by tools/reference.py and `yoloswap detect --format json`.
struct DetectionJSON: Decodable {
    struct Image: Decodable { var path: String; var width: Int; var height: Int }
    struct BoxJSON: Decodable { var x1: Double; var y1: Double; var x2: Double; var y2: Double }
    struct Item: Decodable {
        var class_id: Int
        var class_name: String
        var confidence: Double
        var box: BoxJSON
        var asBox: Box { Box(x1: box.x1, y1: box.y1, x2: box.x2, y2: box.y2) }
    }
    var image: Image
    var detections: [Item]
}

func decodeJSONLines(_ text: String) throws -> [DetectionJSON] {
    try text.split(separator: "\n").filter { $0.hasPrefix("{") }.map {
        try JSONDecoder().decode(DetectionJSON.self, from: Data($0.utf8))
    }
}
