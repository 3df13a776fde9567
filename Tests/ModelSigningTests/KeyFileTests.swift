import Crypto
import Foundation
import TestSupport
import Testing

@testable import ModelSigning

@Suite("Key files")
struct KeyFileTests {
    @Test("keygen writes a 0600 private key and a public key that read back as the same pair")
    func roundTrip() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("release.key")
        let key = SigningKey()
        try key.write(to: path)

        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(FileManager.default.fileExists(atPath: path + ".pub"))

        let readBack = try SigningKey(contentsOf: path)
        #expect(readBack.key.rawRepresentation == key.key.rawRepresentation)
        let publicKey = try VerificationKey(contentsOf: path + ".pub")
        #expect(publicKey == key.verificationKey)
        #expect(publicKey.keyID == key.keyID)
    }

    @Test("the key id is the first 16 hex digits of SHA-256 over the raw public key")
    func keyIDDerivation() throws {
        let key = SigningKey()
        let expected = SHA256.hash(data: key.key.publicKey.rawRepresentation).map { String(format: "%02x", $0) }
            .joined().prefix(16)
        #expect(key.keyID == String(expected))
        #expect(key.keyID.count == 16)
    }

    @Test("the files hold the documented JSON")
    func fileFormat() throws {
        let dir = try TemporaryDirectory()
        let key = SigningKey()
        try key.write(to: dir.file("k"))
        let privateJSON =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.file("k"))))
            as? [String: String]
        let publicJSON =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: dir.file("k.pub")))) as? [String: String]
        #expect(privateJSON?["type"] == "ed25519-private")
        #expect(publicJSON?["type"] == "ed25519-public")
        #expect(privateJSON?["key_id"] == key.keyID && publicJSON?["key_id"] == key.keyID)
        #expect(publicJSON?["key"] == key.key.publicKey.rawRepresentation.base64EncodedString())
    }

    @Test("an existing key is never overwritten without overwrite; with it, the new file is again 0600")
    func refusesToOverwrite() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("k")
        let first = SigningKey()
        try first.write(to: path)
        #expect(throws: KeyFileError.self) { try SigningKey().write(to: path) }
        #expect(try SigningKey(contentsOf: path).keyID == first.keyID)

        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let second = SigningKey()
        try second.write(to: path, overwrite: true)
        #expect(try SigningKey(contentsOf: path).keyID == second.keyID)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)

        // A folder given as the key's path (`keygen --out ./keys --force`): refused, the folder and what is in it kept.
        let folder = dir.file("keys")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try first.write(to: folder + "/other")
        #expect(throws: KeyFileError.self) { try SigningKey().write(to: folder, overwrite: true) }
        #expect(try SigningKey(contentsOf: folder + "/other").keyID == first.keyID)

        // Its public key's path a folder: refused before anything is replaced (the private key was replaced first,
        // and left without its public key).
        try FileManager.default.removeItem(atPath: path + ".pub")
        try FileManager.default.createDirectory(atPath: path + ".pub", withIntermediateDirectories: false)
        #expect(throws: KeyFileError.self) { try SigningKey().write(to: path, overwrite: true) }
        #expect(try SigningKey(contentsOf: path).keyID == second.keyID)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["k", "k.pub", "keys"])
    }

    @Test("malformed key files are rejected with the reason")
    func malformed() throws {
        let dir = try TemporaryDirectory()
        let key = SigningKey()
        try key.write(to: dir.file("k"))

        // A public key file is not a private key.
        let wrongType = #expect(throws: KeyFileError.self) { try SigningKey(contentsOf: dir.file("k.pub")) }
        #expect(wrongType?.reason.contains("ed25519-private") == true)
        // A key id that does not belong to the key.
        try editJSON(dir.file("k.pub")) { $0["key_id"] = "0123456789abcdef" }
        let wrongID = #expect(throws: KeyFileError.self) { try VerificationKey(contentsOf: dir.file("k.pub")) }
        #expect(wrongID?.reason.contains("does not match") == true)
        // Not JSON; missing.
        try Data("hello".utf8).write(to: URL(fileURLWithPath: dir.file("junk")))
        #expect(throws: KeyFileError.self) { try VerificationKey(contentsOf: dir.file("junk")) }
        #expect(throws: KeyFileError.self) { try VerificationKey(contentsOf: dir.file("missing.pub")) }
    }
}
