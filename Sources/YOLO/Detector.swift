import ImageCodecs
import Primitives

/// Per-stage wall-clock timings of one detection, in milliseconds.
///
/// For a JPEG that ``Detector/detect(imageBytes:options:)`` decodes and letterboxes in one pass (see
/// ``LetterboxTransform/tensor(fromJPEG:options:)``), the two stages overlap: `decode` runs until the last source row
/// is decoded (it includes the resizing done meanwhile) and `preprocess` is the tail after it, the resize of the last
/// rows. Their sum is the wall time of both. Otherwise `decode` is the decode alone and `preprocess` the letterbox.
///
/// Codable as `{"decode", "preprocess", "inference", "postprocess"}` (milliseconds): the `timings_ms` of the detection
/// JSON, which the service extends with its queue wait and total.
public struct StageTimings: Sendable, Equatable, Codable {
    public var decode: Double = 0
    public var preprocess: Double = 0
    public var inference: Double = 0
    public var postprocess: Double = 0
    public init() {}
    public var total: Double { decode + preprocess + inference + postprocess }
}

/// Detections for one image with the image's size and the stage timings.
public struct DetectionResult: Sendable {
    public var imageSize: ImageSize
    public var detections: [Detection]
    public var timings: StageTimings

    public init(imageSize: ImageSize, detections: [Detection], timings: StageTimings) {
        self.imageSize = imageSize
        self.detections = detections
        self.timings = timings
    }
}

/// Error from the detection pipeline, with the stage it happened in.
public enum DetectionError: Error, CustomStringConvertible {
    case decode(ImageDecodeError)
    case inference(any Error)
    case output(OutputDecodeError)

    public var description: String {
        switch self {
        case .decode(let e): "image decode failed: \(e)"
        case .inference(let e): "inference failed: \(e)"
        case .output(let e): "output decode failed: \(e)"
        }
    }

    /// Whether the model's output held a NaN or an infinity where the decoding needed a number.
    public var isNonFiniteOutput: Bool {
        if case .output(let e) = self { e.nonFinite } else { false }
    }
}

/// The YOLO pipeline for one model: decode → letterbox → run → decode output → NMS → map boxes back.
///
/// Thread-safety: immutable; `detect` may be called concurrently (the backend must allow concurrent runs).
public struct Detector: Sendable {
    public let backend: any InferenceBackend
    public let schema: ModelSchema
    public var decodeOptions: DecodeOptions

    public init(backend: any InferenceBackend, schema: ModelSchema, decodeOptions: DecodeOptions = .init()) {
        self.backend = backend
        self.schema = schema
        self.decodeOptions = decodeOptions
    }

    /// Builds the schema from the backend's tensors and metadata.
    public init(backend: any InferenceBackend, imgsz: ImageSize? = nil, format: OutputFormat? = nil,
                decodeOptions: DecodeOptions = .init()) throws(ModelSchemaError) {
        let schema = try ModelSchema.make(
            inputs: backend.inputs, outputs: backend.outputs, metadata: backend.metadata, imgsz: imgsz, format: format)
        self.init(backend: backend, schema: schema, decodeOptions: decodeOptions)
    }

    /// Detects objects in encoded image bytes (JPEG or PNG).
    ///
    /// With `decodeInParallel`, a baseline JPEG is decoded and letterboxed in one pass on two threads
    /// (``LetterboxTransform/tensor(fromJPEG:options:)``, the same tensor as decoding then letterboxing); other images,
    /// or without it, are decoded, then letterboxed.
    /// - Parameter decodeInParallel: worth it only when a core is idle: on a fully loaded server the second thread
    ///   competes with other requests for the cores. Without it the letterbox of a decoded image takes one thread too.
    public func detect(imageBytes: [UInt8], options: DetectionOptions = .init(), decodeInParallel: Bool = true)
        throws(DetectionError) -> DetectionResult
    {
        let clock = ContinuousClock()
        let start = clock.now
        var fused: FusedLetterbox?
        if decodeInParallel {
            do { fused = try letterbox.tensor(fromJPEG: imageBytes, options: decodeOptions) } catch {
                throw .decode(error)
            }
        }
        if let fused {
            var timings = StageTimings()
            timings.decode = (fused.rowsDecodedAt - start).milliseconds
            timings.preprocess = (clock.now - fused.rowsDecodedAt).milliseconds
            return try detect(
                InputTensor(values: fused.tensor, shape: inputShape), geometry: fused.geometry, timings: timings,
                options: options)
        }
        let image: RGBImage
        do { image = try ImageDecoder.decode(imageBytes, options: decodeOptions) } catch {
            throw .decode(error)
        }
        let decodeTime = clock.now - start
        var result = try detect(image: image, options: options, resizeInParallel: decodeInParallel)
        result.timings.decode = decodeTime.milliseconds
        // Only a JPEG is decoded at a DCT scale; its full size is taken in the decoded image's orientation (a PNG's
        // eXIf after its pixels, which the header does not see, would otherwise pass for a scale).
        if decodeOptions.minimumDecodedSize != nil,
            let full = try? ImageDecoder.header(imageBytes,
                applyingEXIFOrientation: decodeOptions.applyEXIFOrientation),
            full.format == .jpeg, full.width != image.width || full.height != image.height
        {
            // Decoded at a reduced DCT scale: report boxes and size in the original image's pixels.
            let sx = Double(full.width) / Double(image.width), sy = Double(full.height) / Double(image.height)
            result.imageSize = ImageSize(width: full.width, height: full.height)
            for i in result.detections.indices {
                let b = result.detections[i].box
                result.detections[i].box = Box(x1: b.x1 * sx, y1: b.y1 * sy, x2: b.x2 * sx, y2: b.y2 * sy)
            }
        }
        return result
    }

    /// Detects objects in a decoded image.
    ///
    /// - Parameter resizeInParallel: the letterbox resizes part of the image on a second thread (Dispatch's global
    ///   queue). Worth it only when a core is idle: when other detections keep the cores busy, that thread waits for
    ///   a core while the calling thread waits for its rows, and a frame's pre-processing can take many times its
    ///   own work.
    /// - Throws: `.decode(.invalidDimensions)` for an image with no pixels (nothing to map boxes back to); the
    ///   errors of inference and output decoding.
    public func detect(image: RGBImage, options: DetectionOptions = .init(), resizeInParallel: Bool = true,
                       cancellation: RunCancellation? = nil) throws(DetectionError) -> DetectionResult
    {
        guard image.width > 0, image.height > 0 else {
            throw .decode(.invalidDimensions(width: image.width, height: image.height))
        }
        let clock = ContinuousClock()
        var timings = StageTimings()
        let t = clock.now
        let (tensor, geometry) = preprocess(image, inParallel: resizeInParallel)
        timings.preprocess = (clock.now - t).milliseconds
        return try detect(tensor, geometry: geometry, timings: timings, options: options, cancellation: cancellation)
    }

    /// Runs the model on a letterboxed tensor and postprocesses its output, adding those stages to `timings`.
    private func detect(
        _ tensor: InputTensor, geometry: LetterboxGeometry, timings: StageTimings, options: DetectionOptions,
        cancellation: RunCancellation? = nil
    ) throws(DetectionError) -> DetectionResult {
        let clock = ContinuousClock()
        var timings = timings
        var t = clock.now
        let output: any OutputTensorView
        do { output = try backend.run(tensor, cancellation: cancellation) } catch { throw .inference(error) }
        timings.inference = (clock.now - t).milliseconds
        t = clock.now
        let detections = try postprocess(output, geometry: geometry, options: options)
        timings.postprocess = (clock.now - t).milliseconds
        return DetectionResult(imageSize: geometry.source, detections: detections, timings: timings)
    }

    /// Letterboxes an image into the model's input tensor, on one thread or (`inParallel`) on the letterbox's default
    /// parallelism.
    public func preprocess(_ image: RGBImage, inParallel: Bool = true) -> (InputTensor, LetterboxGeometry) {
        var letterbox = self.letterbox
        if !inParallel { letterbox.parallelism = 1 }
        let (values, geometry) = letterbox.tensor(from: image)
        return (InputTensor(values: values, shape: inputShape), geometry)
    }

    /// The letterbox into the model's input.
    public var letterbox: LetterboxTransform {
        var transform = LetterboxTransform(target: schema.inputSize)
        transform.channelOrder = schema.channelOrder
        return transform
    }

    private var inputShape: [Int] { [1, 3, schema.inputSize.height, schema.inputSize.width] }

    /// Decodes an output, runs NMS and maps boxes back to the source image.
    public func postprocess(_ output: any OutputTensorView, geometry: LetterboxGeometry, options: DetectionOptions)
        throws(DetectionError) -> [Detection]
    {
        let format = schema.outputFormat
        var candidates: [Candidate]
        do {
            candidates = try output.withFloats { values in
                try OutputDecoder.candidates(values, shape: output.shape, format: format, options: options)
            }
        } catch let error as OutputDecodeError {
            throw .output(error)
        } catch {
            throw .inference(error)
        }
        // An end-to-end model's rows come filtered and cut to `maxDetections` by the decoder, in the model's order.
        if format != .yolov10 {
            candidates = NonMaxSuppression.apply(candidates, iou: options.iou, maxDetections: options.maxDetections,
                agnostic: options.agnostic)
        }
        let names = schema.classNames
        return candidates.map { c in
            let box = geometry.mapToSource(Box(x1: Double(c.x1), y1: Double(c.y1), x2: Double(c.x2), y2: Double(c.y2)))
            let name = names.indices.contains(c.classID) ? names[c.classID] : "class\(c.classID)"
            return Detection(classID: c.classID, className: name, confidence: c.score, box: box)
        }
    }
}
