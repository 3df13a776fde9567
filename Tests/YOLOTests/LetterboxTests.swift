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
}
