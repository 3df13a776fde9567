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

    @Test("class filter and confidence threshold are strict")
    func thresholds() throws {
        let values: [Float] = [10, 10, 2, 2, 1.0, 0.25, 0.6]
        let atThreshold = try OutputDecoder.candidates(
            values.span, shape: [1, 1, 7], format: .yolov5, options: .init(confidence: 0.6))
        #expect(atThreshold.isEmpty)
        let filtered = try OutputDecoder.candidates(
            values.span, shape: [1, 1, 7], format: .yolov5, options: .init(confidence: 0.2, classes: [0]))
        #expect(filtered.first?.classID == 0)
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
    }

    @Test("NMS suppresses only when IoU is strictly above the threshold")
    func nmsStrict() {
        // Boxes [0,10] and [5,15] on x, same y: IoU = 50 / 150 = 1/3.
        let input = [box(0, 0.9), box(5, 0.8)]
        #expect(NonMaxSuppression.apply(input, iou: 1.0 / 3.0, maxDetections: 300, agnostic: false).count == 2)
        #expect(NonMaxSuppression.apply(input, iou: 0.33, maxDetections: 300, agnostic: false).count == 1)
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
}
