import Foundation

/// A guard for JSON from outside before `JSONDecoder` reads it.
///
/// Foundation's `JSONDecoder` traps — a precondition in its number scanner, not an error — when it decodes a
/// fixed-width integer (`Int`, `Int64`, `UInt64`) from a number token of some 130 characters or more whose value a
/// `Double` cannot hold exactly: `0.`, 120 zeros, then `9007199254740993e136` is 2^53 + 1 written long
/// (swift-foundation issue 812; Swift 6.3's Foundation still traps). One such number in a request body, a shape or a
/// fleet message would stop the whole service. No number a client means is that long (a `Double`'s shortest form is at
/// most 24 characters), so a token longer than `maxTokenLength` is refused before decoding.
///
/// Thread-safety: stateless.
public enum JSONNumbers {
    /// The longest number token accepted.
    public static let maxTokenLength = 64

    /// A number token longer than `maxTokenLength`.
    public struct TooLong: Error, CustomStringConvertible, Equatable {
        /// The token's length in bytes, and where it starts (a byte offset).
        public var length: Int, offset: Int
        public init(length: Int, offset: Int) {
            self.length = length
            self.offset = offset
        }
        public var description: String {
            "a number of \(length) characters at byte \(offset); at most \(JSONNumbers.maxTokenLength) are accepted"
        }
    }

    /// Refuses `bytes` when a number token outside strings is longer than `maxTokenLength`. Anything else (malformed
    /// JSON included) is left to the decoder.
    public static func check(_ bytes: some Collection<UInt8>) throws(TooLong) {
        var inString = false, escaped = false
        var run = 0, offset = 0
        for byte in bytes {
            defer { offset += 1 }
            if inString {
                if escaped {
                    escaped = false
                } else if byte == 0x5C {
                    escaped = true
                } else if byte == 0x22 {
                    inString = false
                }
                continue
            }
            if isNumberByte(byte) {
                run += 1
                if run > maxTokenLength {
                    let start = offset - run + 1
                    throw TooLong(length: tokenLength(bytes, from: start), offset: start)
                }
            } else {
                inString = byte == 0x22
                run = 0
            }
        }
    }

    /// `T` decoded by `JSONDecoder` from `data`, after `check`.
    /// - Throws: `TooLong`, or what the decoder throws.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, decoder: JSONDecoder = JSONDecoder())
        throws -> T
    {
        try check(data)
        return try decoder.decode(T.self, from: data)
    }

    /// The length of the number token starting at `start`.
    private static func tokenLength(_ bytes: some Collection<UInt8>, from start: Int) -> Int {
        bytes.dropFirst(start).prefix(while: isNumberByte).count
    }

    private static func isNumberByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x2B, 0x2D, 0x2E, 0x45, 0x65: true  // 0-9 + - . E e
        default: false
        }
    }
}
