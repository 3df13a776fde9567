internal import CSPNG

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - Decoder

/// Owns one libspng decoder context and frees it in `deinit`.
///
/// Not thread-safe, and bound to one input: the context reads `data` lazily, so the buffer passed to `init`
/// must outlive every call. ``ImageDecoder`` makes one per call inside `withUnsafeBufferPointer`.
final class PNGDecoderContext {
    private let context: OpaquePointer

    /// - Parameters:
    ///   - data: the whole PNG file; must stay valid for the context's lifetime.
    ///   - maxDimension: rejected by libspng when the IHDR declares a larger width or height.
    init(data: UnsafeBufferPointer<UInt8>, maxDimension: Int) throws(ImageDecodeError) {
        guard let context = spng_ctx_new(0) else {
            fatalError("libspng could not allocate a decoder context (out of memory)")
        }
        self.context = context
        let limit = UInt32(clamping: min(maxDimension, Int(Int32.max)))
        try check(spng_set_image_limits(context, limit, limit), doing: "setting image limits")
        // Ancillary chunks (text, ICC, EXIF) are the only ones that get cached; 16 MiB each, 64 MiB total.
        try check(spng_set_chunk_limits(context, 16 << 20, 64 << 20), doing: "setting chunk limits")
        try check(spng_set_png_buffer(context, data.baseAddress, data.count), doing: "reading the PNG")
    }

    deinit { spng_ctx_free(context) }

    /// The IHDR size, after libspng has validated the signature, IHDR fields and CRC.
    func header() throws(ImageDecodeError) -> (width: Int, height: Int) {
        var ihdr = spng_ihdr()
        try check(spng_get_ihdr(context, &ihdr), doing: "reading the PNG header")
        return (Int(ihdr.width), Int(ihdr.height))
    }

    /// Decodes to RGB8 straight into the returned array. Gray, palette and 16-bit images are converted by
    /// libspng; alpha is dropped (not composited), as OpenCV's `IMREAD_COLOR` does.
    func decodeRGB(width: Int, height: Int) throws(ImageDecodeError) -> [UInt8] {
        let format = Int32(SPNG_FMT_RGB8.rawValue)
        var size = 0
        try check(spng_decoded_image_size(context, format, &size), doing: "sizing the PNG")
        guard size == RGBImage.byteCount(width: width, height: height) else {
            throw .corrupt(format: .png, reason: "libspng sizes the RGB image at \(size) bytes for \(width)x\(height)")
        }
        var status: Int32 = 0
        let pixels = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            status = spng_decode_image(context, buffer.baseAddress, size, format, 0)
            count = buffer.count
        }
        try check(status, doing: "decoding the PNG")
        return pixels
    }

    /// The eXIf chunk's TIFF payload, if the file has one that libspng accepted.
    func exif() -> [UInt8]? {
        var exif = spng_exif()
        guard spng_get_exif(context, &exif) == 0, let data = exif.data, exif.length > 0 else { return nil }
        return Array(UnsafeRawBufferPointer(start: data, count: exif.length))
    }

    /// The one place a libspng status becomes a Swift error, carrying libspng's message.
    private func check(_ status: Int32, doing what: String) throws(ImageDecodeError) {
        guard status != 0 else { return }
        let reason = "\(what): \(String(cString: spng_strerror(status)))"
        switch status {
        case SPNG_IO_EOF.rawValue, SPNG_EOF.rawValue, SPNG_EIDAT_TOO_SHORT.rawValue:
            throw .truncated(format: .png, reason: reason)
        default:
            throw .corrupt(format: .png, reason: reason)
        }
    }
}

// MARK: - Encoder

/// Owns one libspng encoder context and frees it in `deinit`. Not thread-safe: one per call.
final class PNGEncoderContext {
    private let context: OpaquePointer

    init() {
        guard let context = spng_ctx_new(Int32(SPNG_CTX_ENCODER.rawValue)) else {
            fatalError("libspng could not allocate an encoder context (out of memory)")
        }
        self.context = context
    }

    deinit { spng_ctx_free(context) }

    /// 8-bit truecolour, non-interlaced, default compression; the whole file in memory.
    func encode(_ image: RGBImage) throws(ImageEncodeError) -> [UInt8] {
        try check(spng_set_option(context, SPNG_ENCODE_TO_BUFFER, 1))
        var ihdr = spng_ihdr(
            width: UInt32(image.width), height: UInt32(image.height), bit_depth: 8,
            color_type: UInt8(SPNG_COLOR_TYPE_TRUECOLOR.rawValue), compression_method: 0, filter_method: 0,
            interlace_method: 0)
        try check(spng_set_ihdr(context, &ihdr))
        let status = image.pixels.withUnsafeBytes { pixels in
            spng_encode_image(
                context, pixels.baseAddress, pixels.count, Int32(SPNG_FMT_PNG.rawValue),
                Int32(SPNG_ENCODE_FINALIZE.rawValue))
        }
        try check(status)
        var length = 0
        var error: Int32 = 0
        guard let buffer = spng_get_png_buffer(context, &length, &error) else {
            try check(error == 0 ? Int32(SPNG_EINTERNAL.rawValue) : error)
            return []
        }
        defer { free(buffer) }
        return Array(UnsafeRawBufferPointer(start: buffer, count: length))
    }

    private func check(_ status: Int32) throws(ImageEncodeError) {
        guard status != 0 else { return }
        throw .encoderFailed(format: .png, reason: String(cString: spng_strerror(status)))
    }
}
