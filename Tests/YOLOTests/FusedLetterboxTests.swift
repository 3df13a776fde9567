import Foundation
import ImageCodecs
import TestSupport
import Primitives
import Testing

@testable import YOLO

/// The one-pass decode-and-letterbox against decoding then letterboxing: the same tensor, bit for bit.
@Suite("Fused JPEG decode and letterbox")
struct FusedLetterboxTests {
    static let photoNames = ["bus.jpg", "zidane.jpg", "dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg",
        "kite.jpg"]
    static var havePhotos: Bool { FileManager.default.fileExists(atPath: Repository.path("models/images/kite.jpg")) }

    /// Expects the fused and the two-step tensors of `bytes` into `target` to be equal.
    static func expectSameTensor(
        _ bytes: [UInt8], target: ImageSize, channelOrder: ChannelOrder = .rgb, _ label: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var transform = LetterboxTransform(target: target)
        transform.channelOrder = channelOrder
        let expected = transform.tensor(from: try ImageDecoder.decode(bytes))
        let fused = try #require(try transform.tensor(fromJPEG: bytes), sourceLocation: sourceLocation)
        #expect(fused.geometry == expected.geometry, "\(label)", sourceLocation: sourceLocation)
        let mismatch = zip(fused.tensor, expected.tensor).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(
            fused.tensor.count == expected.tensor.count && mismatch == nil,
            "\(label): first difference at \(mismatch ?? -1) of \(expected.tensor.count)", sourceLocation: sourceLocation)
    }

    @Test(
        "Real photos (and BGR models, other sizes): the same tensor",
        .enabled(if: havePhotos, "models/images missing: run scripts/setup"), arguments: photoNames)
    func photos(name: String) throws {
        let bytes = Repository.bytes("models/images/\(name)")
        try Self.expectSameTensor(bytes, target: ImageSize(width: 416, height: 416), "\(name) → 416")
        if name == "bus.jpg" || name == "zidane.jpg" {
            try Self.expectSameTensor(bytes, target: ImageSize(width: 640, height: 384), channelOrder: .bgr, "\(name) bgr")
        }
    }

    @Test(
        "Generated JPEGs (subsamplings, grayscale, restart markers, odd and tiny sizes): the same tensor",
        .enabled(if: GeneratedJPEGs.available, "no .venv with OpenCV: run scripts/setup"),
        arguments: GeneratedJPEGs.files.filter { !$0.isProgressive })
    func generated(file: GeneratedJPEGs.File) throws {
        // Tiny ones upscaled, the others downscaled (640x481 → 320: nearly halved).
        for target in [ImageSize(width: 320, height: 320), ImageSize(width: 128, height: 96)] {
            try Self.expectSameTensor(file.bytes, target: target, "\(file.name) → \(target)")
        }
    }

    @Test("An exact halving (OpenCV's 2×2 average) gives the same tensor")
    func halving() throws {
        let jpeg = try ImageEncoder.jpeg(gradientWithNoise(width: 640, height: 480), quality: 90)
        try Self.expectSameTensor(jpeg, target: ImageSize(width: 320, height: 320), "640x480 → 320 (halving)")
    }

    @Test(
        "Any interleaving of the two threads gives the same tensor (worker alongside, none, late, stalled)",
        arguments: ["dispatched", "never", "afterInput", "stalling"])
    func interleavings(workerName: String) throws {
        let worker = try #require(LetterboxTransform.DecodeWorker.named(workerName))
        let jpeg = try ImageEncoder.jpeg(gradientWithNoise(width: 500, height: 375), quality: 90)
        for target in [ImageSize(width: 320, height: 320), ImageSize(width: 640, height: 640)] {
            let transform = LetterboxTransform(target: target)
            let expected = transform.tensor(from: try ImageDecoder.decode(jpeg))
            for _ in 0..<(workerName == "dispatched" ? 20 : 3) {
                let fused = try #require(try transform.tensor(fromJPEG: jpeg, options: .init(), worker: worker))
                #expect(fused.tensor == expected.tensor, "\(workerName) into \(target)")
            }
        }
    }

    @Test(
        "Not taken: PNG, progressive and EXIF-rotated JPEGs, DCT-scaled decodes",
        .enabled(if: GeneratedJPEGs.available && havePhotos))
    func fallbacks() throws {
        let transform = LetterboxTransform(target: ImageSize(width: 416, height: 416))
        let png = try ImageEncoder.png(gradientWithNoise(width: 40, height: 30))
        let progressive = try #require(GeneratedJPEGs.files.first { $0.isProgressive })
        let bus = Repository.bytes("models/images/bus.jpg")
        let exif: [UInt8] = Array("Exif".utf8) + [0, 0, 0x49, 0x49, 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0,
            6, 0, 0, 0, 0, 0, 0, 0]
        let rotated = [0xFF, 0xD8, 0xFF, 0xE1, 0, UInt8(exif.count + 2)] + exif + bus.dropFirst(2)
        #expect(try transform.tensor(fromJPEG: png) == nil)
        #expect(try transform.tensor(fromJPEG: progressive.bytes) == nil)
        #expect(try transform.tensor(fromJPEG: rotated) == nil)
        #expect(try transform.tensor(fromJPEG: bus, options: .init(minimumDecodedSize: (416, 416))) == nil)
    }

    @Test("Truncated and corrupt JPEGs keep their typed errors", .enabled(if: havePhotos))
    func errors() throws {
        let bus = Repository.bytes("models/images/bus.jpg")
        let transform = LetterboxTransform(target: ImageSize(width: 416, height: 416))
        for cut in [0.3, 0.6, 0.95] {
            let bytes = Array(bus.prefix(Int(Double(bus.count) * cut)))
            let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(bytes) }
            guard case .failure(.truncated(.jpeg, _)) = expected else {
                Issue.record("expected .truncated at \(cut), got \(expected)")
                continue
            }
            for (workerName, worker) in [("dispatched", LetterboxTransform.DecodeWorker.dispatched), ("never", .never),
                ("afterInput", .afterInput)]
            {
                let fused = Result { () throws(ImageDecodeError) in
                    try transform.tensor(fromJPEG: bytes, options: .init(), worker: worker)
                }
                #expect(fused.map { _ in 0 } == expected.map { _ in 0 }, "cut at \(cut), \(workerName)")
            }
        }
        // Damaged entropy-coded data: libjpeg fails (or warns) while the worker may be decoding rows.
        for position in [0.2, 0.5, 0.8] {
            var damaged = bus
            let at = Int(Double(bus.count) * position)
            for i in at..<(at + 16) { damaged[i] = UInt8(truncatingIfNeeded: i &* 131 &+ 7) }
            let expected = Result { () throws(ImageDecodeError) in try ImageDecoder.decode(damaged) }
            let fused = Result { () throws(ImageDecodeError) in try transform.tensor(fromJPEG: damaged) }
            switch (fused, expected) {
            case (.failure(let a), .failure(let b)): #expect(a == b, "damaged at \(position)")
            case (.success(let tensor), .success(let image)):
                #expect(tensor?.tensor == transform.tensor(from: image).tensor, "damaged at \(position)")
            default: Issue.record("damaged at \(position): fused \(fused), one-pass \(expected)")
            }
        }
        #expect(throws: ImageDecodeError.tooLarge(width: 810, height: 1080, maxPixels: 1000)) {
            _ = try transform.tensor(fromJPEG: bus, options: .init(maxPixels: 1000))
        }
    }

    @Test("The detector's tensor for a JPEG is the decode-then-letterbox tensor", .enabled(if: havePhotos))
    func detectorUsesFusedPath() throws {
        let bytes = Repository.bytes("models/images/zidane.jpg")
        let backend = RecordingBackend()
        let detector = try Detector(backend: backend)
        let result = try detector.detect(imageBytes: bytes)
        let (expected, _) = detector.preprocess(try ImageDecoder.decode(bytes))
        #expect(backend.inputsSeen == [expected.values])
        #expect(result.imageSize == ImageSize(width: 1280, height: 720))
        #expect(result.timings.decode > 0 && result.timings.preprocess >= 0)
        // Without the parallel decode (what a busy slot asks for), the same tensor by decode then letterbox.
        let sequential = try detector.detect(imageBytes: bytes, decodeInParallel: false)
        #expect(backend.inputsSeen == [expected.values, expected.values])
        #expect(sequential.detections == result.detections && sequential.imageSize == result.imageSize)
    }

    @Test("A decoded image's tensor is the same letterboxed on one thread as on two", .enabled(if: havePhotos))
    func detectorResizeThreadsDoNotMatter() throws {
        let image = try ImageDecoder.decode(Repository.bytes("models/images/zidane.jpg"))
        let backend = RecordingBackend()
        let detector = try Detector(backend: backend)
        let parallel = try detector.detect(image: image, resizeInParallel: true)
        let single = try detector.detect(image: image, resizeInParallel: false)
        let seen = backend.inputsSeen
        #expect(seen.count == 2)
        #expect(seen.first.map(\.count) == 3 * 416 * 416)
        #expect(seen.first?.elementsEqual(seen.last ?? []) { $0.bitPattern == $1.bitPattern } == true)
        #expect(single.detections == parallel.detections && single.imageSize == parallel.imageSize)
    }

    func gradientWithNoise(width: Int, height: Int) -> RGBImage {
        var generator = SystemRandomNumberGenerator()
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                let noise = Int.random(in: -30...30, using: &generator)
                pixels += [x * 255 / width, y * 255 / height, (x + y) * 255 / (width + height)].map {
                    UInt8(clamping: $0 + noise)
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}

/// A backend with a 416×416 input and an all-zero YOLOv5 output that records every input tensor it runs on.
final class RecordingBackend: InferenceBackend {
    let inputs = [TensorSpec(name: "images", dataType: .float32, shape: [1, 3, 416, 416])]
    let outputs = [TensorSpec(name: "output0", dataType: .float32, shape: [1, 4, 6])]
    let metadata = ["names": "{0: 'person'}", "imgsz": "[416, 416]", "stride": "32"]
    let recorded = Locked<[[Float]]>([])
    var inputsSeen: [[Float]] { recorded.withLock { $0 } }

    func run(_ input: InputTensor, cancellation: RunCancellation?) throws -> any OutputTensorView {
        recorded.withLock { $0.append(input.values) }
        return ZeroOutput(shape: [1, 4, 6])
    }
}

/// An output of zeros.
struct ZeroOutput: OutputTensorView {
    let shape: [Int]
    func withFloats<R>(_ body: (Span<Float>) throws -> R) throws -> R {
        try body([Float](repeating: 0, count: shape.reduce(1, *)).span)
    }
}

/// The interleavings the tests force on a pipelined run's worker.
extension LetterboxTransform.DecodeWorker {
    /// Never started: the calling thread does everything.
    static let never = Self(start: { _ in })
    /// Started only once the calling thread has read every coefficient row.
    static let afterInput = Self(start: { DispatchQueue.global().async(execute: $0) }, startsAfterInput: true)
    /// Started at once, then paused for 20 ms after its first batch of rows.
    static var stalling: Self {
        let paused = Locked(false)
        return Self(start: { DispatchQueue.global().async(execute: $0) }, afterBatch: {
            let first = paused.withLock { done in
                defer { done = true }
                return !done
            }
            if first { Thread.sleep(forTimeInterval: 0.02) }
        })
    }

    static func named(_ name: String) -> Self? {
        ["dispatched": .dispatched, "never": .never, "afterInput": .afterInput, "stalling": stalling][name]
    }
}
