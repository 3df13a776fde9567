/// A request or response parameter: the protocol allows a bool, an integer, a float or a string.
///
/// Thread-safety: a value.
public enum InferParameter: Sendable, Equatable {
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)

    /// The value as a number, when it is one (or a string that reads as one).
    public var number: Double? {
        switch self {
        case .int(let v): Double(v)
        case .double(let v): v
        case .string(let s): Double(s)
        case .bool: nil
        }
    }

    /// The value as a flag (`true`, 1, "true").
    public var flag: Bool? {
        switch self {
        case .bool(let v): v
        case .int(let v): v != 0
        case .string(let s): s == "true" ? true : s == "false" ? false : nil
        case .double: nil
        }
    }

    public var text: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}
