import FileWatch
import Foundation
import Primitives
import TestSupport
import Testing

/// The inotify watcher against real folders: kubelet's atomic-writer swap, an editor's rename, unrelated files,
/// bursts, stopping.
@Suite struct DirectoryWatcherTests {
    /// Collects what a watcher reports, on a task of its own.
    final class Collector: Sendable {
        let events = Locked<[Set<String>]>([])
        let finished = Locked(false)
        private let task: Task<Void, Never>

        init(_ watcher: DirectoryWatcher) {
            let events = self.events
            let finished = self.finished
            task = Task {
                for await names in watcher.changes { events.withLock { $0.append(names) } }
                finished.withLock { $0 = true }
            }
        }

        var count: Int { events.withLock { $0.count } }
        deinit { task.cancel() }
    }

    @Test func atomicWriterSwapIsReportedOnceAndReadsTheNewContent() async throws {
        let folder = try TemporaryDirectory(prefix: "configmap")
        let volume = ConfigMapVolume(directory: folder.path)
        try volume.publish("first")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml", "..data"])
        defer { watcher.stop() }
        let collector = Collector(watcher)

        try volume.publish("second")
        #expect(await eventually(timeout: .seconds(30)) { collector.count >= 1 })
        // The whole swap (a folder made, `..data_tmp` made and renamed, the old folder removed) is one burst.
        try await Task.sleep(for: .milliseconds(500))
        #expect(collector.count == 1)
        #expect(collector.events.withLock { $0.first } == ["..data"])
        #expect(try String(contentsOfFile: volume.keyPath, encoding: .utf8) == "second")
        // Only the new timestamped folder remains beside `..data` and the key.
        let entries = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasPrefix("..2") }
        #expect(entries.count == 1)
    }

    @Test func unrelatedFilesAreIgnored() async throws {
        let folder = try TemporaryDirectory(prefix: "configmap")
        let volume = ConfigMapVolume(directory: folder.path)
        try volume.publish("first")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml", "..data"])
        defer { watcher.stop() }
        let collector = Collector(watcher)

        try "x".write(toFile: folder.file("other.yaml"), atomically: true, encoding: .utf8)
        try "y".write(toFile: folder.file("notes.txt"), atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: folder.file("..2026_01_01_00_00_00.1"),
            withIntermediateDirectories: false)
        try FileManager.default.removeItem(atPath: folder.file("notes.txt"))
        try await Task.sleep(for: .seconds(1))
        #expect(collector.count == 0)

        // The watcher is alive: a relevant change after the unrelated ones is the first thing reported.
        try volume.publish("second")
        #expect(await eventually(timeout: .seconds(30)) { collector.count == 1 })
        #expect(collector.events.withLock { $0.first } == ["..data"])
    }

    @Test func aPlainFileReplacedByAnEditorsRenameIsReported() async throws {
        let folder = try TemporaryDirectory(prefix: "plain")
        try "first".write(toFile: folder.file("desired.yaml"), atomically: false, encoding: .utf8)
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml", "..data"])
        defer { watcher.stop() }
        let collector = Collector(watcher)

        try "second".write(toFile: folder.file(".desired.yaml.swp"), atomically: false, encoding: .utf8)
        #expect(rename(folder.file(".desired.yaml.swp"), folder.file("desired.yaml")) == 0)
        #expect(await eventually(timeout: .seconds(30)) { collector.count >= 1 })
        #expect(collector.events.withLock { $0.first } == ["desired.yaml"])

        // An in-place write (closed after writing) is reported too.
        let before = collector.count
        try "third".write(toFile: folder.file("desired.yaml"), atomically: false, encoding: .utf8)
        #expect(await eventually(timeout: .seconds(30)) { collector.count > before })
    }

    @Test func aBurstIsDebounced() async throws {
        let folder = try TemporaryDirectory(prefix: "burst")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml"])
        defer { watcher.stop() }
        let collector = Collector(watcher)
        for i in 0..<20 {
            try "v\(i)".write(toFile: folder.file("desired.yaml"), atomically: true, encoding: .utf8)
        }
        #expect(await eventually(timeout: .seconds(30)) { collector.count >= 1 })
        try await Task.sleep(for: .milliseconds(500))
        // Twenty back-to-back replacements: far fewer reports (one when the machine keeps up).
        #expect(collector.count < 20)
        #expect(collector.events.withLock { $0.allSatisfy { $0 == ["desired.yaml"] } })
    }

    /// A file written in place (`curl -o`, a shell redirect) was reported at its creation, 300 ms into a slow write:
    /// a read then could find a document cut at a line's end, which still parses.
    @Test func aFileWrittenInPlaceIsReportedOnceClosed() async throws {
        let folder = try TemporaryDirectory(prefix: "inplace")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml"])
        defer { watcher.stop() }
        let collector = Collector(watcher)
        func put(_ fd: Int32, _ text: String) { _ = text.withCString { write(fd, $0, strlen($0)) } }
        for (round, flags) in [O_CREAT, O_TRUNC].enumerated() {
            let fd = open(folder.file("desired.yaml"), O_WRONLY | flags | O_CLOEXEC, 0o644)
            try #require(fd >= 0)
            // Two pauses longer than the longest a burst is held (300 ms).
            put(fd, "slots:\n")
            try await Task.sleep(for: .milliseconds(700))
            #expect(collector.count == round)
            #expect(watcher.isBeingWritten("desired.yaml"))
            put(fd, "  default: { model: a.onnx }\n")
            try await Task.sleep(for: .milliseconds(700))
            #expect(collector.count == round)
            close(fd)
            #expect(await eventually(timeout: .seconds(30)) { collector.count == round + 1 })
            #expect(!watcher.isBeingWritten("desired.yaml"))
            // The write's events were counted (a read across them is dropped).
            #expect(watcher.writeEvents >= 2 * (round + 1))
        }
        #expect(collector.events.withLock { $0.allSatisfy { $0 == ["desired.yaml"] } })
    }

    /// `ln staged/desired.yaml desired.yaml` sends a creation and nothing after it: the file was taken to be written
    /// until the write timeout (30 s), and the document applied that much later.
    @Test func aHardLinkIsReportedAtOnce() async throws {
        let folder = try TemporaryDirectory(prefix: "hardlink"), staging = try TemporaryDirectory(prefix: "staging")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml"])
        defer { watcher.stop() }
        let collector = Collector(watcher)
        try "slots: {}\n".write(toFile: staging.file("desired.yaml"), atomically: false, encoding: .utf8)
        try #require(link(staging.file("desired.yaml"), folder.file("desired.yaml")) == 0)
        #expect(await eventually(timeout: .seconds(20)) { collector.count == 1 }, "held back as a write in progress")
        #expect(!watcher.isBeingWritten("desired.yaml"))
    }

    @Test func aWriterThatNeitherWritesNorClosesIsTakenToBeDone() async throws {
        let folder = try TemporaryDirectory(prefix: "inplace")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml"],
            writeTimeout: .milliseconds(500))
        defer { watcher.stop() }
        let collector = Collector(watcher)
        let fd = open(folder.file("desired.yaml"), O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        defer { close(fd) }
        _ = "slots: {}\n".withCString { write(fd, $0, strlen($0)) }
        #expect(await eventually(timeout: .seconds(30)) { collector.count == 1 })
        #expect(!watcher.isBeingWritten("desired.yaml"))
    }

    @Test func stoppingFinishesTheStream() async throws {
        let folder = try TemporaryDirectory(prefix: "stop")
        let watcher = try DirectoryWatcher(directory: folder.path, names: ["desired.yaml"])
        let collector = Collector(watcher)
        watcher.stop()
        #expect(await eventually(timeout: .seconds(30)) { collector.finished.withLock { $0 } })
    }

    @Test func aMissingFolderIsAnErrorNamingIt() throws {
        let error = #expect(throws: DirectoryWatcher.WatchError.self) {
            _ = try DirectoryWatcher(directory: "/nonexistent/yoloswap", names: ["x"])
        }
        #expect(error?.description.contains("/nonexistent/yoloswap") == true)
        #expect(error?.call == "inotify_add_watch")
        #expect(error?.errno == ENOENT)
    }
}
