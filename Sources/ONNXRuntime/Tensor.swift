internal import CONNXRuntime

/// A tensor element type, as ORT reports it.
public enum TensorElementType: Sendable, Equatable, CustomStringConvertible {
    case float, float16, double, uint8, int8, int32, int64, bool
    case other(Int)

    init(_ raw: ONNXTensorElementDataType) {
        switch raw {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: self = .float
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: self = .float16
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: self = .double
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: self = .uint8
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: self = .int8
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: self = .int32
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: self = .int64
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: self = .bool
        default: self = .other(Int(raw.rawValue))
        }
    }

    public var description: String {
        switch self {
        case .float: "float32"
        case .float16: "float16"
        case .double: "float64"
        case .uint8: "uint8"
        case .int8: "int8"
        case .int32: "int32"
        case .int64: "int64"
        case .bool: "bool"
        case .other(let raw): "onnx-type-\(raw)"
        }
    }
}

/// Name, element type and shape of a model input or output. A dynamic dimension is `-1`, with its symbolic name
/// (e.g. "height") in `symbolicShape` when the model gives one.
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var elementType: TensorElementType
    public var shape: [Int]
    public var symbolicShape: [String]

    public init(name: String, elementType: TensorElementType, shape: [Int], symbolicShape: [String] = []) {
        self.name = name
        self.elementType = elementType
        self.shape = shape
        self.symbolicShape = symbolicShape
    }

    /// True when any dimension is dynamic.
    public var isDynamic: Bool { shape.contains { $0 < 0 } }
}

/// Input data for `ORTSession.run`. Arrays are passed to ORT without copying (float32) or converted once (float16).
public enum TensorInput: Sendable {
    case float([Float], shape: [Int])
    case float16([Float16], shape: [Int])

    public var shape: [Int] {
        switch self {
        case .float(_, let shape), .float16(_, let shape): shape
        }
    }
}

/// A session output, owned by ORT's value until this object is released. Read it without copying through
/// `withFloats` (float32 outputs) or as a converted copy through `floats()`.
///
/// Thread-safety: immutable; reading from several threads is safe.
public final class TensorOutput: @unchecked Sendable {
    // @unchecked: `value` is an OrtValue this object owns alone; its data is never written after Run returns.
    let library: ORTLibrary
    let value: OpaquePointer
    public let name: String
    public let elementType: TensorElementType
    public let shape: [Int]
    /// The elements; nil for an empty tensor (ORT may give no buffer for one, and a placeholder address would not
    /// be aligned for the element type, which a `Span` requires).
    private let data: UnsafeRawPointer?
    public let count: Int

    init(library: ORTLibrary, value: OpaquePointer, name: String) throws(ORTError) {
        self.library = library
        self.value = value
        self.name = name
        let api = library.api.pointee
        var info: OpaquePointer?
        do {
            try library.check(api.GetTensorTypeAndShape!(value, &info), "reading output '\(name)'")
        } catch {
            api.ReleaseValue!(value)
            throw error
        }
        defer { api.ReleaseTensorTypeAndShapeInfo!(info) }
        var type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
        var dimCount = 0
        var elementCount = 0
        var raw: UnsafeMutableRawPointer?
        var dims: [Int64] = []
        do {
            let reading = "reading output '\(name)'"
            try library.check(api.GetTensorElementType!(info, &type), reading)
            try library.check(api.GetDimensionsCount!(info, &dimCount), reading)
            dims = [Int64](repeating: 0, count: dimCount)
            try library.check(api.GetDimensions!(info, &dims, dimCount), reading)
            try library.check(api.GetTensorShapeElementCount!(info, &elementCount), reading)
            try library.check(api.GetTensorMutableData!(value, &raw), reading)
        } catch {
            api.ReleaseValue!(value)
            throw error
        }
        // Checked before the last stored property is set: `deinit` (which releases the value) does not run then.
        guard elementCount == 0 || raw != nil else {
            api.ReleaseValue!(value)
            throw ORTError(.invalidTensor, operation: "reading output '\(name)'",
                message: "\(elementCount) elements but no data")
        }
        self.elementType = TensorElementType(type)
        self.shape = dims.map(Int.init)
        self.count = elementCount
        self.data = elementCount == 0 ? nil : raw.map(UnsafeRawPointer.init)
    }

    deinit { library.api.pointee.ReleaseValue!(value) }

    /// Calls `body` with the float32 elements in place (no copy).
    /// - Throws: `ORTError.invalidTensor` when the output is not float32.
    public func withFloats<R>(_ body: (Span<Float>) throws -> R) throws -> R {
        guard elementType == .float else {
            throw ORTError(.invalidTensor, operation: "reading output '\(name)'",
                message: "element type is \(elementType), not float32")
        }
        return try body(elements(of: Float.self).span)
    }

    /// The elements as `T` (nil start and no elements for an empty tensor).
    private func elements<T>(of: T.Type) -> UnsafeBufferPointer<T> {
        UnsafeBufferPointer(start: data?.assumingMemoryBound(to: T.self), count: count)
    }

    /// The elements as float32: float32 copied, float16 and float64 converted.
    public func floats() throws -> [Float] {
        switch elementType {
        case .float:
            return Array(elements(of: Float.self))
        case .float16:
            return elements(of: Float16.self).map(Float.init)
        case .double:
            return elements(of: Double.self).map(Float.init)
        default:
            throw ORTError(.invalidTensor, operation: "reading output '\(name)'",
                message: "element type \(elementType) is not a floating-point type")
        }
    }
}
