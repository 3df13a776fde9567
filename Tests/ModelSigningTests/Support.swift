import Foundation
import TestSupport

extension TemporaryDirectory {
    /// Copies the synthetic YOLOv5 model (built by scripts/setup) into the directory as `name`; falls back to
    /// random bytes when the model is absent, since signing does not parse the model.
    func model(_ name: String = "model.onnx") throws -> String {
        let destination = file(name)
        let source = Repository.path("models/synthetic/yolov5-nc80-416-identity.onnx")
        if FileManager.default.fileExists(atPath: source) {
            try FileManager.default.copyItem(atPath: source, toPath: destination)
        } else {
            try Data((0..<4096).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: destination))
        }
        return destination
    }
}

/// Reads a file as bytes.
func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

/// Lower-case hex SHA-256 of a file, computed independently of the library (by coreutils).
func sha256sum(_ path: String) throws -> String {
    String(try runProcess("/usr/bin/sha256sum", [path]).stdout.prefix(64))
}

/// Edits a JSON file's top-level fields.
func editJSON(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
    let url = URL(fileURLWithPath: path)
    var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    edit(&object)
    try JSONSerialization.data(withJSONObject: object).write(to: url)
}
