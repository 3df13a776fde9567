/// Takes typed values from the front of a fuzzer's input, like LLVM's `FuzzedDataProvider`: each value is read
/// from the next bytes, and a value asked for after the input ran out is zero, so every input maps to some case.
///
/// Thread-safety: a mutable value, used by one call of the target's body.
public struct FuzzInput {
    private let bytes: [UInt8]
    private var offset = 0

    public init(_ buffer: UnsafeBufferPointer<UInt8>) { bytes = Array(buffer) }

    /// Bytes not yet taken.
    public var remainingCount: Int { bytes.count - offset }

    public mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func bool() -> Bool { byte() & 1 == 1 }

    /// A little-endian integer from the next `byteCount` bytes (at most 8).
    public mutating func integer(byteCount: Int) -> UInt64 {
        (0..<byteCount).reduce(UInt64(0)) { value, index in value | UInt64(byte()) << (8 * UInt64(index)) }
    }

    /// A 32-bit pattern as a `Float`: NaNs, infinities, subnormals and signed zeros come out as often as any value.
    public mutating func float() -> Float { Float(bitPattern: UInt32(integer(byteCount: 4))) }

    /// A value in `range`, from one or two bytes.
    public mutating func integer(in range: ClosedRange<Int>) -> Int {
        let span = UInt64(range.upperBound - range.lowerBound) + 1
        let raw = span <= 256 ? UInt64(byte()) : integer(byteCount: 2)
        return range.lowerBound + Int(raw % span)
    }

    /// The next `count` bytes (fewer when the input runs out).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        let taken = Array(bytes[offset..<min(bytes.count, offset + max(0, count))])
        offset += taken.count
        return taken
    }

    /// Bytes up to the next `separator` (not included; it is skipped), or the rest of the input.
    public mutating func bytes(upTo separator: UInt8) -> [UInt8] {
        let end = bytes[offset...].firstIndex(of: separator) ?? bytes.count
        defer { offset = min(bytes.count, end + 1) }
        return Array(bytes[offset..<end])
    }

    /// Everything not yet taken.
    public mutating func rest() -> [UInt8] { bytes(remainingCount) }
}
