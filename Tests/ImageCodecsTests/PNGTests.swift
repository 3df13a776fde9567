import Foundation
import ImageCodecs
import Testing

@Suite("PNG decoding and encoding")
struct PNGTests {
    @Test("PNG encode then decode is exact")
    func roundTrip() throws {
        let original = TestSupport.gradient(width: 37, height: 23)
        let png = try ImageEncoder.png(original)
        #expect(ImageDecoder.detectFormat(png) == .png)
        #expect(try ImageDecoder.decode(png) == original)
        let header = try ImageDecoder.header(png)
        #expect(header.format == .png && header.width == 37 && header.height == 23)
    }

    @Test("A PNG declaring 100000x100000 is .tooLarge before any allocation")
    func decompressionBomb() {
        let ihdr = bigEndian32(100_000) + bigEndian32(100_000) + [8, 2, 0, 0, 0]
        let png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + pngChunk("IHDR", ihdr) + pngChunk("IEND", [])
        #expect(throws: ImageDecodeError.tooLarge(width: 100_000, height: 100_000, maxPixels: 50_000_000)) {
            _ = try ImageDecoder.decode(png)
        }
    }

    @Test("A PNG cut in half is .truncated")
    func truncated() throws {
        var generator = SystemRandomNumberGenerator()
        let noise = RGBImage(
            width: 64, height: 64, pixels: (0..<64 * 64 * 3).map { _ in UInt8.random(in: 0...255, using: &generator) })
        let png = try ImageEncoder.png(noise)
        #expect {
            _ = try ImageDecoder.decode(Array(png.prefix(png.count / 2)))
        } throws: { error in
            guard case .truncated(.png, _) = error as? ImageDecodeError else { return false }
            return true
        }
        #expect(throws: ImageDecodeError.self) { _ = try ImageDecoder.decode(Array(png.prefix(20))) }
    }

    @Test("A PNG with a bad IHDR CRC is .corrupt")
    func badCRC() throws {
        var png = try ImageEncoder.png(TestSupport.gradient(width: 8, height: 8))
        png[29] ^= 0xFF  // last CRC byte of IHDR (8 signature + 8 + 13 data → CRC at 29...32)
        #expect {
            _ = try ImageDecoder.decode(png)
        } throws: { error in
            guard case .corrupt(.png, _) = error as? ImageDecodeError else { return false }
            return true
        }
    }

    @Test(
        "Gray, 16-bit and RGBA PNGs written by OpenCV decode as cv2.imread reads them",
        .enabled(if: TestSupport.hasOpenCV, "no .venv with OpenCV: run scripts/setup"),
        arguments: ["gray8", "gray16", "rgb16", "rgba8"])
    func matchesOpenCV(kind: String) throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent(
            "codecs-\(kind)-\(UUID().uuidString).png")
        defer { try? FileManager.default.removeItem(at: url) }
        let script = """
            import cv2, numpy as np, sys
            y, x = np.mgrid[0:31, 0:45]
            kind = sys.argv[2]
            if kind == "gray8": im = ((x * 5 + y * 3) % 256).astype(np.uint8)
            elif kind == "gray16": im = ((x * 1500 + y * 700) % 65536).astype(np.uint16)
            elif kind == "rgb16": im = np.dstack([x * 1400, y * 2000, (x * y * 37) % 65536]).astype(np.uint16)
            else: im = np.dstack([x * 5, y * 8, (x + y) * 3, (x * y) % 256]).astype(np.uint8)
            cv2.imwrite(sys.argv[1], im)
            """
        try TestSupport.runPython(script, arguments: [url.path, kind])
        let decoded = try ImageDecoder.decode([UInt8](Data(contentsOf: url)))
        let reference = try TestSupport.openCVDecode(url)
        #expect(decoded.width == 45 && decoded.height == 31)
        #expect(TestSupport.maxAbsDifference(decoded, reference) == 0)
    }

    @Test("An eXIf orientation is applied as cv2.imread applies it")
    func exifOrientation() throws {
        let upright = TestSupport.gradient(width: 24, height: 16)
        let png = try ImageEncoder.png(upright)
        let tiff: [UInt8] = [0x49, 0x49, 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]
        let tagged = Array(png.prefix(33)) + pngChunk("eXIf", tiff) + png.dropFirst(33)  // right after IHDR
        let decoded = try ImageDecoder.decode(tagged)
        #expect(decoded == EXIFOrientationTests.expected(upright, orientation: 6))
        #expect(try ImageDecoder.decode(tagged, options: .init(applyEXIFOrientation: false)) == upright)
        let header = try ImageDecoder.header(tagged)
        #expect(header.width == 16 && header.height == 24)
        if TestSupport.hasOpenCV {
            let url = try TestSupport.writeTemporary(tagged, suffix: "png")
            defer { try? FileManager.default.removeItem(at: url) }
            #expect(try decoded == TestSupport.openCVDecode(url))
        }
    }
}
