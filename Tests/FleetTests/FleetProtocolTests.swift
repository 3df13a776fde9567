import Fleet
import Foundation
import ModelSigning
import Testing

/// Signed envelopes, payload checks and the replay guard, without a broker.
@Suite("Fleet protocol: envelopes, payloads, replay guard")
struct FleetProtocolTests {
    static let topic = "yoloswap/v1/line-a-01/command"

    static func command(id: String = "c1", nonce: String = "00112233445566778899aabbccddeeff", issuedAt: Int64 = 1000)
        -> FleetCommand
    {
        FleetCommand(topic: topic, issuedAt: issuedAt, nonce: nonce, id: id, action: "switch")
    }

    static func bytes<T: Encodable>(_ value: T) throws -> [UInt8] { Array(try JSONEncoder().encode(value)) }

    @Test("a sealed payload opens with the signer's key and yields the same bytes and key id")
    func roundTrip() throws {
        let key = SigningKey()
        let payload = try Self.bytes(Self.command())
        let envelope = try SignedEnvelope.seal(payload, with: key)
        let opened = try SignedEnvelope.open(envelope, trusting: [SigningKey().verificationKey, key.verificationKey])
        #expect(opened.payload == payload)
        #expect(opened.keyID == key.keyID)
    }

    @Test("unsigned, untrusted, tampered and oversized messages are refused with their reason")
    func refusals() throws {
        let key = SigningKey()
        let payload = try Self.bytes(Self.command())
        func reason(_ bytes: [UInt8], _ keys: [VerificationKey]) -> FleetRefusal.Reason? {
            do { _ = try SignedEnvelope.open(bytes, trusting: keys) } catch { return error.reason }
            return nil
        }
        #expect(reason(payload, [key.verificationKey]) == .unsigned)
        let envelope = try SignedEnvelope.seal(payload, with: key)
        #expect(reason(envelope, [SigningKey().verificationKey]) == .untrustedKey)
        // Another payload under the same signature: the signature no longer matches.
        var decoded = try JSONDecoder().decode(SignedEnvelope.self, from: Data(envelope))
        decoded.payload = Data(try Self.bytes(Self.command(id: "c2"))).base64EncodedString()
        #expect(reason(try Self.bytes(decoded), [key.verificationKey]) == .badSignature)
        // A signature by an untrusted key presented under a trusted key's id.
        let forged = try JSONDecoder().decode(SignedEnvelope.self, from: Data(try SignedEnvelope.seal(payload,
            with: SigningKey())))
        decoded = try JSONDecoder().decode(SignedEnvelope.self, from: Data(envelope))
        decoded.signature = forged.signature
        #expect(reason(try Self.bytes(decoded), [key.verificationKey]) == .badSignature)
        #expect(reason([UInt8](repeating: 0x20, count: SignedEnvelope.maximumByteCount + 1), [key.verificationKey])
            == .malformed)
        // Fields quoted in a refusal are cut in bytes, not characters: one character may be any number of bytes (a
        // letter followed by 200 000 combining marks), and the detail goes to the audit log.
        let marks = "a" + String(repeating: "\u{301}", count: 200_000)
        for (format, keyID) in [(marks, "k"), (SignedEnvelope.format, marks)] {
            let hostile = try JSONEncoder().encode(["format": format, "key_id": keyID, "payload": "", "signature": ""])
            do { _ = try SignedEnvelope.open([UInt8](hostile), trusting: [key.verificationKey]) } catch {
                #expect(error.detail.utf8.count <= 200, "\(error.detail.utf8.count)")
            }
        }
    }

    @Test("payload checks: kind, topic binding, nonce and id bounds")
    func payloadChecks() throws {
        func reason(_ command: FleetCommand, topic: String = Self.topic) -> FleetRefusal.Reason? {
            do {
                let decoded = try FleetPayload.decode(FleetCommand.self, try! Self.bytes(command), kind: "command",
                    topic: topic)
                try FleetPayload.check(decoded)
            } catch { return error.reason }
            return nil
        }
        #expect(reason(Self.command()) == nil)
        #expect(reason(Self.command(), topic: "yoloswap/v1/line-a-02/command") == .wrongTopic)
        #expect(reason(Self.command(nonce: "short")) == .malformed)
        #expect(reason(Self.command(id: "has space")) == .malformed)
        var document = Self.command()
        document.kind = "desired"
        #expect(reason(document) == .malformed)
        do {
            _ = try FleetPayload.decode(FleetCommand.self, Array("[1,2]".utf8), kind: "command", topic: Self.topic)
            Issue.record("a JSON array was accepted as a command")
        } catch { #expect(error.reason == .malformed) }
        // 2^53 + 1 written long as issued_at: JSONDecoder trapped decoding it (the device gone), refused now.
        let long = "0." + String(repeating: "0", count: 120) + "9007199254740993e136"
        let text = String(decoding: try Self.bytes(Self.command()), as: UTF8.self)
            .replacingOccurrences(of: #""issued_at":1000"#, with: #""issued_at":\#(long)"#)
        #expect(text.contains(long))
        do {
            _ = try FleetPayload.decode(FleetCommand.self, Array(text.utf8), kind: "command", topic: Self.topic)
            Issue.record("a number too long was accepted")
        } catch { #expect(error.reason == .malformed && error.description.contains("at most 64")) }
    }

    @Test("commands: stale and future ones refused, a nonce or id used twice refused, a repeat returns the first")
    func commandReplay() throws {
        let guardian = ReplayGuard(settings: .init(maxClockSkew: .seconds(60)))
        func reason(_ body: () throws -> Void) -> FleetRefusal.Reason? {
            do { try body() } catch { return (error as? FleetRefusal)?.reason }
            return nil
        }
        #expect(reason { _ = try guardian.admit(Self.command(issuedAt: 1000), digest: "d1", now: 1061) } == .stale)
        #expect(reason { _ = try guardian.admit(Self.command(issuedAt: 1000), digest: "d1", now: 939) } == .stale)
        // Times whose difference from now overflows (a signed command from a broken clock or tool): refused, no trap.
        for issuedAt in [Int64.min, Int64.min + 500, Int64.max] {
            #expect(reason { _ = try guardian.admit(Self.command(issuedAt: issuedAt), digest: "dx", now: 1030) }
                == .stale, "\(issuedAt)")
        }
        #expect(try guardian.admit(Self.command(issuedAt: 1000), digest: "d1", now: 1030) == nil)
        // A memory read back damaged (a time whose difference from now overflows): forgotten, no trap.
        let damaged = try JSONDecoder().decode(ReplayGuard.Memory.self, from: Data("""
            {"commands": [{"id": "old", "nonce": "old-nonce", "issuedAt": \(Int64.min), "digest": "d0"}],
             "documents": {}}
            """.utf8))
        let repaired = ReplayGuard(settings: .init(maxClockSkew: .seconds(60)), restoring: damaged)
        #expect(try repaired.admit(Self.command(issuedAt: 1000), digest: "d1", now: 1030) == nil)
        // The same message again (a QoS 1 redelivery): not admitted, the first one returned.
        #expect(try guardian.admit(Self.command(issuedAt: 1000), digest: "d1", now: 1031)?.id == "c1")
        #expect(reason { _ = try guardian.admit(Self.command(id: "c2"), digest: "d2", now: 1030) } == .replayed)
        #expect(reason {
            _ = try guardian.admit(Self.command(nonce: "ffeeddccbbaa99887766554433221100"), digest: "d3", now: 1030)
        } == .duplicateID)
        // A command admitted but never run (the device stopped first) is forgotten: sent again, it is admitted.
        let unrun = Self.command(id: "c9", nonce: "99887766554433221100ffeeddccbbaa")
        #expect(try guardian.admit(unrun, digest: "d9", now: 1030) == nil)
        guardian.forget(unrun)
        #expect(try guardian.admit(unrun, digest: "d9", now: 1031) == nil)
        #expect(try guardian.admit(unrun, digest: "d9", now: 1032)?.id == "c9")

        // The memory survives a restart.
        let restored = ReplayGuard(settings: .init(maxClockSkew: .seconds(60)), restoring: try JSONDecoder().decode(
            ReplayGuard.Memory.self, from: guardian.snapshot()))
        #expect(reason { _ = try restored.admit(Self.command(id: "c2"), digest: "d2", now: 1040) } == .replayed)

        // Read back from its file; a missing file is the first start, a damaged one is said (and empty).
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("replay-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let missing = ReplayGuard.readMemory(from: file)
        #expect(missing.problem == nil)
        try guardian.snapshot().write(to: URL(fileURLWithPath: file))
        let read = ReplayGuard.readMemory(from: file)
        #expect(read.problem == nil)
        let reread = ReplayGuard(settings: .init(maxClockSkew: .seconds(60)), restoring: read.memory)
        #expect(reason { _ = try reread.admit(Self.command(id: "c2"), digest: "d2", now: 1040) } == .replayed)
        try Data().write(to: URL(fileURLWithPath: file))
        #expect(ReplayGuard.readMemory(from: file).problem != nil)
    }

    @Test("a command forgotten (by age, or for capacity) is refused when it comes again: after the clock stepped back, or while still within the skew")
    func forgottenCommandsStayRefused() throws {
        func reason(_ body: () throws -> Void) -> FleetRefusal.Reason? {
            do { try body() } catch { return (error as? FleetRefusal)?.reason }
            return nil
        }
        let c = Self.command(id: "c", nonce: "0000000000000000000000000000000c", issuedAt: 1000)
        let d = Self.command(id: "d", nonce: "0000000000000000000000000000000d", issuedAt: 1100)
        let guardian = ReplayGuard(settings: .init(maxClockSkew: .seconds(60)))
        #expect(try guardian.admit(c, digest: "dc", now: 1030) == nil)
        // d's admission forgets c, by age; then the clock steps back to within c's skew, and a copy of c comes.
        #expect(try guardian.admit(d, digest: "dd", now: 1100) == nil)
        #expect(reason { _ = try guardian.admit(c, digest: "dc", now: 1010) } == .stale)
        // Across a restart too: the floor is in the memory kept.
        let restored = ReplayGuard(settings: .init(maxClockSkew: .seconds(60)), restoring: try JSONDecoder().decode(
            ReplayGuard.Memory.self, from: guardian.snapshot()))
        #expect(reason { _ = try restored.admit(c, digest: "dc", now: 1010) } == .stale)
        // A redelivery of a command still remembered is answered as before, whatever the floor.
        #expect(try restored.admit(d, digest: "dd", now: 1101)?.id == "d")
        // Forgotten for capacity while within the skew (a day's skew, more commands than kept): refused.
        let small = ReplayGuard(settings: .init(maxClockSkew: .seconds(86_400), capacity: 2))
        for (i, id) in ["a", "b", "e"].enumerated() {
            let command = Self.command(id: id, nonce: String(repeating: "0", count: 31) + id,
                issuedAt: 1000 + Int64(i))
            #expect(try small.admit(command, digest: "d" + id, now: 1010) == nil)
        }
        let a = Self.command(id: "a", nonce: String(repeating: "0", count: 31) + "a", issuedAt: 1000)
        #expect(reason { _ = try small.admit(a, digest: "da", now: 1011) } == .stale)
        // A fresh command is admitted.
        #expect(try small.admit(Self.command(id: "f", nonce: String(repeating: "0", count: 31) + "f",
            issuedAt: 1011), digest: "df", now: 1011) == nil)
        // The earliest issued is forgotten first, not the first admitted: a clock running ahead (1100) admitted
        // before one running behind (1000) left a floor of 1100, refusing the slow clock's next command (1001).
        let clocks = ReplayGuard(settings: .init(maxClockSkew: .seconds(86_400), capacity: 2))
        for (id, issuedAt) in [("1", 1100), ("2", 1000), ("3", 1050)] as [(String, Int64)] {
            #expect(try clocks.admit(Self.command(id: id, nonce: String(repeating: "0", count: 31) + id,
                issuedAt: issuedAt), digest: "d" + id, now: 1050) == nil)
        }
        let four = Self.command(id: "4", nonce: String(repeating: "0", count: 31) + "4", issuedAt: 1001)
        #expect(try clocks.admit(four, digest: "d4", now: 1050) == nil)
        // Its redelivery is answered as a repeat (the earliest issued, it was forgotten at once: refused as stale).
        #expect(try clocks.admit(four, digest: "d4", now: 1051)?.id == "4")
    }

    @Test("documents: newer admitted, the same one already applied, older or same-time others refused, and one more than ten years ahead")
    func documentReplay() throws {
        let guardian = ReplayGuard()
        let topic = "yoloswap/v1/fleet/line-a/desired"
        func document(_ issuedAt: Int64, _ nonce: String) -> FleetDesiredDocument {
            FleetDesiredDocument(topic: topic, issuedAt: issuedAt, nonce: nonce, document: "slots: {}")
        }
        let now: Int64 = 100 + 86_400 * 30 + 5
        #expect(try guardian.admit(document(100, "aaaaaaaaaaaaaaaa"), digest: "a", now: now) == .new)
        #expect(try guardian.admit(document(100, "aaaaaaaaaaaaaaaa"), digest: "a", now: now) == .alreadyApplied)
        #expect(throws: FleetRefusal.self) { try guardian.admit(document(99, "bbbbbbbbbbbbbbbb"), digest: "b", now: now) }
        #expect(throws: FleetRefusal.self) { try guardian.admit(document(100, "cccccccccccccccc"), digest: "c", now: now) }
        // Days later is fine for a retained document: only the order matters.
        #expect(try guardian.admit(document(100 + 86_400 * 30, "dddddddddddddddd"), digest: "d", now: now) == .new)
        #expect(guardian.lastDocument(topic: topic)?.nonce == "dddddddddddddddd")
        // More than ten years ahead of this clock (milliseconds given for seconds, a damaged or hostile time): stale,
        // and the group's next document is still admitted (before, the first of these refused every later one).
        let clock: Int64 = 1_800_000_000
        let fresh = ReplayGuard()
        for issuedAt in [clock * 1000, .max, clock + ReplayGuard.documentHorizon + 1] {
            do throws(FleetRefusal) {
                _ = try fresh.admit(document(issuedAt, "eeeeeeeeeeeeeeee"), digest: "e", now: clock)
                Issue.record("admitted \(issuedAt)")
            } catch {
                #expect(error.reason == .stale && error.detail.contains("more than ten years ahead"), "\(error)")
            }
        }
        // A clock behind (a device booted without a real-time clock, even in 1970) still admits this year's.
        #expect(try fresh.admit(document(clock + 86_400 * 365, "ffffffffffffffff"), digest: "f", now: clock) == .new)
        #expect(try fresh.admit(document(clock + 86_400 * 366, "1111111111111111"), digest: "g", now: 0) == .new)
        // A time beyond the horizon remembered from before (admitted before it was checked) binds nothing.
        let remembered = try JSONDecoder().decode(ReplayGuard.Memory.self, from: Data(("{\"commands\": [], "
            + "\"documents\": {\"\(topic)\": {\"issuedAt\": \(Int64.max), \"nonce\": \"2222222222222222\", "
            + "\"digest\": \"h\"}}}").utf8))
        let restored = ReplayGuard(restoring: remembered)
        #expect(try restored.admit(document(clock, "3333333333333333"), digest: "i", now: clock) == .new)
    }

    @Test("topic names: one level, no wildcards, not 'fleet'")
    func names() {
        #expect(FleetTopics.isValidName("line-a_01.cam"))
        for bad in ["", "a/b", "a+", "#", "fleet", String(repeating: "x", count: 65), "é"] {
            #expect(!FleetTopics.isValidName(bad), "\(bad)")
        }
        #expect(FleetTopics.isValidPrefix("plant/yoloswap/v1"))
        #expect(!FleetTopics.isValidPrefix("a//b"))
        #expect(!FleetTopics.isValidPrefix("a/#"))
        // What libmosquitto refuses (control characters: the last will could not be set, and the service stopped),
        // the broker's own topics and shared subscriptions; other text MQTT allows passes.
        // (Noncharacters cannot be written as literals.)
        let noncharacters = [0xFDD0, 0xFFFF].map { "p" + String(Character(Unicode.Scalar(UInt32($0))!)) }
        for bad in ["plant\tA/v1", "plant\u{85}/v1", "plant\u{7F}", "$share/g", "$SYS", "$\u{301}x", "a/+\u{301}"]
            + noncharacters {
            #expect(!FleetTopics.isValidPrefix(bad), "\(bad)")
        }
        #expect(FleetTopics.isValidPrefix("usine/ligne-\u{E9}/v1") && FleetTopics.isValidPrefix("plant a/v1"))
        #expect(FleetTopics().fleetDesired(group: "g") == "yoloswap/v1/fleet/g/desired")
    }
}
