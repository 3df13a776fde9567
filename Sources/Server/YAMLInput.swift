import Primitives
import Yams

/// YAML the service is given — its configuration, desired-state documents — composed into a node tree and checked
/// for what Yams' decoders cannot be trusted with, before anything is decoded.
///
/// - Base-60 numbers: YAML 1.1 reads a plain scalar with colons as one (`1:30` is 90), and Yams computes it, when it
///   decodes an integer, with trapping arithmetic: `1:0:0:0:0:0:0:0:0:0:0` (its base reaches 60^11) killed the
///   process. A scalar whose base-60 value does not fit an `Int` is refused, naming where it is.
/// - Unknown keys: a mapping given a `Schema` refuses keys it does not list, so that a misspelt
///   `require_signatures: true` is an error rather than a setting silently not in force.
/// - Size: the walk visits at most `maxNodes` nodes and `maxScalarBytes` bytes of scalars (an alias would count each
///   time it is reached: a second guard, behind the refusal of aliases); paths are spelt out only for a refusal.
/// - Aliases: refused before Yams composes anything (`refuseAliases`). Yams hashes every key of a mapping while it
///   composes (to find duplicates), walking the whole of a key that is an alias of a sequence of aliases …: 600
///   bytes took minutes and gigabytes before any check of ours could count them. `check` refuses keys that are not
///   plain values (a sequence or a mapping: its size bounded by the text's then).
/// - Errors: Yams' own messages quote the offending line, which may hold a password; `describe` keeps the position
///   and the problem only.
///
/// Thread-safety: stateless.
enum YAMLInput {
    /// The largest tree walked, and the most bytes of scalars read in it.
    static let maxNodes = 200_000
    static let maxScalarBytes = 16 << 20

    /// Which keys a mapping may have.
    indirect enum Schema: Sendable {
        /// Anything (a value the decoder checks, or a part checked elsewhere).
        case any
        /// A mapping with these keys only, each value checked by its schema.
        case keys([String: Schema])
        /// A mapping with keys of the user's (slot names, say), each value checked by the schema.
        case values(Schema)
        /// A sequence, each element checked by the schema.
        case elements(Schema)
    }

    /// What is refused, and where (`server.port`, `slots.line-1.sha_256`; empty for the whole document).
    struct Refusal: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { path.isEmpty ? reason : "\(path): \(reason)" }
    }

    /// Composes `text`; nil for an empty document.
    /// - Throws: `Refusal` with Yams' problem and position (not the text around it).
    static func compose(_ text: String) throws(Refusal) -> Node? {
        try refuseAliases(text)
        do { return try Yams.compose(yaml: text) } catch {
            throw Refusal(path: "", reason: "not valid YAML: \(describe(error))")
        }
    }

    /// A Yams error without the lines of the document it quotes.
    static func describe(_ error: any Error) -> String {
        guard let yaml = error as? YamlError else { return "\(error)" }
        switch yaml {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
             .composer(_, let problem, let mark, _):
            return "line \(mark.line), column \(mark.column): \(problem)"
        case .reader(let problem, let offset, _, _):
            return "\(problem)" + (offset.map { " at byte \($0)" } ?? "")
        case .duplicatedKeysInMapping(let duplicates, _):
            return "keys given twice in one mapping: " + duplicates.sorted().joined(separator: ", ")
        default:
            return "\(yaml)"
        }
    }

    /// Checks the tree: base-60 numbers that fit, keys the schema lists, at most `maxNodes` nodes and `maxScalarBytes`
    /// bytes of scalars (an alias counted each time it is reached). A node's path is kept as a link to its parent and
    /// spelt out only for a refusal.
    static func check(_ root: Node, schema: Schema = .any) throws(Refusal) {
        var steps: [(parent: Int, component: Component)] = []
        var pending: [(node: Node, step: Int?, schema: Schema)] = [(root, nil, schema)]
        var (visited, scalarBytes) = (0, 0)
        func path(_ step: Int?) -> String {
            var components: [Component] = []
            var at = step
            while let index = at {
                components.append(steps[index].component)
                at = steps[index].parent < 0 ? nil : steps[index].parent
            }
            return components.reversed().reduce(into: "") { text, component in
                switch component {
                case .key(let name): text += (text.isEmpty ? "" : ".") + name.prefix(utf8Bytes: 128)
                case .index(let index): text += "[\(index)]"
                }
            }
        }
        func child(of step: Int?, _ component: Component) -> Int {
            steps.append((step ?? -1, component))
            return steps.count - 1
        }
        while let (node, step, schema) = pending.popLast() {
            visited += 1
            guard visited <= maxNodes else {
                throw Refusal(path: "", reason: "the document has more than \(maxNodes) values (counting each use "
                    + "of an alias)")
            }
            switch node {
            case .scalar(let scalar):
                scalarBytes += scalar.string.utf8.count
                guard scalarBytes <= maxScalarBytes else {
                    throw Refusal(path: "", reason: "the document's values come to more than \(maxScalarBytes) bytes "
                        + "(counting each use of an alias)")
                }
                if let reason = overflowingBase60(scalar) { throw Refusal(path: path(step), reason: reason) }
            case .mapping(let mapping):
                for (key, value) in mapping {
                    guard let name = key.string else {
                        throw Refusal(path: path(step), reason: Self.complexKey)
                    }
                    let at = child(of: step, .key(name))
                    switch schema {
                    case .keys(let allowed):
                        guard let inner = allowed[name] else {
                            let section = path(step)
                            throw Refusal(path: path(at), reason: "unknown key ("
                                + (section.isEmpty ? "the top level" : section) + " takes "
                                + allowed.keys.sorted().joined(separator: ", ") + ")")
                        }
                        pending.append((value, at, inner))
                    case .values(let inner):
                        pending.append((value, at, inner))
                    case .any, .elements:
                        pending.append((value, at, .any))
                    }
                    pending.append((key, at, .any))
                }
            case .sequence(let sequence):
                let inner: Schema = if case .elements(let element) = schema { element } else { .any }
                for (index, element) in sequence.enumerated() {
                    pending.append((element, child(of: step, .index(index)), inner))
                }
            case .alias:
                break
            }
        }
    }

    /// A step of a node's path.
    private enum Component {
        case key(String)
        case index(Int)
    }

    static let complexKey = "a key that is not a plain value (a sequence or a mapping): keys here are names"

    /// Refuses, before Yams composes the text, any alias (`*name`): Yams hashes every mapping key while it composes
    /// (to find duplicates), the whole of a key that is an alias of a sequence of aliases, expanded — 600 bytes took
    /// minutes and gigabytes. Configuration and desired state need no aliases.
    ///
    /// The bytes are read as they are, with no notion of quotes, comments or block scalars (a scan that skipped them
    /// could be led to skip a real alias: a `'` inside a plain value looks like a quote's start). A `*` followed by a
    /// name's character (libyaml's letters, digits, `-`, `_`) where a YAML token may start (the text's start, after
    /// a space, a tab, a line break — NEL, LS and PS too —, a byte-order mark, `[`, `{`, `,`, `?`, `:`, `]` or `}`)
    /// is refused — in a quoted value or a comment too, which the message says.
    static func refuseAliases(_ text: String) throws(Refusal) {
        let bytes = Array(text.utf8)
        let starts: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D, UInt8(ascii: "["), UInt8(ascii: "{"), UInt8(ascii: ","),
            UInt8(ascii: "?"), UInt8(ascii: ":"), UInt8(ascii: "]"), UInt8(ascii: "}")]
        func isNameByte(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
        /// Whether a token may start at `i`: after one of `starts`, or after a character libyaml also takes for a
        /// line break or leaves before a token — NEL (C2 85), LS and PS (E2 80 A8/A9), a byte-order mark (EF BB BF).
        func isTokenStart(_ i: Int) -> Bool {
            if i == 0 || starts.contains(bytes[i - 1]) { return true }
            if i >= 2, bytes[i - 2] == 0xC2, bytes[i - 1] == 0x85 { return true }
            guard i >= 3 else { return false }
            let three = (bytes[i - 3], bytes[i - 2], bytes[i - 1])
            return three == (0xE2, 0x80, 0xA8) || three == (0xE2, 0x80, 0xA9) || three == (0xEF, 0xBB, 0xBF)
        }
        for i in bytes.indices where bytes[i] == UInt8(ascii: "*") && i + 1 < bytes.count && isNameByte(bytes[i + 1])
            && isTokenStart(i) {
            let line = bytes[..<i].reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
            throw Refusal(path: "", reason: "line \(line): YAML aliases (`*name`) are not accepted (an aliased key is "
                + "expanded whole while the text is read); write the value out — a `*` followed by a name, after a "
                + "space, a line break or one of [ { , ? : ] }, reads as one even in quotes or a comment (a password "
                + "with one goes in a file: mqtt.password_file)")
        }
    }

    /// Why a plain scalar, read as an integer, would trap in Yams' base-60 arithmetic; nil when it would not (not
    /// base-60, not an integer, or a value that fits). Follows Yams 6's `FixedWidthInteger` construction: `_`
    /// removed; one sign taken off to look for a `0x`/`0b`/`0o`/`0` prefix (another radix, no base 60); then, in
    /// `sexagesimal()`, one sign taken off again and each `:`-separated part read as a signed integer, the value the
    /// sum of part × 60^k with the base multiplied by 60 after every part, and finally multiplied by the sign.
    static func overflowingBase60(_ scalar: Node.Scalar) -> String? {
        guard scalar.style == .plain || scalar.style == .any else { return nil }
        let string = scalar.string
        // Cheap refusals of what cannot be an integer at all (most strings): Yams reads each part with
        // `Int(_:radix: 10)`, which takes digits and a leading sign only.
        guard string.utf8.contains(UInt8(ascii: ":")), string.utf8.allSatisfy({ byte in
            (0x30...0x39).contains(byte) || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")
        }) else { return nil }
        var text = Substring(string.replacingOccurrences(of: "_", with: ""))
        var sign = 1
        if text.hasPrefix("-") {
            sign = -1
            text = text.dropFirst()
        } else if text.hasPrefix("+") {
            text = text.dropFirst()
        }
        guard !text.hasPrefix("0") else { return nil }
        var (base, value) = (1, 0)
        var overflow = false
        for part in text.split(separator: ":", omittingEmptySubsequences: false).reversed() {
            guard let digit = Int(part, radix: 10) else { return nil }
            let (product, a) = digit.multipliedReportingOverflow(by: base)
            let (sum, b) = value.addingReportingOverflow(product)
            let (next, c) = base.multipliedReportingOverflow(by: 60)
            // Every part must parse for Yams to compute at all: keep reading the rest before answering.
            if a || b || c { overflow = true }
            (base, value) = (next, sum)
        }
        if !overflow { overflow = value.multipliedReportingOverflow(by: sign).overflow }
        guard overflow else { return nil }
        return "'\(string.prefix(utf8Bytes: 64))' reads as a base-60 number too large for an integer (YAML 1.1); "
            + "quote it for a string, or write the number in decimal"
    }
}
