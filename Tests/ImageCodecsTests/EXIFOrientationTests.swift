import Foundation
import ImageCodecs
import Testing

@Suite("EXIF orientation")
struct EXIFOrientationTests {
    /// A JPEG APP1 segment holding a TIFF with one IFD0 entry: Orientation (0x0112) = `value`.
    /// (The entry's type is SHORT and its count 1 unless given.)
    static func exifSegment(orientation value: UInt8, bigEndian: Bool, type: UInt8 = 3, count: UInt8 = 1) -> [UInt8] {
        let tiff: [UInt8] =
            bigEndian
            ? [0x4D, 0x4D, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, type, 0, 0, 0, count, 0, value, 0, 0, 0, 0, 0, 0]
            : [0x49, 0x49, 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, type, 0, count, 0, 0, 0, value, 0, 0, 0, 0, 0, 0, 0]
        let payload: [UInt8] = Array("Exif".utf8) + [0, 0] + tiff
        let length = payload.count + 2
        return [0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 0xFF)] + payload
    }

    /// `jpeg` with `segment` inserted right after SOI.
    static func splice(_ segment: [UInt8], into jpeg: [UInt8]) -> [UInt8] {
        Array(jpeg.prefix(2)) + segment + jpeg.dropFirst(2)
    }

    // The reference transforms, written the way OpenCV's ExifTransform composes them.
    static func flipHorizontally(_ image: RGBImage) -> RGBImage {
        remap(image, image.width, image.height) { x, y in (image.width - 1 - x, y) }
    }
    static func flipVertically(_ image: RGBImage) -> RGBImage {
        remap(image, image.width, image.height) { x, y in (x, image.height - 1 - y) }
    }
    static func transpose(_ image: RGBImage) -> RGBImage { remap(image, image.height, image.width) { x, y in (y, x) } }

    static func remap(_ image: RGBImage, _ width: Int, _ height: Int, _ source: (Int, Int) -> (Int, Int)) -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                let (sx, sy) = source(x, y)
                let at = (sy * image.width + sx) * 3
                pixels += image.pixels[at..<at + 3]
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    static func expected(_ upright: RGBImage, orientation: Int) -> RGBImage {
        switch orientation {
        case 2: flipHorizontally(upright)
        case 3: flipVertically(flipHorizontally(upright))
        case 4: flipVertically(upright)
        case 5: transpose(upright)
        case 6: flipHorizontally(transpose(upright))
        case 7: flipVertically(flipHorizontally(transpose(upright)))
        case 8: flipVertically(transpose(upright))
        default: upright
        }
    }

    @Test("Orientations 1...8 transform the decoded image as OpenCV does", arguments: 1...8, [false, true])
    func orientation(_ value: Int, bigEndian: Bool) throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 24, height: 16), quality: 95)
        let plain = try ImageDecoder.decode(jpeg)
        let tagged = Self.splice(Self.exifSegment(orientation: UInt8(value), bigEndian: bigEndian), into: jpeg)
        let decoded = try ImageDecoder.decode(tagged)
        #expect(decoded == Self.expected(plain, orientation: value))
        #expect(try ImageDecoder.decode(tagged, options: .init(applyEXIFOrientation: false)) == plain)
        // The two-thread decoder too: the rows as stored, labelled with the stored size (it was labelled with the
        // upright one, the axes swapped for 5...8).
        #expect(try ImageDecoder.decodeOnTwoThreads(tagged, options: .init(applyEXIFOrientation: false)) == plain)
        let header = try ImageDecoder.header(tagged)
        #expect(header.width == decoded.width && header.height == decoded.height)
        let stored = try ImageDecoder.header(tagged, applyingEXIFOrientation: false)
        #expect(stored.width == plain.width && stored.height == plain.height)
    }

    @Test("Malformed EXIF is ignored, never fatal")
    func garbage() throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 24, height: 16))
        let plain = try ImageDecoder.decode(jpeg)
        let good = Self.exifSegment(orientation: 6, bigEndian: false)
        var segments: [[UInt8]] = []
        // Every truncation of the TIFF payload before the orientation value is complete (segment byte 30),
        // with the APP1 length kept consistent.
        for cut in 10..<30 {
            var segment = Array(good.prefix(cut))
            segment[2] = UInt8((cut - 2) >> 8)
            segment[3] = UInt8((cut - 2) & 0xFF)
            segments.append(segment)
        }
        // IFD offset, entry count and value pointing far out of bounds; orientation 0 and 9.
        var wild = good
        wild[14] = 0xFF
        wild[15] = 0xFF
        wild[16] = 0xFF
        wild[17] = 0x7F
        segments.append(wild)
        var manyEntries = good
        manyEntries[18] = 0xFF
        manyEntries[19] = 0xFF  // 65535 entries declared, the one present is not 0x0112
        manyEntries[20] = 0x99
        segments.append(manyEntries)
        segments.append(Self.exifSegment(orientation: 0, bigEndian: true))
        segments.append(Self.exifSegment(orientation: 9, bigEndian: false))
        for segment in segments {
            #expect(try ImageDecoder.decode(Self.splice(segment, into: jpeg)) == plain)
        }
        // Cut right after the value: the entry is whole, so it still applies.
        var short = Array(good.prefix(30))
        short[3] = 28
        #expect(try ImageDecoder.decode(Self.splice(short, into: jpeg)) == Self.expected(plain, orientation: 6))
    }

    @Test(
        "Tagged JPEGs decode exactly as cv2.imread applies the orientation",
        .enabled(if: TestSupport.hasOpenCV, "no .venv with OpenCV: run scripts/setup"), arguments: 1...8)
    func matchesOpenCV(_ value: Int) throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 24, height: 16), quality: 95)
        let tagged = Self.splice(Self.exifSegment(orientation: UInt8(value), bigEndian: value % 2 == 0), into: jpeg)
        let url = try TestSupport.writeTemporary(tagged, suffix: "jpg")
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(try ImageDecoder.decode(tagged) == TestSupport.openCVDecode(url))
    }

    /// OpenCV reads the two bytes at the value whatever the entry's type and count; the decoder refused anything but
    /// one SHORT, and left such an image as stored.
    @Test(
        "An Orientation entry of another type or count reads as cv2.imread reads it",
        .enabled(if: TestSupport.hasOpenCV, "no .venv with OpenCV: run scripts/setup"),
        arguments: [(UInt8(4), UInt8(1), UInt8(6), false), (3, 2, 8, false), (1, 1, 3, false), (4, 1, 6, true)])
    func otherTypesAsOpenCV(type: UInt8, count: UInt8, value: UInt8, bigEndian: Bool) throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 24, height: 16), quality: 95)
        let tagged = Self.splice(Self.exifSegment(orientation: value, bigEndian: bigEndian, type: type, count: count),
            into: jpeg)
        let url = try TestSupport.writeTemporary(tagged, suffix: "jpg")
        defer { try? FileManager.default.removeItem(at: url) }
        let opencv = try TestSupport.openCVDecode(url)
        #expect(try ImageDecoder.decode(tagged) == opencv)
        // The LONG little-endian 6: rotated (24x16 stored).
        if type == 4, !bigEndian { #expect(opencv.width == 16 && opencv.height == 24) }
    }
}
