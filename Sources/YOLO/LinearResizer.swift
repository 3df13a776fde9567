import Foundation
import ImageCodecs
import Primitives

/// OpenCV `cv::resize(INTER_LINEAR)` for 8-bit, 3-channel images, one output row at a time, as planar bytes.
///
/// Two passes, as OpenCV's: a horizontal one per source row into 16-bit values (S >> 4 of OpenCV's 32-bit sums, all
/// its vertical pass uses), kept while consecutive output rows share source rows, and a vertical one per output row.
/// The exact halving (OpenCV's switch to 2×2 averaging) runs the same passes with weights 1024/1024, which computes
/// (a + b + c + d + 2) >> 2 exactly; the identity size falls out of the general tables (weights 2048/0) and gives back
/// the pixels unchanged.
///
/// Reads and writes through `Span`/`MutableSpan` (bounds-checked, no copy-on-write checks in the inner loops).
struct LinearResizer: Sendable {
    static let coefficientScale: Float = 2048  // INTER_RESIZE_COEF_SCALE

    let source: ImageSize
    let target: ImageSize
    /// Per output column: the first source byte of the left neighbour (pixel × 3); the right neighbour is the next
    /// pixel. A column clamped at the right border is stored as the pixel before with weights (0, 2048), so the right
    /// neighbour is always inside the row.
    let xOffsets: [UInt32]
    /// Per output column: w1 + w0 · 2^24, the multiplier of the horizontal pass.
    let xWeights: [UInt64]
    /// Per output row: the two source rows (clamped to the image) and their weights.
    let yRows: [(Int, Int)]
    let yWeights: [(Int16, Int16)]

    /// One horizontally resized source row: S >> 4 per output pixel, an array per channel (separate arrays, so the
    /// horizontal pass can write all three through spans whose bounds the compiler checks once).
    struct ResizedRow {
        var r: [Int16], g: [Int16], b: [Int16]
        init(width: Int) {
            r = [Int16](repeating: 0, count: width)
            (g, b) = (r, r)
        }
    }

    /// Two horizontally resized source rows, kept between output rows (consecutive output rows often share them).
    struct Scratch {
        var slots: [ResizedRow]
        /// The source row each slot holds (-1: none).
        var held = [-1, -1]
        init(width: Int) { slots = [ResizedRow(width: width), ResizedRow(width: width)] }
    }

    init(source: ImageSize, target: ImageSize) {
        self.source = source
        self.target = target
        if source.width == 2 * target.width && source.height == 2 * target.height {
            // Exact 2× reduction: OpenCV switches to INTER_AREA, the average of each 2×2 block.
            xOffsets = (0..<target.width).map { UInt32(6 * $0) }
            xWeights = Array(repeating: 1024 | 1024 << 24, count: target.width)
            yRows = (0..<target.height).map { (2 * $0, 2 * $0 + 1) }
            yWeights = Array(repeating: (1024, 1024), count: target.height)
            return
        }
        let (columns, columnWeights) = Self.coefficients(
            source: source.width, target: target.width, clampAtBorders: true)
        let last = source.width - 1
        let rightClamped = columns.map { $0 == last && last > 0 }
        xOffsets = zip(columns, rightClamped).map { s, clamped in UInt32(clamped ? 3 * (s - 1) : 3 * s) }
        xWeights = zip(columnWeights, rightClamped).map { w, clamped in
            let (w0, w1) = clamped ? (0, UInt64(w.0)) : (UInt64(w.0), UInt64(w.1))
            return w1 | w0 << 24
        }
        let (rows, rowWeights) = Self.coefficients(source: source.height, target: target.height, clampAtBorders: false)
        yRows = rows.map { (min(max($0, 0), source.height - 1), min(max($0 + 1, 0), source.height - 1)) }
        yWeights = rowWeights
    }

    /// OpenCV's `resizeGeneric` coefficient table: fx = float((d + 0.5)·scale − 0.5), weights
    /// saturate_cast<short>(w · 2048) with round-half-to-even. Columns clamp the position and weight at the borders;
    /// rows keep the weight and clamp only the row index when it is read (as OpenCV does).
    static func coefficients(source: Int, target: Int, clampAtBorders: Bool) -> ([Int], [(Int16, Int16)]) {
        let scale = 1.0 / (Double(target) / Double(source))
        var offsets = [Int](repeating: 0, count: target)
        var weights = [(Int16, Int16)](repeating: (0, 0), count: target)
        for d in 0..<target {
            var f = Float((Double(d) + 0.5) * scale - 0.5)
            var s = Int(f.rounded(.down))
            f -= Float(s)
            if clampAtBorders, s < 0 { f = 0; s = 0 }
            if clampAtBorders, s >= source - 1 { f = 0; s = source - 1 }
            offsets[d] = s
            weights[d] = (
                Int16(((1 - f) * coefficientScale).rounded(.toNearestOrEven)),
                Int16((f * coefficientScale).rounded(.toNearestOrEven))
            )
        }
        return (offsets, weights)
    }

    /// Resizes output row `y` into `out` from byte `start` on (3 × target.width bytes: R values, then G, then B).
    func resizeRow(
        _ y: Int, from pixels: Span<UInt8>, into out: inout MutableSpan<UInt8>, at start: Int, scratch: inout Scratch
    ) {
        let (sy0, sy1) = yRows[y]
        // Find or make both source rows, never overwriting the one the other needs.
        let held = scratch.held
        let found0 = held.firstIndex(of: sy0), found1 = held.firstIndex(of: sy1)
        let slot0 = found0 ?? (found1 == 0 ? 1 : 0)
        let slot1 = found1 ?? (sy1 == sy0 ? slot0 : 1 - slot0)
        scratch.held[slot0] = sy0
        scratch.held[slot1] = sy1
        if found0 == nil { horizontal(row: sy0, from: pixels, into: &scratch.slots[slot0]) }
        if found1 == nil, sy1 != sy0 { horizontal(row: sy1, from: pixels, into: &scratch.slots[slot1]) }
        let top = scratch.slots[slot0], bottom = scratch.slots[slot1], width = target.width, weights = yWeights[y]
        vertical(top.r.span, bottom.r.span, weights: weights, into: &out, at: start)
        vertical(top.g.span, bottom.g.span, weights: weights, into: &out, at: start + width)
        vertical(top.b.span, bottom.b.span, weights: weights, into: &out, at: start + 2 * width)
    }

    /// The horizontal pass over source row `sy`: per output pixel and channel, (left · w0 + right · w1) >> 4.
    private func horizontal(row sy: Int, from pixels: Span<UInt8>, into out: inout ResizedRow) {
        let base = sy * source.width * 3
        Self.horizontal(
            pixels.extracting(base..<(base + source.width * 3)), offsets: xOffsets.span, weights: xWeights.span,
            oneWide: source.width == 1, r: &out.r, g: &out.g, b: &out.b)
    }

    /// The horizontal pass over one source row (`row`, 3 bytes a pixel).
    ///
    /// Each sum is one 64-bit multiply: a channel's left and right bytes at bits 0 and 24, times w1 + w0 · 2^24, give
    /// left · w0 + right · w1 (< 2^20) at bits 24 to 43, clear of left · w1 below (< 2^24) and right · w0 above (from
    /// bit 48). A column's six bytes are read as one 8-byte word (little-endian, as Swift's platforms are), its offset
    /// clamped to the row's last word, a no-op there that lets the compiler drop the bounds checks on the reads; the
    /// last columns, whose word would run past the row, and a one-pixel-wide row (`oneWide`: both neighbours are its
    /// pixel) assemble the word from single bytes.
    private static func horizontal(
        _ row: Span<UInt8>, offsets: Span<UInt32>, weights: Span<UInt64>, oneWide: Bool, r: inout [Int16],
        g: inout [Int16], b: inout [Int16]
    ) {
        var r = r.mutableSpan, g = g.mutableSpan, b = b.mutableSpan
        let width = min(offsets.count, weights.count, r.count, g.count, b.count)
        let last = row.count - 8
        // Offsets only grow, so the columns read as whole words come first.
        var whole = width
        while whole > 0, Int(offsets[whole - 1]) > last { whole -= 1 }
        let bytes = row.bytes
        for x in 0..<whole {
            let word = bytes.unsafeLoadUnaligned(fromByteOffset: min(Int(offsets[x]), last), as: UInt64.self)
            let w = weights[x]
            r[x] = Int16(truncatingIfNeeded: ((word & 0xFF00_00FF) &* w) &>> 28)
            g[x] = Int16(truncatingIfNeeded: (((word &>> 8) & 0xFF00_00FF) &* w) &>> 28)
            b[x] = Int16(truncatingIfNeeded: (((word &>> 16) & 0xFF00_00FF) &* w) &>> 28)
        }
        for x in whole..<width {
            let s = Int(offsets[x]), t = oneWide ? s : s + 3
            let word = UInt64(row[s]) | UInt64(row[s + 1]) &<< 8 | UInt64(row[s + 2]) &<< 16 | UInt64(row[t]) &<< 24
                | UInt64(row[t + 1]) &<< 32 | UInt64(row[t + 2]) &<< 40
            let w = weights[x]
            r[x] = Int16(truncatingIfNeeded: ((word & 0xFF00_00FF) &* w) &>> 28)
            g[x] = Int16(truncatingIfNeeded: (((word &>> 8) & 0xFF00_00FF) &* w) &>> 28)
            b[x] = Int16(truncatingIfNeeded: (((word &>> 16) & 0xFF00_00FF) &* w) &>> 28)
        }
    }

    /// OpenCV's SIMD vertical pass (VResizeLinearVec_32s8u), which x86-64 builds run on whole rows:
    /// v_mul_hi(S >> 4, beta) on int16 lanes, summed, then (x + 2) >> 2 with unsigned saturation (a loop the optimiser
    /// vectorises).
    private func vertical(
        _ top: Span<Int16>, _ bottom: Span<Int16>, weights: (Int16, Int16), into out: inout MutableSpan<UInt8>,
        at start: Int
    ) {
        let n = min(top.count, bottom.count)
        precondition(start >= 0 && start + n <= out.count)
        let b0 = Int32(weights.0), b1 = Int32(weights.1)
        for i in 0..<n {
            let v = ((Int32(top[i]) &* b0) &>> 16) &+ ((Int32(bottom[i]) &* b1) &>> 16)
            out[start + i] = UInt8(clamping: (v &+ 2) &>> 2)
        }
    }
}
