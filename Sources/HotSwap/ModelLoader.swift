import YOLO

/// Makes an inference backend from a verified model file. The ORT implementation is `ORTBackend.ORTModelLoader`;
/// unit tests use `HotSwapTesting.FakeLoader`.
public protocol ModelLoader: Sendable {
    /// Creates a backend (an isolated inference context) for the model.
    /// - Parameters:
    ///   - file: the verified model: path, digest, size. A loader that reads the bytes uses
    ///     `file.readVerifiedBytes()`, which refuses content that no longer has the verified digest.
    ///   - label: names the model in errors.
    ///   - execution: the provider and device the session runs on, its intra-op threads and provider options.
    /// - Throws: when the backend cannot be made, with the runtime's own message (a provider the runtime lacks
    ///   included).
    func makeBackend(for file: ModelFile, label: String, execution: ModelExecution) throws -> any InferenceBackend

    /// As `makeBackend(for:label:execution:)`, for a load that `cancellation` may cancel meanwhile (superseded, or the
    /// service stopping): a loader whose work can be stopped (a child process optimizing the model) stops it then and
    /// throws. The default ignores `cancellation`.
    func makeBackend(for file: ModelFile, label: String, execution: ModelExecution, cancellation: RunCancellation)
        throws -> any InferenceBackend
}

extension ModelLoader {
    public func makeBackend(for file: ModelFile, label: String, execution: ModelExecution,
                            cancellation: RunCancellation) throws -> any InferenceBackend {
        try makeBackend(for: file, label: label, execution: execution)
    }
}

/// Checks a model's authenticity in the verifying stage, before any ORT allocation (the serving layer plugs Ed25519
/// signatures in here).
public protocol ModelVerifier: Sendable {
    /// Throws to reject the model; returns the key id that vouched for it, or nil when no signature applies.
    /// - Parameters:
    ///   - path: the model file.
    ///   - sha256: lower-case hex SHA-256 of the file's content, as hashed by the pipeline (the bytes that will be
    ///     loaded must have this digest).
    ///   - version: the version label the load asks for.
    func verify(path: String, sha256: String, version: String?) throws -> String?
}
