import ImageCodecs
import Testing

@testable import YOLO

@Suite("Letterbox geometry and resize")
struct LetterboxTests {
    @Test("portrait photo into a square input: pad left and right")
    func portrait() {
        let g = LetterboxGeometry(source: ImageSize(width: 810, height: 1080), target: ImageSize(width: 416, height: 416))
        #expect(g.resized == ImageSize(width: 312, height: 416))
        #expect((g.left, g.right, g.top, g.bottom) == (52, 52, 0, 0))
    }

    @Test("landscape photo: pad top and bottom")
    func landscape() {
        let g = LetterboxGeometry(source: ImageSize(width: 1280, height: 720), target: ImageSize(width: 640, height: 640))
        #expect(g.resized == ImageSize(width: 640, height: 360))
        #expect((g.left, g.right, g.top, g.bottom) == (0, 0, 140, 140))
    }

    @Test("odd padding splits as round(d - 0.1) / round(d + 0.1)")
    func oddPadding() {
        // 1080x807 → 416x311: 105 rows of padding, 52 above and 53 below.
        let g = LetterboxGeometry(source: ImageSize(width: 1080, height: 807), target: ImageSize(width: 416, height: 416))
        #expect(g.resized == ImageSize(width: 416, height: 311))
        #expect((g.top, g.bottom) == (52, 53))
        #expect(g.top + g.resized.height + g.bottom == 416)
    }

    @Test("non-square (dynamic) target sizes", arguments: [
        (ImageSize(width: 810, height: 1080), ImageSize(width: 640, height: 320)),
        (ImageSize(width: 1280, height: 720), ImageSize(width: 320, height: 640)),
        (ImageSize(width: 333, height: 777), ImageSize(width: 1024, height: 1024)),
        (ImageSize(width: 1, height: 1), ImageSize(width: 320, height: 320)),
    ])
    func dynamicTargets(source: ImageSize, target: ImageSize) {
        let g = LetterboxGeometry(source: source, target: target)
        #expect(g.left + g.resized.width + g.right == target.width)
        #expect(g.top + g.resized.height + g.bottom == target.height)
        #expect(g.resized.width == target.width || g.resized.height == target.height)
    }

    @Test("boxes map back to the source image and are clipped")
    func mapBack() {
        let g = LetterboxGeometry(source: ImageSize(width: 810, height: 1080), target: ImageSize(width: 416, height: 416))
        let r = g.ratio
        let original = Box(x1: 100, y1: 200, x2: 500, y2: 900)
        let inNetwork = Box(x1: original.x1 * r + 52, y1: original.y1 * r, x2: original.x2 * r + 52, y2: original.y2 * r)
        let back = g.mapToSource(inNetwork)
        #expect(abs(back.x1 - 100) < 1e-9 && abs(back.y2 - 900) < 1e-9)
        let outside = g.mapToSource(Box(x1: -10, y1: -10, x2: 500, y2: 500))
        #expect(outside.x1 == 0 && outside.y1 == 0 && outside.x2 == 810 && outside.y2 == 1080)
    }

    @Test("the letterboxed image's edges map back to the source's, where rounding moved the image (Ultralytics 8.4.190's scale_boxes)",
          arguments: [
        // 999x1330 → 481x640: the image starts at x 79; the padding from the unrounded width was 80 (1 px left,
        // the right edge mapped to 997.5).
        (ImageSize(width: 999, height: 1330), ImageSize(width: 640, height: 640)),
        (ImageSize(width: 1330, height: 999), ImageSize(width: 640, height: 640)),
        (ImageSize(width: 810, height: 1080), ImageSize(width: 416, height: 416)),
        (ImageSize(width: 333, height: 777), ImageSize(width: 1024, height: 512)),
    ])
    func edgesMapBack(source: ImageSize, target: ImageSize) {
        let g = LetterboxGeometry(source: source, target: target)
        let drawn = Box(x1: Double(g.left), y1: Double(g.top), x2: Double(g.left + g.resized.width),
            y2: Double(g.top + g.resized.height))
        let back = g.mapToSource(drawn)
        #expect(abs(back.x1) < 1e-9 && abs(back.y1) < 1e-9, "\(back)")
        #expect(abs(back.x2 - Double(source.width)) < 1e-9 && abs(back.y2 - Double(source.height)) < 1e-9, "\(back)")
    }

    @Test("a thin image keeps a pixel across (Ultralytics: max(round(w·r), 1)); its box maps back inside it")
    func thinImage() {
        let g = LetterboxGeometry(source: ImageSize(width: 1, height: 3000), target: ImageSize(width: 416, height: 416))
        #expect(g.resized == ImageSize(width: 1, height: 416))
        #expect(g.left + 1 + g.right == 416)
        let back = g.mapToSource(Box(x1: Double(g.left), y1: 0, x2: Double(g.left + 1), y2: 416))
        #expect(back.x1 == 0 && back.x2 == 1 && back.y2 == 3000)
    }

    @Test("tensor layout: planar RGB, /255, pad 114/255")
    func tensorLayout() {
        // A 2x1 image, red then blue, into a 4x4 input: resized 4x2, two pad rows above? r = min(4/1, 4/2) = 2.
        let image = RGBImage(width: 2, height: 1, pixels: [255, 0, 0, 0, 0, 255])
        let (tensor, g) = LetterboxTransform(target: ImageSize(width: 4, height: 4)).tensor(from: image)
        #expect(g.resized == ImageSize(width: 4, height: 2))
        #expect((g.top, g.bottom) == (1, 1))
        #expect(tensor.count == 3 * 16)
        #expect(tensor[0] == Float(114) / 255)  // top-left pad, R plane
        #expect(tensor[4] == 1)  // row 1, x 0: red, R plane
        #expect(tensor[16 + 4] == 0)  // G plane
        #expect(tensor[32 + 7] == 1)  // row 1, x 3: blue, B plane
    }

    @Test("an exact 2x reduction averages 2x2 blocks (OpenCV's INTER_AREA switch)")
    func halving() {
        let image = RGBImage(width: 4, height: 2, pixels: [
            0, 0, 0, 10, 10, 10, 100, 100, 100, 101, 101, 101,
            20, 20, 20, 31, 31, 31, 200, 200, 200, 202, 202, 202,
        ])
        var transform = LetterboxTransform(target: ImageSize(width: 2, height: 2))
        transform.padValue = 0
        let out = transform.image(from: image)
        // resized 2x1, padded: top 0 (round(0.4)), bottom 1 (round(0.6)).
        #expect(Array(out.pixels[0..<6]) == [15, 15, 15, 151, 151, 151])
    }

    @Test("identity size copies pixels unchanged")
    func identity() {
        let pixels = (0..<(8 * 8 * 3)).map { UInt8($0 % 251) }
        let image = RGBImage(width: 8, height: 8, pixels: pixels)
        #expect(LetterboxTransform(target: ImageSize(width: 8, height: 8)).image(from: image).pixels == pixels)
    }

    @Test("a constant image stays constant through any resize")
    func constant() {
        let image = RGBImage(width: 37, height: 23, fill: (77, 78, 79))
        var transform = LetterboxTransform(target: ImageSize(width: 64, height: 64))
        transform.padValue = 77
        let out = transform.image(from: image)
        for i in stride(from: 0, to: out.pixels.count, by: 3) where out.pixels[i] != 77 {
            Issue.record("pixel \(i / 3) is \(out.pixels[i])")
            return
        }
    }

    @Test("extreme channel values stay exact through upscaling, downscaling and halving", arguments: [
        ImageSize(width: 37, height: 23), ImageSize(width: 200, height: 150), ImageSize(width: 128, height: 128),
    ])
    func extremes(source: ImageSize) {
        // 255 next to 0 in every pixel: the horizontal pass's packed sums must not spill between channels.
        let image = RGBImage(width: source.width, height: source.height, fill: (255, 0, 255))
        var transform = LetterboxTransform(target: ImageSize(width: 64, height: 64))
        transform.padValue = 255
        let out = transform.image(from: image)
        let resized = LetterboxGeometry(source: source, target: transform.target).resized
        var wrong = 0, zeros = 0
        for i in stride(from: 0, to: out.pixels.count, by: 3) {
            if out.pixels[i] != 255 || out.pixels[i + 2] != 255 { wrong += 1 }
            if out.pixels[i + 1] == 0 { zeros += 1 }
        }
        #expect(wrong == 0)
        #expect(zeros == resized.width * resized.height)
    }

    /// Deterministic pseudo-random pixels (xorshift), so resizes exercise every weight.
    static func noise(width: Int, height: Int) -> RGBImage {
        var state: UInt32 = 2_463_534_242
        let pixels = (0..<(width * height * 3)).map { _ -> UInt8 in
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            return UInt8(truncatingIfNeeded: state)
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    @Test("the tensor does not depend on how many threads resize", arguments: [
        (ImageSize(width: 401, height: 299), 320), (ImageSize(width: 150, height: 211), 608),
    ])
    func threadsDoNotMatter(source: ImageSize, size: Int) {
        let image = Self.noise(width: source.width, height: source.height)
        var transform = LetterboxTransform(target: ImageSize(width: size, height: size))
        transform.parallelism = 1
        let single = transform.tensor(from: image).tensor
        for threads in [2, 3] {
            transform.parallelism = threads
            let tensor = transform.tensor(from: image).tensor
            #expect(tensor.elementsEqual(single) { $0.bitPattern == $1.bitPattern }, "\(threads) threads")
        }
    }

    @Test("the tensor holds the letterboxed image's bytes / 255, planar, in the channel order", arguments: [
        ChannelOrder.rgb, .bgr,
    ])
    func tensorMatchesImage(order: ChannelOrder) {
        let image = Self.noise(width: 97, height: 61)
        var transform = LetterboxTransform(target: ImageSize(width: 75, height: 75))
        transform.channelOrder = order
        let bytes = transform.image(from: image).pixels
        let tensor = transform.tensor(from: image).tensor
        let plane = 75 * 75
        let planes = order == .rgb ? [0, plane, 2 * plane] : [2 * plane, plane, 0]
        var mismatches = 0
        for i in 0..<plane {
            for c in 0..<3 where tensor[planes[c] + i] != Float(bytes[3 * i + c]) / 255 { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test("one-pixel-wide and one-pixel-tall sources stretch their only column or row", arguments: [
        ImageSize(width: 1, height: 7), ImageSize(width: 7, height: 1),
    ])
    func thinSources(source: ImageSize) {
        let image = Self.noise(width: source.width, height: source.height)
        var transform = LetterboxTransform(target: ImageSize(width: 14, height: 14))
        transform.padValue = 0
        let out = transform.image(from: image)
        // 1×7 → 2×14 (columns 6 and 7), 7×1 → 14×2 (rows 6 and 7): the two copies of each source pixel agree.
        for i in 0..<14 {
            let (a, b) = source.width == 1 ? ((i * 14 + 6) * 3, (i * 14 + 7) * 3) : ((6 * 14 + i) * 3, (7 * 14 + i) * 3)
            #expect(out.pixels[a..<(a + 3)] == out.pixels[b..<(b + 3)], "index \(i)")
        }
    }
}
