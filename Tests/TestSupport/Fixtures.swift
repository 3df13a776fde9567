import Foundation
import Primitives

/// Models and photos from `scripts/setup` that several test targets use.
public enum Fixtures {
    public static func synthetic(_ name: String) -> String { Repository.path("models/synthetic/\(name)") }

    /// Cheap real models with yolov3-tiny-coco's schema and class names (compatible with each other).
    public static let identity416 = synthetic("yolov5-nc80-416-identity.onnx")
    public static let identity320 = synthetic("yolov5-nc80-320-identity.onnx")
    public static let yolov3Tiny416 = Repository.path("models/yolov3-tiny-coco-416.onnx")

    public static let busJPEG = Repository.bytes("models/images/bus.jpg")

    /// Lower-case hex SHA-256 of a file.
    public static func sha256(_ path: String) throws -> String { try FileDigest.sha256(ofFileAt: path).sha256 }

    /// A new empty directory under the system temp directory.
    public static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("hotswap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Polls an async `condition` every few milliseconds until it holds or `timeout` passes; returns its last value. The
/// default bound is generous: it is only reached when the condition never holds, and a loaded CI machine is slow (in
/// the first half minute of a CI run, while every test starts at once, a test's tasks can wait 30 s for a thread).
public func eventuallyAsync(timeout: Duration = .seconds(60), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; returns its last value. The default
/// bound is as generous as `eventuallyAsync`'s, for the same reason.
public func eventually(timeout: Duration = .seconds(60), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return condition()
}
