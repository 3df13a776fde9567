import Foundation
@testable import ImageCodecs
import TestSupport
import Testing

/// The pipelined JPEG decode (entropy decoding on one thread, the rest on another) against the one-pass TurboJPEG
/// decode: the same pixels and the same errors, whichever thread turns the coefficients into rows.
@Suite("Pipelined JPEG decoding")
struct PipelinedJPEGDecodingTests {
    static let photoNames = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg",
        "kite.jpg"]

    /// Who decodes the rows: the calling thread alone, after reading every coefficient row (no worker started); a
    /// second thread, all of them, once the coefficients are read (a late worker); or a Dispatch worker running
    /// alongside the calling thread (`decodeOnTwoThreads`).
    enum Order: CaseIterable { case callerOnly, lateWorker, concurrent }

    static func decode(_ bytes: [UInt8], order: Order) -> Result<RGBImage, ImageDecodeError> {
        Result { () throws(ImageDecodeError) -> RGBImage in
            if order == .concurrent { return try ImageDecoder.decodeOnTwoThreads(bytes) }
            guard let decoding = try PipelinedJPEGDecoding(bytes) else { return try ImageDecoder.decode(bytes) }
            do throws(ImageDecodeError) { try decoding.readCoefficients() } catch {
                decoding.stop()
                throw error
            }
            if order == .lateWorker {
                let worker = Thread { decoding.helpDecode() }
                worker.start()
                _ = try decoding.wait { $0.rowsDecoded < decoding.height }
                #expect(try !decoding.decodeNextRows(), "the worker decoded every row")
            }
            try decoding.decodeRemainingRows()
            return decoding.image()
        }
    }

    @Test(
        "Real photos: the same pixels as the one-pass decode, whoever decodes the rows",
        .enabled(if: TestSupport.hasPhoto("kite.jpg"), "models/images missing: run scripts/setup"),
        arguments: photoNames)
    func photos(name: String) throws {
        let bytes = try TestSupport.photo(name)
        let expected = try ImageDecoder.decode(bytes)
        for order in Order.allCases {
            #expect(try Self.decode(bytes, order: order).get() == expected, "\(name), \(order)")
        }
        // Repeatedly on two threads, for the interleavings a single run may not meet.
        for _ in 0..<5 { #expect(try ImageDecoder.decodeOnTwoThreads(bytes) == expected, "\(name), repeated") }
    }

    @Test(
        "Generated JPEGs (subsamplings, grayscale, restart markers, odd and tiny sizes): the same pixels; progressive ones are left to the one-pass decode",
        .enabled(if: GeneratedJPEGs.available, "no .venv with OpenCV: run scripts/setup"),
        arguments: GeneratedJPEGs.files)
    func generated(file: GeneratedJPEGs.File) throws {
        let expected = try ImageDecoder.decode(file.bytes)
        #expect((try PipelinedJPEGDecoding(file.bytes) == nil) == file.isProgressive)
        for order in Order.allCases {
            #expect(try Self.decode(file.bytes, order: order).get() == expected, "\(file.name), \(order)")
        }
    }

    @Test("Progress: rows follow the coefficient rows, each batch within one iMCU row and its next one read")
    func progress() throws {
        // 4:2:0: 16 rows per iMCU row; 100 rows = 7 iMCU rows.
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 64, height: 100), quality: 90)
        let decoding = try #require(try PipelinedJPEGDecoding(jpeg))
        let start = decoding.current
        #expect(start.coefficientRows == 0 && start.rowsDecoded == 0 && !start.inputFinished && !start.outputBusy)
        #expect(try !decoding.decodeNextRows(), "nothing to decode before a coefficient row is read")
        try decoding.readCoefficients()
        let read = decoding.current
        #expect(read.inputFinished && read.coefficientRows == 7 && read.rowsDecoded == 0)
        var seen: [Int] = []
        while try decoding.decodeNextRows() { seen.append(decoding.current.rowsDecoded) }
        #expect(seen == [16, 32, 48, 64, 80, 96, 100])
        #expect(decoding.rowsDecodedAt != nil)
        try decoding.finish()
        #expect(decoding.image() == (try ImageDecoder.decode(jpeg)))
    }

    @Test("stop(): no batch starts after it, and waiters wake")
    func stop() throws {
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 64, height: 100), quality: 90)
        let decoding = try #require(try PipelinedJPEGDecoding(jpeg))
        let woke = DispatchSemaphore(value: 0)
        let waiter = Thread {
            _ = try? decoding.wait { !$0.stopped }
            woke.signal()
        }
        waiter.start()
        decoding.stop()
        #expect(woke.wait(timeout: .now() + 5) == .success)
        try decoding.readCoefficients()
        #expect(try !decoding.decodeNextRows())
        #expect(decoding.current.rowsDecoded == 0 && decoding.current.stopped)
    }

    @Test(
        "Not taken: PNG, EXIF-rotated and DCT-scaled decodes; decodeOnTwoThreads gives the one-pass result",
        .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func fallbacks() throws {
        let bus = try TestSupport.photo("bus.jpg")
        let rotated = EXIFOrientationTests.splice(EXIFOrientationTests.exifSegment(orientation: 6, bigEndian: false), into: bus)
        let png = try ImageEncoder.png(TestSupport.gradient(width: 30, height: 20))
        let scaled = DecodeOptions(minimumDecodedSize: (200, 200))
        #expect(try PipelinedJPEGDecoding(rotated) == nil)
        #expect(try PipelinedJPEGDecoding(png) == nil)
        #expect(try PipelinedJPEGDecoding(bus, options: scaled) == nil)
        #expect(try ImageDecoder.decodeOnTwoThreads(rotated) == ImageDecoder.decode(rotated))
        #expect(try ImageDecoder.decodeOnTwoThreads(png) == ImageDecoder.decode(png))
        #expect(try ImageDecoder.decodeOnTwoThreads(bus, options: scaled) == ImageDecoder.decode(bus, options: scaled))
        // Unrotated EXIF is taken.
        let upright = EXIFOrientationTests.splice(EXIFOrientationTests.exifSegment(orientation: 1, bigEndian: true), into: bus)
        #expect(try PipelinedJPEGDecoding(upright) != nil)
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
            #expect(Self.decode(bytes, order: order) == expected, "\(order)")
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
                #expect(Self.decode(bytes, order: order) == expected, "\(order)")
            }
        }
        #expect(throws: Never.self) { try ImageDecoder.decode(stray) }
    }

    @Test("Header errors and the pixel limit are thrown as the one-pass decode throws them", .enabled(if: TestSupport.hasPhoto("bus.jpg")))
    func headerErrors() throws {
        let bus = try TestSupport.photo("bus.jpg")
        #expect(throws: ImageDecodeError.tooLarge(width: 810, height: 1080, maxPixels: 800_000)) {
            _ = try PipelinedJPEGDecoding(bus, options: .init(maxPixels: 800_000))
        }
        for bytes in [Array(bus.prefix(100)), [0xFF, 0xD8, 0xFF, 0xE0]] {
            let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
            #expect(Result { () throws(ImageDecodeError) in try ImageDecoder.decodeOnTwoThreads(bytes) } == expected)
        }
    }

    // MARK: Fuzzing findings

    /// FuzzImageDecode's first finding: a JPEG whose entropy-coded data holds an SOF0 marker (the mutation), so
    /// that libjpeg, reading the markers after the scan, meets a second SOF. It stores that SOF's image size and
    /// component count in the decompressor before failing ("two SOF markers"), while the output side, decoding the
    /// last rows on the other thread, reads them: a SEGV in libjpeg's row decoding (under AddressSanitizer: a wild read
    /// of 0xbebebebe…). The output side now waits while the input side reads past the scan. The same file showed the
    /// one-pass decode accepting it: its stray bytes before a marker are a warning, and TurboJPEG then reports the
    /// fatal "two SOF markers" as a warning too; both decodes now reject it.
    @Test("Fuzz finding: a second SOF after the scan fails the decode, never the output side running beside it")
    func secondSOFAfterScan() throws {
        let finding = Repository.bytes("Tests/ImageCodecsTests/Fixtures/Fuzz/second-sof-after-scan.jpg")
        // The same file made here, wider, so that the output side has rows to decode when the input side reads the
        // markers: a baseline JPEG with an SOF0 declaring 9356 × 13321 and 127 components (the finding's values)
        // spliced in before its EOI. libjpeg stores them before it checks anything; an output side still running
        // then walks 127 entries of a 3-entry component array.
        let jpeg = try ImageEncoder.jpeg(TestSupport.gradient(width: 2048, height: 64), quality: 90)
        let secondSOF: [UInt8] = [
            0xFF, 0xC0, 0x00, 0x11, 8, 0x34, 0x09, 0x24, 0x8C, 0x7F, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1,
        ]
        let spliced = Array(jpeg.dropLast(2)) + secondSOF + [0xFF, 0xD9]
        for bytes in [finding, spliced] {
            #expect(try PipelinedJPEGDecoding(bytes) != nil, "the pipelined decode must take this file")
            // A worker that asks for rows without pause, so that a batch is running when the input side reaches the
            // markers unless the decoding holds it back. Before the fix this crashed the process.
            for _ in 0..<30 {
                let decoding = try #require(try PipelinedJPEGDecoding(bytes))
                let worker = Thread {
                    while true {
                        let seen = decoding.current
                        if seen.failed || seen.stopped || seen.rowsDecoded == decoding.height { return }
                        _ = try? decoding.decodeNextRows()
                    }
                }
                worker.start()
                let read = Result { () throws(ImageDecodeError) in try decoding.readCoefficients() }
                decoding.stop()
                #expect(!decoding.current.outputBusy && !decoding.current.inputReadsMarkers)
                if case .failure(let error) = read {
                    #expect("\(error)".contains("two SOF markers"), "\(error)")
                }
            }
            // And the whole decode, every way, many times: the verdict of the one-pass decode, a rejection.
            let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
            guard case .failure(.corrupt(.jpeg, let reason)) = expected, reason.contains("two SOF markers") else {
                Issue.record("expected the one-pass decode to reject the second SOF, got \(expected)")
                continue
            }
            for _ in 0..<10 {
                for order in Order.allCases {
                    #expect(Self.decode(bytes, order: order) == expected, "\(order)")
                }
            }
        }
    }
}
