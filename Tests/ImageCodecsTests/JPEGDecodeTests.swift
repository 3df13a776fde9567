import Foundation
import ImageCodecs
import Testing

@Suite("JPEG decoding")
struct JPEGDecodeTests {
    @Test(
        "Real photos decode at their size and match cv2.imread exactly",
        .enabled(if: TestSupport.hasPhoto("bus.jpg"), "models/images missing: run scripts/setup"),
        arguments: [("bus.jpg", 810, 1080), ("zidane.jpg", 1280, 720)])
    func matchesOpenCV(name: String, width: Int, height: Int) throws {
        let image = try ImageDecoder.decode(TestSupport.photo(name))
        #expect(image.width == width && image.height == height)
        #expect(image.pixels.count == width * height * 3)
        try #require(TestSupport.hasOpenCV, "no .venv with OpenCV: run scripts/setup")
        let reference = try TestSupport.openCVDecode(TestSupport.photoURL(name))
        #expect(reference.width == width && reference.height == height)
        let difference = TestSupport.maxAbsDifference(image, reference)
        print("\(name): max |ImageCodecs - cv2.imread| = \(difference)")
        #expect(difference == 0)
    }

    @Test("header() reads the size without decoding", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func header() throws {
        let header = try ImageDecoder.header(TestSupport.photo("bus.jpg"))
        #expect(header.format == .jpeg && header.width == 810 && header.height == 1080)
    }

    @Test(
        "minimumDecodedSize picks the smallest DCT scale still at least that big, like IMREAD_REDUCED_COLOR_4",
        .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func dctScaling() throws {
        let bytes = try TestSupport.photo("bus.jpg")
        // 810x1080: 1/8 gives 102x135 (too small), 1/4 gives 203x270.
        let quarter = try ImageDecoder.decode(bytes, options: .init(minimumDecodedSize: (200, 200)))
        #expect(quarter.width == 203 && quarter.height == 270)
        let half = try ImageDecoder.decode(bytes, options: .init(minimumDecodedSize: (300, 500)))
        #expect(half.width == 405 && half.height == 540)
        let full = try ImageDecoder.decode(bytes, options: .init(minimumDecodedSize: (800, 1080)))
        #expect(full.width == 810 && full.height == 1080)
        let eighth = try ImageDecoder.decode(bytes, options: .init(minimumDecodedSize: (1, 1)))
        #expect(eighth.width == 102 && eighth.height == 135)

        try #require(TestSupport.hasOpenCV)
        let reference = try TestSupport.openCVDecode(
            TestSupport.photoURL("bus.jpg"), flags: "cv2.IMREAD_REDUCED_COLOR_4")
        #expect(reference.width == 203 && reference.height == 270)
        #expect(TestSupport.maxAbsDifference(quarter, reference) == 0)
    }

    @Test("A JPEG cut in half is .truncated", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func truncated() throws {
        let bytes = try TestSupport.photo("bus.jpg")
        #expect {
            _ = try ImageDecoder.decode(Array(bytes.prefix(bytes.count / 2)))
        } throws: { error in
            guard case .truncated(.jpeg, let reason) = error as? ImageDecodeError else { return false }
            return reason.contains("Premature end")
        }
    }

    @Test("A JPEG cut short after a warning libjpeg accepts (a stray byte before a marker) is .truncated too", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func truncatedAfterWarning() throws {
        let bytes = try TestSupport.photo("bus.jpg")
        // One stray byte before the first DHT marker: libjpeg warns "extraneous bytes before marker", and records no
        // other warning of the image.
        let dht = try #require((2..<bytes.count - 1).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xC4 })
        let stray = Array(bytes[..<dht]) + [0x00] + Array(bytes[dht...])
        let whole = try ImageDecoder.decode(stray)
        #expect(whole == (try ImageDecoder.decode(bytes)))
        let cut = Array(stray.prefix(stray.count / 3))
        // Cut, and cut with an end-of-image marker put after it: both paths refuse both.
        let closed = cut + [0xFF, 0xD9]
        for decode in [{ try ImageDecoder.decode(cut) }, { try ImageDecoder.decodeOnTwoThreads(cut) },
                       { try ImageDecoder.decode(closed) }, { try ImageDecoder.decodeOnTwoThreads(closed) }] {
            #expect {
                _ = try decode()
            } throws: { error in
                guard case .truncated(.jpeg, let reason) = error as? ImageDecodeError else { return false }
                return ["end-of-image", "ended before the image did", "Premature end"].contains { reason.contains($0) }
            }
        }
    }

    @Test("A JPEG with a mangled frame header is .corrupt", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func corruptHeader() throws {
        var bytes = try TestSupport.photo("bus.jpg")
        // Find the start-of-frame marker (baseline FFC0 or progressive FFC2) and declare zero components.
        let sof = try #require(
            bytes.indices.dropLast().first { bytes[$0] == 0xFF && (bytes[$0 + 1] == 0xC0 || bytes[$0 + 1] == 0xC2) })
        bytes[sof + 9] = 0  // FF C0, length (2), precision (1), height (2), width (2), component count
        #expect {
            _ = try ImageDecoder.decode(bytes)
        } throws: { error in
            guard case .corrupt(.jpeg, _) = error as? ImageDecodeError else { return false }
            return true
        }
    }

    @Test("The pixel limit is enforced from the header", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func pixelLimit() throws {
        let bytes = try TestSupport.photo("bus.jpg")
        #expect(throws: ImageDecodeError.tooLarge(width: 810, height: 1080, maxPixels: 800_000)) {
            _ = try ImageDecoder.decode(bytes, options: .init(maxPixels: 800_000))
        }
    }

    @Test("Empty and unknown inputs get typed errors with readable messages")
    func badInputs() {
        #expect(throws: ImageDecodeError.empty) { _ = try ImageDecoder.decode([]) }
        var generator = SystemRandomNumberGenerator()
        let noise = [0x47, 0x49, 0x46, 0x38] + (0..<1000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        #expect(
            throws: ImageDecodeError.unsupportedFormat(
                magic: "47 49 46 38 " + noise[4..<8].map { String(format: "%02X", $0) }.joined(separator: " "))
        ) {
            _ = try ImageDecoder.decode(noise)
        }
        #expect(ImageDecoder.detectFormat(noise) == nil)
        #expect(ImageDecodeError.empty.description == "image data is empty (0 bytes)")
        #expect(
            ImageDecodeError.tooLarge(width: 100_000, height: 100_000, maxPixels: 50_000_000).description
                == "image too large: 100000x100000 = 10000000000 pixels exceeds the limit of 50000000")
    }

    @Test("JPEG encode then decode stays close to the original")
    func jpegRoundTrip() throws {
        let original = TestSupport.gradient(width: 64, height: 48)
        let jpeg = try ImageEncoder.jpeg(original, quality: 95)
        #expect(ImageDecoder.detectFormat(jpeg) == .jpeg)
        let decoded = try ImageDecoder.decode(jpeg)
        #expect(decoded.width == 64 && decoded.height == 48)
        var total = 0
        for i in original.pixels.indices { total += abs(Int(original.pixels[i]) - Int(decoded.pixels[i])) }
        let meanError = Double(total) / Double(original.pixels.count)
        #expect(meanError < 3, "mean absolute error \(meanError)")
        #expect(throws: ImageEncodeError.self) { _ = try ImageEncoder.jpeg(original, quality: 0) }
    }
}
