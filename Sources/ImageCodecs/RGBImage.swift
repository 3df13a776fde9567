/// An 8-bit RGB image: row-major, 3 bytes per pixel (R, G, B), no row padding.
///
/// A plain value; copies are independent and it is safe to share across threads.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// `width * height * 3` bytes, rows top to bottom, pixels left to right, R G B.
    public var pixels: [UInt8]

    /// Wraps existing pixel storage.
    ///
    /// - Precondition: `pixels.count == width * height * 3` and both dimensions are non-negative.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "RGBImage dimensions must be non-negative, got \(width)x\(height)")
        precondition(
            Self.byteCount(width: width, height: height) == pixels.count,
            "RGBImage \(width)x\(height) needs width × height × 3 bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An image of one colour.
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8)) {
        guard let count = Self.byteCount(width: width, height: height) else {
            preconditionFailure("RGBImage \(width)x\(height): dimensions must be non-negative, their bytes countable")
        }
        var pixels = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < pixels.count {
            pixels[index] = fill.0
            pixels[index + 1] = fill.1
            pixels[index + 2] = fill.2
            index += 3
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The bytes of a `width` × `height` image, `width * height * 3`; nil when a side is negative or the count
    /// overflows `Int`. Sizes read from a file are counted through this (or ``ImageDecoder``'s size check), never by
    /// plain multiplication.
    package static func byteCount(width: Int, height: Int) -> Int? {
        guard width >= 0, height >= 0 else { return nil }
        let (pixels, pixelsOverflow) = width.multipliedReportingOverflow(by: height)
        let (bytes, bytesOverflow) = pixels.multipliedReportingOverflow(by: 3)
        return pixelsOverflow || bytesOverflow ? nil : bytes
    }
}

/// The container formats ImageCodecs reads and writes.
public enum ImageFormat: String, Sendable {
    case jpeg
    case png
}
