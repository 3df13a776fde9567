import GRPCCore
import GRPCProtobuf
import OpenInference
import SwiftProtobuf

/// What a request message may decode into, checked on its wire bytes before SwiftProtobuf decodes it.
///
/// The transport bounds a message's size (`max_body_mb`), not what it decodes into: an empty entry of a repeated
/// message field is 2 bytes on the wire and about 150 bytes decoded, so 20 MiB of empty `inputs` would take 1.5 GB,
/// and a packed one-byte varint becomes an 8-byte `Int64`. The counts allowed here are what the service can use (one
/// input holding one image, a few outputs and parameters) with room to spare; numbers in all repeated numeric fields
/// together are bounded so that they decode into at most 64 MiB.
///
/// Thread-safety: values.
struct WireBounds: Sendable {
    /// How a field is read and bounded.
    enum Field: Sendable {
        /// A message (or a map's entry), at most `limit` times in one parent message.
        case message(WireBounds, limit: Int)
        /// Bytes or a string, at most `limit` times in one parent message.
        case bytes(limit: Int)
        /// Repeated numbers, packed or not (`width` bytes each, 0 for varints), at most `limit` in one parent message
        /// and counted towards the message's total.
        case numbers(width: Int, limit: Int)
    }

    var fields: [UInt64: (name: String, field: Field)]

    /// Numbers in every repeated numeric field of a message together (8 bytes each at most, decoded).
    static let maxNumbers = 8 << 20

    /// A map's entry whose key and value are not looked into (both small once the entries are counted).
    static let mapEntry = WireBounds(fields: [:])
    static let parameters = Field.message(mapEntry, limit: InferRequest.maxParameters)

    static let tensorContents = WireBounds(fields: [
        1: ("bool_contents", .numbers(width: 0, limit: maxNumbers)),
        2: ("int_contents", .numbers(width: 0, limit: maxNumbers)),
        3: ("int64_contents", .numbers(width: 0, limit: maxNumbers)),
        4: ("uint_contents", .numbers(width: 0, limit: maxNumbers)),
        5: ("uint64_contents", .numbers(width: 0, limit: maxNumbers)),
        6: ("fp32_contents", .numbers(width: 4, limit: maxNumbers)),
        7: ("fp64_contents", .numbers(width: 8, limit: maxNumbers)),
        8: ("bytes_contents", .bytes(limit: 4)),
    ])

    /// `inference.ModelInferRequest` (grpc_service.proto).
    static let modelInfer = WireBounds(fields: [
        4: ("parameters", parameters),
        5: ("inputs", .message(WireBounds(fields: [
            3: ("shape", .numbers(width: 0, limit: 8)),
            4: ("parameters", parameters),
            5: ("contents", .message(tensorContents, limit: 4)),
        ]), limit: InferRequest.maxInputs)),
        6: ("outputs", .message(WireBounds(fields: [2: ("parameters", parameters)]), limit: InferRequest.maxOutputs)),
        7: ("raw_input_contents", .bytes(limit: 4)),
    ])

    /// `inference.RepositoryModelLoadRequest` and `RepositoryModelUnloadRequest`: their parameters.
    static let repositoryModel = WireBounds(fields: [3: ("parameters", parameters)])

    /// A message refused: what is over which bound, or where the bytes are not protobuf.
    struct Refusal: Error, CustomStringConvertible {
        var description: String
    }

    /// Checks `bytes`, a message these bounds describe.
    /// - Throws: `Refusal` naming the field over its bound, or bytes that are not well-formed protobuf.
    func check(_ bytes: UnsafeRawBufferPointer) throws(Refusal) {
        var numbers = 0
        try check(bytes, path: "", numbers: &numbers)
    }

    private func check(_ bytes: UnsafeRawBufferPointer, path: String, numbers: inout Int) throws(Refusal) {
        var reader = WireReader(bytes: bytes)
        var counts: [UInt64: Int] = [:]
        while let (number, type) = try reader.tag() {
            guard let (name, field) = fields[number] else {
                try reader.skip(type)
                continue
            }
            // Entries (messages, bytes) or elements (numbers) of the field so far in this message.
            let count = counts[number, default: 0]
            switch field {
            case .message(let bounds, let limit):
                guard type == .delimited else { throw Refusal(description: "\(path)\(name): not a message") }
                guard count < limit else { throw Self.tooMany(path + name, limit) }
                counts[number] = count + 1
                try bounds.check(try reader.delimited(), path: path + name + ".", numbers: &numbers)
            case .bytes(let limit):
                guard count < limit else { throw Self.tooMany(path + name, limit) }
                counts[number] = count + 1
                try reader.skip(type)
            case .numbers(let width, let limit):
                let added: Int
                if type == .delimited {
                    let packed = try reader.delimited()
                    added = width == 0 ? packed.reduce(0) { $0 + ($1 < 0x80 ? 1 : 0) } : packed.count / width
                } else {
                    try reader.skip(type)
                    added = 1
                }
                counts[number] = count + added
                guard count + added <= limit else { throw Self.tooMany(path + name, limit) }
                numbers += added
                guard numbers <= Self.maxNumbers else {
                    throw Refusal(description: "more than \(Self.maxNumbers) numbers in the message's tensors")
                }
            }
        }
    }

    private static func tooMany(_ field: String, _ limit: Int) -> Refusal {
        Refusal(description: "\(field) has more than \(limit) entries")
    }
}

/// Reads protobuf's wire format: tags, varints, and fields skipped or taken whole.
private struct WireReader {
    enum WireType: UInt64 {
        case varint = 0, fixed64 = 1, delimited = 2, fixed32 = 5
    }

    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The next field's number and wire type; nil at the end.
    mutating func tag() throws(WireBounds.Refusal) -> (UInt64, WireType)? {
        guard offset < bytes.count else { return nil }
        let tag = try varint()
        guard let type = WireType(rawValue: tag & 7), tag >> 3 != 0 else {
            throw WireBounds.Refusal(description: "malformed protobuf: wire type \(tag & 7) at byte \(offset)")
        }
        return (tag >> 3, type)
    }

    mutating func varint() throws(WireBounds.Refusal) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count, shift < 64 {
            let byte = bytes[offset]
            offset += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
        throw WireBounds.Refusal(description: "malformed protobuf: a varint runs past its end at byte \(offset)")
    }

    /// A length-delimited field's bytes.
    mutating func delimited() throws(WireBounds.Refusal) -> UnsafeRawBufferPointer {
        let length = try varint()
        guard length <= UInt64(bytes.count - offset) else {
            throw WireBounds.Refusal(description: "malformed protobuf: a field of \(length) bytes at byte \(offset) "
                + "runs past the message's end")
        }
        defer { offset += Int(length) }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(length)])
    }

    mutating func skip(_ type: WireType) throws(WireBounds.Refusal) {
        let width: Int
        switch type {
        case .varint: _ = try varint(); return
        case .delimited: _ = try delimited(); return
        case .fixed64: width = 8
        case .fixed32: width = 4
        }
        guard width <= bytes.count - offset else {
            throw WireBounds.Refusal(description: "malformed protobuf: a fixed field runs past the message's end")
        }
        offset += width
    }
}

/// SwiftProtobuf's decoding behind `WireBounds`: a message over them is refused (INVALID_ARGUMENT) undecoded.
struct BoundedDeserializer<Message: SwiftProtobuf.Message>: MessageDeserializer {
    let bounds: WireBounds
    let method: String

    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> Message {
        do {
            try serializedMessageBytes.withUnsafeBytes { try bounds.check($0) }
        } catch let refusal as WireBounds.Refusal {
            throw RPCError(code: .invalidArgument, message: "\(method) refused: \(refusal)")
        }
        return try ProtobufDeserializer<Message>().deserialize(serializedMessageBytes)
    }
}
