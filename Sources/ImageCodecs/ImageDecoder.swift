import Dispatch

/// Decodes JPEG (libjpeg-turbo) and PNG (libspng) files into ``RGBImage``s.
///
/// Thread-safe: every call creates and frees its own codec handle, so any number of threads may decode at
/// once. Calls block while decoding; run them off Swift's cooperative pool for large images.
/// Results match OpenCV's `cv2.imread(path, cv2.IMREAD_COLOR)` (converted to RGB) pixel for pixel on JPEGs,
/// EXIF orientation included.
public enum ImageDecoder {
    /// The format named by the file signature, or nil when it is neither JPEG (`FF D8 FF`) nor PNG.
    public static func detectFormat(_ bytes: [UInt8]) -> ImageFormat? {
        if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        return nil
    }

    /// Decodes a JPEG or PNG file to 8-bit RGB.
    ///
    /// - Parameters:
    ///   - bytes: the whole file.
    ///   - options: pixel limit, EXIF orientation and JPEG DCT scaling; see ``DecodeOptions``.
    /// - Throws: ``ImageDecodeError``: `.empty`, `.unsupportedFormat`, `.tooLarge`/`.invalidDimensions`
    ///   (checked from the header before any pixel memory is allocated), `.truncated`, `.corrupt`.
    public static func decode(_ bytes: [UInt8], options: DecodeOptions = .init()) throws(ImageDecodeError)
        -> RGBImage
    {
        let format = try format(of: bytes)
        return try bytes.withUnsafeBufferPointer { (data) throws(ImageDecodeError) -> RGBImage in
            switch format {
            case .jpeg: return try decodeJPEG(data, options: options)
            case .png: return try decodePNG(data, options: options)
            }
        }
    }

    /// The format and the size ``decode(_:options:)`` would return with default options (EXIF orientation
    /// applied, so a portrait phone photo reports its upright size), read from the header only. For PNG only an
    /// eXIf chunk placed before the image data is seen here (decoding also sees one placed after it).
    ///
    /// - Parameter applyingEXIFOrientation: false for the size as stored, as decoding with
    ///   `applyEXIFOrientation: false` returns it.
    /// - Throws: ``ImageDecodeError`` as for decoding, except that the pixel limit is not applied.
    public static func header(_ bytes: [UInt8], applyingEXIFOrientation: Bool = true) throws(ImageDecodeError) -> (
        format: ImageFormat, width: Int, height: Int
    ) {
        let format = try format(of: bytes)
        return try bytes.withUnsafeBufferPointer { (data) throws(ImageDecodeError) in
            switch format {
            case .jpeg:
                let (width, height) = try JPEGDecompressor().header(data)
                let upright = applyingEXIFOrientation && EXIFOrientation.inJPEG(data).swapsAxes
                return (.jpeg, upright ? height : width, upright ? width : height)
            case .png:
                let context = try PNGDecoderContext(data: data, maxDimension: Int(Int32.max))
                let (width, height) = try context.header()
                // libspng reads the chunks before the image data here; an eXIf placed after it is not seen.
                let orientation = context.exif().map { $0.withUnsafeBufferPointer { EXIFOrientation.inTIFF($0) } }
                let upright = applyingEXIFOrientation && orientation?.swapsAxes ?? false
                return (.png, upright ? height : width, upright ? width : height)
            }
        }
    }

    /// Decodes like ``decode(_:options:)``, with the same pixels and errors, a single-scan JPEG on two threads: the
    /// calling one reads the entropy-coded data while a Dispatch worker decodes the rows read so far, a little behind
    /// it (see ``PipelinedJPEGDecoding``); the calling thread then decodes what is left with it. Faster when a core is
    /// free, at no extra CPU; the calling thread never waits for a worker that has not started. Other images (PNG,
    /// progressive or EXIF-rotated JPEGs, DCT-scaled decoding) are decoded by ``decode(_:options:)``.
    ///
    /// - Throws: ``ImageDecodeError``, as ``decode(_:options:)``.
    public static func decodeOnTwoThreads(_ bytes: [UInt8], options: DecodeOptions = .init())
        throws(ImageDecodeError) -> RGBImage
    {
        guard detectFormat(bytes) == .jpeg, options.minimumDecodedSize == nil else {
            return try decode(bytes, options: options)
        }
        let (_, width, height) = try header(bytes)
        let byteCount = try checkSize(width: width, height: height, options: options)
        var failure: ImageDecodeError?
        var decoded: (width: Int, height: Int)?
        let pixels = [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, count in
            count = buffer.count  // UInt8 needs no initialisation; the array is dropped unless every row is decoded
            do throws(ImageDecodeError) {
                guard let decoding = try PipelinedJPEGDecoding(bytes, options: options, pixels: buffer) else { return }
                DispatchQueue.global().async { decoding.helpDecode() }
                // Both stop the decoding before they throw or return, so no batch of the worker's writes into `buffer`
                // after this.
                do throws(ImageDecodeError) { try decoding.readCoefficients() } catch {
                    decoding.stop()
                    throw error
                }
                try decoding.decodeRemainingRows()
                // The rows as decoded: the header's size is upright, and these are not when the orientation is not
                // applied (the same byte count, the axes swapped).
                decoded = (decoding.width, decoding.height)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        guard let decoded else { return try decode(bytes, options: options) }
        return RGBImage(width: decoded.width, height: decoded.height, pixels: pixels)
    }

    // MARK: - Formats

    private static func format(of bytes: [UInt8]) throws(ImageDecodeError) -> ImageFormat {
        guard !bytes.isEmpty else { throw .empty }
        guard let format = detectFormat(bytes) else {
            let magic = bytes.prefix(8).map { String($0, radix: 16, uppercase: true) }
                .map { $0.count == 1 ? "0" + $0 : $0 }.joined(separator: " ")
            throw .unsupportedFormat(magic: magic)
        }
        return format
    }

    /// The most pixels ``checkSize(width:height:options:)`` lets through, whatever the options: the most whose RGB
    /// bytes an `Int` can count.
    static let pixelLimit = Int.max / 3

    /// Checks a header's size against the pixel limit, before anything is allocated; returns the decoded image's bytes
    /// (width × height × 3).
    ///
    /// The size is untrusted (a PNG header declares up to 2³² − 1 per side), so the product is overflow-checked.
    /// - Throws: `.invalidDimensions` for a side under 1; `.tooLarge` with the limit applied (`options.maxPixels`, at
    ///   most ``pixelLimit``) for more pixels than it.
    @discardableResult
    static func checkSize(width: Int, height: Int, options: DecodeOptions) throws(ImageDecodeError) -> Int {
        guard width > 0, height > 0 else { throw .invalidDimensions(width: width, height: height) }
        let limit = min(options.maxPixels, pixelLimit)
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        guard !overflow, pixels <= limit else { throw .tooLarge(width: width, height: height, maxPixels: limit) }
        return pixels * 3
    }

    private static func decodeJPEG(_ data: UnsafeBufferPointer<UInt8>, options: DecodeOptions)
        throws(ImageDecodeError) -> RGBImage
    {
        let decompressor = JPEGDecompressor()
        let (width, height) = try decompressor.header(data)
        try checkSize(width: width, height: height, options: options)
        let orientation = options.applyEXIFOrientation ? EXIFOrientation.inJPEG(data) : .up

        var factor = (num: 1, denom: 1)
        if let minimum = options.minimumDecodedSize {
            // Compare in the coded orientation: a portrait (rotated) photo needs the minimum's axes swapped.
            let (minWidth, minHeight) = orientation.swapsAxes ? (minimum.height, minimum.width) : minimum
            for candidate in JPEGDecompressor.downscalingFactors
            where JPEGDecompressor.scaled(width, candidate) >= minWidth
                && JPEGDecompressor.scaled(height, candidate) >= minHeight
            {
                factor = candidate  // factors run largest to smallest: keep the last that is big enough
            }
        }
        let (outWidth, outHeight) = (JPEGDecompressor.scaled(width, factor), JPEGDecompressor.scaled(height, factor))
        let pixels = try decompressor.decodeRGB(data, width: outWidth, height: outHeight)
        return orientation.apply(to: RGBImage(width: outWidth, height: outHeight, pixels: pixels))
    }

    /// The largest PNG width or height decoded (OpenCV's `CV_IO_MAX_IMAGE_WIDTH`).
    static let maxPNGDimension = 1 << 20

    private static func decodePNG(_ data: UnsafeBufferPointer<UInt8>, options: DecodeOptions)
        throws(ImageDecodeError) -> RGBImage
    {
        // Check the declared size ourselves first so a bomb gets `.tooLarge` with its dimensions.
        let (width, height) = try pngDimensions(data)
        try checkSize(width: width, height: height, options: options)
        try PNGChunkBudget.check(data)
        // Width and height at most 2^20, as OpenCV takes them: libspng holds two rows of the file's width (16-bit
        // RGBA: 8 bytes a pixel), memory `maxPixels` does not count (the README has what a wide file took).
        let context = try PNGDecoderContext(data: data, maxDimension: min(options.maxPixels, Self.maxPNGDimension))
        _ = try context.header()
        let pixels = try context.decodeRGB(width: width, height: height)
        let image = RGBImage(width: width, height: height, pixels: pixels)
        guard options.applyEXIFOrientation, let exif = context.exif() else { return image }
        let orientation = exif.withUnsafeBufferPointer { EXIFOrientation.inTIFF($0) }
        return orientation.apply(to: image)
    }

    /// Width and height from the IHDR chunk, which the PNG spec requires to come first.
    private static func pngDimensions(_ data: UnsafeBufferPointer<UInt8>) throws(ImageDecodeError) -> (Int, Int) {
        guard data.count >= 24 else {
            throw .truncated(format: .png, reason: "file ends inside the IHDR chunk (\(data.count) bytes)")
        }
        guard data[12] == 0x49, data[13] == 0x48, data[14] == 0x44, data[15] == 0x52 else {
            throw .corrupt(format: .png, reason: "first chunk is not IHDR")
        }
        func u32(_ at: Int) -> Int { (16...19).reduce(0) { $0 << 8 | Int(data[at + $1 - 16]) } }
        return (u32(16), u32(20))
    }
}
