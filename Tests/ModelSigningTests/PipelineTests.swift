import Foundation
import HotSwap
import Synchronization
import Testing
import YOLO

@testable import ModelSigning

/// The service's wiring (`yoloswap`'s `ServiceWiring`) makes the verifier the pipeline's `ModelVerifier` the same way.
extension SignatureVerifier: ModelVerifier {}

/// The signature check runs in the load pipeline's verifying stage, before anything is allocated for the model.
@Suite("SignatureVerifier in the load pipeline")
struct PipelineTests {
    struct NoBackend: Error {}

    /// Counts `makeBackend` calls and then fails them: a call means the model got past verifying.
    final class CountingLoader: ModelLoader {
        let calls = Atomic<Int>(0)
        func makeBackend(for file: ModelFile, label: String, execution: ModelExecution) throws -> any InferenceBackend {
            calls.add(1, ordering: .relaxed)
            throw NoBackend()
        }
    }

    private func load(_ model: String, verifier: SignatureVerifier?, version: String? = nil,
                      requireSignature: Bool = false) async throws -> (LoadOperation.Status, Int)
    {
        let loader = CountingLoader()
        let manager = ModelManager(loader: loader, verifier: verifier)
        try await manager.createSlot("default")
        let status = await (try await manager.load(LoadRequest(slot: "default", path: model, version: version,
            requireSignature: requireSignature))).wait()
        await manager.shutdown()
        return (status, loader.calls.load(ordering: .relaxed))
    }

    @Test("a tampered model is rejected with the reason, and no backend is ever made for it")
    func tamperedModelNeverReachesTheLoader() async throws {
        let f = try SignatureTests.Fixture()
        var data = try bytes(f.model)
        data[data.count - 1] ^= 0x01
        try Data(data).write(to: URL(fileURLWithPath: f.model))

        let (status, calls) = try await load(f.model, verifier: f.verifier)
        #expect(calls == 0)
        #expect(status.stage == .failed)
        guard case .signatureRejected(_, let reason)? = status.failure else {
            Issue.record("expected signatureRejected, got \(String(describing: status.failure))")
            return
        }
        #expect(reason.contains("modified after signing"))
    }

    @Test("an unsigned model is rejected before loading when signatures are required")
    func unsignedNeverReachesTheLoader() async throws {
        let f = try SignatureTests.Fixture()
        try FileManager.default.removeItem(atPath: f.signaturePath)
        let (status, calls) = try await load(f.model, verifier: f.verifier)
        #expect(calls == 0)
        guard case .signatureRejected(_, let reason)? = status.failure else {
            Issue.record("expected signatureRejected, got \(String(describing: status.failure))")
            return
        }
        #expect(reason.contains("not signed"))
    }

    @Test("a version other than the signed one is rejected before loading")
    func wrongVersionNeverReachesTheLoader() async throws {
        let f = try SignatureTests.Fixture(version: "1.2.0")
        let (status, calls) = try await load(f.model, verifier: f.verifier, version: "2.0.0")
        #expect(calls == 0)
        guard case .signatureRejected? = status.failure else {
            Issue.record("expected signatureRejected, got \(String(describing: status.failure))")
            return
        }
    }

    @Test("a correctly signed model passes verifying and reaches the loader")
    func signedModelReachesTheLoader() async throws {
        let f = try SignatureTests.Fixture()
        let (status, calls) = try await load(f.model, verifier: f.verifier, version: "1.2.0")
        #expect(calls == 1)
        #expect(status.signatureKeyID == f.key.keyID)
        guard case .runtime? = status.failure else {  // the fake loader's own failure, after verifying
            Issue.record("expected the fake loader's failure, got \(String(describing: status.failure))")
            return
        }
    }

    /// A desired-state slot's `require_signature`: one load asks for a signature where the verifier (the server's
    /// `require_signature: false`) lets unsigned models through, or where there is no verifier at all.
    @Test("a load that requires a signature refuses an unsigned model before loading, whatever the verifier's setting")
    func loadRequiresSignature() async throws {
        let f = try SignatureTests.Fixture(requireSignature: false)
        let (signed, signedCalls) = try await load(f.model, verifier: f.verifier, requireSignature: true)
        #expect(signedCalls == 1)
        #expect(signed.signatureKeyID == f.key.keyID)

        try FileManager.default.removeItem(atPath: f.signaturePath)
        let (lenient, lenientCalls) = try await load(f.model, verifier: f.verifier)
        #expect(lenientCalls == 1, "without the requirement an unsigned model reaches the loader")
        #expect(lenient.signatureKeyID == nil)
        for verifier in [f.verifier, nil] {
            let (status, calls) = try await load(f.model, verifier: verifier, requireSignature: true)
            #expect(calls == 0)
            guard case .signatureRejected(_, let reason)? = status.failure else {
                Issue.record("expected signatureRejected, got \(String(describing: status.failure))")
                continue
            }
            #expect(reason.contains("requires a signature"))
        }
    }
}
