import Foundation
import Testing

@testable import HotSwap
import HotSwapTesting
import TestSupport

@Suite("ProcessMemory", .serialized)
struct ProcessMemoryTests {
    private static let mib = 1 << 20

    @Test("RSS and peak RSS are positive and sane")
    func figuresAreSane() throws {
        let rss = try #require(ProcessMemory.residentBytes())
        let peak = try #require(ProcessMemory.peakResidentBytes())
        #expect(rss > 1 * Self.mib)
        #expect(rss < 64 << 30)
        #expect(peak >= rss - 4 * Self.mib)  // sampled at different instants: allow a little slack
    }

    /// Other suites run in parallel in the same process, so one measurement may be disturbed: a few attempts
    /// are allowed, and the figures of each are reported if all fail.
    @Test("allocating 64 MiB raises RSS; freeing it and trimming brings it back")
    func allocateAndRelease() throws {
        var attempts: [String] = []
        for _ in 0..<3 {
            ProcessMemory.trim()
            let before = try #require(ProcessMemory.residentBytes())
            var during = 0
            do {
                // Large arrays are mmap'ed by glibc, so their pages go back to the OS when freed.
                var buffer = [UInt8](repeating: 0, count: 64 * Self.mib)
                for index in stride(from: 0, to: buffer.count, by: 4096) { buffer[index] = 0xA5 }
                during = try #require(ProcessMemory.residentBytes())
                #expect(buffer[4096] == 0xA5)
            }
            ProcessMemory.trim()
            let after = try #require(ProcessMemory.residentBytes())
            // Other suites allocate in this process at the same time: judge what this buffer added and returned.
            let rise = during - before
            let returned = during - after
            if rise >= 60 * Self.mib && returned >= 56 * Self.mib { return }
            attempts.append(
                "before \(before / Self.mib) MiB, during \(during / Self.mib) MiB, after \(after / Self.mib) MiB")
        }
        Issue.record("RSS did not rise by >= 60 MiB and give back >= 56 MiB: \(attempts.joined(separator: "; "))")
    }

    @Test("trim can be called repeatedly")
    func trimIsHarmless() {
        _ = ProcessMemory.trim()
        _ = ProcessMemory.trim()
        #expect(ProcessMemory.residentBytes() != nil)
    }
}
