import Dispatch
import Foundation
import ImageCodecs
import Primitives

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
/// r = min(H/h, W/w); the unpadded size is (max(round(w·r), 1), max(round(h·r), 1)): a thin image keeps a pixel;
/// the padding (d = (W − w')/2) is split as round(d − 0.1) before and round(d + 0.1) after, Python's
/// round-half-to-even included. An empty source or target (a side under 1), which has no such ratio, gets r = 0: the
/// image is not drawn and the result is all padding. (Ultralytics 8.4.190, `LetterBox.get_params`.)
public struct LetterboxGeometry: Sendable, Equatable {
    public var source: ImageSize
    public var target: ImageSize
    public var ratio: Double
    public var resized: ImageSize
    public var left: Int, top: Int, right: Int, bottom: Int

    public init(source: ImageSize, target: ImageSize) {
        self.source = source
        self.target = target
        if min(source.width, source.height, target.width, target.height) < 1 {
            ratio = 0  // H/h or W/w would be infinite or NaN, and so would the sizes rounded to Int below
        } else {
            ratio = min(Double(target.height) / Double(source.height), Double(target.width) / Double(source.width))
        }
        let least = ratio > 0 ? 1 : 0
        resized = ImageSize(
            width: max(Int((Double(source.width) * ratio).rounded(.toNearestOrEven)), least),
            height: max(Int((Double(source.height) * ratio).rounded(.toNearestOrEven)), least))
        let dw = Double(target.width - resized.width) / 2
        let dh = Double(target.height - resized.height) / 2
        left = Int((dw - 0.1).rounded(.toNearestOrEven))
        right = Int((dw + 0.1).rounded(.toNearestOrEven))
        top = Int((dh - 0.1).rounded(.toNearestOrEven))
        bottom = Int((dh + 0.1).rounded(.toNearestOrEven))
    }

    /// Maps a box from network-input pixels back to the source image, as Ultralytics 8.4.190's `scale_boxes`: less the
    /// padding before the image, over each axis's own gain (the rounded size over the source's), clipped to the image.
    /// (Before 8.4 it recomputed the padding from the unrounded size, one gain for both axes: up to a pixel off in
    /// the input, where rounding moved the image.)
    public func mapToSource(_ box: Box) -> Box {
        let w = Double(source.width), h = Double(source.height)
        guard resized.width > 0, resized.height > 0 else { return Box(x1: 0, y1: 0, x2: 0, y2: 0) }
        let gainX = Double(resized.width) / w, gainY = Double(resized.height) / h
        let padX = Double(left), padY = Double(top)
        return Box(
            x1: min(max((box.x1 - padX) / gainX, 0), w), y1: min(max((box.y1 - padY) / gainY, 0), h),
            x2: min(max((box.x2 - padX) / gainX, 0), w), y2: min(max((box.y2 - padY) / gainY, 0), h))
    }
}

/// Turns an RGB image into the network's input tensor: letterbox resize with OpenCV's `INTER_LINEAR` semantics
/// (half-pixel centres, no antialiasing, OpenCV's 11-bit fixed-point coefficients for 8-bit images, and its switch to
/// 2×2 averaging for an exact halving), padding 114, RGB, /255, NCHW float32.
///
/// The inner loops are plain integer code over spans, shaped so that the optimiser drops their bounds checks and
/// vectorises the vertical pass and the float conversion by itself. They use no SIMD types on purpose: those are
/// faster still where the compiler specialises them, but their generic operations make unoptimised (test) builds
/// several times slower than this whole transform.
///
/// Thread-safety: a value type with no shared state. `tensor(from:)` and `image(from:)` may resize parts of the image
/// on Dispatch's global queue; they return only when every part they wait for is written.
public struct LetterboxTransform: Sendable {
    public var target: ImageSize
    public var padValue: UInt8 = 114
    public var channelOrder: ChannelOrder = .rgb
    /// Threads that resize concurrently, the calling one included (OpenCV's resize is parallel too). Default: 2, or 1
    /// on one core.
    public var parallelism: Int = min(2, ProcessInfo.processInfo.activeProcessorCount)

    public init(target: ImageSize) { self.target = target }

    /// Letterboxes `image` into a planar float tensor of 3 × target.height × target.width.
    ///
    /// The tensor is filled with the pad value while the worker threads start; each resized row is then converted into
    /// it (value / 255) as soon as the calling thread has it, so no resized image is kept.
    public func tensor(from image: RGBImage) -> (tensor: [Float], geometry: LetterboxGeometry) {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        var tensor: [Float] = []
        let fill = { tensor = paddedTensor(geometry) }
        forEachResizedRow(image, geometry: geometry, whileWorkersStart: fill) { y, row in
            var out = tensor.mutableSpan
            write(resizedRow: y, row, geometry: geometry, into: &out)
        }
        return (tensor, geometry)
    }

    /// Converts resized row `y` (planar R, G, B bytes, `geometry.resized.width` each) into the tensor's planes in the
    /// model's channel order, value / 255.
    func write(resizedRow y: Int, _ row: Span<UInt8>, geometry: LetterboxGeometry, into out: inout MutableSpan<Float>) {
        let width = geometry.resized.width, plane = target.width * target.height
        let origin = (geometry.top + y) * target.width + geometry.left
        for channel in 0..<3 {
            let index = channelOrder == .rgb ? channel : 2 - channel
            Self.unitFloats(
                row.extracting((channel * width)..<((channel + 1) * width)), into: &out, at: index * plane + origin)
        }
    }

    /// Letterboxes `image` into an RGB image of the target size (for inspection and tests against OpenCV).
    public func image(from image: RGBImage) -> RGBImage {
        let geometry = LetterboxGeometry(source: ImageSize(width: image.width, height: image.height), target: target)
        var out = RGBImage(width: target.width, height: target.height, fill: (padValue, padValue, padValue))
        let width = geometry.resized.width
        forEachResizedRow(image, geometry: geometry) { y, row in
            let base = ((geometry.top + y) * target.width + geometry.left) * 3
            for x in 0..<width {
                out.pixels[base + 3 * x] = row[x]
                out.pixels[base + 3 * x + 1] = row[width + x]
                out.pixels[base + 3 * x + 2] = row[2 * width + x]
            }
        }
        return out
    }

    /// A tensor of 3 × target.height × target.width whose padding (the rows above and below the resized image, the
    /// columns left and right of it) holds the pad value / 255, and whose resized region is left for the caller to
    /// write, every element of it, before the tensor is read: the tensor is written once (filling it with the pad value
    /// first would write the resized region twice, on the critical path of a decode).
    func paddedTensor(_ geometry: LetterboxGeometry) -> [Float] { paddedTensor(geometry) { _ in } }

    /// ``paddedTensor(_:)``, then `writeResized` writes the resized region (every element of it) into the tensor's
    /// memory before the tensor is returned.
    func paddedTensor(_ geometry: LetterboxGeometry, _ writeResized: (UnsafeMutableBufferPointer<Float>) -> Void)
        -> [Float]
    {
        let plane = target.width * target.height, pad = Float(padValue) / 255
        let resized = geometry.resized
        return [Float](unsafeUninitializedCapacity: 3 * plane) { buffer, initialized in
            // Float is a trivial type: the region left unwritten here is plain memory until the caller writes it.
            for channel in 0..<3 {
                let base = channel * plane
                func fill(_ range: Range<Int>) {
                    guard !range.isEmpty else { return }
                    buffer[(base + range.lowerBound)..<(base + range.upperBound)].update(repeating: pad)
                }
                fill(0..<(geometry.top * target.width))
                fill(((geometry.top + resized.height) * target.width)..<plane)
                for y in geometry.top..<(geometry.top + resized.height) {
                    fill((y * target.width)..<(y * target.width + geometry.left))
                    fill((y * target.width + geometry.left + resized.width)..<((y + 1) * target.width))
                }
            }
            writeResized(buffer)
            initialized = 3 * plane
        }
    }

    /// Writes `Float(value) / 255` for each of `values` into `out` from `start` on (a loop the optimiser vectorises).
    static func unitFloats(_ values: Span<UInt8>, into out: inout MutableSpan<Float>, at start: Int) {
        precondition(start >= 0 && start + values.count <= out.count)
        for i in 0..<values.count {
            out[start + i] = Float(values[i]) / 255
        }
    }

    /// Resizes `image` to the geometry's unpadded size and hands each row to `body` as planar bytes (its R values,
    /// then its G, then its B), on up to `parallelism` threads.
    ///
    /// Rows are handed out in chunks. The calling thread resizes chunks and hands over each of their rows as soon as it
    /// is made; `parallelism - 1` blocks on Dispatch's global queue resize chunks into buffers, which the calling
    /// thread hands over between its own chunks and at the end. The calling thread waits only for chunks a worker has
    /// taken, never for a worker to start, so a busy pool costs no more than resizing alone. `prepare` runs on the
    /// calling thread once the workers are dispatched, before any row; `body` runs only on the calling thread, in no
    /// particular row order.
    func forEachResizedRow(
        _ image: RGBImage, geometry: LetterboxGeometry, whileWorkersStart prepare: () -> Void = {},
        _ body: (Int, Span<UInt8>) -> Void
    ) {
        let resizer = LinearResizer(
            source: ImageSize(width: image.width, height: image.height), target: geometry.resized)
        let height = geometry.resized.height, rowBytes = 3 * geometry.resized.width
        // Small images are not worth a thread hand-off.
        let workers = height * geometry.resized.width >= 32_768 ? max(0, min(parallelism, height) - 1) : 0
        // 16 chunks: the threads end at most a small chunk apart, for a handful of lock round trips.
        let work = Locked(RowChunks(height: height, chunkRows: workers == 0 ? height : (height + 15) / 16))
        let finished = DispatchSemaphore(value: 0)
        let pixels = image.pixels
        for _ in 0..<workers {
            DispatchQueue.global().async {
                var scratch = LinearResizer.Scratch(width: geometry.resized.width)
                while let rows = work.withLock({ $0.take(byWorker: true) }) {
                    var buffer = [UInt8](repeating: 0, count: rows.count * rowBytes)
                    var span = buffer.mutableSpan
                    for y in rows {
                        resizer.resizeRow(
                            y, from: pixels.span, into: &span, at: (y - rows.lowerBound) * rowBytes, scratch: &scratch)
                    }
                    _ = consume span
                    work.withLock { $0.finished.append((rows.lowerBound, buffer)) }
                    finished.signal()
                }
            }
        }
        prepare()
        var handedOver = 0
        func handOverFinished() {
            for chunk in work.withLock({ $0.takeFinished() }) {
                let rows = chunk.rows.span
                for y in 0..<(rows.count / rowBytes) {
                    body(chunk.first + y, rows.extracting((y * rowBytes)..<((y + 1) * rowBytes)))
                }
                handedOver += 1
            }
        }
        var row = [UInt8](repeating: 0, count: rowBytes)
        var scratch = LinearResizer.Scratch(width: geometry.resized.width)
        while let rows = work.withLock({ $0.take(byWorker: false) }) {
            handOverFinished()
            for y in rows {
                var span = row.mutableSpan
                resizer.resizeRow(y, from: pixels.span, into: &span, at: 0, scratch: &scratch)
                _ = consume span
                body(y, row.span)
            }
        }
        // No chunk is left to take, so the count of chunks workers took is final.
        while handedOver < work.withLock({ $0.takenByWorkers }) {
            finished.wait()
            handOverFinished()
        }
    }

    /// The rows of one resize, handed out in chunks, and the chunks workers have finished.
    struct RowChunks {
        let height: Int
        let chunkRows: Int
        var next = 0
        var takenByWorkers = 0
        var finished: [(first: Int, rows: [UInt8])] = []

        init(height: Int, chunkRows: Int) {
            self.height = height
            self.chunkRows = max(1, chunkRows)
        }

        /// The next chunk of rows, or nil when all are taken.
        mutating func take(byWorker: Bool) -> Range<Int>? {
            guard next < height else { return nil }
            let rows = next..<min(next + chunkRows, height)
            next = rows.upperBound
            if byWorker { takenByWorkers += 1 }
            return rows
        }

        /// The chunks finished since the last call.
        mutating func takeFinished() -> [(first: Int, rows: [UInt8])] {
            defer { finished.removeAll() }
            return finished
        }
    }
}
