import ArgumentParser
import Foundation
import ModelSigning

/// `yoloswap keygen --out KEY`: a new Ed25519 signing key pair.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create an Ed25519 key pair for signing models.",
        discussion: "Writes the private key to KEY (mode 0600) and the public key to KEY.pub. List KEY.pub under "
            + "trusted_keys in the server configuration; keep KEY secret.")

    @Option(name: .long, help: "Private key file to create; the public key goes to <out>.pub.")
    var out: String

    @Flag(help: "Replace existing key files.")
    var force = false

    func run() throws {
        let key = SigningKey()
        do { try key.write(to: out, overwrite: force) } catch {
            printError("keygen failed: \(error)" + (force ? "" : " (--force replaces existing key files)"))
            throw ExitCode.failure
        }
        print("key id:      \(key.keyID)")
        print("private key: \(out) (mode 0600; keep it secret)")
        print("public key:  \(out).pub")
    }
}

/// `yoloswap sign MODEL --key KEY [--version V]`: writes `MODEL.sig`.
struct SignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign a model file: writes MODEL.sig next to it.",
        discussion: "The signature covers the model's SHA-256, the version label and the signing time.")

    @Argument(help: "The model file (.onnx).")
    var model: String

    @Option(name: .long, help: "Private key file (from `yoloswap keygen`).")
    var key: String

    @Option(name: .long, help: "Version label the signature vouches for.")
    var version: String?

    func run() throws {
        do {
            let signingKey = try SigningKey(contentsOf: key)
            let signature = try signingKey.signModel(at: model, version: version)
            print("signed:    \(model)")
            print("key id:    \(signature.keyID)")
            print("sha256:    \(signature.modelSHA256)")
            print("version:   \(signature.version ?? "-")")
            print("signature: \(SignatureFile.path(forModel: model))")
        } catch {
            printError("sign failed: \(error)")
            throw ExitCode.failure
        }
    }
}

/// `yoloswap verify MODEL --pub PUB…`: checks `MODEL.sig` against trusted public keys.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a model's signature (MODEL.sig) against trusted public keys.",
        discussion: "Prints the key id, sha256 and version and OK, or the reason for rejection and exits 1.")

    @Argument(help: "The model file (.onnx).")
    var model: String

    @Option(name: .customLong("pub"), help: "A trusted public key file (repeatable).")
    var publicKeys: [String] = []

    @Option(name: .long, help: "Fail unless the model is signed as this version.")
    var version: String?

    func validate() throws {
        guard !publicKeys.isEmpty else { throw ValidationError("give at least one --pub public key file") }
    }

    func run() throws {
        do {
            let verifier = try SignatureVerifier(trustedKeyFiles: publicKeys, requireSignature: true)
            let verified = try verifier.verifyModel(at: model, version: version)
            print("model:     \(model)")
            print("key id:    \(verified.keyID)")
            print("sha256:    \(verified.sha256)")
            print("version:   \(verified.version ?? "-")")
            print("signed at: \(verified.signedAt)")
            print("OK")
        } catch {
            printError("verify failed: \(error)")
            throw ExitCode.failure
        }
    }
}
