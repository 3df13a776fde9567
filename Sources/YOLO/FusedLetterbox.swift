import Dispatch
import Foundation
import ImageCodecs

/// A JPEG decoded and letterboxed in one pass: the network's input tensor, its geometry, and when the last source row
/// was decoded (for the stage timings).
public struct FusedLetterbox: Sendable {
    public var tensor: [Float]
    public var geometry: LetterboxGeometry
    /// When the calling thread learnt that every source row was decoded; what follows is the resize's tail.
    public var rowsDecodedAt: ContinuousClock.Instant
}

extension LetterboxTransform {
    /// Decodes a JPEG and letterboxes it in one pass on up to two threads, the resize following the decoder row by row;
    /// the tensor equals `tensor(from: ImageDecoder.decode(bytes, options: options))` exactly.
    ///
    /// The calling thread decodes an upper band of source rows, resizing every output row as soon as its two source
    /// rows are decoded, while a Dispatch worker decodes the lower band (``BandedJPEGDecoding``); the calling thread
    /// then resizes the rows of the lower band as the worker publishes them, and the worker, once it has decoded its
    /// band, resizes output rows from the bottom up (those whose source rows all lie in its band) until the two meet.
    /// The split is chosen so that both threads end together (``upperBandRows(width:height:fileBytes:resized:)``). The
    /// calling thread never waits for a worker that has not started: it then decodes the lower band itself.
    ///
    /// - Returns: nil for images ``BandedJPEGDecoding`` does not take (PNG, progressive or EXIF-rotated JPEGs,
    ///   DCT-scaled decoding): decode them with `ImageDecoder.decode` and letterbox with ``tensor(from:)``.
    /// - Throws: ``ImageDecodeError``, as `ImageDecoder.decode` throws it.
    public func tensor(fromJPEG bytes: [UInt8], options: DecodeOptions = .init()) throws(ImageDecodeError)
        -> FusedLetterbox?
    {
        try tensor(fromJPEG: bytes, options: options, split: upperBandRows, worker: .dispatched)
    }

    /// How the lower band's worker runs: on Dispatch's global queue (the real thing), or, for tests that need a
    /// given interleaving, to the end on the calling thread before it starts, not at all, or dispatched but stalled
    /// for 50 ms after its first batch (the calling thread starts once it is stalled, and takes the band over).
    enum LowerBandWorker { case dispatched, beforeCaller, never, stalling }

    /// ``tensor(fromJPEG:options:)`` with the split and the worker's scheduling given.
    func tensor(
        fromJPEG bytes: [UInt8], options: DecodeOptions,
        split: (_ width: Int, _ height: Int, _ fileBytes: Int, _ resized: ImageSize) -> Int, worker: LowerBandWorker
    ) throws(ImageDecodeError) -> FusedLetterbox? {
        var geometry = LetterboxGeometry(source: ImageSize(width: 1, height: 1), target: target)
        let stalled = DispatchSemaphore(value: 0)
        var stall: (@Sendable (Int) -> Void)?
        if worker == .stalling {
            stall = { rows in
                guard rows <= BandedJPEGDecoding.batchRows else { return }
                stalled.signal()
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        let splitRow = { (width: Int, height: Int) -> Int in
            geometry = LetterboxGeometry(source: ImageSize(width: width, height: height), target: target)
            return split(width, height, bytes.count, geometry.resized)
        }
        guard
            let decoding = try BandedJPEGDecoding(
                bytes, options: options, pixels: nil, splitRow: splitRow, afterLowerBatch: stall)
        else { return nil }
        let run = FusedRun(transform: self, geometry: geometry, decoding: decoding)
        if decoding.split < decoding.height {
            switch worker {
            case .dispatched: DispatchQueue.global().async { run.workerDecodesLowerBand() }
            case .beforeCaller: run.workerDecodesLowerBand()
            case .never: break
            case .stalling:
                DispatchQueue.global().async { run.workerDecodesLowerBand() }
                _ = stalled.wait(timeout: .now() + 5)
            }
        }
        return try run.callerDecodesAndResizes()
    }

    /// The first row of the lower band: where the calling thread, which decodes the upper band and then resizes,
    /// should end together with the worker, which skips the upper band and decodes the lower one.
    ///
    /// With D the time to decode the image, K to skip all of it (the entropy decoding), R to resize it and W for the
    /// worker to start, the caller spends a·D + R and the worker W + a·K + (1 − a)·D for an upper fraction a, equal at
    /// a = (D + W − R) / (2D − K). The costs are estimated from the file size (entropy decoding), the pixel count (IDCT,
    /// upsampling, colour conversion) and the resized size, with constants measured on this project's photos; a worker
    /// that ends early helps with the resize, so an estimate off by a little costs little. Small images and one-core
    /// machines get no lower band.
    public func upperBandRows(width: Int, height: Int, fileBytes: Int, resized: ImageSize) -> Int {
        let pixels = Double(width * height)
        guard parallelism > 1, pixels >= 65_536, height >= 64 else { return height }
        let entropy = Self.entropyNanosecondsPerByte * Double(fileBytes)
        let decode = entropy + Self.decodeNanosecondsPerPixel * pixels
        let resize = Self.resizeNanosecondsPerOutputPixel * Double(resized.width * resized.height)
            + Self.resizeNanosecondsPerSourceRowPixel * Double(resized.width * min(height, 2 * resized.height))
        let balanced = (decode + Self.workerStartNanoseconds - resize) / (2 * decode - entropy)
        let fraction = min(max(balanced, 0.15), 0.85)
        return Int((fraction * Double(height)).rounded())
    }

    // Cost constants (nanoseconds), measured on this project's 2-core development machine with bus.jpg and zidane.jpg.
    static let entropyNanosecondsPerByte = 8.0
    static let decodeNanosecondsPerPixel = 0.9
    static let workerStartNanoseconds = 100_000.0
    static let resizeNanosecondsPerOutputPixel = 3.0
    static let resizeNanosecondsPerSourceRowPixel = 1.5
}

/// One fused decode-and-letterbox: the output rows, taken from the top by the calling thread and from the bottom by the
/// worker, and the tensor the calling thread fills.
///
/// Thread-safety: `callerDecodesAndResizes` runs on the calling thread, `workerDecodesLowerBand` on one worker; they
/// share only `rows` (behind its lock), `finishedChunk` and the decoding (thread-safe as documented there).
private final class FusedRun: Sendable {
    let transform: LetterboxTransform
    let geometry: LetterboxGeometry
    let decoding: BandedJPEGDecoding
    let resizer: LinearResizer
    let rows: Locked<OutputRows>
    let finishedChunk = DispatchSemaphore(value: 0)
    /// Output rows the worker takes at a time.
    static let chunkRows = 8

    init(transform: LetterboxTransform, geometry: LetterboxGeometry, decoding: BandedJPEGDecoding) {
        self.transform = transform
        self.geometry = geometry
        self.decoding = decoding
        resizer = LinearResizer(
            source: ImageSize(width: decoding.width, height: decoding.height), target: geometry.resized)
        rows = Locked(OutputRows(bottom: geometry.resized.height))
    }

    /// Output rows not taken yet are `top..<bottom`; the chunks the worker has resized wait in `finished`.
    struct OutputRows {
        var top = 0
        var bottom: Int
        var takenByWorker = 0
        var finished: [(first: Int, rows: [UInt8])] = []
    }

    // MARK: Calling thread

    func callerDecodesAndResizes() throws(ImageDecodeError) -> FusedLetterbox {
        var tensor = transform.paddedTensor(geometry)
        var scratch = LinearResizer.Scratch(width: geometry.resized.width)
        var row = [UInt8](repeating: 0, count: 3 * geometry.resized.width)
        var ready = 0  // output rows 0..<ready have both their source rows decoded
        var handedOver = 0  // chunks of the worker's written into the tensor
        func resize(decodedRows: Int) {
            while ready < resizer.yRows.count, resizer.yRows[ready].1 < decodedRows { ready += 1 }
            let taken = rows.withLock { state in
                let taken = state.top..<max(state.top, min(ready, state.bottom))
                state.top = taken.upperBound
                return taken
            }
            decoding.withRows(decodedRows) { pixels in
                for y in taken {
                    var span = row.mutableSpan
                    resizer.resizeRow(y, from: pixels, into: &span, at: 0, scratch: &scratch)
                    _ = consume span
                    write(row: y, row.span, into: &tensor)
                }
            }
            handedOver += handOverFinished(into: &tensor)
        }
        if try !decoding.decodeUpperBand({ resize(decodedRows: $0) }) {
            while let next = rows.withLock({ $0.top < $0.bottom ? $0.top : nil }) {
                resize(decodedRows: try decoding.waitForRows(through: resizer.yRows[next].1))
            }
            try decoding.finish()
        }
        // Every row is taken, so the count of chunks the worker took is final.
        while handedOver < rows.withLock({ $0.takenByWorker }) {
            finishedChunk.wait()
            handedOver += handOverFinished(into: &tensor)
        }
        guard let decodedAt = decoding.rowsDecodedAt else { preconditionFailure("every row is decoded by now") }
        return FusedLetterbox(tensor: tensor, geometry: geometry, rowsDecodedAt: decodedAt)
    }

    /// Writes the worker's finished chunks into the tensor; returns how many there were.
    private func handOverFinished(into tensor: inout [Float]) -> Int {
        let rowBytes = 3 * geometry.resized.width
        let chunks = rows.withLock { state in
            defer { state.finished.removeAll() }
            return state.finished
        }
        for chunk in chunks {
            let bytes = chunk.rows.span
            for y in 0..<(bytes.count / rowBytes) {
                write(row: chunk.first + y, bytes.extracting((y * rowBytes)..<((y + 1) * rowBytes)), into: &tensor)
            }
        }
        return chunks.count
    }

    /// Converts one resized row (planar R, G, B bytes) into the tensor's planes, value / 255.
    private func write(row y: Int, _ row: Span<UInt8>, into tensor: inout [Float]) {
        let target = transform.target, width = geometry.resized.width
        let origin = (geometry.top + y) * target.width + geometry.left
        var out = tensor.mutableSpan
        for channel in 0..<3 {
            let plane = transform.channelOrder == .rgb ? channel : 2 - channel
            LetterboxTransform.unitFloats(
                row.extracting((channel * width)..<((channel + 1) * width)), into: &out,
                at: plane * target.width * target.height + origin)
        }
    }

    // MARK: Worker

    /// Decodes the lower band if the calling thread has not taken it, then resizes output rows from the bottom up: only
    /// rows whose source rows all lie in the lower band, since the calling thread may still be decoding the upper one.
    func workerDecodesLowerBand() {
        guard case .success = decoding.decodeLowerBand() else { return }
        let rowBytes = 3 * geometry.resized.width
        var scratch = LinearResizer.Scratch(width: geometry.resized.width)
        let firstLowerOnly = resizer.yRows.firstIndex { $0.0 >= decoding.split } ?? resizer.yRows.count
        decoding.withRows(decoding.height) { pixels in
            while let taken = rows.withLock({ state -> Range<Int>? in
                let floor = max(state.top, firstLowerOnly)
                guard floor < state.bottom else { return nil }
                let taken = max(floor, state.bottom - Self.chunkRows)..<state.bottom
                state.bottom = taken.lowerBound
                state.takenByWorker += 1
                return taken
            }) {
                var buffer = [UInt8](repeating: 0, count: taken.count * rowBytes)
                var span = buffer.mutableSpan
                for y in taken {
                    resizer.resizeRow(y, from: pixels, into: &span, at: (y - taken.lowerBound) * rowBytes, scratch: &scratch)
                }
                _ = consume span
                rows.withLock { $0.finished.append((taken.lowerBound, buffer)) }
                finishedChunk.signal()
            }
        }
    }
}
