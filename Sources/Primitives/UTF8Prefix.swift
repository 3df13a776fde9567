extension String {
    /// At most the first `maxBytes` bytes of the string's UTF-8, cut at a Unicode scalar's boundary: a bound on what
    /// is stored or logged of a string from outside, which counting Characters is not (one Character can hold any
    /// number of combining scalars).
    public func prefix(utf8Bytes maxBytes: Int) -> String {
        guard utf8.count > maxBytes else { return self }
        var end = unicodeScalars.startIndex
        var bytes = 0
        for index in unicodeScalars.indices {
            let size = UTF8.width(unicodeScalars[index])
            guard bytes + size <= maxBytes else { break }
            bytes += size
            end = unicodeScalars.index(after: index)
        }
        return String(unicodeScalars[..<end])
    }

    /// Whether the string's UTF-8 begins with `prefix`'s, byte for byte — the comparison a path needs: `hasPrefix`
    /// takes canonically equivalent Unicode for equal (`é` composed and decomposed), which a file system does not, so
    /// a folder spelt the other way passed for the one checked.
    public func hasBytePrefix(_ prefix: String) -> Bool { utf8.starts(with: prefix.utf8) }

    /// The string with every occurrence of `target`'s UTF-8 bytes replaced by `replacement`'s — found byte by byte,
    /// where `replacingOccurrences` compares characters and misses a target whose last character a following
    /// combining mark joins (a password before `@` + U+0301 stayed in the text it was to be taken out of).
    public func replacingBytes(of target: String, with replacement: String) -> String {
        let needle = Array(target.utf8)
        guard !needle.isEmpty else { return self }
        let bytes = Array(utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == needle[0], bytes.count - index >= needle.count,
               bytes[index..<index + needle.count].elementsEqual(needle)
            {
                out += replacement.utf8
                index += needle.count
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The string with each control character (C0, DEL, C1: a newline, an escape sequence), line or paragraph
    /// separator (U+2028, U+2029) and bidirectional-text control (U+061C, U+200E–U+200F, U+202A–U+202E,
    /// U+2066–U+2069: they reorder what a terminal shows) written as `\u{XX}`: text from outside quoted in a log line
    /// or an audit reason cannot start a line of its own, drive a terminal or hide what follows it.
    public var escapingControlCharacters: String {
        func escaped(_ scalar: Unicode.Scalar) -> Bool {
            switch scalar.value {
            case 0x061C, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069: true
            default: scalar.properties.generalCategory == .control
            }
        }
        guard unicodeScalars.contains(where: escaped) else { return self }
        var out = ""
        for scalar in unicodeScalars {
            if escaped(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Whether both strings have the same UTF-8 bytes (`==` compares canonical equivalence).
    public func isByteEqual(to other: String) -> Bool { utf8.elementsEqual(other.utf8) }

    /// Whether the string is exactly `count` ASCII hex digits (`0-9`, `a-f`, `A-F`; no other script's digits).
    public func isASCIIHex(count: Int) -> Bool {
        utf8.count == count && utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x46).contains($0)
            || (0x61...0x66).contains($0) }
    }
}
