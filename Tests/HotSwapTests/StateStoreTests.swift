import Foundation
import Testing

@testable import HotSwap
import HotSwapTesting
import TestSupport

@Suite("StateStore")
struct StateStoreTests {
    // MARK: Helpers

    private static let modelA = ModelRecord(
        path: "/models/a.onnx", sha256: String(repeating: "a", count: 64), version: "1")
    private static let modelB = ModelRecord(path: "/models/b.onnx", sha256: String(repeating: "b", count: 64))

    /// A fresh directory under the system temp directory; removed by `body`'s end.
    private func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("statestore-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try body(directory)
    }

    private static let python: String? = [Repository.path(".venv/bin/python"), "/usr/bin/python3"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    // MARK: Files

    @Test("the state directory is created 0700 and the database files 0600, whatever the umask lets through")
    func privateModes() throws {
        try withTemporaryDirectory { directory in
            let state = directory + "/var/state"
            let store = try StateStore(directory: state)
            try store.commit(CommittedSlot(slot: "default", active: Self.modelA, generation: 1))
            #expect(try permissions(of: directory) == 0o700)
            #expect(try permissions(of: state) == 0o700)
            let files = try permissionsOfEntries(in: state)
            #expect(files.keys.contains("state.sqlite"))
            #expect(files.keys.contains("state.sqlite-wal"))
            for (name, mode) in files { #expect(mode == 0o600, "\(name) is \(String(mode, radix: 8))") }
        }
    }

    // MARK: Committed slots

    @Test("committed slots round-trip, with and without standby")
    func committedSlotRoundTrip() throws {
        let store = try StateStore(inMemory: ())
        #expect(try store.committedSlots().isEmpty)
        #expect(try store.committedSlot("default") == nil)

        let withStandby = CommittedSlot(slot: "default", active: Self.modelB, standby: Self.modelA, generation: 2)
        let alone = CommittedSlot(
            slot: "edge", active: Self.modelA, generation: 1, updatedAt: Date(timeIntervalSince1970: 1))
        try store.commit(withStandby)
        try store.commit(alone)

        #expect(try store.committedSlot("default") == withStandby)  // dates round-trip exactly
        #expect(try store.committedSlot("edge") == alone)
        #expect(try store.committedSlots() == [withStandby, alone])
        #expect(store.path == ":memory:")
    }

    @Test("commit replaces the slot's state; removeSlot deletes it")
    func commitReplaces() throws {
        let store = try StateStore(inMemory: ())
        try store.commit(CommittedSlot(slot: "default", active: Self.modelA, generation: 1))
        let next = CommittedSlot(slot: "default", active: Self.modelB, standby: Self.modelA, generation: 2)
        try store.commit(next)
        #expect(try store.committedSlots() == [next])

        // Replacing back to no standby clears it.
        let rolledBack = CommittedSlot(slot: "default", active: Self.modelA, standby: nil, generation: 3)
        try store.commit(rolledBack)
        #expect(try store.committedSlot("default") == rolledBack)

        try store.removeSlot("default")
        try store.removeSlot("missing")
        #expect(try store.committedSlots().isEmpty)
    }

    // MARK: Events

    @Test("events come back newest first, limited and filtered by slot")
    func eventsNewestFirst() throws {
        let store = try StateStore(inMemory: ())
        let from = ModelIdentity(name: "a", version: "1", sha256: Self.modelA.sha256, path: Self.modelA.path)
        let to = ModelIdentity(name: "b", version: "2", sha256: Self.modelB.sha256, path: Self.modelB.path)
        var timings = LoadTimings()
        (timings.verify, timings.load, timings.warmup, timings.flipMicroseconds, timings.total) = (1.5, 20.25, 3, 0.75,
            25.5)
        var appended: [SwapEvent] = []
        for index in 0..<5 {
            let event = SwapEvent(
                slot: index.isMultiple(of: 2) ? "a" : "b", operation: .switch, result: .succeeded,
                reason: "test \(index)", from: from, to: to, generation: index, timings: timings,
                operationID: "op-\(index)")
            try store.append(event)
            appended.append(event)
        }

        #expect(try store.recentEvents() == appended.reversed())
        #expect(try store.recentEvents(limit: 2) == Array(appended.reversed().prefix(2)))
        #expect(try store.recentEvents(slot: "a").map(\.reason) == ["test 4", "test 2", "test 0"])
        #expect(try store.recentEvents(slot: "b", limit: 1).map(\.reason) == ["test 3"])
        #expect(try store.recentEvents(slot: "none").isEmpty)

        let minimal = SwapEvent(slot: "a", operation: .release, result: .failed)
        try store.append(minimal)
        #expect(try store.recentEvents(limit: 1) == [minimal])
    }

    @Test("the event log keeps the newest eventsKept events")
    func eventsBounded() throws {
        let store = try StateStore(inMemory: ())
        for index in 0..<(StateStore.eventsKept + 25) {
            try store.append(SwapEvent(slot: "a", operation: .switch, result: .succeeded, reason: "\(index)"))
        }
        let all = try store.recentEvents(limit: StateStore.eventsKept * 2)
        #expect(all.count == StateStore.eventsKept)
        #expect(all.first?.reason == "\(StateStore.eventsKept + 24)" && all.last?.reason == "25")
    }

    // MARK: Durability

    @Test("state persists across re-opening the directory, in WAL mode with synchronous FULL")
    func persistsAcrossReopen() throws {
        try withTemporaryDirectory { directory in
            let committed = CommittedSlot(slot: "default", active: Self.modelB, standby: Self.modelA, generation: 7)
            let event = SwapEvent(slot: "default", operation: .switch, result: .succeeded)
            do {
                let store = try StateStore(directory: directory)
                #expect(store.path == directory + "/state.sqlite")
                #expect(try store.pragma("journal_mode") == "wal")
                #expect(try store.pragma("synchronous") == "2")  // FULL
                try store.commit(committed)
                try store.append(event)
            }
            let reopened = try StateStore(directory: directory)
            #expect(try reopened.committedSlots() == [committed])
            #expect(try reopened.recentEvents() == [event])
            #expect(try reopened.pragma("journal_mode") == "wal")
        }
    }

    /// What a restarted process after SIGKILL sees is what is on disk: read it from a second connection and from
    /// another process while the writer is still open (nothing checkpointed or closed).
    @Test("a commit is visible on disk to another connection and another process before the writer closes")
    func commitIsOnDisk() throws {
        try withTemporaryDirectory { directory in
            let writer = try StateStore(directory: directory)
            let committed = CommittedSlot(slot: "default", active: Self.modelA, generation: 3)
            try writer.commit(committed)

            let reader = try StateStore(directory: directory)
            #expect(try reader.committedSlot("default") == committed)

            guard let python = Self.python else { return }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = [
                "-c",
                """
                import sqlite3, sys
                db = sqlite3.connect(sys.argv[1])
                print(db.execute("SELECT activePath, generation FROM committedSlot WHERE slot='default'").fetchone())
                """,
                writer.path,
            ]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            process.waitUntilExit()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(process.terminationStatus == 0)
            #expect(text.trimmingCharacters(in: .whitespacesAndNewlines) == "('/models/a.onnx', 3)")
            #expect(try writer.committedSlot("default") == committed)
        }
    }

    // MARK: Errors

    @Test("errors carry the operation and the path")
    func errorsCarryContext() throws {
        let error = try #require(throws: StateStoreError.self) { try StateStore(directory: "/proc/no-such/state") }
        #expect(error.path == "/proc/no-such/state/state.sqlite")
        #expect(error.operation == "create state directory")
        #expect(error.description.contains("/proc/no-such/state"))
    }
}
