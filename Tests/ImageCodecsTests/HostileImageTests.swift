import ImageCodecs
import TestSupport
import Testing

/// Files crafted to crash or stall a decoder: each must end in a typed error, never a trap or a decode of every scan.
@Suite("Hostile images")
struct HostileImageTests {
    @Test(
        "A PNG header whose dimensions overflow a pixel or byte count is .tooLarge",
        arguments: [
            (UInt32.max, UInt32.max, 50_000_000),  // width × height overflows
            (UInt32.max, UInt32.max, Int.max),  // ... whatever the limit
            (UInt32.max, UInt32(Int32.max), Int.max),  // width × height fits, × 3 bytes does not
        ])
    func pngDimensionOverflow(width: UInt32, height: UInt32, maxPixels: Int) {
        let png = HostileImages.pngHeader(width: width, height: height)
        #expect(png.count == 24)
        // The limit reported is the one applied: never more pixels than an Int can count the bytes of.
        let expected = ImageDecodeError.tooLarge(
            width: Int(width), height: Int(height), maxPixels: min(maxPixels, Int.max / 3))
        #expect(throws: expected) { _ = try ImageDecoder.decode(png, options: .init(maxPixels: maxPixels)) }
        #expect(throws: expected) { _ = try ImageDecoder.decodeOnTwoThreads(png, options: .init(maxPixels: maxPixels)) }
        #expect(expected.description.contains("\(width)x\(height)"))
    }
}
