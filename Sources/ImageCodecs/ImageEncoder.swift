/// Encodes ``RGBImage``s as JPEG (libjpeg-turbo) or PNG (libspng).
///
/// Thread-safe: every call creates and frees its own codec handle.
public enum ImageEncoder {
    /// Baseline JPEG with 4:2:0 chroma subsampling.
    ///
    /// - Parameters:
    ///   - image: a non-empty image.
    ///   - quality: 1...100 (libjpeg's scale; 90 keeps annotations crisp).
    /// - Throws: ``ImageEncodeError``.
    public static func jpeg(_ image: RGBImage, quality: Int = 90) throws(ImageEncodeError) -> [UInt8] {
        try validate(image)
        guard (1...100).contains(quality) else {
            throw .invalidInput(reason: "JPEG quality must be in 1...100, got \(quality)")
        }
        return try JPEGCompressor().encode(image, quality: quality)
    }

    /// Lossless 8-bit truecolour PNG.
    ///
    /// - Throws: ``ImageEncodeError``.
    public static func png(_ image: RGBImage) throws(ImageEncodeError) -> [UInt8] {
        try validate(image)
        return try PNGEncoderContext().encode(image)
    }

    private static func validate(_ image: RGBImage) throws(ImageEncodeError) {
        guard image.width > 0, image.height > 0, image.width <= 65_535, image.height <= 65_535 else {
            throw .invalidInput(reason: "dimensions \(image.width)x\(image.height) are outside 1...65535")
        }
        guard image.pixels.count == image.width * image.height * 3 else {
            throw .invalidInput(
                reason: "\(image.width)x\(image.height) needs \(image.width * image.height * 3) bytes, "
                    + "pixels has \(image.pixels.count)")
        }
    }
}
