import Dispatch
import Foundation
import ImageCodecs
import Synchronization

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
/// Thread-safety: a value type with no shared state.
public struct LetterboxTransform: Sendable {
    public var target: ImageSize
    public var padValue: UInt8 = 114
    public var channelOrder: ChannelOrder = .rgb
    /// Horizontal bands resized concurrently (OpenCV's resize is parallel too). Default: 2, or 1 on one core.
    public var parallelism: Int = min(2, ProcessInfo.processInfo.activeProcessorCount)

    public init(target: ImageSize) { self.target = target }

    private static let unitLUT: [Float] = (0..<256).map { Float($0) / 255 }

    /// Letterboxes `image` into a planar float tensor of 3 × target.height × target.width.
    public func tensor(from image: RGBImage) -> (tensor: [Float], geometry: LetterboxGeometry) {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        let plane = target.width * target.height
        let lut = Self.unitLUT.span
        var out = [Float](repeating: lut[Int(padValue)], count: 3 * plane)
        let rw = geometry.resized.width
        let (c0, c2) = channelOrder == .rgb ? (0, 2 * plane) : (2 * plane, 0)
        let c1 = plane
        var outSpan = out.mutableSpan
        for band in resizedBands(image, geometry: geometry) {
            let rows = band.rows.span
            for y in 0..<(band.rows.count / (3 * rw)) {
                let base = (band.firstRow + y + geometry.top) * target.width + geometry.left
                let row = rows.extracting((3 * rw * y)..<(3 * rw * (y + 1)))
                for x in 0..<rw {
                    outSpan[c0 + base + x] = lut[Int(row[3 * x])]
                    outSpan[c1 + base + x] = lut[Int(row[3 * x + 1])]
                    outSpan[c2 + base + x] = lut[Int(row[3 * x + 2])]
                }
            }
        }
        _ = consume outSpan
        return (out, geometry)
    }

    /// Letterboxes `image` into an RGB image of the target size (for inspection and tests against OpenCV).
    public func image(from image: RGBImage) -> RGBImage {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        var out = RGBImage(width: target.width, height: target.height, fill: (padValue, padValue, padValue))
        let rowBytes = geometry.resized.width * 3
        for band in resizedBands(image, geometry: geometry) {
            for y in 0..<(band.rows.count / rowBytes) {
                let base = ((band.firstRow + y + geometry.top) * target.width + geometry.left) * 3
                out.pixels.replaceSubrange(base..<(base + rowBytes), with: band.rows[(y * rowBytes)..<((y + 1) * rowBytes)])
            }
        }
        return out
    }

    /// A horizontal band of resized rows.
    struct Band: Sendable {
        var firstRow: Int
        var rows: [UInt8]
    }

    /// Resizes `image` to the geometry's unpadded size, in `parallelism` bands computed concurrently.
    func resizedBands(_ image: RGBImage, geometry: LetterboxGeometry) -> [Band] {
        let resizer = LinearResizer(source: ImageSize(width: image.width, height: image.height), target: geometry.resized)
        let height = geometry.resized.height
        // Small images are not worth a thread hand-off.
        let bands = height * geometry.resized.width >= 32_768 ? max(1, min(parallelism, height)) : 1
        let pixels = image.pixels
        let resizeBand = { @Sendable (index: Int) -> Band in
            let first = height * index / bands, last = height * (index + 1) / bands
            let rowBytes = geometry.resized.width * 3
            var rows = [UInt8](repeating: 0, count: (last - first) * rowBytes)
            var scratch = LinearResizer.Scratch(width: geometry.resized.width)
            var span = rows.mutableSpan
            let source = pixels.span
            for y in first..<last {
                var row = span.extracting(((y - first) * rowBytes)..<((y - first + 1) * rowBytes))
                resizer.resizeRow(y, from: source, into: &row, scratch: &scratch)
            }
            _ = consume span
            return Band(firstRow: first, rows: rows)
        }
        guard bands > 1 else { return [resizeBand(0)] }
        let results = Locked<[Band]>([])
        DispatchQueue.concurrentPerform(iterations: bands) { index in
            let band = resizeBand(index)
            results.withLock { $0.append(band) }
        }
        return results.withLock { $0 }
    }
}

/// OpenCV `cv::resize(INTER_LINEAR)` for 8-bit, 3-channel images, one output row at a time.
///
/// Reads and writes through `Span`/`MutableSpan` (bounds-checked, no copy-on-write checks in the inner loops).
struct LinearResizer: Sendable {
    static let coefficientScale: Float = 2048  // INTER_RESIZE_COEF_SCALE

    let source: ImageSize
    let target: ImageSize
    /// Exact 2× reduction on both axes: OpenCV switches to INTER_AREA (2×2 average).
    let halving: Bool
    let identity: Bool
    let xOffsets: [Int]  // first source byte of each output column (pixel × 3)
    let xNextOffsets: [Int]  // the neighbour's first byte (the same pixel at the right border)
    let xAlpha0: [Int32], xAlpha1: [Int32]
    let yOffsets: [Int]  // first source row of each output row; may be -1 or height - 1 (clamped when read)
    let yBeta0: [Int32], yBeta1: [Int32]

    /// Two horizontally resized source rows, kept between output rows (consecutive output rows often share them).
    struct Scratch {
        var rows: [Int32]
        var width: Int
        /// Which source row each half of `rows` holds.
        var cached: (Int, Int) = (-1, -1)
        init(width: Int) {
            self.width = width * 3
            rows = [Int32](repeating: 0, count: 2 * width * 3)
        }
    }

    init(source: ImageSize, target: ImageSize) {
        self.source = source
        self.target = target
        identity = source == target
        halving = source.width == 2 * target.width && source.height == 2 * target.height
        let (xo, xa) = Self.coefficients(
            source: source.width, target: target.width, bytesPerPixel: 3, clampAtBorders: true)
        let (yo, yb) = Self.coefficients(
            source: source.height, target: target.height, bytesPerPixel: 1, clampAtBorders: false)
        (xOffsets, xAlpha0, xAlpha1) = (xo, xa.map(\.0), xa.map(\.1))
        xNextOffsets = xo.map { min($0 + 3, (source.width - 1) * 3) }
        (yOffsets, yBeta0, yBeta1) = (yo, yb.map(\.0), yb.map(\.1))
    }

    /// OpenCV's `resizeGeneric` coefficient table: fx = float((d + 0.5)·scale − 0.5), weights
    /// saturate_cast<short>(w · 2048) with round-half-to-even. Columns clamp the position and weight at the borders;
    /// rows keep the weight and clamp only the row index when it is read (as OpenCV does).
    static func coefficients(source: Int, target: Int, bytesPerPixel: Int, clampAtBorders: Bool)
        -> ([Int], [(Int32, Int32)])
    {
        let scale = 1.0 / (Double(target) / Double(source))
        var offsets = [Int](repeating: 0, count: target)
        var weights = [(Int32, Int32)](repeating: (0, 0), count: target)
        for d in 0..<target {
            var f = Float((Double(d) + 0.5) * scale - 0.5)
            var s = Int(f.rounded(.down))
            f -= Float(s)
            if clampAtBorders, s < 0 { f = 0; s = 0 }
            if clampAtBorders, s >= source - 1 { f = 0; s = source - 1 }
            offsets[d] = s * bytesPerPixel
            weights[d] = (
                Int32(((1 - f) * coefficientScale).rounded(.toNearestOrEven)),
                Int32((f * coefficientScale).rounded(.toNearestOrEven))
            )
        }
        return (offsets, weights)
    }

    func resizeRow(_ y: Int, from pixels: Span<UInt8>, into row: inout MutableSpan<UInt8>, scratch: inout Scratch) {
        let srcStride = source.width * 3
        let n = target.width * 3
        if identity {
            for i in 0..<n { row[i] = pixels[y * srcStride + i] }
            return
        }
        if halving {
            let r0 = 2 * y * srcStride, r1 = r0 + srcStride
            for x in 0..<target.width {
                for c in 0..<3 {
                    let i = 6 * x + c
                    let sum = Int(pixels[r0 + i]) + Int(pixels[r0 + i + 3]) + Int(pixels[r1 + i]) + Int(pixels[r1 + i + 3])
                    row[3 * x + c] = UInt8(truncatingIfNeeded: (sum + 2) >> 2)
                }
            }
            return
        }
        let sy0 = min(max(yOffsets[y], 0), source.height - 1)
        let sy1 = min(max(yOffsets[y] + 1, 0), source.height - 1)
        // Slot 0 must hold sy0 and slot 1 sy1; reuse what the previous row computed.
        let (had0, had1) = scratch.cached
        scratch.cached = (sy0, sy1)
        var rows = scratch.rows.mutableSpan
        if had0 != sy0 || had1 != sy1 {
            if had1 == sy0 {
                for i in 0..<n { rows[i] = rows[n + i] }
            } else if had0 != sy0 {
                horizontal(row: sy0, pixels: pixels, into: &rows, at: 0)
            }
            horizontal(row: sy1, pixels: pixels, into: &rows, at: n)
        }
        let b0 = yBeta0[y], b1 = yBeta1[y]
        for i in 0..<n {
            // OpenCV's SIMD vertical pass (VResizeLinearVec_32s8u), which x86-64 builds run on whole rows:
            // v_mul_hi(S >> 4, beta) on int16 lanes, summed, then (x + 2) >> 2 with unsigned saturation.
            let v = (((rows[i] &>> 4) &* b0) &>> 16) &+ (((rows[n + i] &>> 4) &* b1) &>> 16)
            row[i] = UInt8(clamping: (v &+ 2) &>> 2)
        }
    }

    private func horizontal(row sy: Int, pixels: Span<UInt8>, into out: inout MutableSpan<Int32>, at start: Int) {
        let base = sy * source.width * 3
        let width = target.width
        let source = pixels.extracting(base..<(base + self.source.width * 3))
        let offsets = xOffsets.span, nextOffsets = xNextOffsets.span
        let alpha0 = xAlpha0.span, alpha1 = xAlpha1.span
        var destination = out.extracting(start..<(start + 3 * width))
        for x in 0..<width {
            let s0 = offsets[x], s1 = nextOffsets[x]
            let a0 = alpha0[x], a1 = alpha1[x]
            destination[3 * x] = Int32(source[s0]) &* a0 &+ Int32(source[s1]) &* a1
            destination[3 * x + 1] = Int32(source[s0 &+ 1]) &* a0 &+ Int32(source[s1 &+ 1]) &* a1
            destination[3 * x + 2] = Int32(source[s0 &+ 2]) &* a0 &+ Int32(source[s1 &+ 2]) &* a1
        }
    }
}
