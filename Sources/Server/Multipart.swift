/// Extracts one field's content from a `multipart/form-data` body (RFC 7578), without copying the rest.
enum Multipart {
    /// The boundary parameter of a multipart content type, or nil.
    static func boundary(contentType: String) -> String? {
        for part in contentType.split(separator: ";").dropFirst() {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, kv[0].lowercased() == "boundary" else { continue }
            let value = kv[1]
            return value.hasPrefix("\"") && value.hasSuffix("\"") && value.count >= 2
                ? String(value.dropFirst().dropLast()) : value
        }
        return nil
    }

    /// The bytes of the part whose Content-Disposition names `field`, or nil when there is none.
    static func field(_ field: String, in body: [UInt8], boundary: String) -> [UInt8]? {
        let delimiter = Array(("--" + boundary).utf8)
        var position = 0
        while let start = find(delimiter, in: body, from: position) {
            var cursor = start + delimiter.count
            // "--" after the delimiter ends the body.
            if cursor + 1 < body.count, body[cursor] == UInt8(ascii: "-"), body[cursor + 1] == UInt8(ascii: "-") {
                return nil
            }
            guard let headerEnd = find(Array("\r\n\r\n".utf8), in: body, from: cursor) else { return nil }
            let headers = String(decoding: body[cursor..<headerEnd], as: UTF8.self).lowercased()
            cursor = headerEnd + 4
            guard let next = find(Array(("\r\n--" + boundary).utf8), in: body, from: cursor) else { return nil }
            if headers.contains("name=\"\(field.lowercased())\"") { return Array(body[cursor..<next]) }
            position = next + 2
        }
        return nil
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, from <= haystack.count - needle.count else { return nil }
        let first = needle[0]
        var i = from
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count, haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
