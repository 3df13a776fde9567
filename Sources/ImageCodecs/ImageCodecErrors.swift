/// Why an image could not be decoded. Every case reads as a sentence through `description`.
public enum ImageDecodeError: Error, Equatable, CustomStringConvertible {
    /// The input had zero bytes.
    case empty
    /// The input starts with neither the JPEG nor the PNG signature; `magic` is its first bytes in hex.
    case unsupportedFormat(magic: String)
    /// The data is malformed; `reason` is the codec's own message.
    case corrupt(format: ImageFormat, reason: String)
    /// The data ends before the image does (a cut-off upload or file).
    case truncated(format: ImageFormat, reason: String)
    /// The header declares more than `maxPixels` pixels (the limit applied, see ``DecodeOptions/maxPixels``); nothing
    /// was allocated.
    case tooLarge(width: Int, height: Int, maxPixels: Int)
    /// The header declares a zero or negative dimension, or a size whose bytes an `Int` cannot count.
    case invalidDimensions(width: Int, height: Int)

    public var description: String {
        switch self {
        case .empty:
            return "image data is empty (0 bytes)"
        case .unsupportedFormat(let magic):
            return "unsupported image format: expected JPEG or PNG, data starts with \(magic)"
        case .corrupt(let format, let reason):
            return "corrupt \(format.rawValue.uppercased()) data: \(reason)"
        case .truncated(let format, let reason):
            return "truncated \(format.rawValue.uppercased()) data (file ends early): \(reason)"
        case .tooLarge(let width, let height, let maxPixels):
            // Header sizes are untrusted: their product may not fit in an Int.
            let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
            let count = overflow ? "more than \(Int.max)" : "\(pixels)"
            return "image too large: \(width)x\(height) = \(count) pixels exceeds the limit of \(maxPixels)"
        case .invalidDimensions(let width, let height):
            return "invalid image dimensions \(width)x\(height)"
        }
    }
}

/// Why an image could not be encoded.
public enum ImageEncodeError: Error, Equatable, CustomStringConvertible {
    /// The image or an argument cannot be encoded (empty image, quality out of 1...100, pixel count mismatch).
    case invalidInput(reason: String)
    /// The codec refused; `reason` is its own message.
    case encoderFailed(format: ImageFormat, reason: String)

    public var description: String {
        switch self {
        case .invalidInput(let reason):
            return "cannot encode image: \(reason)"
        case .encoderFailed(let format, let reason):
            return "\(format.rawValue.uppercased()) encoder failed: \(reason)"
        }
    }
}
