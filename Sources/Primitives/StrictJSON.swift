import Foundation

/// Decoding JSON that refuses keys the type does not know, where a plain `JSONDecoder` skips them: a key spelt
/// wrong (`rollbackIf` for `rollback_if`) would otherwise leave its setting out without a word — a release gate
/// gone, a load's option ignored.
///
/// The value is decoded as usual, encoded again, and every key of the input that the encoding lacks is unknown (an
/// explicit `null` counts as absent, as decoding takes it). This needs the type's encoding to mirror its decoding,
/// which synthesized `Codable` does.
///
/// Thread-safety: stateless.
public enum StrictJSON {
    /// The keys decoding skipped, as paths (`rules.rollbackIf`, `steps[1].hold`), each cut to 64 bytes.
    public struct UnknownKeys: Error, CustomStringConvertible, Equatable {
        public var paths: [String]
        public init(paths: [String]) { self.paths = paths }
        public var description: String {
            "unknown key\(paths.count == 1 ? "" : "s"): \(paths.joined(separator: ", "))"
        }
    }

    /// How many unknown keys an error names.
    public static let keysNamed = 8

    /// `T` decoded from `data`, refusing unknown keys.
    /// - Throws: `JSONNumbers.TooLong`, `DecodingError` as `JSONDecoder` does, then `UnknownKeys`.
    public static func decode<T: Codable>(_ type: T.Type, from data: Data) throws -> T {
        let value = try JSONNumbers.decode(T.self, from: data)
        let original = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        let known = try JSONSerialization.jsonObject(with: JSONEncoder().encode(value), options: [.fragmentsAllowed])
        var unknown: [String] = []
        collect(original, known, path: "", into: &unknown)
        guard unknown.isEmpty else { throw UnknownKeys(paths: unknown) }
        return value
    }

    /// Adds to `unknown` the keys of `original` that `known` (the decoded value encoded) lacks, in key order, up to
    /// `keysNamed`. Descends only where both have an object or an array of the same length, so no deeper than the
    /// type's own structure.
    private static func collect(_ original: Any, _ known: Any, path: String, into unknown: inout [String]) {
        if let object = original as? [String: Any], let knownObject = known as? [String: Any] {
            for (key, value) in object.sorted(by: { $0.key < $1.key }) {
                guard unknown.count < keysNamed else { return }
                let name = key.prefix(utf8Bytes: 64)
                let keyPath = path.isEmpty ? name : "\(path).\(name)"
                if let knownValue = knownObject[key] {
                    collect(value, knownValue, path: keyPath, into: &unknown)
                } else if !(value is NSNull) {
                    unknown.append(keyPath)
                }
            }
        } else if let array = original as? [Any], let knownArray = known as? [Any], array.count == knownArray.count {
            for (index, pair) in zip(array, knownArray).enumerated() {
                collect(pair.0, pair.1, path: "\(path)[\(index)]", into: &unknown)
            }
        }
    }
}
