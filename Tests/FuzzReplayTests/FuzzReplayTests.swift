import Foundation
import FuzzHarnesses
import Primitives
import TestSupport
import Testing

/// The short smoke of `make fuzz` that CI runs: every committed fuzzer input — the seed corpora (`Fuzz/Corpus`) and the
/// findings (`Fuzz/Findings`, each a crash or a slow input once) — goes through the harness code libFuzzer runs, in
/// this uninstrumented build. A harness checks its invariants with `precondition`, so a regression on any of these
/// inputs stops this test process, and a finding that is slow again shows in the suite's time.
@Suite("Fuzzer inputs replayed")
struct FuzzReplayTests {
    static let targets = fuzzHarnesses.keys.sorted()
    /// The harnesses block (file reads, the multipart one waits for its task): off the cooperative pool.
    static let queue = BlockingQueue(label: "fuzz-replay")

    static func inputs(of target: String, in folder: String) -> [URL] {
        let directory = Repository.url("Fuzz/\(folder)/\(target)")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0) }
    }

    @Test("every seed and finding of a target runs through its harness", arguments: targets)
    func replay(target: String) async throws {
        let harness = try #require(fuzzHarnesses[target])
        let corpus = Self.inputs(of: target, in: "Corpus")
        #expect(!corpus.isEmpty, "Fuzz/Corpus/\(target) is empty: make fuzz-seeds writes it")
        let inputs = corpus + Self.inputs(of: target, in: "Findings")
        try await Self.queue.run {
            for input in inputs {
                let bytes = try [UInt8](Data(contentsOf: input))
                bytes.withUnsafeBufferPointer { harness($0) }
            }
        }
    }

    @Test("the findings stay as regression inputs")
    func findingsAreKept() {
        // Deleting them would silently drop them from the replay above.
        #expect(Self.inputs(of: "FuzzModelOutput", in: "Findings").count >= 2)
        #expect(Self.inputs(of: "FuzzMultipart", in: "Findings").count >= 2)
    }
}
