/// Image files written byte by byte to crash or stall a decoder: what an attacker uploads.
public enum HostileImages {
    /// The PNG signature and the start of an IHDR chunk declaring `width` × `height`, cut right after the two
    /// dimensions (24 bytes): all a decoder reads before it checks the size.
    public static func pngHeader(width: UInt32, height: UInt32) -> [UInt8] {
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        return signature + [0, 0, 0, 13] + Array("IHDR".utf8) + bigEndian(width) + bigEndian(height)
    }

    /// A progressive 8×8 grayscale JPEG made of `scans` DC scans, each coding a zero difference: a mid-grey image
    /// (128 everywhere). Every scan is legal (a first DC scan at full precision may be repeated without even a libjpeg
    /// warning), so a decoder reads them all unless it limits the scans; scaled up to a large image, each scan makes
    /// the decoder go over the whole coefficient buffer again.
    public static func progressiveJPEG(scans: Int) -> [UInt8] {
        var jpeg: [UInt8] = [0xFF, 0xD8]  // SOI
        jpeg += [0xFF, 0xDB, 0x00, 0x43, 0x00] + [UInt8](repeating: 1, count: 64)  // DQT: table 0, all ones
        // SOF2 (progressive): 8-bit samples, 8 rows, 8 columns, one component (id 1, 1×1 sampling, table 0).
        jpeg += [0xFF, 0xC2, 0x00, 0x0B, 8, 0x00, 0x08, 0x00, 0x08, 1, 1, 0x11, 0]
        // DHT: DC table 0 with a single code, "0", for category 0 (a zero difference).
        jpeg += [0xFF, 0xC4, 0x00, 0x14, 0x00, 1] + [UInt8](repeating: 0, count: 15) + [0x00]
        // SOS: component 1, tables 0/0, Ss = Se = 0 (DC), Ah = Al = 0; then the scan's one block: the code "0",
        // padded with ones.
        let scan: [UInt8] = [0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 0, 0x00] + [0x7F]
        for _ in 0..<scans { jpeg += scan }
        return jpeg + [0xFF, 0xD9]  // EOI
    }

    /// A grey `side` × `side` progressive JPEG (one component) of `scans` scans, each refining every AC coefficient of
    /// every block (Ss 1, Se 63) with one end-of-band run: a few hundred bytes a scan, each a pass of libjpeg over the
    /// whole image's coefficients. `side` × `side` / 64 blocks must lie in 16384...32767 (one run covers them).
    public static func refinementScansJPEG(side: Int, scans: Int) -> [UInt8] {
        let blocks = ((side + 7) / 8) * ((side + 7) / 8)
        precondition((16384...32767).contains(blocks), "one end-of-band run of 14 bits covers 16384...32767 blocks")
        func segment(_ marker: UInt8, _ payload: [UInt8]) -> [UInt8] {
            let length = payload.count + 2
            return [0xFF, marker, UInt8(length >> 8), UInt8(length & 0xFF)] + payload
        }
        var jpeg: [UInt8] = [0xFF, 0xD8]
        jpeg += segment(0xDB, [0] + [UInt8](repeating: 1, count: 64))
        jpeg += segment(0xC2, [8, UInt8(side >> 8), UInt8(side & 0xFF), UInt8(side >> 8), UInt8(side & 0xFF), 1, 1,
            0x11, 0])
        // AC table 0: the code "0" (1 bit) for EOB14 (0xE0), "10" (2 bits) for EOB13 (0xD0).
        jpeg += segment(0xC4, [0x10, 1, 1] + [UInt8](repeating: 0, count: 14) + [0xE0, 0xD0])
        // One EOB14 run of `blocks`: "0", then blocks − 16384 in 14 bits, padded with ones to a byte.
        var bits = "0" + (0..<14).reversed().map { (blocks - 16384) >> $0 & 1 == 1 ? "1" : "0" }.joined()
        bits += String(repeating: "1", count: (8 - bits.count % 8) % 8)
        var data: [UInt8] = []
        var index = bits.startIndex
        while index < bits.endIndex {
            let next = bits.index(index, offsetBy: 8)
            let byte = UInt8(bits[index..<next], radix: 2) ?? 0
            data.append(byte)
            if byte == 0xFF { data.append(0) }
            index = next
        }
        for scan in 0..<scans {
            jpeg += segment(0xDA, [1, 1, 0x00, 1, 63, scan == 0 ? 0x00 : 0x10]) + data
        }
        return jpeg + [0xFF, 0xD9]
    }

    /// `jpeg` (a baseline file, as `ImageEncoder.jpeg` writes it) with a second scan of component 1 spliced in before
    /// its EOI: more scans than its header announces.
    public static func baselineWithSecondScan(_ jpeg: [UInt8]) -> [UInt8] {
        precondition(jpeg.suffix(2) == [0xFF, 0xD9], "expected a JPEG ending in EOI")
        let scan: [UInt8] = [0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0x00] + [0x7F]
        return Array(jpeg[..<(jpeg.count - 2)]) + scan + [0xFF, 0xD9]
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }
}
