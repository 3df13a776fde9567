import Dispatch
import Foundation
import ImageCodecs
import Synchronization
import Primitives

/// A width × height pair in pixels.
public struct ImageSize: Sendable, Equatable, Hashable, CustomStringConvertible, Codable {
    public var width: Int
    public var height: Int
    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }
    public var description: String { "\(width)x\(height)" }
}

/// The geometry of Ultralytics' `LetterBox(auto=False, center=True)`: scale to fit, keep aspect ratio, pad evenly.
///
/// r = min(H/h, W/w); the unpadded size is (round(w·r), round(h·r)); the padding (d = (W − w')/2) is split as
/// round(d − 0.1) before and round(d + 0.1) after, Python's round-half-to-even included.
public struct LetterboxGeometry: Sendable, Equatable {
    public var source: ImageSize
    public var target: ImageSize
    public var ratio: Double
    public var resized: ImageSize
    public var left: Int, top: Int, right: Int, bottom: Int

    public init(source: ImageSize, target: ImageSize) {
        self.source = source
        self.target = target
        ratio = min(Double(target.height) / Double(source.height), Double(target.width) / Double(source.width))
        resized = ImageSize(
            width: Int((Double(source.width) * ratio).rounded(.toNearestOrEven)),
            height: Int((Double(source.height) * ratio).rounded(.toNearestOrEven)))
        let dw = Double(target.width - resized.width) / 2
        let dh = Double(target.height - resized.height) / 2
        left = Int((dw - 0.1).rounded(.toNearestOrEven))
        right = Int((dw + 0.1).rounded(.toNearestOrEven))
        top = Int((dh - 0.1).rounded(.toNearestOrEven))
        bottom = Int((dh + 0.1).rounded(.toNearestOrEven))
    }

    /// Maps a box from network-input pixels back to the source image, as Ultralytics' `scale_boxes`
    /// (gain and padding recomputed from the two shapes), clipped to the image.
    public func mapToSource(_ box: Box) -> Box {
        let gain = min(Double(target.height) / Double(source.height), Double(target.width) / Double(source.width))
        let padX = ((Double(target.width) - Double(source.width) * gain) / 2 - 0.1).rounded(.toNearestOrEven)
        let padY = ((Double(target.height) - Double(source.height) * gain) / 2 - 0.1).rounded(.toNearestOrEven)
        let w = Double(source.width), h = Double(source.height)
        return Box(
            x1: min(max((box.x1 - padX) / gain, 0), w), y1: min(max((box.y1 - padY) / gain, 0), h),
            x2: min(max((box.x2 - padX) / gain, 0), w), y2: min(max((box.y2 - padY) / gain, 0), h))
    }
}

/// Turns an RGB image into the network's input tensor: letterbox resize with OpenCV's `INTER_LINEAR` semantics
/// (half-pixel centres, no antialiasing, OpenCV's 11-bit fixed-point coefficients for 8-bit images, and its switch to
/// 2×2 averaging for an exact halving), padding 114, RGB, /255, NCHW float32.
///
/// The inner loops are plain integer code over spans, shaped so that the optimiser drops their bounds checks and
/// vectorises the vertical pass and the float conversion by itself. They use no SIMD types on purpose: those are
/// faster still where the compiler specialises them, but their generic operations make unoptimised (test) builds
/// several times slower than this whole transform.
///
/// Thread-safety: a value type with no shared state. `tensor(from:)` and `image(from:)` may resize parts of the image on
/// Dispatch's global queue; they return only when every part they wait for is written.
public struct LetterboxTransform: Sendable {
    public var target: ImageSize
    public var padValue: UInt8 = 114
    public var channelOrder: ChannelOrder = .rgb
    /// Threads that resize concurrently, the calling one included (OpenCV's resize is parallel too). Default: 2, or 1
    /// on one core.
    public var parallelism: Int = min(2, ProcessInfo.processInfo.activeProcessorCount)

    public init(target: ImageSize) { self.target = target }

    /// Letterboxes `image` into a planar float tensor of 3 × target.height × target.width.
    ///
    /// The tensor is filled with the pad value while the worker threads start; each resized row is then converted into
    /// it (value / 255) as soon as the calling thread has it, so no resized image is kept.
    public func tensor(from image: RGBImage) -> (tensor: [Float], geometry: LetterboxGeometry) {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        var tensor: [Float] = []
        let fill = { tensor = paddedTensor(geometry) }
        forEachResizedRow(image, geometry: geometry, whileWorkersStart: fill) { y, row in
            var out = tensor.mutableSpan
            write(resizedRow: y, row, geometry: geometry, into: &out)
        }
        return (tensor, geometry)
    }

    /// Converts resized row `y` (planar R, G, B bytes, `geometry.resized.width` each) into the tensor's planes in the
    /// model's channel order, value / 255.
    func write(resizedRow y: Int, _ row: Span<UInt8>, geometry: LetterboxGeometry, into out: inout MutableSpan<Float>) {
        let width = geometry.resized.width, plane = target.width * target.height
        let origin = (geometry.top + y) * target.width + geometry.left
        for channel in 0..<3 {
            let index = channelOrder == .rgb ? channel : 2 - channel
            Self.unitFloats(
                row.extracting((channel * width)..<((channel + 1) * width)), into: &out, at: index * plane + origin)
        }
    }

    /// Letterboxes `image` into an RGB image of the target size (for inspection and tests against OpenCV).
    public func image(from image: RGBImage) -> RGBImage {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        var out = RGBImage(width: target.width, height: target.height, fill: (padValue, padValue, padValue))
        let width = geometry.resized.width
        forEachResizedRow(image, geometry: geometry) { y, row in
            let base = ((geometry.top + y) * target.width + geometry.left) * 3
            for x in 0..<width {
                out.pixels[base + 3 * x] = row[x]
                out.pixels[base + 3 * x + 1] = row[width + x]
                out.pixels[base + 3 * x + 2] = row[2 * width + x]
            }
        }
        return out
    }

    /// A tensor of 3 × target.height × target.width whose padding (the rows above and below the resized image, the
    /// columns left and right of it) holds the pad value / 255, and whose resized region is left for the caller to
    /// write, every element of it, before the tensor is read: the tensor is written once (filling it with the pad value
    /// first would write the resized region twice, on the critical path of a decode).
    func paddedTensor(_ geometry: LetterboxGeometry) -> [Float] { paddedTensor(geometry) { _ in } }

    /// ``paddedTensor(_:)``, then `writeResized` writes the resized region (every element of it) into the tensor's
    /// memory before the tensor is returned.
    func paddedTensor(_ geometry: LetterboxGeometry, _ writeResized: (UnsafeMutableBufferPointer<Float>) -> Void)
        -> [Float]
    {
        let plane = target.width * target.height, pad = Float(padValue) / 255
        let resized = geometry.resized
        return [Float](unsafeUninitializedCapacity: 3 * plane) { buffer, initialized in
            // Float is a trivial type: the region left unwritten here is plain memory until the caller writes it.
            for channel in 0..<3 {
                let base = channel * plane
                func fill(_ range: Range<Int>) {
                    guard !range.isEmpty else { return }
                    buffer[(base + range.lowerBound)..<(base + range.upperBound)].update(repeating: pad)
                }
                fill(0..<(geometry.top * target.width))
                fill(((geometry.top + resized.height) * target.width)..<plane)
                for y in geometry.top..<(geometry.top + resized.height) {
                    fill((y * target.width)..<(y * target.width + geometry.left))
                    fill((y * target.width + geometry.left + resized.width)..<((y + 1) * target.width))
                }
            }
            writeResized(buffer)
            initialized = 3 * plane
        }
    }

    /// Writes `Float(value) / 255` for each of `values` into `out` from `start` on (a loop the optimiser vectorises).
    static func unitFloats(_ values: Span<UInt8>, into out: inout MutableSpan<Float>, at start: Int) {
        precondition(start >= 0 && start + values.count <= out.count)
        for i in 0..<values.count {
            out[start + i] = Float(values[i]) / 255
        }
    }

    /// Resizes `image` to the geometry's unpadded size and hands each row to `body` as planar bytes (its R values,
    /// then its G, then its B), on up to `parallelism` threads.
    ///
    /// Rows are handed out in chunks. The calling thread resizes chunks and hands over each of their rows as soon as it
    /// is made; `parallelism - 1` blocks on Dispatch's global queue resize chunks into buffers, which the calling
    /// thread hands over between its own chunks and at the end. The calling thread waits only for chunks a worker has
    /// taken, never for a worker to start, so a busy pool costs no more than resizing alone. `prepare` runs on the
    /// calling thread once the workers are dispatched, before any row; `body` runs only on the calling thread, in no
    /// particular row order.
    func forEachResizedRow(
        _ image: RGBImage, geometry: LetterboxGeometry, whileWorkersStart prepare: () -> Void = {},
        _ body: (Int, Span<UInt8>) -> Void
    ) {
        let resizer = LinearResizer(source: ImageSize(width: image.width, height: image.height), target: geometry.resized)
        let height = geometry.resized.height, rowBytes = 3 * geometry.resized.width
        // Small images are not worth a thread hand-off.
        let workers = height * geometry.resized.width >= 32_768 ? max(0, min(parallelism, height) - 1) : 0
        // 16 chunks: the threads end at most a small chunk apart, for a handful of lock round trips.
        let work = Locked(RowChunks(height: height, chunkRows: workers == 0 ? height : (height + 15) / 16))
        let finished = DispatchSemaphore(value: 0)
        let pixels = image.pixels
        for _ in 0..<workers {
            DispatchQueue.global().async {
                var scratch = LinearResizer.Scratch(width: geometry.resized.width)
                while let rows = work.withLock({ $0.take(byWorker: true) }) {
                    var buffer = [UInt8](repeating: 0, count: rows.count * rowBytes)
                    var span = buffer.mutableSpan
                    for y in rows {
                        resizer.resizeRow(
                            y, from: pixels.span, into: &span, at: (y - rows.lowerBound) * rowBytes, scratch: &scratch)
                    }
                    _ = consume span
                    work.withLock { $0.finished.append((rows.lowerBound, buffer)) }
                    finished.signal()
                }
            }
        }
        prepare()
        var handedOver = 0
        func handOverFinished() {
            for chunk in work.withLock({ $0.takeFinished() }) {
                let rows = chunk.rows.span
                for y in 0..<(rows.count / rowBytes) {
                    body(chunk.first + y, rows.extracting((y * rowBytes)..<((y + 1) * rowBytes)))
                }
                handedOver += 1
            }
        }
        var row = [UInt8](repeating: 0, count: rowBytes)
        var scratch = LinearResizer.Scratch(width: geometry.resized.width)
        while let rows = work.withLock({ $0.take(byWorker: false) }) {
            handOverFinished()
            for y in rows {
                var span = row.mutableSpan
                resizer.resizeRow(y, from: pixels.span, into: &span, at: 0, scratch: &scratch)
                _ = consume span
                body(y, row.span)
            }
        }
        // No chunk is left to take, so the count of chunks workers took is final.
        while handedOver < work.withLock({ $0.takenByWorkers }) {
            finished.wait()
            handOverFinished()
        }
    }

    /// The rows of one resize, handed out in chunks, and the chunks workers have finished.
    struct RowChunks {
        let height: Int
        let chunkRows: Int
        var next = 0
        var takenByWorkers = 0
        var finished: [(first: Int, rows: [UInt8])] = []

        init(height: Int, chunkRows: Int) {
            self.height = height
            self.chunkRows = max(1, chunkRows)
        }

        /// The next chunk of rows, or nil when all are taken.
        mutating func take(byWorker: Bool) -> Range<Int>? {
            guard next < height else { return nil }
            let rows = next..<min(next + chunkRows, height)
            next = rows.upperBound
            if byWorker { takenByWorkers += 1 }
            return rows
        }

        /// The chunks finished since the last call.
        mutating func takeFinished() -> [(first: Int, rows: [UInt8])] {
            defer { finished.removeAll() }
            return finished
        }
    }
}

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
        let (columns, columnWeights) = Self.coefficients(source: source.width, target: target.width, clampAtBorders: true)
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
