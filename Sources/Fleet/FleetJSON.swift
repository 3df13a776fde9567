import Foundation
import Primitives

/// Any JSON value: the output carried in a command result, whatever the operation produced.
///
/// Thread-safety: a value.
public enum FleetJSON: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([FleetJSON])
    case object([String: FleetJSON])

    /// The JSON form of an encodable value (dates as ISO 8601), or nil when it does not encode.
    public static func from<T: Encodable>(_ value: T) -> FleetJSON? {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(value) else { return nil }
        return try? JSONNumbers.decode(FleetJSON.self, from: data)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([FleetJSON].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: FleetJSON].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}
