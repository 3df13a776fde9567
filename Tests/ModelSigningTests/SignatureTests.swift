import Foundation
import TestSupport
import Testing

@testable import ModelSigning

@Suite("Signing and verifying models")
struct SignatureTests {
    /// A key pair on disk, a model copied into the directory and signed, and a verifier trusting the key.
    struct Fixture {
        let dir: TemporaryDirectory
        let key: SigningKey
        let model: String
        let signature: SignatureFile
        let verifier: SignatureVerifier

        init(version: String? = "1.2.0", requireSignature: Bool = true) throws {
            dir = try TemporaryDirectory()
            key = SigningKey()
            try key.write(to: dir.file("release.key"))
            model = try dir.model()
            signature = try SigningKey(contentsOf: dir.file("release.key")).signModel(at: model, version: version)
            verifier = try SignatureVerifier(
                trustedKeyFiles: [dir.file("release.key.pub")],
                requireSignature: requireSignature)
        }

        var signaturePath: String { model + ".sig" }

        /// Runs the verifier as the load pipeline does: digest computed, requested version.
        func verifyAsLoaded(version: String? = nil) throws(SignatureError) -> String? {
            let digest = (try? sha256sum(model)) ?? ""
            return try verifier.verify(path: model, sha256: digest, version: version)
        }
    }

    @Test("sign then verify: the model's sha256, version and key id, on the real file and through the pipeline API")
    func roundTrip() throws {
        let f = try Fixture()
        #expect(FileManager.default.fileExists(atPath: f.signaturePath))
        #expect(f.signature.modelSHA256 == (try sha256sum(f.model)))
        #expect(f.signature.keyID == f.key.keyID)
        #expect(f.signature.version == "1.2.0")
        #expect(f.signature.signedDate != nil)

        let verified = try f.verifier.verifyModel(at: f.model)
        #expect(
            verified
                == VerifiedModel(
                    keyID: f.key.keyID, sha256: try sha256sum(f.model), version: "1.2.0",
                    signedAt: f.signature.signedAt))
        #expect(try f.verifyAsLoaded() == f.key.keyID)
        #expect(try f.verifyAsLoaded(version: "1.2.0") == f.key.keyID)
    }

    @Test("the .sig holds the documented fields, and the signature covers the documented canonical bytes")
    func documentFormat() throws {
        let f = try Fixture()
        let object =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: f.signaturePath)))
            as! [String: Any]
        #expect(Set(object.keys) == ["format", "key_id", "model_sha256", "version", "signed_at", "signature"])
        #expect(object["format"] as? String == "yoloswap-signature-v1")
        let message = "yoloswap-signature-v1\n\(f.key.keyID)\n\(try sha256sum(f.model))\n1.2.0\n\(f.signature.signedAt)"
        let signature = try #require(Data(base64Encoded: object["signature"] as! String))
        #expect(f.key.key.publicKey.isValidSignature(signature, for: Data(message.utf8)))

        // Without a version: `null` in the JSON, an empty line in the message.
        let g = try Fixture(version: nil)
        let unversioned =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: g.signaturePath))) as! [String: Any]
        #expect(unversioned["version"] is NSNull)
        #expect(
            g.signature.canonicalMessage
                == Data(
                    "yoloswap-signature-v1\n\(g.key.keyID)\n\(g.signature.modelSHA256)\n\n\(g.signature.signedAt)".utf8)
        )
        #expect(try g.verifier.verifyModel(at: g.model).version == nil)
    }

    @Test("one byte changed in the model: rejected as modified after signing")
    func tamperedModel() throws {
        let f = try Fixture()
        var data = try bytes(f.model)
        data[data.count / 2] ^= 0x01
        try Data(data).write(to: URL(fileURLWithPath: f.model))

        let error = #expect(throws: SignatureError.self) { try f.verifyAsLoaded() }
        guard case .digestMismatch(_, let signed, let actual) = error else {
            Issue.record("expected digestMismatch, got \(String(describing: error))")
            return
        }
        #expect(signed == f.signature.modelSHA256)
        #expect(actual == (try sha256sum(f.model)))
        #expect(error?.description.contains("modified after signing") == true)
        #expect(throws: SignatureError.self) { try f.verifier.verifyModel(at: f.model) }
    }

    @Test(
        "a field of the .sig changed: bad signature", arguments: ["version", "signed_at", "model_sha256", "signature"])
    func tamperedSignatureFile(field: String) throws {
        let f = try Fixture()
        if field == "model_sha256" {
            // Point the signature at a different model's digest: the model itself changed consistently.
            var data = try bytes(f.model)
            data[0] ^= 0xff
            try Data(data).write(to: URL(fileURLWithPath: f.model))
        }
        try editJSON(f.signaturePath) { object in
            switch field {
            case "version": object["version"] = "9.9.9"
            case "signed_at": object["signed_at"] = "2001-01-01T00:00:00Z"
            case "model_sha256": object["model_sha256"] = (try? sha256sum(f.model)) ?? ""
            default:
                var signature = Data(base64Encoded: object["signature"] as! String)!
                signature[5] ^= 0x10
                object["signature"] = signature.base64EncodedString()
            }
        }
        let error = #expect(throws: SignatureError.self) { try f.verifyAsLoaded() }
        #expect(error == .badSignature(path: f.signaturePath, keyID: f.key.keyID))
    }

    @Test("signed by a key that is not trusted: unknown key id")
    func wrongKey() throws {
        let f = try Fixture()
        let other = SigningKey()
        try other.write(to: f.dir.file("other.key"))
        let verifier = try SignatureVerifier(trustedKeyFiles: [f.dir.file("other.key.pub")], requireSignature: true)
        let error = #expect(throws: SignatureError.self) { try verifier.verifyModel(at: f.model) }
        #expect(error == .unknownKey(path: f.signaturePath, keyID: f.key.keyID, trusted: [other.keyID]))

        // A .sig claiming a trusted key id but signed by another key: bad signature.
        try other.signModel(at: f.model, version: "1.2.0")
        try editJSON(f.signaturePath) { $0["key_id"] = f.key.keyID }
        #expect(throws: SignatureError.badSignature(path: f.signaturePath, keyID: f.key.keyID)) {
            try f.verifier.verifyModel(at: f.model)
        }
    }

    @Test("several trusted keys: a model signed by any of them verifies")
    func severalKeys() throws {
        let f = try Fixture()
        let other = SigningKey()
        let verifier = SignatureVerifier(
            trustedKeys: [other.verificationKey, f.key.verificationKey],
            requireSignature: true)
        #expect(try verifier.verifyModel(at: f.model).keyID == f.key.keyID)
    }

    @Test("unsigned: rejected when a signature is required, accepted with no key id otherwise")
    func unsigned() throws {
        let f = try Fixture()
        try FileManager.default.removeItem(atPath: f.signaturePath)
        let error = #expect(throws: SignatureError.self) { try f.verifyAsLoaded() }
        #expect(error == .unsigned(model: f.model, signaturePath: f.signaturePath))
        #expect(error?.description.contains("not signed") == true)

        let optional = SignatureVerifier(trustedKeys: [f.key.verificationKey], requireSignature: false)
        let digest = try sha256sum(f.model)
        #expect(try optional.verify(path: f.model, sha256: digest, version: nil) == nil)
        // `yoloswap verify` always wants a signature.
        #expect(throws: SignatureError.self) { try optional.verifyModel(at: f.model) }
    }

    @Test("a signature that is present is checked even when signatures are optional")
    func optionalStillChecks() throws {
        let f = try Fixture()
        let optional = SignatureVerifier(trustedKeys: [SigningKey().verificationKey], requireSignature: false)
        #expect(throws: SignatureError.self) {
            try optional.verify(path: f.model, sha256: f.signature.modelSHA256, version: nil)
        }
    }

    @Test("a load naming another version than the signed one is rejected; an unversioned signature accepts any")
    func versions() throws {
        let f = try Fixture(version: "1.2.0")
        let error = #expect(throws: SignatureError.self) { try f.verifyAsLoaded(version: "1.3.0") }
        #expect(error == .versionMismatch(model: f.model, signed: "1.2.0", requested: "1.3.0"))
        #expect(throws: SignatureError.self) { try f.verifier.verifyModel(at: f.model, version: "2") }

        let g = try Fixture(version: nil)
        #expect(try g.verifyAsLoaded(version: "anything") == g.key.keyID)
        // `yoloswap verify --version` asks more: an unversioned signature does not vouch for a version (it said OK).
        let unversioned = #expect(throws: SignatureError.self) { try g.verifier.verifyModel(at: g.model, version: "2") }
        #expect(unversioned?.description.contains("is signed without a version but version '2' was requested") == true)
    }

    @Test("a .sig that is not a signature, or of another format, is rejected with the reason")
    func malformedSignature() throws {
        let f = try Fixture()
        try editJSON(f.signaturePath) { $0["format"] = "yoloswap-signature-v9" }
        #expect(throws: SignatureError.unsupportedFormat(path: f.signaturePath, format: "yoloswap-signature-v9")) {
            try f.verifyAsLoaded()
        }
        try Data("not json".utf8).write(to: URL(fileURLWithPath: f.signaturePath))
        let error = #expect(throws: SignatureError.self) { try f.verifyAsLoaded() }
        guard case .unreadable = error else {
            Issue.record("expected unreadable, got \(String(describing: error))")
            return
        }
    }

    @Test("versions with a line break cannot be signed")
    func invalidVersion() throws {
        #expect(throws: SignatureError.self) {
            try SigningKey().sign(
                sha256: String(repeating: "a", count: 64),
                version: "1.0\n2.0")
        }
        // An empty version is the same as none.
        #expect(try SigningKey().sign(sha256: String(repeating: "a", count: 64), version: "").version == nil)
    }
}
