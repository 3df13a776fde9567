import FuzzHarnesses
import FuzzSupport

/// libFuzzer on `FusedLetterboxHarness` (Fuzz/Sources/FuzzHarnesses), which the test suite also replays on the corpus.
@main enum FuzzFusedLetterbox {
    static func main() { runFuzzer(FusedLetterboxHarness.run) }
}
