/// The MQTT topics of a fleet, under a configurable prefix (`yoloswap/v1` by default):
///
/// - `<prefix>/<device>/command`: operator → device, a signed command (`FleetCommand`)
/// - `<prefix>/<device>/command/result`: device → operator, the outcome per command id (`FleetCommandResult`)
/// - `<prefix>/<device>/status`: device → all, retained: slots, models, generations; `offline` as the last will
/// - `<prefix>/<device>/events`: device → all, swap events as they happen
/// - `<prefix>/fleet/<group>/desired`: operator → group, retained: a signed desired-state document
///   (`FleetDesiredDocument`)
/// - `<prefix>/<device>/streams/<stream>/results` and `…/events`: device → all, a video stream's frame results and
///   events (switch, reconnect, ended, failed), when the stream asks for the `mqtt` output
///
/// Thread-safety: a value.
public struct FleetTopics: Sendable, Equatable {
    public var prefix: String

    public init(prefix: String = "yoloswap/v1") { self.prefix = prefix }

    public func command(device: String) -> String { "\(prefix)/\(device)/command" }
    public func commandResult(device: String) -> String { "\(prefix)/\(device)/command/result" }
    public func status(device: String) -> String { "\(prefix)/\(device)/status" }
    public func events(device: String) -> String { "\(prefix)/\(device)/events" }
    public func fleetDesired(group: String) -> String { "\(prefix)/fleet/\(group)/desired" }
    public func streamResults(device: String, stream: String) -> String { "\(prefix)/\(device)/streams/\(stream)/results" }
    public func streamEvents(device: String, stream: String) -> String { "\(prefix)/\(device)/streams/\(stream)/events" }

    /// Whether `name` may be a device id or group name: 1…64 of `A-Z a-z 0-9 . _ -`, so that it is one topic level
    /// with no wildcard (`+`, `#`) or separator in it, and not `fleet` (which would collide with the group topics).
    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name != "fleet"
            && name.utf8.allSatisfy { byte in
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z"))
                    .contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                    || [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-")].contains(byte)
            }
    }

    /// Whether `prefix` may prefix the topics: 1…128 bytes, levels separated by `/`, none empty, no wildcard, not
    /// starting with `$` (the broker's own topics; `$share/…` a shared subscription, whose messages arrive on another
    /// topic), and no character libmosquitto refuses in a topic — a control character (C0, DEL, C1) or a noncharacter
    /// (U+FDD0–U+FDEF, U+xFFFE, U+xFFFF): it refused the last will's at the start, and the agent, and the service
    /// with it, stopped over a prefix the configuration had accepted. The structure is checked on the bytes, as the
    /// broker reads them (a combining mark after `$` or `+` hides it from a check by characters).
    public static func isValidPrefix(_ prefix: String) -> Bool {
        let bytes = Array(prefix.utf8)
        return (1...128).contains(bytes.count) && bytes.first != UInt8(ascii: "$")
            && !bytes.contains(UInt8(ascii: "+")) && !bytes.contains(UInt8(ascii: "#"))
            && bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty }
            && !prefix.unicodeScalars.contains {
                $0.properties.generalCategory == .control || $0.properties.isNoncharacterCodePoint
            }
    }
}
