import FuzzHarnesses
import FuzzSupport

/// libFuzzer on `MultipartHarness` (Fuzz/Sources/FuzzHarnesses), which the test suite also replays on the corpus.
@main enum FuzzMultipart {
    static func main() { runFuzzer(MultipartHarness.run) }
}
