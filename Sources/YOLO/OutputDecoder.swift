/// A candidate box in network-input pixels, before NMS.
public struct Candidate: Sendable, Equatable {
    public var x1: Float, y1: Float, x2: Float, y2: Float
    public var score: Float
    public var classID: Int

    /// Whether the box's corners and the score are finite numbers (a model's output may hold NaN or infinities).
    public var isFinite: Bool {
        x1.isFinite && y1.isFinite && x2.isFinite && y2.isFinite && score.isFinite
    }

    public init(x1: Float, y1: Float, x2: Float, y2: Float, score: Float, classID: Int) {
        self.x1 = x1
        self.y1 = y1
        self.x2 = x2
        self.y2 = y2
        self.score = score
        self.classID = classID
    }
}

/// Error raised when an output tensor does not fit the layout it is decoded as.
public struct OutputDecodeError: Error, Equatable, CustomStringConvertible {
    public var format: OutputFormat
    public var shape: [Int]
    public var reason: String
    /// Whether a value the decoding needed was NaN or an infinity (a release's `non_finite_outputs` counts these).
    public var nonFinite = false
    public var description: String { "cannot decode output \(shape) as \(format.rawValue): \(reason)" }
}

/// Decodes raw YOLO outputs into candidates (confidence-filtered, single best class per box), then runs NMS.
///
/// Thread-safety: stateless; all functions are pure.
public enum OutputDecoder {
    /// Candidates scoring above `options.confidence`, in network-input pixels.
    ///
    /// A box whose corners or score are not finite (NaN, an infinity, or a centre and size whose corners overflow) is
    /// no detection and is left out: NaN compares false with every threshold, so it cannot pass one, and an infinite
    /// score or corner has no place in a detection's JSON.
    /// - Parameters:
    ///   - values: the output tensor's elements, row-major.
    ///   - shape: the output's shape, `[1, A, B]`.
    ///   - format: its layout.
    /// - Throws: ``OutputDecodeError`` when the shape does not fit the values or the layout, or when a YOLOv10 box
    ///   above the threshold holds no class index (NaN, infinite, past `Int`'s range): outputs come from the model,
    ///   untrusted.
    public static func candidates(
        _ values: Span<Float>, shape: [Int], format: OutputFormat, options: DetectionOptions
    ) throws(OutputDecodeError) -> [Candidate] {
        guard shape.count == 3, shape[0] == 1, values.count == elementCount(shape[1], shape[2]) else {
            throw OutputDecodeError(format: format, shape: shape, reason: "expected [1, A, B] with A·B elements")
        }
        let threshold = options.confidence
        var out: [Candidate] = []
        switch format {
        case .yolov5:
            let (rows, width) = (shape[1], shape[2])
            guard width > 5 else {
                throw OutputDecodeError(format: format, shape: shape, reason: "fewer than 6 columns")
            }
            for r in 0..<rows {
                let base = r * width
                let objectness = values[base + 4]
                // Any class score obj·cls above threshold needs obj above it too (cls ≤ 1).
                guard objectness > threshold || !(objectness <= 1) else { continue }
                var best: Float = -.infinity
                var bestClass = 0
                for c in 0..<(width - 5) {
                    let s = objectness * values[base + 5 + c]
                    if s > best { best = s; bestClass = c }
                }
                // As Ultralytics: the box's class is its best over all classes; the filter then drops the box.
                guard best > threshold, options.classes?.contains(bestClass) ?? true else { continue }
                let candidate = fromCenter(values[base], values[base + 1], values[base + 2], values[base + 3],
                    best, bestClass)
                if candidate.isFinite { out.append(candidate) }
            }
        case .yolov8:
            let (channels, anchors) = (shape[1], shape[2])
            guard channels > 4 else {
                throw OutputDecodeError(format: format, shape: shape, reason: "fewer than 5 rows")
            }
            guard anchors > 0 else { break }  // no box, however many class rows the shape declares
            guard channels - 4 <= Int(Int32.max) else {
                throw OutputDecodeError(format: format, shape: shape, reason: "more than 2^31 class rows")
            }
            // Class-major layout: scan each class row, keeping the best per anchor.
            var best = [Float](repeating: -.infinity, count: anchors)
            var bestClass = [Int32](repeating: 0, count: anchors)
            for c in 0..<(channels - 4) {
                let base = (4 + c) * anchors
                for a in 0..<anchors {
                    let s = values[base + a]
                    if s > best[a] { best[a] = s; bestClass[a] = Int32(c) }
                }
            }
            for a in 0..<anchors where best[a] > threshold && options.classes?.contains(Int(bestClass[a])) ?? true {
                let candidate = fromCenter(values[a], values[anchors + a], values[2 * anchors + a],
                    values[3 * anchors + a], best[a], Int(bestClass[a]))
                if candidate.isFinite { out.append(candidate) }
            }
        case .yolov10:
            let (rows, width) = (shape[1], shape[2])
            guard width == 6 else {
                throw OutputDecodeError(format: format, shape: shape, reason: "expected 6 columns")
            }
            // As Ultralytics: the first `maxDetections` rows over the threshold in the model's order (its own top-k),
            // then the class filter — the top 100 rows of any class, then the persons among them, not the top 100
            // persons.
            var taken = 0
            for r in 0..<rows {
                let b = r * 6
                let score = values[b + 4]
                guard score > threshold else { continue }
                guard taken < options.maxDetections else { break }
                taken += 1
                // The class column is a float, truncated to the model's integer class; NaN, an infinity or a value
                // past Int's range is no class at all.
                guard let cls = Int(exactly: values[b + 5].rounded(.towardZero)) else {
                    throw OutputDecodeError(
                        format: format, shape: shape,
                        reason: "row \(r) holds class \(values[b + 5]), not a class index",
                        nonFinite: !values[b + 5].isFinite)
                }
                // Compared as Ultralytics compares (the column equal to a wanted class): 2.7 is shown as class 2
                // but is no class 2 to the filter.
                if let classes = options.classes {
                    guard Float(cls) == values[b + 5], classes.contains(cls) else { continue }
                }
                let candidate = Candidate(x1: values[b], y1: values[b + 1], x2: values[b + 2], y2: values[b + 3],
                    score: score, classID: cls)
                if candidate.isFinite { out.append(candidate) }
            }
        }
        return out
    }

    /// `a · b`, the elements of an `[1, a, b]` output; nil when a dimension is negative or the product overflows.
    private static func elementCount(_ a: Int, _ b: Int) -> Int? {
        guard a >= 0, b >= 0 else { return nil }
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? nil : product
    }

    @inline(__always)
    private static func fromCenter(
        _ cx: Float, _ cy: Float, _ w: Float, _ h: Float, _ s: Float, _ c: Int
    ) -> Candidate {
        Candidate(x1: cx - w / 2, y1: cy - h / 2, x2: cx + w / 2, y2: cy + h / 2, score: s, classID: c)
    }
}

/// Non-maximum suppression with Ultralytics' semantics.
public enum NonMaxSuppression {
    /// Ultralytics' `max_wh`: class offset that keeps boxes of different classes apart.
    public static let classOffset: Float = 7680
    /// Ultralytics' `max_nms`: most candidates considered, best first.
    public static let maxCandidates = 30_000

    /// Greedy NMS: best score first; a box is suppressed when its IoU with a kept box exceeds `iou` (strictly).
    /// Class-aware through class offsets unless `agnostic`. Returns at most `maxDetections`, best first.
    ///
    /// Work: each kept box is compared with the boxes after it, so at most `maxCandidates` × `maxDetections` IoU
    /// tests (the API caps `maxDetections` at `DetectionOptions.maxDetectionsLimit`). Boxes that cannot overlap
    /// anything — a non-finite coordinate, or an empty, inverted or non-finite area — are kept or dropped by rank
    /// alone and take no IoU test: their IoU with any box is 0 or NaN, never above a threshold in [0, 1], so the
    /// result is the one the full comparison gives. A hostile model's output of such boxes is therefore linear.
    public static func apply(_ candidates: [Candidate], iou: Float, maxDetections: Int, agnostic: Bool) -> [Candidate] {
        var iouTests = 0
        return apply(candidates, iou: iou, maxDetections: maxDetections, agnostic: agnostic, iouTests: &iouTests)
    }

    /// `apply`, counting the IoU tests it makes into `iouTests` (for the tests of its work bound).
    package static func apply(
        _ candidates: [Candidate], iou: Float, maxDetections: Int, agnostic: Bool, iouTests: inout Int
    ) -> [Candidate] {
        var sorted = candidates.sorted { $0.score > $1.score }
        if sorted.count > maxCandidates { sorted.removeLast(sorted.count - maxCandidates) }
        // Offset boxes as Ultralytics does (float32 arithmetic included).
        let boxes = sorted.map { c -> (Float, Float, Float, Float, Float) in
            let o = agnostic ? 0 : Float(c.classID) * classOffset
            let (x1, y1, x2, y2) = (c.x1 + o, c.y1 + o, c.x2 + o, c.y2 + o)
            return (x1, y1, x2, y2, (x2 - x1) * (y2 - y1))
        }
        // The boxes that can overlap another, in rank order; `next[i]`: the first of them ranked after box i.
        var overlapping: [Int] = []
        var next = [Int](repeating: 0, count: sorted.count)
        for (i, b) in boxes.enumerated() {
            next[i] = overlapping.count
            if b.0.isFinite, b.1.isFinite, b.2.isFinite, b.3.isFinite, b.4.isFinite, b.4 > 0 {
                overlapping.append(i)
                next[i] = overlapping.count
            }
        }
        var suppressed = [Bool](repeating: false, count: sorted.count)
        var kept: [Candidate] = []
        for i in sorted.indices where !suppressed[i] {
            guard kept.count < maxDetections else { break }
            kept.append(sorted[i])
            if kept.count >= maxDetections { break }
            let a = boxes[i]
            guard a.4.isFinite, a.4 > 0, a.0.isFinite, a.1.isFinite, a.2.isFinite, a.3.isFinite else { continue }
            for j in overlapping[next[i]...] where !suppressed[j] {
                // Boxes of other classes never suppress each other: the offset keeps them apart only while boxes lie
                // within it (an input side past 7680 px, which the schema allows, let them meet).
                if !agnostic && sorted[j].classID != sorted[i].classID { continue }
                iouTests += 1
                let b = boxes[j]
                let iw = max(0, min(a.2, b.2) - max(a.0, b.0))
                let ih = max(0, min(a.3, b.3) - max(a.1, b.1))
                let inter = iw * ih
                let overlap = inter / (a.4 + b.4 - inter)
                if overlap > iou { suppressed[j] = true }
            }
        }
        return kept
    }
}
