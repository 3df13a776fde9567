/// A tensor's element type as the Open Inference Protocol names it (`FP32`, `INT32`, `BYTES`, …).
public enum InferDataType: String, Sendable, CaseIterable, Codable {
    case bool = "BOOL"
    case uint8 = "UINT8", uint16 = "UINT16", uint32 = "UINT32", uint64 = "UINT64"
    case int8 = "INT8", int16 = "INT16", int32 = "INT32", int64 = "INT64"
    case fp16 = "FP16", fp32 = "FP32", fp64 = "FP64"
    case bytes = "BYTES"

    /// Bytes per element; nil for `BYTES`, whose elements each carry their own length.
    public var elementSize: Int? {
        switch self {
        case .bool, .uint8, .int8: 1
        case .uint16, .int16, .fp16: 2
        case .uint32, .int32, .fp32: 4
        case .uint64, .int64, .fp64: 8
        case .bytes: nil
        }
    }

    /// Triton's model-configuration name (`TYPE_FP32`, `TYPE_STRING` for `BYTES`).
    public var configName: String { self == .bytes ? "TYPE_STRING" : "TYPE_" + rawValue }
}

/// Why a tensor or request was refused: the client's mistake, said in its terms.
///
/// Thread-safety: a value.
public struct InferError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Malformed or inconsistent input (HTTP 400, gRPC INVALID_ARGUMENT).
        case invalidArgument
        /// No such model or version (HTTP 404, gRPC NOT_FOUND).
        case notFound
    }
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public static func invalid(_ message: String) -> InferError { InferError(.invalidArgument, message) }
    public var description: String { message }
}

/// One input or output tensor: name, element type, shape and contents as raw little-endian bytes — the layout of the
/// binary tensor data extension and of gRPC's raw contents; `BYTES` elements each as a 4-byte little-endian length
/// followed by that many bytes.
///
/// Built from untrusted data only through `init(name:datatype:shape:raw:)`, which checks that the shape is sane and
/// that the bytes hold exactly the elements it says.
///
/// Thread-safety: a value.
public struct InferTensor: Sendable, Equatable {
    public var name: String
    public var datatype: InferDataType
    public var shape: [Int]
    public var raw: [UInt8]

    /// The most dimensions a tensor may have.
    public static let maxRank = 8

    /// - Throws: `InferError.invalidArgument` when a dimension is negative, the element count overflows, or `raw`
    ///   does not hold exactly that many elements.
    public init(name: String, datatype: InferDataType, shape: [Int], raw: [UInt8]) throws(InferError) {
        let count = try Self.elementCount(shape, name: name)
        if let size = datatype.elementSize {
            let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow, bytes == raw.count else {
                throw .invalid("input '\(name)': shape \(shape) of \(datatype.rawValue) needs "
                    + (overflow ? "more bytes than can be counted" : "\(bytes) bytes") + ", got \(raw.count)")
            }
        } else {
            var elements = 0
            try Self.forEachBytesElement(raw, name: name) { _ in elements += 1 }
            guard elements == count else {
                throw .invalid("input '\(name)': shape \(shape) has \(count) elements, the BYTES data holds "
                    + "\(elements)")
            }
        }
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.raw = raw
    }

    /// A tensor the service made (its shape and bytes agree by construction).
    init(trusted name: String, datatype: InferDataType, shape: [Int], raw: [UInt8]) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.raw = raw
    }

    /// The number of elements `shape` describes.
    /// - Throws: `InferError.invalidArgument` for a negative dimension, too many dimensions, or an overflow.
    public static func elementCount(_ shape: [Int], name: String) throws(InferError) -> Int {
        guard shape.count <= maxRank else {
            throw .invalid("input '\(name)': \(shape.count) dimensions, at most \(maxRank) are accepted")
        }
        var count = 1
        for dim in shape {
            guard dim >= 0 else { throw .invalid("input '\(name)': negative dimension in shape \(shape)") }
            let (product, overflow) = count.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw .invalid("input '\(name)': shape \(shape) has too many elements") }
            count = product
        }
        return count
    }

    /// The elements of a `BYTES` tensor.
    public var byteElements: [[UInt8]] { (try? Self.splitBytes(raw, name: name)) ?? [] }

    /// The element of `BYTES` contents that hold exactly one, nil for any other count: found from the first length
    /// alone, without splitting the rest (20 MiB of one-byte elements, refused anyway, would be four million arrays).
    public var onlyByteElement: [UInt8]? { onlyByteElementRange.map { Array(raw[$0]) } }

    /// Where in `raw` the one element of `BYTES` contents that hold exactly one lies (nil for any other count).
    public var onlyByteElementRange: Range<Int>? {
        guard raw.count >= 4 else { return nil }
        let length = UInt64(raw[0]) | UInt64(raw[1]) << 8 | UInt64(raw[2]) << 16 | UInt64(raw[3]) << 24
        return UInt64(raw.count - 4) == length ? 4..<raw.count : nil
    }

    /// Splits `BYTES` contents (4-byte little-endian length, then the bytes, per element).
    public static func splitBytes(_ raw: [UInt8], name: String) throws(InferError) -> [[UInt8]] {
        var elements: [[UInt8]] = []
        try forEachBytesElement(raw, name: name) { elements.append(Array(raw[$0])) }
        return elements
    }

    /// Calls `body` with where each element of `BYTES` contents lies, each checked against the contents' end.
    static func forEachBytesElement(_ raw: [UInt8], name: String, _ body: (Range<Int>) -> Void) throws(InferError) {
        var offset = 0
        while offset < raw.count {
            guard raw.count - offset >= 4 else {
                throw .invalid("input '\(name)': BYTES data ends inside an element's 4-byte length")
            }
            let length = Int(raw[offset]) | Int(raw[offset + 1]) << 8 | Int(raw[offset + 2]) << 16
                | Int(raw[offset + 3]) << 24
            offset += 4
            guard length <= raw.count - offset else {
                throw .invalid("input '\(name)': a BYTES element of \(length) bytes runs past the data's end")
            }
            body(offset..<offset + length)
            offset += length
        }
    }

    /// Joins elements into `BYTES` contents.
    public static func joinBytes(_ elements: [[UInt8]]) -> [UInt8] {
        var raw: [UInt8] = []
        raw.reserveCapacity(elements.reduce(0) { $0 + 4 + $1.count })
        for element in elements {
            let n = UInt32(truncatingIfNeeded: element.count)
            raw += [UInt8(n & 0xff), UInt8(n >> 8 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 24)]
            raw += element
        }
        return raw
    }

    // MARK: Numbers (the host is little-endian, as the protocol's raw layout)

    /// Float32 values from `FP32` or `FP16` contents.
    public func floats() throws(InferError) -> [Float] {
        switch datatype {
        case .fp32: return Self.load(raw, as: Float.self)
        case .fp16: return Self.load(raw, as: Float16.self).map(Float.init)
        default: throw .invalid("input '\(name)': expected FP32 or FP16, got \(datatype.rawValue)")
        }
    }

    /// Copies little-endian elements out of bytes (whose alignment is not guaranteed).
    public static func load<T: BitwiseCopyable>(_ raw: [UInt8], as type: T.Type) -> [T] {
        let count = raw.count / MemoryLayout<T>.stride
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            raw.withUnsafeBytes { source in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: source[0..<count * MemoryLayout<T>.stride]))
            }
            initialized = count
        }
    }

    /// A tensor of `values` as `FP32`, or as `FP16` when `half`.
    public static func floats(_ name: String, _ values: [Float], shape: [Int], half: Bool = false) -> InferTensor {
        let raw: [UInt8] = half
            ? values.map(Float16.init).withUnsafeBytes { Array($0) }
            : values.withUnsafeBytes { Array($0) }
        return InferTensor(trusted: name, datatype: half ? .fp16 : .fp32, shape: shape, raw: raw)
    }

    public static func int32s(_ name: String, _ values: [Int32], shape: [Int]) -> InferTensor {
        InferTensor(trusted: name, datatype: .int32, shape: shape, raw: values.withUnsafeBytes { Array($0) })
    }

    public static func strings(_ name: String, _ values: [String], shape: [Int]) -> InferTensor {
        InferTensor(trusted: name, datatype: .bytes, shape: shape, raw: joinBytes(values.map { Array($0.utf8) }))
    }
}
