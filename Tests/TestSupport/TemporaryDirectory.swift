import Foundation

/// A fresh, empty directory under the system temporary directory, removed with everything in it when the value is
/// dropped; so a test's files neither collide with another test's nor outlive it.
public final class TemporaryDirectory: Sendable {
    /// The directory's path.
    public let path: String

    /// Creates the directory, named `prefix` and a UUID (the prefix only helps to tell leftovers apart).
    public init(prefix: String = "yoloswap-test") throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The directory as a file URL.
    public var url: URL { URL(fileURLWithPath: path, isDirectory: true) }

    /// The path of `name` inside the directory (the file itself is not created).
    public func file(_ name: String) -> String { path + "/" + name }
}
