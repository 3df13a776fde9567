import Foundation

/// The repository's files, for tests: its root (the folder holding Package.swift) and paths under it.
///
/// Tests read models, images, tools and the Python venv that `scripts/setup` puts in the checkout; every test
/// target finds them from here rather than from its own walk up from `#filePath`.
public enum Repository {
    /// The repository root: the nearest folder above this source file that holds Package.swift.
    public static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("no Package.swift above \(#filePath)")
    }()

    /// The file-system path of `relative` (e.g. `"models/images/bus.jpg"`) under the root.
    public static func path(_ relative: String) -> String { url(relative).path }

    /// The file URL of `relative` (e.g. `"models/images/bus.jpg"`) under the root.
    public static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    /// The bytes of a file fetched by scripts/setup; stops the test run with a clear message naming the file and
    /// `scripts/setup` when it is missing, since no test that needs it can mean anything without it.
    public static func bytes(_ relative: String) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path(relative)) else {
            fatalError("\(path(relative)) is missing or unreadable: run scripts/setup to fetch the test files")
        }
        return [UInt8](data)
    }
}
