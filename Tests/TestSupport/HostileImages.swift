/// Image files written byte by byte to crash or stall a decoder: what an attacker uploads.
public enum HostileImages {
    /// The PNG signature and the start of an IHDR chunk declaring `width` × `height`, cut right after the two
    /// dimensions (24 bytes): all a decoder reads before it checks the size.
    public static func pngHeader(width: UInt32, height: UInt32) -> [UInt8] {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        return signature + [0, 0, 0, 13] + Array("IHDR".utf8) + bigEndian(width) + bigEndian(height)
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }
}
