import FuzzHarnesses
import FuzzSupport

/// libFuzzer on `ConfigurationHarness` (Fuzz/Sources/FuzzHarnesses), which the test suite also replays on the corpus.
@main enum FuzzConfiguration {
    static func main() { runFuzzer(ConfigurationHarness.run) }
}
