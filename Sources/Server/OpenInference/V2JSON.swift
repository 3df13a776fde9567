import Foundation
import OpenInference

/// A JSON value of a v2 request: a parameter's value, or one element of a tensor's `data`.
enum V2Scalar: Decodable, Sendable {
    case bool(Bool)
    case int(Int64)
    /// An integer above `Int64.max` (a UINT64 element).
    case uint(UInt64)
    case double(Double)
    case string(String)

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        // A failed decode builds an error (its coding path, its text): a tensor's data has up to millions of elements,
        // so the common kinds are tried first, and the exact integer types only for an integral number (Double reads
        // any number; Int64 and UInt64 keep integers past 2^53 exact).
        if let d = try? c.decode(Double.self) {
            if d == d.rounded(), let i = try? c.decode(Int64.self) { self = .int(i) }
            else if d >= 0x1p63, d == d.rounded(), let u = try? c.decode(UInt64.self) { self = .uint(u) }
            else { self = .double(d) }
        }
        // A number too small for a Double (1e-400): Double refuses it, Int64 reads it as 0, as it did when tried first.
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath,
                debugDescription: "expected a bool, number or string"))
        }
    }

    var parameter: InferParameter {
        switch self {
        case .bool(let v): .bool(v)
        case .int(let v): .int(v)
        case .uint(let v): .double(Double(v))
        case .double(let v): .double(v)
        case .string(let v): .string(v)
        }
    }
}

/// A tensor's `data`: row-major elements, flat or nested in arrays (nesting at most `InferTensor.maxRank` deep).
struct V2TensorData: Decodable, Sendable {
    var elements: [V2Scalar] = []

    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        try Self.flatten(&container, into: &elements, depth: 1)
    }

    private static func flatten(_ container: inout any UnkeyedDecodingContainer, into elements: inout [V2Scalar],
                                depth: Int) throws {
        // What the last element was is tried first (a failed try costs an error's construction; an array holds
        // scalars or arrays, seldom both). A failed decode leaves the container where it was.
        var scalars = false
        while !container.isAtEnd {
            if scalars, let scalar = try? container.decode(V2Scalar.self) {
                elements.append(scalar)
            } else if var nested = try? container.nestedUnkeyedContainer() {
                scalars = false
                guard depth < InferTensor.maxRank else {
                    throw DecodingError.dataCorrupted(.init(codingPath: container.codingPath,
                        debugDescription: "data is nested deeper than \(InferTensor.maxRank) levels"))
                }
                try flatten(&nested, into: &elements, depth: depth + 1)
            } else {
                elements.append(try container.decode(V2Scalar.self))
                scalars = true
            }
        }
    }
}

/// The JSON part of `POST /v2/models/{model}/infer`.
struct V2InferRequestJSON: Decodable {
    struct Input: Decodable {
        var name: String
        var shape: [Int]
        var datatype: String
        var parameters: [String: V2Scalar]?
        var data: V2TensorData?
    }
    struct Output: Decodable {
        var name: String
        var parameters: [String: V2Scalar]?
    }
    var id: String?
    var parameters: [String: V2Scalar]?
    var inputs: [Input]
    var outputs: [Output]?
}

extension V2TensorData {
    /// The elements as raw little-endian bytes of `datatype`, each checked to fit it.
    func raw(_ datatype: InferDataType, name: String) throws(InferError) -> [UInt8] {
        func bad(_ index: Int) -> InferError {
            .invalid("input '\(name)': element \(index) of data is not a valid \(datatype.rawValue)")
        }
        // A number written with a fraction or exponent (`3.0`, `1e3`) counts as an integer when it is one exactly and
        // below 2^53, where a double holds every integer (past it, what was written may have been rounded; every
        // integer that fits is decoded as one in the first place).
        func exactInteger(_ d: Double) -> Int64? { d.magnitude < 0x1p53 ? Int64(exactly: d) : nil }
        func integer(_ index: Int, _ range: ClosedRange<Int64>) throws(InferError) -> Int64 {
            switch elements[index] {
            case .int(let v) where range.contains(v): return v
            case .double(let d): if let v = exactInteger(d), range.contains(v) { return v }
            default: break
            }
            throw bad(index)
        }
        func unsigned(_ index: Int) throws(InferError) -> UInt64 {
            switch elements[index] {
            case .int(let v) where v >= 0: return UInt64(v)
            case .uint(let v): return v
            case .double(let d): if let v = exactInteger(d), v >= 0 { return UInt64(v) }
            default: break
            }
            throw bad(index)
        }
        // A floating-point element must stay finite in its type: 1e39 is no FP32, 70000 no FP16.
        func number<F: BinaryFloatingPoint>(_ index: Int, as: F.Type) throws(InferError) -> F {
            let value: F
            switch elements[index] {
            case .int(let v): value = F(v)
            case .uint(let v): value = F(v)
            case .double(let d): value = F(d)
            default: throw bad(index)
            }
            guard value.isFinite else { throw bad(index) }
            return value
        }
        var out: [UInt8] = []
        func append<T: BitwiseCopyable>(_ value: T) { withUnsafeBytes(of: value) { out += $0 } }
        out.reserveCapacity(elements.count * (datatype.elementSize ?? 8))
        switch datatype {
        case .bytes:
            var strings: [[UInt8]] = []
            for i in elements.indices {
                guard case .string(let s) = elements[i] else { throw bad(i) }
                strings.append(Array(s.utf8))
            }
            return InferTensor.joinBytes(strings)
        case .bool:
            for i in elements.indices {
                guard case .bool(let b) = elements[i] else { throw bad(i) }
                out.append(b ? 1 : 0)
            }
        case .fp32: for i in elements.indices { append(try number(i, as: Float.self)) }
        case .fp16: for i in elements.indices { append(try number(i, as: Float16.self)) }
        case .fp64: for i in elements.indices { append(try number(i, as: Double.self)) }
        case .int8: for i in elements.indices { append(Int8(try integer(i, -128...127))) }
        case .int16: for i in elements.indices { append(Int16(try integer(i, Int64(Int16.min)...Int64(Int16.max)))) }
        case .int32: for i in elements.indices { append(Int32(try integer(i, Int64(Int32.min)...Int64(Int32.max)))) }
        case .int64: for i in elements.indices { append(try integer(i, Int64.min...Int64.max)) }
        case .uint8: for i in elements.indices { append(UInt8(try integer(i, 0...255))) }
        case .uint16: for i in elements.indices { append(UInt16(try integer(i, 0...Int64(UInt16.max)))) }
        case .uint32: for i in elements.indices { append(UInt32(try integer(i, 0...Int64(UInt32.max)))) }
        case .uint64: for i in elements.indices { append(try unsigned(i)) }
        }
        return out
    }
}

extension InferTensor {
    /// The elements as JSON values (for an output sent as JSON, not as binary data).
    var jsonElements: [Any] {
        switch datatype {
        case .bytes: return byteElements.map { String(decoding: $0, as: UTF8.self) }
        case .bool: return raw.map { $0 != 0 }
        case .fp32: return Self.load(raw, as: Float.self).map { Double($0) }
        case .fp16: return Self.load(raw, as: Float16.self).map { Double($0) }
        case .fp64: return Self.load(raw, as: Double.self)
        case .int8: return Self.load(raw, as: Int8.self).map { Int($0) }
        case .int16: return Self.load(raw, as: Int16.self).map { Int($0) }
        case .int32: return Self.load(raw, as: Int32.self).map { Int($0) }
        case .int64: return Self.load(raw, as: Int64.self).map { Int($0) }
        case .uint8: return raw.map { Int($0) }
        case .uint16: return Self.load(raw, as: UInt16.self).map { Int($0) }
        case .uint32: return Self.load(raw, as: UInt32.self).map { Int($0) }
        case .uint64: return Self.load(raw, as: UInt64.self).map { NSNumber(value: $0) }
        }
    }
}
