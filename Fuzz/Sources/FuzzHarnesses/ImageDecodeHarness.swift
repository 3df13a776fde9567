import ImageCodecs

/// JPEG (libjpeg-turbo, and the two-thread libjpeg path) and PNG (libspng) decoding, EXIF orientation included, as a
/// detect request's body reaches them: the whole input is the file.
///
/// The last byte picks the options (a JPEG or PNG ignores bytes after its end): whether EXIF orientation is applied,
/// whether DCT-scaled decoding is asked for, and whether the two-thread decoder is used. Every input is also read by
/// `header`. A decoded image must hold exactly width × height RGB pixels.
public enum ImageDecodeHarness {
    public static func run(_ data: UnsafeBufferPointer<UInt8>) {
        let bytes = Array(data)
        let selector = bytes.last ?? 0
        _ = try? ImageDecoder.header(bytes)
        var options = DecodeOptions()
        options.applyEXIFOrientation = selector & 1 == 0
        if selector & 2 != 0 { options.minimumDecodedSize = (width: Int(selector >> 3) + 1, height: 32) }
        let image: RGBImage
        do {
            image = selector & 4 != 0
                ? try ImageDecoder.decodeOnTwoThreads(bytes, options: options)
                : try ImageDecoder.decode(bytes, options: options)
        } catch { return }
        precondition(image.width > 0 && image.height > 0, "decoded an image without pixels")
        precondition(image.pixels.count == image.width * image.height * 3, "pixel buffer does not fit the size")
    }
}
