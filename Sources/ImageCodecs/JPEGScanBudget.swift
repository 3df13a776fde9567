#if canImport(Glibc)
    import Glibc
#endif

/// The work a JPEG's scans ask of libjpeg, read off its markers before it is decoded.
///
/// Each scan makes libjpeg pass over every block of its components, once per coefficient position it covers
/// (`Se − Ss + 1`), whatever the scan holds: a refinement scan of one end-of-band run costs as much as a full one. A
/// baseline file makes one pass of 64 positions over each block, libjpeg's standard progressive script about three;
/// a crafted file of a few hundred identical refinement scans over a large image makes hundreds (the README has what
/// one cost) — TurboJPEG's scan limit (`TJFLAG_LIMITSCANS`, 500) bounds the count, not the work, and libjpeg only
/// warns of such a progression. So the passes are counted first, in one pass over the file's bytes, and a file
/// asking for more than `maxPassesPerBlock` is refused undecoded. The markers are followed as libjpeg follows them
/// (stray bytes and stuffed zeros between segments skipped, a segment length under 2 read past), so that no byte
/// libjpeg passes over hides a scan.
///
/// Thread-safety: stateless.
enum JPEGScanBudget {
    /// Full passes (64 coefficient positions each) over every block of the image that a file's scans may ask for.
    static let maxPassesPerBlock = 16

    /// Counts `data`'s passes and refuses a file over the budget; returns whether the data ends before its
    /// end-of-image marker (a file cut short). A file whose markers cannot be followed is left to libjpeg, which
    /// refuses it with its own message; what could be counted until then is counted (and it is not called cut short).
    /// - Throws: `.corrupt` naming the passes asked for.
    @discardableResult
    static func check(_ data: UnsafeBufferPointer<UInt8>) throws(ImageDecodeError) -> Bool {
        guard data.count > 4, data[0] == 0xFF, data[1] == 0xD8 else { return false }
        var frame: Frame?
        var passes = 0  // coefficient positions × blocks, over every scan so far
        var scans = 0
        var offset = 2
        while offset < data.count {
            // A marker: 0xFF, any number of fill bytes 0xFF, then its code. Bytes before it are skipped, as libjpeg
            // skips them (with a warning it accepts): a stray byte must not hide the scans after it.
            offset = nextFF(data, from: offset)
            guard offset < data.count else { return true }
            offset += 1
            while offset < data.count, data[offset] == 0xFF { offset += 1 }
            guard offset < data.count else { return true }
            let marker = data[offset]
            offset += 1
            switch marker {
            case 0xD9: return false  // EOI
            // No length: TEM, restarts, SOI; and 0x00, a stuffed byte outside a scan, which libjpeg skips as it
            // skips any byte that is no marker.
            case 0x00, 0x01, 0xD0...0xD8: continue
            default: break
            }
            guard offset + 2 <= data.count else { return true }
            let length = Int(data[offset]) << 8 | Int(data[offset + 1])
            // A length under 2 (an empty APPn or COM written as 0): libjpeg reads on after its two bytes.
            guard length >= 2 else {
                offset += 2
                continue
            }
            guard offset + length <= data.count else { return true }
            let segment = UnsafeBufferPointer(rebasing: data[(offset + 2)..<(offset + length)])
            offset += length
            switch marker {
            case 0xC0...0xCF where marker != 0xC4 && marker != 0xC8 && marker != 0xCC:
                if frame == nil { frame = Frame(segment) }
            case 0xDA:
                guard let frame, let cost = frame.scanCost(segment) else { return false }
                passes += cost
                scans += 1
                // Counted as at least a 512 × 512 image's: a small one costs little whatever its scans (TurboJPEG's
                // limit of 500 bounds them), and a valid file of many short scans decodes.
                let budget = max(frame.totalBlocks, 4096) * 64 * maxPassesPerBlock
                guard passes <= budget else {
                    throw .corrupt(format: .jpeg, reason: "its first \(scans) scans ask libjpeg for more than "
                        + "\(maxPassesPerBlock) passes over every block of the image (a progression crafted to "
                        + "hold the decoder)")
                }
                offset = endOfEntropyData(data, from: offset)
            default: break
            }
        }
        return true
    }

    /// The offset of the first 0xFF at or after `start` (the end when there is none).
    private static func nextFF(_ data: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        guard let base = data.baseAddress, start < data.count,
              let found = memchr(base + start, 0xFF, data.count - start)
        else { return data.count }
        return base.distance(to: found.assumingMemoryBound(to: UInt8.self))
    }

    /// The first marker after a scan's entropy-coded data: a 0xFF not followed by a stuffed 0x00 or a restart marker.
    private static func endOfEntropyData(_ data: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var offset = start
        while offset < data.count {
            let at = nextFF(data, from: offset)
            guard at + 1 < data.count else { return data.count }
            let next = data[at + 1]
            if next == 0x00 || (0xD0...0xD7).contains(next) {
                offset = at + 2
            } else {
                return at
            }
        }
        return data.count
    }

    /// A frame header's size and components' sampling factors: the blocks each component has.
    private struct Frame {
        var mcuColumns: Int
        var mcuRows: Int
        /// Sampling factors by component id.
        var sampling: [UInt8: (h: Int, v: Int)]

        init?(_ segment: UnsafeBufferPointer<UInt8>) {
            guard segment.count >= 6 else { return nil }
            let height = Int(segment[1]) << 8 | Int(segment[2])
            let width = Int(segment[3]) << 8 | Int(segment[4])
            let count = Int(segment[5])
            guard width > 0, height > 0, count > 0, segment.count >= 6 + 3 * count else { return nil }
            var sampling: [UInt8: (h: Int, v: Int)] = [:]
            for index in 0..<count {
                let factors = segment[6 + 3 * index + 1]
                let (h, v) = (Int(factors >> 4), Int(factors & 0x0F))
                guard (1...4).contains(h), (1...4).contains(v) else { return nil }
                sampling[segment[6 + 3 * index]] = (h, v)
            }
            let hMax = sampling.values.map(\.h).max() ?? 1
            let vMax = sampling.values.map(\.v).max() ?? 1
            mcuColumns = (width + 8 * hMax - 1) / (8 * hMax)
            mcuRows = (height + 8 * vMax - 1) / (8 * vMax)
            self.sampling = sampling
        }

        func blocks(of component: UInt8) -> Int? {
            sampling[component].map { mcuColumns * $0.h * mcuRows * $0.v }
        }

        var totalBlocks: Int { sampling.keys.reduce(0) { $0 + (blocks(of: $1) ?? 0) } }

        /// The least a scan is counted per block, in coefficient positions.
        static let minimumPositionsPerScan = 36

        /// Blocks × coefficient positions of a scan header; nil for one that cannot be read (libjpeg refuses it).
        func scanCost(_ segment: UnsafeBufferPointer<UInt8>) -> Int? {
            guard segment.count >= 1 else { return nil }
            let count = Int(segment[0])
            guard count > 0, segment.count >= 1 + 2 * count + 3 else { return nil }
            var blocks = 0
            for index in 0..<count {
                guard let componentBlocks = self.blocks(of: segment[1 + 2 * index]) else { return nil }
                blocks += componentBlocks
            }
            let (start, end) = (Int(segment[1 + 2 * count]), Int(segment[2 + 2 * count]))
            // At least 36 of 64 positions: a scan costs libjpeg a fixed work per block (its MCU bookkeeping, a restart
            // resync per MCU with an interval of 1) whatever positions it covers — 500 empty DC scans, counted one
            // position each, took 17 times what the budget allows, about 35 positions a scan (libjpeg's standard
            // progression counts about 4 passes so).
            let positions = min(64, max(Self.minimumPositionsPerScan, end - start + 1))
            return blocks * positions
        }
    }
}
