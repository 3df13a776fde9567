import FuzzHarnesses
import FuzzSupport

/// libFuzzer on `ModelOutputHarness` (Fuzz/Sources/FuzzHarnesses), which the test suite also replays on the corpus.
@main enum FuzzModelOutput {
    static func main() { runFuzzer(ModelOutputHarness.run) }
}
