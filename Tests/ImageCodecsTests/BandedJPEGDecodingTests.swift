import Foundation
import ImageCodecs
import TestSupport
import Testing

/// The two-band JPEG decode against the one-pass TurboJPEG decode: the same pixels, the same errors, whichever thread
/// takes the lower band and wherever the split falls.
@Suite("Banded JPEG decoding")
struct BandedJPEGDecodingTests {
    static let photoNames = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg",
        "kite.jpg"]
    static let fractions = [0.05, 0.37, 0.5, 0.72, 0.97]

    /// The three ways the lower band can be decoded: by the calling thread (no worker started), by a worker that
    /// claimed it before the calling thread began, and by a concurrent Dispatch worker (`decodeInBands`).
    enum Order: CaseIterable { case callerOnly, workerFirst, concurrent }

    static func decode(_ bytes: [UInt8], fraction: Double, order: Order) -> Result<RGBImage, ImageDecodeError> {
        Result { () throws(ImageDecodeError) -> RGBImage in
            let split = { (_: Int, rows: Int) in Int((Double(rows) * fraction).rounded()) }
            switch order {
            case .concurrent:
                return try ImageDecoder.decodeInBands(bytes, upperFraction: fraction)
            case .callerOnly:
                guard let decoding = try BandedJPEGDecoding(bytes, splitRow: split) else {
                    return try ImageDecoder.decode(bytes)
                }
                #expect(try decoding.decodeUpperBand { _ in })
                return decoding.image()
            case .workerFirst:
                guard let decoding = try BandedJPEGDecoding(bytes, splitRow: split) else {
                    return try ImageDecoder.decode(bytes)
                }
                decoding.decodeLowerBand()
                if try !decoding.decodeUpperBand({ _ in }) { try decoding.finish() }
                return decoding.image()
            }
        }
    }

    @Test(
        "Real photos: the same pixels as the one-pass decode, at every split, whoever decodes the lower band",
        .enabled(if: TestSupport.hasPhoto("kite.jpg"), "models/images missing: run scripts/setup"),
        arguments: photoNames)
    func photos(name: String) throws {
        let bytes = try TestSupport.photo(name)
        let expected = try ImageDecoder.decode(bytes)
        for fraction in [0.05, 0.5, 0.97] {
            for order in Order.allCases {
                let banded = try Self.decode(bytes, fraction: fraction, order: order).get()
                #expect(banded == expected, "\(name) split at \(fraction), \(order)")
            }
        }
    }

    @Test(
        "Generated JPEGs (subsamplings, grayscale, restart markers, odd and tiny sizes): the same pixels; progressive ones are left to the one-pass decode",
        .enabled(if: GeneratedJPEGs.available, "no .venv with OpenCV: run scripts/setup"),
        arguments: GeneratedJPEGs.files)
    func generated(file: GeneratedJPEGs.File) throws {
        let expected = try ImageDecoder.decode(file.bytes)
        let decoding = try BandedJPEGDecoding(file.bytes) { _, rows in rows / 2 }
        #expect((decoding == nil) == file.isProgressive)
        for fraction in Self.fractions + [0.0, 1.0] {
            for order in Order.allCases {
                let banded = try Self.decode(file.bytes, fraction: fraction, order: order).get()
                #expect(banded == expected, "\(file.name) split at \(fraction), \(order)")
            }
        }
    }

    @Test("Every split row of a small 4:2:0 image, across iMCU boundaries")
    func everySplit() throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 45, height: 50), quality: 90)
        let expected = try ImageDecoder.decode(jpeg)
        for split in 1...50 {
            let decoding = try #require(try BandedJPEGDecoding(jpeg) { _, _ in split })
            #expect(decoding.decodeLowerBand() != nil || split == 50)
            if try !decoding.decodeUpperBand({ _ in }) { try decoding.finish() }
            #expect(decoding.image() == expected, "split at \(split)")
        }
    }

    @Test("Progress: rows are reported in order, and waitForRows covers the worker's band")
    func progress() throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 64, height: 100), quality: 90)
        let decoding = try #require(try BandedJPEGDecoding(jpeg) { _, _ in 40 })
        let worker = Thread { decoding.decodeLowerBand() }
        worker.start()
        var reported: [Int] = []
        let decodedAll = try decoding.decodeUpperBand { reported.append($0) }
        #expect(reported == reported.sorted() && reported.allSatisfy { $0 > 0 })
        if decodedAll {
            #expect(reported.last == 100)
        } else {
            #expect(reported.last == 40)
            #expect(try decoding.waitForRows(through: 99) == 100)
            try decoding.finish()
        }
        #expect(decoding.rowsDecodedAt != nil)
        #expect(decoding.image() == (try ImageDecoder.decode(jpeg)))
    }

    @Test(
        "A worker stalled mid-band: the calling thread takes the rest over, with the same pixels and verdict",
        .enabled(if: TestSupport.hasPhoto("bus.jpg")), arguments: [false, true])
    func takeover(truncatedFile: Bool) throws {
        let bus = try TestSupport.photo("bus.jpg")
        let bytes = truncatedFile ? Array(bus.prefix(bus.count * 9 / 10)) : bus
        let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
        let stalled = DispatchSemaphore(value: 0)
        let decoding = try #require(
            try BandedJPEGDecoding(
                bytes, options: .init(), pixels: nil, splitRow: { _, rows in rows / 3 },
                afterLowerBatch: { rows in
                    guard rows <= 16 else { return }
                    stalled.signal()
                    Thread.sleep(forTimeInterval: 0.05)
                }))
        let workerDecodedToTheEnd = Flag()
        let workerReturned = DispatchSemaphore(value: 0)
        let worker = Thread {
            workerDecodedToTheEnd.set(decoding.decodeLowerBand() != nil)
            workerReturned.signal()
        }
        worker.start()
        #expect(stalled.wait(timeout: .now() + 10) == .success)
        let result = Result { () throws(ImageDecodeError) -> RGBImage in
            #expect(try !decoding.decodeUpperBand { _ in })
            _ = try decoding.waitForRows(through: decoding.height - 1)
            try decoding.finish()
            return decoding.image()
        }
        #expect(result == expected)
        // The worker ended without decoding to the end: its band was taken over. (finish() waits for the worker's
        // verdict, which it records before `decodeLowerBand` returns: wait for the thread to have set the flag too.)
        #expect(workerReturned.wait(timeout: .now() + 10) == .success)
        #expect(workerDecodedToTheEnd.value == false)
    }

    @Test(
        "Not taken: PNG, EXIF-rotated and DCT-scaled decodes; decodeInBands gives the one-pass result",
        .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func fallbacks() throws {
        let bus = try TestSupport.photo("bus.jpg")
        let rotated = EXIFOrientationTests.splice(EXIFOrientationTests.exifSegment(orientation: 6, bigEndian: false), into: bus)
        let png = try ImageEncoder.png(TestSupport.gradient(width: 30, height: 20))
        let scaled = DecodeOptions(minimumDecodedSize: (200, 200))
        #expect(try BandedJPEGDecoding(rotated) { _, h in h / 2 } == nil)
        #expect(try BandedJPEGDecoding(png) { _, h in h / 2 } == nil)
        #expect(try BandedJPEGDecoding(bus, options: scaled) { _, h in h / 2 } == nil)
        #expect(try ImageDecoder.decodeInBands(rotated) == ImageDecoder.decode(rotated))
        #expect(try ImageDecoder.decodeInBands(png) == ImageDecoder.decode(png))
        #expect(try ImageDecoder.decodeInBands(bus, options: scaled) == ImageDecoder.decode(bus, options: scaled))
        // Unrotated EXIF is taken.
        let upright = EXIFOrientationTests.splice(EXIFOrientationTests.exifSegment(orientation: 1, bigEndian: true), into: bus)
        #expect(try BandedJPEGDecoding(upright) { _, h in h / 2 } != nil)
    }

    @Test(
        "Truncated files: the same typed error (or image) as the one-pass decode, wherever the cut falls",
        .enabled(if: TestSupport.hasPhoto("bus.jpg")),
        arguments: [0.02, 0.2, 0.5, 0.8, 0.97, 0.999])
    func truncated(at cut: Double) throws {
        let bus = try TestSupport.photo("bus.jpg")
        let bytes = Array(bus.prefix(Int(Double(bus.count) * cut)))
        let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
        if cut >= 0.2 {
            guard case .failure(.truncated(.jpeg, _)) = expected else {
                Issue.record("expected .truncated, got \(expected)")
                return
            }
        }
        for order in Order.allCases {
            for fraction in [0.3, 0.72] {
                #expect(Self.decode(bytes, fraction: fraction, order: order) == expected, "\(order) at \(fraction)")
            }
        }
    }

    @Test(
        "Corrupt entropy-coded data and stray bytes: the same verdict as the one-pass decode",
        .enabled(if: TestSupport.hasPhoto("bus.jpg")),
        arguments: [0.15, 0.4, 0.65, 0.9])
    func corrupt(at position: Double) throws {
        let bus = try TestSupport.photo("bus.jpg")
        var generator = SeededGenerator(seed: UInt64(position * 1000))
        var damaged = bus
        let at = Int(Double(bus.count) * position)
        for i in at..<(at + 16) { damaged[i] = UInt8.random(in: 0...255, using: &generator) }
        // Stray bytes after the entropy-coded data, before EOI: a warning libjpeg works around (accepted).
        let stray = Array(bus.dropLast(2)) + [0x12, 0x34, 0x56] + [0xFF, 0xD9]
        for bytes in [damaged, stray] {
            let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
            for order in Order.allCases {
                for fraction in [0.3, 0.72] {
                    #expect(Self.decode(bytes, fraction: fraction, order: order) == expected, "\(order) at \(fraction)")
                }
            }
        }
        #expect(throws: Never.self) { try ImageDecoder.decode(stray) }
    }

    @Test("Header errors and the pixel limit are thrown as the one-pass decode throws them", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func headerErrors() throws {
        let bus = try TestSupport.photo("bus.jpg")
        #expect(throws: ImageDecodeError.tooLarge(width: 810, height: 1080, maxPixels: 800_000)) {
            _ = try BandedJPEGDecoding(bus, options: .init(maxPixels: 800_000)) { _, h in h / 2 }
        }
        for bytes in [Array(bus.prefix(100)), [0xFF, 0xD8, 0xFF, 0xE0]] {
            let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
            #expect(Result { () throws(ImageDecodeError) in try ImageDecoder.decodeInBands(bytes) } == expected)
        }
    }
}

/// A Bool set by one thread and read by another; nil until set.
final class Flag: @unchecked Sendable {
    // @unchecked: `stored` is only touched under `lock`.
    private let lock = NSLock()
    private var stored: Bool?
    func set(_ value: Bool) { lock.withLock { stored = value } }
    var value: Bool? { lock.withLock { stored } }
}

/// A small deterministic generator (SplitMix64), so a failing corruption test can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
