import Foundation
import ONNXRuntime
import ORTBackend
import Testing
import YOLO

/// Paths of the repository and of what scripts/setup fetched.
enum Repo {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()
    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }
    static var python: String { path(".venv/bin/python") }
    static func model(_ name: String) -> String { path("models/\(name)") }
    static func image(_ name: String) -> String { path("models/images/\(name)") }
    static var binary: String { path(".build/debug/yoloswap") }
}

/// ORT, loaded once for the suite.
enum Runtime {
    static let environment: ORTEnvironment = {
        do { return try ORTEnvironment(library: ORTLibrary.load()) } catch {
            fatalError("ONNX Runtime could not be loaded (run scripts/setup): \(error)")
        }
    }()

    static func load(_ name: String, threads: Int = 1, imgsz: ImageSize? = nil) throws -> LoadedModel {
        try LoadedModel(path: Repo.model(name), environment: environment,
            options: SessionOptions(intraOpThreads: threads), imgsz: imgsz)
    }
}

/// Result of running a program to completion.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program and waits for it, collecting its output.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws
    -> ProcessResult
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = Repo.root
    if let environment { process.environment = environment }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes while the process runs, so neither fills up.
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
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
