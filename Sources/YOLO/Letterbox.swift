import ImageCodecs

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

    public init(target: ImageSize) { self.target = target }

    private static let unitLUT: [Float] = (0..<256).map { Float($0) / 255 }

    /// Letterboxes `image` into a planar float tensor of 3 × target.height × target.width.
    public func tensor(from image: RGBImage) -> (tensor: [Float], geometry: LetterboxGeometry) {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        let plane = target.width * target.height
        let lut = Self.unitLUT
        let padFloat = lut[Int(padValue)]
        var out = [Float](repeating: padFloat, count: 3 * plane)
        let (rw, rh) = (geometry.resized.width, geometry.resized.height)
        let channelOffsets = channelOrder == .rgb ? [0, plane, 2 * plane] : [2 * plane, plane, 0]
        let (c0, c1, c2) = (channelOffsets[0], channelOffsets[1], channelOffsets[2])
        var row = [UInt8](repeating: 0, count: rw * 3)
        let resizer = LinearResizer(source: ImageSize(width: image.width, height: image.height), target: geometry.resized)
        var scratch = LinearResizer.Scratch(width: rw)
        for y in 0..<rh {
            resizer.resizeRow(y, from: image.pixels, into: &row, scratch: &scratch)
            let base = (y + geometry.top) * target.width + geometry.left
            for x in 0..<rw {
                out[c0 + base + x] = lut[Int(row[3 * x])]
                out[c1 + base + x] = lut[Int(row[3 * x + 1])]
                out[c2 + base + x] = lut[Int(row[3 * x + 2])]
            }
        }
        return (out, geometry)
    }

    /// Letterboxes `image` into an RGB image of the target size (for inspection and tests against OpenCV).
    public func image(from image: RGBImage) -> RGBImage {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        var out = RGBImage(width: target.width, height: target.height, fill: (padValue, padValue, padValue))
        let rw = geometry.resized.width
        var row = [UInt8](repeating: 0, count: rw * 3)
        let resizer = LinearResizer(source: ImageSize(width: image.width, height: image.height), target: geometry.resized)
        var scratch = LinearResizer.Scratch(width: rw)
        for y in 0..<geometry.resized.height {
            resizer.resizeRow(y, from: image.pixels, into: &row, scratch: &scratch)
            let base = ((y + geometry.top) * target.width + geometry.left) * 3
            out.pixels.replaceSubrange(base..<(base + rw * 3), with: row)
        }
        return out
    }
}

/// OpenCV `cv::resize(INTER_LINEAR)` for 8-bit, 3-channel images, one output row at a time.
struct LinearResizer: Sendable {
    static let coefficientScale: Float = 2048  // INTER_RESIZE_COEF_SCALE

    let source: ImageSize
    let target: ImageSize
    /// Exact 2× reduction on both axes: OpenCV switches to INTER_AREA (2×2 average).
    let halving: Bool
    let identity: Bool
    let xOffsets: [Int]  // first source pixel of each output column, in bytes (× 3)
    let xAlpha: [(Int32, Int32)]
    let yOffsets: [Int]
    let yBeta: [(Int32, Int32)]

    struct Scratch {
        var row0: [Int32]
        var row1: [Int32]
        var cachedRows: (Int, Int) = (-1, -1)
        init(width: Int) {
            row0 = [Int32](repeating: 0, count: width * 3)
            row1 = [Int32](repeating: 0, count: width * 3)
        }
    }

    init(source: ImageSize, target: ImageSize) {
        self.source = source
        self.target = target
        identity = source == target
        halving = source.width == 2 * target.width && source.height == 2 * target.height
        (xOffsets, xAlpha) = Self.coefficients(
            source: source.width, target: target.width, bytesPerPixel: 3, clampAtBorders: true)
        (yOffsets, yBeta) = Self.coefficients(
            source: source.height, target: target.height, bytesPerPixel: 1, clampAtBorders: false)
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

    func resizeRow(_ y: Int, from pixels: [UInt8], into row: inout [UInt8], scratch: inout Scratch) {
        let srcStride = source.width * 3
        let n = target.width * 3
        if identity {
            row.replaceSubrange(0..<n, with: pixels[(y * srcStride)..<(y * srcStride + n)])
            return
        }
        if halving {
            let r0 = 2 * y * srcStride, r1 = r0 + srcStride
            for x in 0..<target.width {
                for c in 0..<3 {
                    let i = 6 * x + c
                    let sum = Int(pixels[r0 + i]) + Int(pixels[r0 + i + 3]) + Int(pixels[r1 + i]) + Int(pixels[r1 + i + 3])
                    row[3 * x + c] = UInt8((sum + 2) >> 2)
                }
            }
            return
        }
        let sy = min(max(yOffsets[y], 0), source.height - 1)
        let sy1 = min(max(yOffsets[y] + 1, 0), source.height - 1)
        if scratch.cachedRows.0 != sy {
            if scratch.cachedRows.1 == sy {
                swap(&scratch.row0, &scratch.row1)
            } else {
                horizontal(row: sy, pixels: pixels, into: &scratch.row0)
            }
        }
        if scratch.cachedRows.1 != sy1 || scratch.cachedRows.0 != sy {
            horizontal(row: sy1, pixels: pixels, into: &scratch.row1)
        }
        scratch.cachedRows = (sy, sy1)
        let (b0, b1) = yBeta[y]
        for i in 0..<n {
            // OpenCV's SIMD vertical pass (VResizeLinearVec_32s8u), which x86-64 builds run on whole rows:
            // v_mul_hi(S >> 4, beta) on int16 lanes, summed, then (x + 2) >> 2 with unsigned saturation.
            let v = (((scratch.row0[i] >> 4) * b0) >> 16) + (((scratch.row1[i] >> 4) * b1) >> 16)
            row[i] = UInt8(clamping: (v + 2) >> 2)
        }
    }

    private func horizontal(row sy: Int, pixels: [UInt8], into out: inout [Int32]) {
        let base = sy * source.width * 3
        let last = base + (source.width - 1) * 3
        for x in 0..<target.width {
            let s0 = base + xOffsets[x]
            let s1 = min(s0 + 3, last)
            let (a0, a1) = xAlpha[x]
            out[3 * x] = Int32(pixels[s0]) * a0 + Int32(pixels[s1]) * a1
            out[3 * x + 1] = Int32(pixels[s0 + 1]) * a0 + Int32(pixels[s1 + 1]) * a1
            out[3 * x + 2] = Int32(pixels[s0 + 2]) * a0 + Int32(pixels[s1 + 2]) * a1
        }
    }
}
