import FuzzHarnesses
import FuzzSupport
import Foundation

/// libFuzzer on `SigningFilesHarness`; with `FUZZ_WRITE_SEEDS=DIR`, writes the seed files instead (`make fuzz-seeds`).
@main enum FuzzSigningFiles {
    static func main() {
        if let directory = ProcessInfo.processInfo.environment["FUZZ_WRITE_SEEDS"] {
            SigningFilesHarness.writeSeeds(to: directory)
            exit(0)
        }
        runFuzzer(SigningFilesHarness.run)
    }
}
