import Foundation

/// Parses Ultralytics-style `metadata_props` values (Python reprs).
enum MetadataParser {
    /// The most text `names` reads: 65 536 names of up to 60-odd bytes each.
    static let maxNamesBytes = 4 << 20

    /// Parses `{0: 'person', 1: 'bicycle', ...}` (or a JSON object / list) into names ordered by index.
    static func names(_ text: String) -> [String]? {
        // The schema allows 65 536 classes; names past this much text are not a model's (they come from its file).
        guard text.utf8.count <= maxNamesBytes else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("[") {
            guard trimmed.hasSuffix("]") else { return nil }
            return listItems(trimmed).map(unquote)
        }
        guard trimmed.hasPrefix("{"), trimmed.hasSuffix("}") else { return nil }
        var byIndex: [Int: String] = [:]
        for item in listItems(trimmed) {
            guard let colon = item.firstIndex(of: ":") else { return nil }
            let key = unquote(String(item[..<colon]))
            guard let index = Int(key) else { return nil }
            byIndex[index] = unquote(String(item[item.index(after: colon)...]))
        }
        guard !byIndex.isEmpty, byIndex.keys.sorted() == Array(0..<byIndex.count) else { return nil }
        return (0..<byIndex.count).map { byIndex[$0]! }
    }

    /// Parses `[640, 640]`, `640` or `(640, 480)` as (height, width): one or two unsigned whole numbers, separated by
    /// commas or spaces, in brackets or parentheses or bare. Nil for anything else (a sign, an exponent, a fraction, a
    /// third number, a number past `Int`'s range) rather than reading whatever digits it holds; the schema checks the
    /// range.
    static func imageSize(_ text: String) -> ImageSize? {
        let tokens = text.split(whereSeparator: { "[](),".contains($0) || $0.isWhitespace })
        var numbers: [Int] = []
        for token in tokens {
            guard token.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(token) else { return nil }
            numbers.append(number)
        }
        switch numbers.count {
        case 1: return ImageSize(width: numbers[0], height: numbers[0])
        case 2: return ImageSize(width: numbers[1], height: numbers[0])
        default: return nil
        }
    }

    /// Splits the inside of `{...}` / `[...]` at top-level commas, respecting quotes.
    private static func listItems(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var quote: Character?
        var escaped = false
        for ch in text.dropFirst().dropLast() {
            if let q = quote {
                current.append(ch)
                if escaped { escaped = false } else if ch == "\\" { escaped = true } else if ch == q { quote = nil }
                continue
            }
            switch ch {
            case "'", "\"": quote = ch; current.append(ch)
            case ",": items.append(current); current = ""
            default: current.append(ch)
            }
        }
        if !current.trimmingCharacters(in: .whitespaces).isEmpty { items.append(current) }
        return items.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    private static func unquote(_ text: String) -> String {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t.count >= 2, let first = t.first, first == "'" || first == "\"", t.last == first else { return t }
        return String(t.dropFirst().dropLast()).replacingOccurrences(of: "\\'", with: "'")
    }
}
