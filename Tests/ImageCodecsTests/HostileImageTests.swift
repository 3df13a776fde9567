import Foundation
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

    @Test("A progressive JPEG of a few hundred scans decodes (the crafted file is a valid image)")
    func fewScans() throws {
        let jpeg = HostileImages.progressiveJPEG(scans: 100)
        let image = try ImageDecoder.decode(jpeg)
        #expect(image == RGBImage(width: 8, height: 8, fill: (128, 128, 128)))
        #expect(try ImageDecoder.decodeOnTwoThreads(jpeg) == image)
    }

    @Test("A progressive JPEG of thousands of scans is .corrupt, without reading them all, on either decode path")
    func manyScans() throws {
        let jpeg = HostileImages.progressiveJPEG(scans: 10_000)
        let errors = [
            #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode(jpeg) },
            #expect(throws: ImageDecodeError.self) { try ImageDecoder.decodeOnTwoThreads(jpeg) },
        ]
        for error in errors {
            guard case .corrupt(.jpeg, let reason) = error else {
                Issue.record("expected .corrupt(.jpeg, _), got \(String(describing: error))")
                continue
            }
            #expect(reason.contains("scans"), "\(reason)")
        }
        // The libjpeg path (two threads) takes no multi-scan file: the decodes above were TurboJPEG's.
        #expect(try PipelinedJPEGDecoding(jpeg) == nil)
    }

    @Test("A progressive JPEG whose few hundred scans each refine the whole image is .corrupt before it is decoded; camera-style progressive files decode")
    func refinementScans() throws {
        // 499 scans (under TurboJPEG's limit of 500) over 1024 × 1024: each a pass over all 16384 blocks.
        let plain = HostileImages.refinementScansJPEG(side: 1024, scans: 499)
        #expect(plain.count < 20_000)
        // The same with bytes libjpeg passes over after the DHT segment — an empty COM whose length reads 0, a stuffed
        // zero — which must not hide the scans after them from the count.
        let dht = try #require((0..<plain.count - 1).first { plain[$0] == 0xFF && plain[$0 + 1] == 0xC4 })
        let afterDHT = dht + 2 + (Int(plain[dht + 2]) << 8 | Int(plain[dht + 3]))
        let bombs = [plain] + [[0xFF, 0xFE, 0x00, 0x00], [0xFF, 0x00]].map { (inserted: [UInt8]) in
            Array(plain[..<afterDHT]) + inserted + Array(plain[afterDHT...])
        }
        let errors = bombs.flatMap { bomb in [
            #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode(bomb) },
            #expect(throws: ImageDecodeError.self) { try ImageDecoder.decodeOnTwoThreads(bomb) },
        ] }
        for error in errors {
            guard case .corrupt(.jpeg, let reason) = error else {
                Issue.record("expected .corrupt(.jpeg, _), got \(String(describing: error))")
                continue
            }
            #expect(reason.contains("passes over every block"), "\(reason)")
        }
        // A few such scans are within the budget: the file is valid, and decodes.
        #expect(try ImageDecoder.decode(HostileImages.refinementScansJPEG(side: 1024, scans: 8)).width == 1024)
    }

    @Test("A PNG of many compressed text chunks (each inflated by libspng, a failed one's space given back) is refused undecoded; a few decode")
    func compressedChunkFlood() throws {
        // 1×1 RGB; `chunks` zTXt chunks before the image data, each inflating to 1 MiB of zeros with its Adler-32
        // trailer broken (libspng drops such a chunk and reads on: a thousand of 8 MiB held a worker for 17 s).
        func png(chunks: Int, broken: Bool) throws -> [UInt8] {
            let folder = try TemporaryDirectory()
            let made = try runProcess("/usr/bin/python3", ["-c", """
                import struct, sys, zlib
                n, broken = int(sys.argv[1]), sys.argv[2] == "1"
                def chunk(kind, data):
                    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
                text = zlib.compress(b"\\x00" * (1 << 20), 9)
                if broken:
                    text = text[:-4] + bytes(4)
                body = b"".join(chunk(b"zTXt", b"k%d\\x00\\x00" % i + text) for i in range(n))
                header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
                with open(sys.argv[3], "wb") as out:
                    out.write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + body
                              + chunk(b"IDAT", zlib.compress(b"\\x00\\x10\\x20\\x30")) + chunk(b"IEND", b""))
                """, "\(chunks)", broken ? "1" : "0", folder.file("text.png")])
            try #require(made.status == 0, "\(made.stderr)")
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: folder.file("text.png"))))
        }
        let error = #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode(try png(chunks: 40, broken: true)) }
        guard case .corrupt(.png, let reason)? = error, reason.contains("compressed ancillary chunks") else {
            Issue.record("expected .corrupt(.png, …compressed ancillary chunks…), got \(String(describing: error))")
            return
        }
        // iTXt chunks whose text is not compressed are not counted (libspng inflates only compressed ones).
        let folder = try TemporaryDirectory()
        let made = try runProcess("/usr/bin/python3", ["-c", """
            import struct, sys, zlib
            def chunk(kind, data):
                return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
            body = b"".join(chunk(b"iTXt", b"k%d\\x00\\x00\\x00\\x00\\x00plain text" % i) for i in range(20))
            header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
            with open(sys.argv[1], "wb") as out:
                out.write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header) + body
                          + chunk(b"IDAT", zlib.compress(b"\\x00\\x10\\x20\\x30")) + chunk(b"IEND", b""))
            """, folder.file("plain.png")])
        try #require(made.status == 0, "\(made.stderr)")
        let plain = try ImageDecoder.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: folder.file("plain.png")))))
        #expect(plain.pixels == [0x10, 0x20, 0x30])
        // Within the budget, broken or not, the image decodes.
        for broken in [false, true] {
            let image = try ImageDecoder.decode(try png(chunks: 3, broken: broken))
            #expect(image.width == 1 && image.pixels == [0x10, 0x20, 0x30], "broken: \(broken)")
        }
    }

    @Test("A PNG wider than 2^20 pixels is refused, as OpenCV refuses it (its rows took memory maxPixels did not count)")
    func widePNG() throws {
        // One grey row (the encoder here writes at most 65535 columns): Python's zlib writes the file.
        func png(width: Int) throws -> [UInt8] {
            let folder = try TemporaryDirectory()
            let made = try runProcess("/usr/bin/python3", ["-c", """
                import struct, sys, zlib
                w = int(sys.argv[1])
                def chunk(kind, data):
                    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
                header = struct.pack(">IIBBBBB", w, 1, 8, 0, 0, 0, 0)
                with open(sys.argv[2], "wb") as out:
                    out.write(b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
                              + chunk(b"IDAT", zlib.compress(b"\\x00" + b"\\x80" * w)) + chunk(b"IEND", b""))
                """, "\(width)", folder.file("wide.png")])
            try #require(made.status == 0, "\(made.stderr)")
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: folder.file("wide.png"))))
        }
        let error = #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode(try png(width: (1 << 20) + 1)) }
        guard case .corrupt(.png, _)? = error else {
            Issue.record("expected .corrupt(.png, _), got \(String(describing: error))")
            return
        }
        // At the limit it decodes.
        #expect(try ImageDecoder.decode(try png(width: 1 << 20)).width == 1 << 20)
    }

    @Test("A progressive JPEG of a hundred DC scans is refused by the budget: each scan counts at least 36 of 64 positions")
    func dcScans() throws {
        func segment(_ marker: UInt8, _ payload: [UInt8]) -> [UInt8] {
            [0xFF, marker, UInt8((payload.count + 2) >> 8), UInt8((payload.count + 2) & 0xFF)] + payload
        }
        // 1024 × 1024, one component; a hundred DC-only scans (Ss = Se = 0), each counted one position per block
        // before: 100 of 1024 positions allowed per block.
        var jpeg: [UInt8] = [0xFF, 0xD8] + segment(0xDB, [0] + [UInt8](repeating: 1, count: 64))
        jpeg += segment(0xC2, [8, 4, 0, 4, 0, 1, 1, 0x11, 0])
        jpeg += segment(0xC4, [0x00, 1] + [UInt8](repeating: 0, count: 15) + [0])
        for _ in 0..<100 { jpeg += segment(0xDA, [1, 1, 0x00, 0, 0, 0x00]) + [0x00] }
        jpeg += [0xFF, 0xD9]
        let error = #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode(jpeg) }
        guard case .corrupt(.jpeg, let reason)? = error else {
            Issue.record("expected .corrupt(.jpeg, _), got \(String(describing: error))")
            return
        }
        #expect(reason.contains("passes over every block"), "\(reason)")
    }

    @Test("A progressive photo (libjpeg's standard progression, as OpenCV writes it) is within the scan budget and decodes",
          .enabled(if: TestSupport.hasOpenCV))
    func progressivePhoto() throws {
        let folder = try TemporaryDirectory()
        let written = try runProcess(TestSupport.python.path, ["-c", """
            import sys, cv2
            image = cv2.imread(sys.argv[1])
            assert cv2.imwrite(sys.argv[2], image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 95])
            """, TestSupport.photoURL("bus.jpg").path, folder.file("progressive.jpg")])
        try #require(written.status == 0, "\(written.stderr)")
        let progressive = [UInt8](try Data(contentsOf: URL(fileURLWithPath: folder.file("progressive.jpg"))))
        #expect((0..<progressive.count - 1).contains { progressive[$0] == 0xFF && progressive[$0 + 1] == 0xC2 },
            "no SOF2 marker: not a progressive file")
        let decoded = try ImageDecoder.decode(progressive)
        let photo = try ImageDecoder.decode(try TestSupport.photo("bus.jpg"))
        #expect(decoded.width == photo.width && decoded.height == photo.height)
        #expect(try ImageDecoder.decodeOnTwoThreads(progressive) == decoded)
    }

    @Test("A baseline JPEG with a scan its header does not announce is .corrupt on the two-thread path too")
    func unannouncedScan() throws {
        let baseline = try ImageEncoder.jpeg(RGBImage(width: 64, height: 48, fill: (10, 200, 30)))
        let jpeg = HostileImages.baselineWithSecondScan(baseline)
        let oneThread = #expect(throws: ImageDecodeError.self) { try ImageDecoder.decode(jpeg) }
        // libjpeg, which the two-thread decode runs, refuses the second scan rather than reading it.
        let decoding = try #require(try PipelinedJPEGDecoding(jpeg), "libjpeg takes a baseline header")
        let pipelined = #expect(throws: ImageDecodeError.self) { try decoding.readCoefficients() }
        decoding.stop()
        let twoThreads = #expect(throws: ImageDecodeError.self) { try ImageDecoder.decodeOnTwoThreads(jpeg) }
        for error in [oneThread, pipelined, twoThreads] {
            guard case .corrupt(.jpeg, _) = error else {
                Issue.record("expected .corrupt(.jpeg, _), got \(String(describing: error))")
                continue
            }
        }
    }
}
