/// The EXIF orientation tag (0x0112) and the transform that displays an image upright.
///
/// Values and transforms follow OpenCV's `ExifTransform` (what `cv2.imread` applies):
/// 1 none, 2 mirror horizontally, 3 rotate 180°, 4 mirror vertically, 5 transpose,
/// 6 rotate 90° clockwise, 7 transverse (transpose + rotate 180°), 8 rotate 90° counter-clockwise.
/// A value type; thread-safe.
enum EXIFOrientation: Int, Sendable {
    case up = 1
    case mirrored, rotated180, flippedVertically, transposed, rotatedClockwise, transversed,
        rotatedCounterClockwise

    /// Whether the upright image swaps width and height.
    var swapsAxes: Bool { rawValue >= 5 }

    // MARK: Finding the tag

    /// The orientation in a JPEG's first APP1 "Exif" segment; `.up` when absent or malformed.
    ///
    /// Walks marker segments from SOI up to SOS; never reads out of bounds, whatever the input.
    static func inJPEG(_ data: UnsafeBufferPointer<UInt8>) -> EXIFOrientation {
        guard data.count >= 4, data[0] == 0xFF, data[1] == 0xD8 else { return .up }
        var offset = 2
        while offset + 4 <= data.count {
            guard data[offset] == 0xFF else { return .up }
            let marker = data[offset + 1]
            if marker == 0xFF {  // fill byte
                offset += 1
                continue
            }
            if marker == 0xD8 || (0xD0...0xD7).contains(marker) || marker == 0x01 {  // no length
                offset += 2
                continue
            }
            if marker == 0xDA || marker == 0xD9 { return .up }  // entropy-coded data or EOI: no EXIF before it
            let length = Int(data[offset + 2]) << 8 | Int(data[offset + 3])
            guard length >= 2 else { return .up }
            let payload = offset + 4
            let end = min(offset + 2 + length, data.count)
            let exifHeader: [UInt8] = [0x45, 0x78, 0x69, 0x66, 0x00, 0x00]  // "Exif\0\0"
            if marker == 0xE1, end - payload >= 6, (0..<6).allSatisfy({ data[payload + $0] == exifHeader[$0] }) {
                return inTIFF(UnsafeBufferPointer(rebasing: data[(payload + 6)..<end]))
            }
            offset += 2 + length
        }
        return .up
    }

    /// The orientation in IFD0 of a TIFF structure (an EXIF payload); `.up` when absent or malformed.
    static func inTIFF(_ tiff: UnsafeBufferPointer<UInt8>) -> EXIFOrientation {
        guard tiff.count >= 8 else { return .up }
        let littleEndian: Bool
        switch (tiff[0], tiff[1]) {
        case (0x49, 0x49): littleEndian = true  // "II"
        case (0x4D, 0x4D): littleEndian = false  // "MM"
        default: return .up
        }
        func u16(_ at: Int) -> Int? {
            guard at >= 0, at + 2 <= tiff.count else { return nil }
            let (a, b) = (Int(tiff[at]), Int(tiff[at + 1]))
            return littleEndian ? a | b << 8 : a << 8 | b
        }
        func u32(_ at: Int) -> Int? {
            guard let first = u16(at), let second = u16(at + 2) else { return nil }
            return littleEndian ? first | second << 16 : first << 16 | second
        }
        guard u16(2) == 42, let ifd = u32(4), let entries = u16(ifd) else { return .up }
        for entry in 0..<entries {
            let at = ifd + 2 + entry * 12
            guard let tag = u16(at) else { return .up }
            guard tag == 0x0112 else { continue }
            // The first two bytes of the value field, whatever the entry's type and count say: OpenCV's
            // `ExifReader::getOrientation` reads them so (the first Orientation entry of IFD0).
            guard let value = u16(at + 8) else { return .up }
            return EXIFOrientation(rawValue: value) ?? .up
        }
        return .up
    }

    // MARK: Applying it

    /// The upright image. One pass: every output pixel is read from `start + x * stepX + y * stepY` (in pixels).
    func apply(to image: RGBImage) -> RGBImage {
        guard self != .up, image.width > 0, image.height > 0 else { return image }
        let (w, h) = (image.width, image.height)
        let last = (h - 1) * w  // first pixel of the bottom row
        let (start, stepX, stepY): (Int, Int, Int)
        switch self {
        case .up: (start, stepX, stepY) = (0, 1, w)
        case .mirrored: (start, stepX, stepY) = (w - 1, -1, w)
        case .rotated180: (start, stepX, stepY) = (last + w - 1, -1, -w)
        case .flippedVertically: (start, stepX, stepY) = (last, 1, -w)
        case .transposed: (start, stepX, stepY) = (0, w, 1)
        case .rotatedClockwise: (start, stepX, stepY) = (last, -w, 1)
        case .transversed: (start, stepX, stepY) = (last + w - 1, -w, -1)
        case .rotatedCounterClockwise: (start, stepX, stepY) = (w - 1, w, -1)
        }
        let (outWidth, outHeight) = swapsAxes ? (h, w) : (w, h)
        let pixels = image.pixels.withUnsafeBufferPointer { source in
            [UInt8](unsafeUninitializedCapacity: source.count) { output, count in
                var o = 0
                for y in 0..<outHeight {
                    var s = (start + y * stepY) * 3
                    for _ in 0..<outWidth {
                        output[o] = source[s]
                        output[o + 1] = source[s + 1]
                        output[o + 2] = source[s + 2]
                        o += 3
                        s += stepX * 3
                    }
                }
                count = o
            }
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: pixels)
    }
}
