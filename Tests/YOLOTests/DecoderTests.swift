import TestSupport
import Testing

@testable import YOLO

@Suite("Output decoders and NMS")
struct DecoderTests {
    @Test("YOLOv5 rows: score is objectness times class probability")
    func yolov5() throws {
        // [1, 3, 7]: nc = 2
        let values: [Float] = [
            100, 100, 20, 40, 0.9, 0.1, 0.8,  // class 1, 0.72
            50, 50, 10, 10, 0.2, 0.9, 0.1,  // 0.18: below 0.25
            10, 20, 4, 8, 1.0, 0.3, 0.2,  // class 0, 0.3
        ]
        let c = try OutputDecoder.candidates(values.span, shape: [1, 3, 7], format: .yolov5, options: .init())
        #expect(c.count == 2)
        #expect(c[0] == Candidate(x1: 90, y1: 80, x2: 110, y2: 120, score: 0.9 * 0.8, classID: 1))
        #expect(c[1].classID == 0 && c[1].score == 0.3 && c[1].x1 == 8 && c[1].y2 == 24)
    }

    @Test("YOLOv8 layout is class-major: [1, 4 + nc, N]")
    func yolov8() throws {
        // nc = 2, N = 3
        let values: [Float] = [
            10, 20, 30,  // cx
            10, 20, 30,  // cy
            2, 4, 6,  // w
            2, 4, 6,  // h
            0.1, 0.9, 0.3,  // class 0
            0.5, 0.2, 0.1,  // class 1
        ]
        let c = try OutputDecoder.candidates(values.span, shape: [1, 6, 3], format: .yolov8, options: .init())
        #expect(c.map(\.classID) == [1, 0, 0])
        #expect(c.map(\.score) == [0.5, 0.9, 0.3])
        #expect(c[1] == Candidate(x1: 18, y1: 18, x2: 22, y2: 22, score: 0.9, classID: 0))
    }

    @Test("YOLOv10 end-to-end rows are taken as they are")
    func yolov10() throws {
        let values: [Float] = [1, 2, 3, 4, 0.9, 7, 5, 6, 7, 8, 0.1, 3, 9, 9, 19, 19, 0.5, 2]
        let c = try OutputDecoder.candidates(values.span, shape: [1, 3, 6], format: .yolov10, options: .init())
        #expect(c == [
            Candidate(x1: 1, y1: 2, x2: 3, y2: 4, score: 0.9, classID: 7),
            Candidate(x1: 9, y1: 9, x2: 19, y2: 19, score: 0.5, classID: 2),
        ])
        let only2 = try OutputDecoder.candidates(
            values.span, shape: [1, 3, 6], format: .yolov10, options: .init(classes: [2]))
        #expect(only2.map(\.classID) == [2])
    }

    @Test("YOLOv10 as Ultralytics: the first max_det rows over the threshold in model order, then the exact class filter")
    func yolov10MaxDetectionsThenClasses() throws {
        // Rows: class 0 at 0.9, class 2 at 0.8, class 0 at 0.7, class 2.7 at 0.6.
        let values: [Float] = [0, 0, 1, 1, 0.9, 0, 0, 0, 2, 2, 0.8, 2, 0, 0, 3, 3, 0.7, 0, 0, 0, 4, 4, 0.6, 2.7]
        func decode(_ options: DetectionOptions) throws -> [Candidate] {
            try OutputDecoder.candidates(values.span, shape: [1, 4, 6], format: .yolov10, options: options)
        }
        // The top two rows of any class, then the persons among them: one, not the top two persons.
        #expect(try decode(.init(maxDetections: 2, classes: [0])).map(\.score) == [0.9])
        #expect(try decode(.init(maxDetections: 3)).map(\.score) == [0.9, 0.8, 0.7])
        // 2.7 is shown as class 2, but the filter wants a 2.
        #expect(try decode(.init()).last?.classID == 2)
        #expect(try decode(.init(classes: [2])).map(\.score) == [0.8])
        #expect(try decode(.init(maxDetections: 0)).isEmpty)
    }

    @Test("confidence threshold is strict; the class filter drops a box whose best class is not asked for")
    func thresholds() throws {
        let values: [Float] = [10, 10, 2, 2, 1.0, 0.25, 0.6]
        let atThreshold = try OutputDecoder.candidates(
            values.span, shape: [1, 1, 7], format: .yolov5, options: .init(confidence: 0.6))
        #expect(atThreshold.isEmpty)
        // Ultralytics: the best class over all (1, at 0.6), then the filter — not the best among the classes asked
        // for (which made the box a class 0 at 0.25).
        for format in [OutputFormat.yolov5, .yolov8] {
            // YOLOv8's layout is class-major with no objectness: [x, y, w, h, cls0, cls1] as rows of one anchor.
            let row: [Float] = format == .yolov5 ? values : [10, 10, 2, 2, 0.25, 0.6]
            let shape = format == .yolov5 ? [1, 1, 7] : [1, 6, 1]
            let other = try OutputDecoder.candidates(
                row.span, shape: shape, format: format, options: .init(confidence: 0.2, classes: [0]))
            #expect(other.isEmpty, "\(format)")
            let asked = try OutputDecoder.candidates(
                row.span, shape: shape, format: format, options: .init(confidence: 0.2, classes: [1]))
            #expect(asked.map(\.classID) == [1] && asked.map(\.score) == [0.6], "\(format)")
        }
    }

    @Test("a YOLOv10 class that is NaN or infinite is a non-finite output, by type (a release counts those)")
    func nonFiniteClass() {
        for bad in [Float.nan, .infinity, 1e30] {
            let values: [Float] = [0, 0, 10, 10, 0.9, bad]
            let error = #expect(throws: OutputDecodeError.self) {
                try OutputDecoder.candidates(values.span, shape: [1, 1, 6], format: .yolov10, options: .init())
            }
            #expect(error?.nonFinite == !bad.isFinite, "\(bad)")
            #expect(error.map { DetectionError.output($0).isNonFiniteOutput } == !bad.isFinite)
        }
        // An error whose text says "nan" is not one (it was counted as one: a model named "…nano…").
        struct Named: Error, CustomStringConvertible { var description: String { "yolo11-nano.onnx: run failed" } }
        #expect(!DetectionError.inference(Named()).isNonFiniteOutput)
    }

    @Test("a shape that does not fit the data is an error, not a crash")
    func badShape() {
        let values: [Float] = [1, 2, 3]
        #expect(throws: OutputDecodeError.self) {
            try OutputDecoder.candidates(values.span, shape: [1, 2, 7], format: .yolov5, options: .init())
        }
        #expect(throws: OutputDecodeError.self) {
            try OutputDecoder.candidates(values.span, shape: [1, 3], format: .yolov8, options: .init())
        }
    }

    func box(_ x: Float, _ score: Float, _ cls: Int = 0, size: Float = 10) -> Candidate {
        Candidate(x1: x, y1: 0, x2: x + size, y2: size, score: score, classID: cls)
    }

    @Test("NMS keeps the best of overlapping same-class boxes")
    func nmsSameClass() {
        let kept = NonMaxSuppression.apply([box(1, 0.8), box(0, 0.9), box(50, 0.5)], iou: 0.7, maxDetections: 300,
            agnostic: false)
        #expect(kept.map(\.score) == [0.9, 0.5])
    }

    @Test("NMS is class-aware, unless agnostic")
    func nmsClasses() {
        let input = [box(0, 0.9, 0), box(1, 0.8, 1)]
        #expect(NonMaxSuppression.apply(input, iou: 0.7, maxDetections: 300, agnostic: false).count == 2)
        #expect(NonMaxSuppression.apply(input, iou: 0.7, maxDetections: 300, agnostic: true).count == 1)
        // Past the class offset (7680 px; an input side up to 8192 is allowed): class 1's box at x 20 lands, offset,
        // on class 0's at x 7700. It was suppressed.
        let wide = [Candidate(x1: 7700, y1: 7700, x2: 8000, y2: 8000, score: 0.9, classID: 0),
                    Candidate(x1: 20, y1: 20, x2: 320, y2: 320, score: 0.8, classID: 1)]
        #expect(NonMaxSuppression.apply(wide, iou: 0.7, maxDetections: 300, agnostic: false).count == 2)
    }

    @Test("NMS suppresses only when IoU is strictly above the threshold")
    func nmsStrict() {
        // Boxes [0,10] and [5,15] on x, same y: IoU = 50 / 150 = 1/3.
        let input = [box(0, 0.9), box(5, 0.8)]
        #expect(NonMaxSuppression.apply(input, iou: 1.0 / 3.0, maxDetections: 300, agnostic: false).count == 2)
        #expect(NonMaxSuppression.apply(input, iou: 0.33, maxDetections: 300, agnostic: false).count == 1)
    }

    @Test("NMS with max_det 0 keeps nothing (it kept one)")
    func nmsNone() {
        #expect(NonMaxSuppression.apply([box(0, 0.9), box(50, 0.8)], iou: 0.7, maxDetections: 0, agnostic: false)
            .isEmpty)
    }

    @Test("NMS honours max_det and empty input")
    func nmsLimits() {
        let many = (0..<50).map { box(Float($0) * 20, Float($0) / 100) }
        let kept = NonMaxSuppression.apply(many, iou: 0.7, maxDetections: 5, agnostic: false)
        #expect(kept.count == 5)
        #expect(kept.first?.score == 0.49)
        #expect(NonMaxSuppression.apply([], iou: 0.7, maxDetections: 5, agnostic: false).isEmpty)
    }

    @Test("zero-area boxes never divide by zero into a suppression")
    func degenerate() {
        let kept = NonMaxSuppression.apply([box(0, 0.9, size: 0), box(0, 0.8, size: 0)], iou: 0.5,
            maxDetections: 10, agnostic: false)
        #expect(kept.count == 2)
    }
    /// The comparison of every kept box with every box ranked after it, as NMS was written before boxes that cannot
    /// overlap skipped it: the reference the faster version must agree with.
    static func fullComparisonNMS(_ candidates: [Candidate], iou: Float, maxDetections: Int, agnostic: Bool)
        -> [Candidate]
    {
        let sorted = Array(candidates.sorted { $0.score > $1.score }.prefix(NonMaxSuppression.maxCandidates))
        let boxes = sorted.map { c -> (Float, Float, Float, Float, Float) in
            let o = agnostic ? 0 : Float(c.classID) * NonMaxSuppression.classOffset
            return (c.x1 + o, c.y1 + o, c.x2 + o, c.y2 + o, (c.x2 - c.x1) * (c.y2 - c.y1))
        }
        var suppressed = [Bool](repeating: false, count: sorted.count)
        var kept: [Candidate] = []
        for i in sorted.indices where !suppressed[i] {
            kept.append(sorted[i])
            if kept.count >= maxDetections { break }
            for j in (i + 1)..<sorted.count where !suppressed[j] {
                let (a, b) = (boxes[i], boxes[j])
                let iw = max(0, min(a.2, b.2) - max(a.0, b.0))
                let ih = max(0, min(a.3, b.3) - max(a.1, b.1))
                let inter = iw * ih
                if inter / (a.4 + b.4 - inter) > iou { suppressed[j] = true }
            }
        }
        return kept
    }

    @Test("boxes that cannot overlap skip the IoU tests and change nothing", arguments: [0, 1, 2, 3, 4, 5, 6, 7])
    func nmsSkipsBoxesThatCannotOverlap(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let specials: [Float] = [.nan, .infinity, -.infinity, 0, -5, 3e38, -3e38, 1e-30]
        let candidates = (0..<600).map { _ -> Candidate in
            var v = (0..<4).map { _ in Float(random.next() % 400) / 4 }
            // About one box in three gets a special coordinate: NaN, ±∞, an inverted or empty side, an overflowing
            // area.
            if random.next() % 3 == 0 { v[Int(random.next() % 4)] = specials[Int(random.next() % 8)] }
            if random.next() % 5 == 0 { v[2] = v[0] }
            return Candidate(x1: v[0], y1: v[1], x2: v[0] + v[2], y2: v[1] + v[3],
                score: Float(random.next() % 1000) / 1000, classID: Int(random.next() % 3))
        }
        for (iou, agnostic) in [(Float(0.7), false), (0.3, true), (0, false), (1, false)] {
            let reference = Self.fullComparisonNMS(candidates, iou: iou, maxDetections: 300, agnostic: agnostic)
            let kept = NonMaxSuppression.apply(candidates, iou: iou, maxDetections: 300, agnostic: agnostic)
            // Compared by bit pattern: NaN is a value the result may carry.
            let bits = { (c: [Candidate]) in c.map { [$0.x1, $0.y1, $0.x2, $0.y2, $0.score].map(\.bitPattern) } }
            #expect(bits(kept) == bits(reference), "iou \(iou), agnostic \(agnostic)")
            #expect(kept.map(\.classID) == reference.map(\.classID))
        }
    }

    @Test("a hostile model's 30 000 boxes that cannot overlap cost no IoU test (fuzzer finding)")
    func nmsHostileOutputIsLinear() {
        // What FuzzModelOutput found taking seconds (Fuzz/Findings/FuzzModelOutput): 30 000 candidates that never
        // suppress each other, NaN and empty boxes, with a large max_det.
        let nan = (0..<15_000).map { Candidate(x1: .nan, y1: 0, x2: 10, y2: 10, score: Float($0) / 15_000, classID: 0) }
        let empty = (0..<15_000).map {
            Candidate(x1: Float($0), y1: 5, x2: Float($0), y2: 50, score: Float($0) / 15_000, classID: 1)
        }
        var iouTests = 0
        let kept = NonMaxSuppression.apply(nan + empty, iou: 0.7, maxDetections: DetectionOptions.maxDetectionsLimit,
            agnostic: false, iouTests: &iouTests)
        #expect(kept.count == DetectionOptions.maxDetectionsLimit)
        #expect(iouTests == 0)
        // Real boxes that do not overlap: the bound is maxCandidates × maxDetections IoU tests.
        let grid = (0..<30_000).map { i -> Candidate in
            let (x, y) = (Float(i % 200) * 3, Float(i / 200) * 3)
            return Candidate(x1: x, y1: y, x2: x + 2, y2: y + 2, score: 1 - Float(i) / 30_000, classID: 0)
        }
        iouTests = 0
        let keptGrid = NonMaxSuppression.apply(grid, iou: 0.7, maxDetections: DetectionOptions.maxDetectionsLimit,
            agnostic: false, iouTests: &iouTests)
        #expect(keptGrid.count == DetectionOptions.maxDetectionsLimit)
        #expect(iouTests <= NonMaxSuppression.maxCandidates * DetectionOptions.maxDetectionsLimit)
        #expect(iouTests > 0)
    }
}
