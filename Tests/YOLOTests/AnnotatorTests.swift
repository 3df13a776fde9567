import ImageCodecs
import Testing
import YOLO

@Suite("Annotator")
struct AnnotatorTests {
    static func pixel(_ image: RGBImage, _ x: Int, _ y: Int) -> (UInt8, UInt8, UInt8) {
        let at = (y * image.width + x) * 3
        return (image.pixels[at], image.pixels[at + 1], image.pixels[at + 2])
    }

    static func same(_ a: (UInt8, UInt8, UInt8), _ b: (UInt8, UInt8, UInt8)) -> Bool {
        a.0 == b.0 && a.1 == b.1 && a.2 == b.2
    }

    @Test("Palette follows Ultralytics and wraps every 20 classes")
    func palette() {
        #expect(Self.same(Annotator.color(forClass: 0), (0xFF, 0x38, 0x38)))
        #expect(Self.same(Annotator.color(forClass: 19), (0xFF, 0x37, 0xC7)))
        #expect(Self.same(Annotator.color(forClass: 20), Annotator.color(forClass: 0)))
        #expect(Self.same(Annotator.color(forClass: -1), Annotator.color(forClass: 19)))
    }

    @Test("A box gets its outline, a filled label above it with white text, and nothing inside")
    func boxAndLabel() {
        var image = RGBImage(width: 200, height: 120, fill: (0, 0, 0))
        Annotator.draw(
            [Annotation(x1: 40, y1: 60, x2: 160, y2: 110, label: "person 0.87", classID: 0)], on: &image, lineWidth: 2)
        let red = Annotator.color(forClass: 0)
        #expect(Self.same(Self.pixel(image, 100, 60), red))  // top edge
        #expect(Self.same(Self.pixel(image, 100, 61), red))  // 2 px thick
        #expect(Self.same(Self.pixel(image, 40, 90), red))  // left edge
        #expect(Self.same(Self.pixel(image, 100, 85), (0, 0, 0)))  // interior untouched
        // Label: 7×2 glyph rows + 2×2 padding = 18 px tall, directly above the box, starting at the box's left.
        #expect(Self.same(Self.pixel(image, 41, 43), red))  // padding corner
        #expect(Self.same(Self.pixel(image, 41, 41), (0, 0, 0)))  // above the label
        var white = 0
        for y in 42..<60 { for x in 40..<200 where Self.same(Self.pixel(image, x, y), (255, 255, 255)) { white += 1 } }
        #expect(white > 100, "label text pixels: \(white)")
    }

    @Test("A box at the top edge gets its label inside; off-image boxes are clipped, not fatal")
    func clipping() {
        var image = RGBImage(width: 100, height: 80, fill: (0, 0, 0))
        Annotator.draw([Annotation(x1: 10, y1: 0, x2: 90, y2: 70, label: "bus", classID: 5)], on: &image, lineWidth: 2)
        let green = Annotator.color(forClass: 5)
        #expect(Self.same(Self.pixel(image, 11, 1), green))  // label padding, inside the top of the box
        var black = 0  // text on light green is black: look for it inside the label area
        for y in 2..<16 { for x in 12..<40 where Self.same(Self.pixel(image, x, y), (0, 0, 0)) { black += 1 } }
        #expect(black > 10)

        var untouched = RGBImage(width: 50, height: 40, fill: (9, 9, 9))
        let original = untouched
        Annotator.draw(
            [
                Annotation(x1: -500, y1: -500, x2: -400, y2: -400, label: "far away", classID: 1),
                Annotation(x1: .nan, y1: 0, x2: 10, y2: 10, label: "nan", classID: 1),
            ], on: &untouched)
        let unchanged = untouched == original  // (a Bool, so a failure does not print 6000 bytes)
        #expect(unchanged)
        Annotator.draw(
            [Annotation(x1: -1e300, y1: -20, x2: 1e300, y2: 1e9, label: "huge é ✓", classID: 2)], on: &untouched)
        let changed = untouched != original
        #expect(changed)
    }
}
