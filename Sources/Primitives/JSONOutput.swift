import Foundation

extension JSONEncoder {
    /// The encoder for every JSON answer and JSON line the project writes (HTTP API, CLI, events): keys in sorted
    /// order, so the same value always reads the same; dates as ISO 8601 with milliseconds; slashes unescaped.
    ///
    /// A new encoder per call: `JSONEncoder` is a class and not meant to be shared across threads while configured.
    public static var yoloswap: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
        }
        return encoder
    }
}

extension JSONDecoder {
    /// The decoder for what `JSONEncoder.yoloswap` wrote: dates as ISO 8601, with or without fractional seconds.
    public static var yoloswap: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
                return date
            }
            if let date = try? Date(text, strategy: Date.ISO8601FormatStyle()) { return date }
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "not an ISO 8601 time: \(text)"))
        }
        return decoder
    }
}

extension DecodingError {
    /// The error as one line for a message: where in the document (`.annotations[3].bbox`) and what was wrong.
    public var summary: String {
        func path(_ context: Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch self {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        case .keyNotFound(let key, let context):
            return "\(path(context)): missing \(key.stringValue)"
        @unknown default:
            return "\(self)"
        }
    }
}
