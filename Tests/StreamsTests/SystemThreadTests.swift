import Foundation
import Primitives
import TestSupport
import Testing

/// `SystemThread`, which the stream's decoder, FFmpeg's log readers and the folder watcher start their threads with:
/// Foundation's `Thread.start()` ignored a failed `pthread_create`, and a stream whose decoder never ran could not be
/// stopped (its stop waited for the decoder's end).
@Suite("Threads that say when they cannot start")
struct SystemThreadTests {
    @Test("a thread runs its work under its name, cut to the 15 bytes Linux shows")
    func runsNamed() async throws {
        let seen = Locked<String?>(nil)
        try SystemThread.detach(name: "yoloswap.stream-decode") {
            // The kernel's name for this thread.
            let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "unreadable"
            seen.withLock { $0 = name.trimmingCharacters(in: .newlines) }
        }
        #expect(await eventually { seen.value != nil })
        #expect(seen.value == "yoloswap.stream")
    }

    @Test("a thread the system cannot create (its stack cannot be mapped) is an error, and its work never runs")
    func refusalIsThrown() async throws {
        let ran = Locked(false)
        let error = #expect(throws: ThreadStartError.self) {
            try SystemThread.detach(name: "too-big", stackSize: 1 << 50) { ran.withLock { $0 = true } }
        }
        #expect(error?.code == EAGAIN || error?.code == ENOMEM || error?.code == EINVAL, "\(String(describing: error))")
        #expect(error?.description.contains("too-big") == true)
        try await Task.sleep(for: .milliseconds(200))
        #expect(!ran.value)
    }
}
