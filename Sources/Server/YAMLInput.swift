import Yams

/// YAML the service is given — its configuration, desired-state documents — composed into a node tree and checked
/// for what Yams' decoders cannot be trusted with, before anything is decoded.
///
/// - Base-60 numbers: YAML 1.1 reads a plain scalar with colons as one (`1:30` is 90), and Yams computes it, when it
///   decodes an integer, with trapping arithmetic: `1:0:0:0:0:0:0:0:0:0:0` (its base reaches 60^11) killed the
///   process. A scalar whose base-60 value does not fit an `Int` is refused, naming where it is.
/// - Unknown keys: a mapping given a `Schema` refuses keys it does not list, so that a misspelt
///   `require_signatures: true` is an error rather than a setting silently not in force.
/// - Size: the walk visits at most `maxNodes` nodes (an alias counts each time it is reached), so a document of
///   aliases of aliases is refused rather than walked for ever.
/// - Errors: Yams' own messages quote the offending line, which may hold a password; `describe` keeps the position
///   and the problem only.
///
/// Thread-safety: stateless.
enum YAMLInput {
    /// The largest tree walked.
    static let maxNodes = 200_000

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

    /// Checks the tree: base-60 numbers that fit, keys the schema lists, at most `maxNodes` nodes.
    static func check(_ root: Node, schema: Schema = .any) throws(Refusal) {
        var pending: [(node: Node, path: String, schema: Schema)] = [(root, "", schema)]
        var visited = 0
        while let (node, path, schema) = pending.popLast() {
            visited += 1
            guard visited <= maxNodes else {
                throw Refusal(path: "", reason: "the document has more than \(maxNodes) values (counting each use "
                    + "of an alias)")
            }
            switch node {
            case .scalar(let scalar):
                if let reason = overflowingBase60(scalar) { throw Refusal(path: path, reason: reason) }
            case .mapping(let mapping):
                for (key, value) in mapping {
                    let name = key.string ?? "\(key)"
                    let at = path.isEmpty ? name : "\(path).\(name)"
                    switch schema {
                    case .keys(let allowed):
                        guard let inner = allowed[name] else {
                            throw Refusal(path: at, reason: "unknown key (\(path.isEmpty ? "the top level" : path) "
                                + "takes " + allowed.keys.sorted().joined(separator: ", ") + ")")
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
                for (index, element) in sequence.enumerated() { pending.append((element, "\(path)[\(index)]", inner)) }
            case .alias:
                break
            }
        }
    }

    /// Why a plain scalar, read as an integer, would trap in Yams' base-60 arithmetic; nil when it would not (not
    /// base-60, not an integer, or a value that fits). Follows Yams 6's `FixedWidthInteger` construction: `_`
    /// removed, a sign, `0x`/`0b`/`0o`/`0` prefixes read as other radixes (no base 60), then each `:`-separated
    /// part an integer, the value the sum of part × 60^k, the base multiplied by 60 after every part.
    static func overflowingBase60(_ scalar: Node.Scalar) -> String? {
        guard scalar.style == .plain || scalar.style == .any, scalar.string.contains(":") else { return nil }
        var text = Substring(scalar.string.replacingOccurrences(of: "_", with: ""))
        if text.hasPrefix("-") || text.hasPrefix("+") { text = text.dropFirst() }
        guard !text.hasPrefix("0") else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0, radix: 10) }
        guard parts.allSatisfy({ $0 != nil }) else { return nil }
        var (base, value) = (1, 0)
        for part in parts.reversed() {
            let (product, overflowA) = part!.multipliedReportingOverflow(by: base)
            let (sum, overflowB) = value.addingReportingOverflow(product)
            let (next, overflowC) = base.multipliedReportingOverflow(by: 60)
            if overflowA || overflowB || overflowC {
                return "'\(scalar.string.prefix(64))' reads as a base-60 number too large for an integer (YAML 1.1); "
                    + "quote it for a string, or write the number in decimal"
            }
            (base, value) = (next, sum)
        }
        return nil
    }
}
