/// The body of one libFuzzer target: called with each input; returns normally for every input the code under test
/// handles (errors included) and traps (`precondition`) when an invariant breaks. It must not keep the buffer.
public typealias FuzzHarness = @Sendable (UnsafeBufferPointer<UInt8>) -> Void

/// Every harness, by the name of its libFuzzer target (`Fuzz/Sources/<target>`, `Fuzz/Corpus/<target>`).
///
/// The targets are built only for fuzzing (`make fuzz`, instrumented); the harnesses are plain code, so the test suite
/// replays the committed corpus and findings through them in its own build (`FuzzReplayTests`).
public let fuzzHarnesses: [String: FuzzHarness] = [
    "FuzzImageDecode": ImageDecodeHarness.run,
    "FuzzFusedLetterbox": FusedLetterboxHarness.run,
    "FuzzMultipart": MultipartHarness.run,
    "FuzzSigningFiles": SigningFilesHarness.run,
    "FuzzConfiguration": ConfigurationHarness.run,
    "FuzzModelOutput": ModelOutputHarness.run,
]
