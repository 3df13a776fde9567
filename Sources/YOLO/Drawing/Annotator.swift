public import ImageCodecs

/// One box to draw: corners in image pixels (x to the right, y down) and the label text shown above it.
public struct Annotation: Sendable {
    public var x1: Double
    public var y1: Double
    public var x2: Double
    public var y2: Double
    /// The text drawn in the label, e.g. `"person 0.87"`; printable ASCII (anything else draws as `?`).
    public var label: String
    /// Picks the colour from ``Annotator/color(forClass:)``.
    public var classID: Int

    public init(x1: Double, y1: Double, x2: Double, y2: Double, label: String, classID: Int) {
        self.x1 = x1
        self.y1 = y1
        self.x2 = x2
        self.y2 = y2
        self.label = label
        self.classID = classID
    }
}

/// Draws detection boxes and their labels onto an ``RGBImage``, in the style of Ultralytics' plots.
///
/// Pure Swift with a built-in 5×7 bitmap font; no font files. Everything is clipped to the image, so boxes
/// partly or wholly outside it are safe. Stateless; thread-safe.
public enum Annotator {
    /// Draws each annotation's box outline and a filled label in the class colour.
    ///
    /// The outline is `lineWidth` pixels thick, drawn inside the box. The label sits above the box, or just
    /// inside its top edge when there is no room above, shifted left to stay in the image; its text is white
    /// or black, whichever reads better on the class colour, and its glyphs are scaled by `lineWidth`.
    ///
    /// - Parameters:
    ///   - annotations: the boxes, drawn in order (later ones on top).
    ///   - image: the image to draw on.
    ///   - lineWidth: outline thickness in pixels; nil scales it with the image as Ultralytics does:
    ///     `max(round((height + width + 3) / 2 × 0.003), 2)` (the 3 is Ultralytics' sum over the HWC shape).
    public static func draw(_ annotations: [Annotation], on image: inout RGBImage, lineWidth: Int? = nil) {
        guard image.width > 0, image.height > 0 else { return }
        let line = max(lineWidth ?? defaultLineWidth(width: image.width, height: image.height), 1)
        var canvas = Canvas(image: image)
        image = RGBImage(width: 0, height: 0, pixels: [])  // hand the storage to the canvas: no copy-on-write
        for annotation in annotations {
            draw(annotation, on: &canvas, lineWidth: line)
        }
        image = canvas.image
    }

    /// Ultralytics' 20-colour palette (`ultralytics.utils.plotting.Colors`), indexed by class modulo 20.
    public static func color(forClass classID: Int) -> (UInt8, UInt8, UInt8) {
        let hex = palette[((classID % palette.count) + palette.count) % palette.count]
        return (UInt8(hex >> 16 & 0xFF), UInt8(hex >> 8 & 0xFF), UInt8(hex & 0xFF))
    }

    static func defaultLineWidth(width: Int, height: Int) -> Int {
        max(Int((Double(height + width + 3) / 2 * 0.003).rounded(.toNearestOrEven)), 2)
    }

    private static let palette: [UInt32] = [
        0xFF3838, 0xFF9D97, 0xFF701F, 0xFFB21D, 0xCFD231, 0x48F90A, 0x92CC17, 0x3DDB86, 0x1A9334, 0x00D4BB,
        0x2C99A8, 0x00C2FF, 0x344593, 0x6473FF, 0x0018EC, 0x8438FF, 0x520085, 0xCB38FF, 0xFF95C8, 0xFF37C7,
    ]

    // MARK: - One annotation

    private static func draw(_ annotation: Annotation, on canvas: inout Canvas, lineWidth: Int) {
        let values = [annotation.x1, annotation.y1, annotation.x2, annotation.y2]
        guard values.allSatisfy(\.isFinite) else { return }
        // Clamp far-away coordinates before converting, so Int() cannot trap.
        let limit = Double(max(canvas.width, canvas.height) * 4 + 1024)
        let clamped = values.map { Int(min(max($0, -limit), limit).rounded()) }
        let (left, right) = (min(clamped[0], clamped[2]), max(clamped[0], clamped[2]))
        let (top, bottom) = (min(clamped[1], clamped[3]), max(clamped[1], clamped[3]))
        // A box wholly outside the image draws nothing, label included.
        guard right >= 0, bottom >= 0, left < canvas.width, top < canvas.height else { return }
        let color = color(forClass: annotation.classID)

        // Outline: four bands inside the box.
        let band = min(lineWidth, max((right - left + 1) / 2, 1), max((bottom - top + 1) / 2, 1))
        canvas.fill(x: left, y: top, width: right - left, height: band, color: color)
        canvas.fill(x: left, y: bottom - band, width: right - left, height: band, color: color)
        canvas.fill(x: left, y: top, width: band, height: bottom - top, color: color)
        canvas.fill(x: right - band, y: top, width: band, height: bottom - top, color: color)

        guard !annotation.label.isEmpty else { return }
        drawLabel(annotation.label, atBoxLeft: left, top: top, on: &canvas, color: color, lineWidth: lineWidth)
    }

    private static func drawLabel(
        _ text: String, atBoxLeft boxLeft: Int, top boxTop: Int, on canvas: inout Canvas,
        color: (UInt8, UInt8, UInt8), lineWidth: Int
    ) {
        let scale = max(lineWidth, 1)  // 5×7 glyphs at scale = line width ≈ Ultralytics' Hershey text size
        let padding = scale
        let labelWidth = BitmapFont.width(of: text) * scale + 2 * padding
        let labelHeight = BitmapFont.glyphHeight * scale + 2 * padding
        let x = max(min(boxLeft, canvas.width - labelWidth), 0)
        let y = boxTop - labelHeight >= 0 ? boxTop - labelHeight : max(boxTop, 0)
        canvas.fill(x: x, y: y, width: labelWidth, height: labelHeight, color: color)

        let textColor = textColor(on: color)
        var originX = x + padding
        for scalar in text.unicodeScalars {
            // Past the right edge nothing more shows: a label of megabytes (class names come from the model) costs
            // no more than one as wide as the image.
            guard originX < canvas.width else { break }
            let mask = BitmapFont.glyph(for: scalar)
            for row in 0..<BitmapFont.glyphHeight {
                for column in 0..<BitmapFont.glyphWidth where BitmapFont.isInk(mask, row: row, column: column) {
                    canvas.fill(
                        x: originX + column * scale, y: y + padding + row * scale, width: scale, height: scale,
                        color: textColor)
                }
            }
            originX += BitmapFont.advance * scale
        }
    }

    /// Black on light colours, white on dark ones (Rec. 601 luma).
    static func textColor(on color: (UInt8, UInt8, UInt8)) -> (UInt8, UInt8, UInt8) {
        let luma = 0.299 * Double(color.0) + 0.587 * Double(color.1) + 0.114 * Double(color.2)
        return luma > 150 ? (0, 0, 0) : (255, 255, 255)
    }
}

/// The pixels being drawn on, with a clipped rectangle fill as the only primitive.
private struct Canvas {
    var image: RGBImage
    var width: Int { image.width }
    var height: Int { image.height }

    /// Fills the part of the rectangle that lies inside the image.
    mutating func fill(x: Int, y: Int, width rectWidth: Int, height rectHeight: Int, color: (UInt8, UInt8, UInt8)) {
        let x0 = max(x, 0)
        let y0 = max(y, 0)
        let x1 = min(x + rectWidth, width)
        let y1 = min(y + rectHeight, height)
        guard x0 < x1, y0 < y1 else { return }
        let stride = width * 3
        var pixels = image.pixels.mutableSpan
        for row in y0..<y1 {
            var index = row * stride + x0 * 3
            for _ in x0..<x1 {
                pixels[index] = color.0
                pixels[index + 1] = color.1
                pixels[index + 2] = color.2
                index += 3
            }
        }
    }
}
