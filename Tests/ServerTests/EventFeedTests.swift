import Foundation
import HotSwap
import Testing

@testable import Server

/// An event-stream client's feed without the socket: its bounded buffer, and what a full one does.
@Suite("Event stream feed: a slow client is dropped, swaps never wait", .serialized)
struct EventFeedTests {
    private static func feed(_ harness: ServerHarness, buffer: Int, lastEventID: String? = nil) -> EventStream.Feed {
        EventStream(manager: harness.control.manager, repository: harness.control.repository, keepAlive: .seconds(60),
            bufferLimit: buffer).open(lastEventID: lastEventID, slot: nil)
    }

    private static func drain(_ feed: EventStream.Feed) async -> [UInt64] {
        var sequences: [UInt64] = []
        for await item in feed.items { if case .event(let e) = item { sequences.append(e.sequence) } }
        return sequences
    }

    @Test("a reader that does not keep up is cut off after its buffer; the others and the swaps go on")
    func slowReaderDropped() async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        let manager = harness.control.manager
        let load = try await manager.load(LoadRequest(slot: "default",
            path: harness.repository.appendingPathComponent("synthetic/yolov5-nc80-320-identity.onnx").path,
            activate: true, allowSchemaChange: true))
        #expect(await load.wait().stage == .ready)
        // The load's own event is recorded just after its operation ends: wait for it, or it could come after `head`.
        let deadline = ContinuousClock.now + .seconds(10)
        while !manager.recentEvents().contains(where: { $0.operationID == load.id }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        try #require(manager.recentEvents().contains { $0.operationID == load.id }, "the load's event never came")
        // Two clients that read nothing while the events happen: one with room for them all, one with room for 4.
        let slow = Self.feed(harness, buffer: 4)
        let roomy = Self.feed(harness, buffer: 64)
        let head = try #require(EventStream.parseEventID(slow.ready.head)).sequence
        // Each rollback completes (nothing waits for the readers), one event each.
        for _ in 0..<20 { _ = try await manager.rollback(slot: "default") }
        // The slow feed holds its first 4 and has ended; the roomy one has all 20 and is still open.
        #expect(await Self.drain(slow) == Array((head + 1)...(head + 4)))
        roomy.continuation.finish()
        #expect(await Self.drain(roomy) == Array((head + 1)...(head + 20)))
        roomy.cancel()
        // The dropped client reconnects with the last id it got and resumes where it was cut off.
        let resumed = Self.feed(harness, buffer: 4, lastEventID: EventStream.eventID(run: slow.subscription.run,
            sequence: head + 4))
        #expect(resumed.ready.resumed)
        #expect(resumed.replayed.map(\.sequence) == Array((head + 5)...(head + 20)))
        resumed.cancel()
    }

    @Test("Last-Event-ID: parsed only in the form the stream writes")
    func eventIDs() {
        #expect(EventStream.parseEventID("ab12cd34-17")! == ("ab12cd34", 17))
        #expect(EventStream.parseEventID(EventStream.eventID(run: "x-y", sequence: 3))! == ("x-y", 3))
        for bad in ["", "17", "-17", "ab-", "ab-1x", String(repeating: "a", count: 70) + "-1"] {
            #expect(EventStream.parseEventID(bad) == nil, "\(bad)")
        }
    }
}
