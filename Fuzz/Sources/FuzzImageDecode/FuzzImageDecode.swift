import FuzzHarnesses
import FuzzSupport

/// libFuzzer on `ImageDecodeHarness` (Fuzz/Sources/FuzzHarnesses), which the test suite also replays on the corpus.
@main enum FuzzImageDecode {
    static func main() { runFuzzer(ImageDecodeHarness.run) }
}
