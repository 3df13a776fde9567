import Dispatch
import Foundation
import ImageCodecs
import Primitives

/// A JPEG decoded and letterboxed in one pass: the network's input tensor, its geometry, and when the last source row
/// was decoded (for the stage timings).
public struct FusedLetterbox: Sendable {
    public var tensor: [Float]
    public var geometry: LetterboxGeometry
    /// When the last source row was decoded; what follows is the resize's tail.
    public var rowsDecodedAt: ContinuousClock.Instant
}

extension LetterboxTransform {
    /// Decodes a JPEG and letterboxes it in one pass on up to two threads; the tensor equals
    /// `tensor(from: ImageDecoder.decode(bytes, options: options))` exactly.
    ///
    /// The calling thread reads the entropy-coded data (the sequential part of a decode) into libjpeg's coefficient
    /// buffer, while a Dispatch worker turns the coefficient rows read so far into pixel rows a little behind it
    /// (``PipelinedJPEGDecoding``) and, whenever it has to wait for the next coefficient row, resizes the output rows
    /// whose two source rows are decoded, writing them straight into the tensor. Once the data is read, both threads
    /// decode and resize what is left, a chunk of rows at a time. The calling thread never waits for a worker that has
    /// not started: it then does everything itself (and keeps the late worker from starting), at about the cost of a
    /// one-thread decode.
    ///
    /// - Returns: nil for images ``PipelinedJPEGDecoding`` does not take (PNG, progressive or EXIF-rotated JPEGs,
    ///   DCT-scaled decoding): decode them with `ImageDecoder.decode` and letterbox with ``tensor(from:)``.
    /// - Throws: ``ImageDecodeError``, as `ImageDecoder.decode` throws it.
    public func tensor(fromJPEG bytes: [UInt8], options: DecodeOptions = .init()) throws(ImageDecodeError)
        -> FusedLetterbox?
    {
        try tensor(fromJPEG: bytes, options: options, worker: .dispatched)
    }

    /// When and where a pipelined run's worker starts, and what it does after each batch of rows it decoded: the
    /// seam through which tests force the interleavings the run must survive (a worker that never starts, starts
    /// late, or pauses). The service runs ``dispatched``.
    struct DecodeWorker: Sendable {
        /// Starts the worker's work on another thread; not calling it leaves everything to the calling thread.
        var start: @Sendable (_ work: @escaping @Sendable () -> Void) -> Void
        /// Start it once the calling thread has read every coefficient row, rather than when the run begins.
        var startsAfterInput = false
        /// Runs on the worker thread after each batch of rows it decoded.
        var afterBatch: @Sendable () -> Void = {}

        /// On Dispatch's global queue, as soon as the run begins.
        static let dispatched = DecodeWorker(start: { DispatchQueue.global().async(execute: $0) })
    }

    /// ``tensor(fromJPEG:options:)`` with the worker's scheduling given.
    func tensor(fromJPEG bytes: [UInt8], options: DecodeOptions, worker: DecodeWorker) throws(ImageDecodeError)
        -> FusedLetterbox?
    {
        guard let decoding = try PipelinedJPEGDecoding(bytes, options: options) else { return nil }
        let geometry = LetterboxGeometry(
            source: ImageSize(width: decoding.width, height: decoding.height), target: target)
        // Small images are not worth a hand-off.
        let useWorker = parallelism > 1 && decoding.width * decoding.height >= 65_536
        var outcome: Result<ContinuousClock.Instant, ImageDecodeError> = .failure(.empty)
        let tensor = paddedTensor(geometry) { buffer in
            let run = PipelinedRun(
                transform: self, geometry: geometry, decoding: decoding, tensor: SharedTensor(buffer: buffer),
                afterBatch: worker.afterBatch)
            if useWorker, !worker.startsAfterInput { worker.start { run.workerDecodesAndResizes() } }
            outcome = Result { () throws(ImageDecodeError) in
                try run.callerDecodesAndResizes(afterInput: {
                    if useWorker, worker.startsAfterInput { worker.start { run.workerDecodesAndResizes() } }
                })
            }
        }
        return FusedLetterbox(tensor: tensor, geometry: geometry, rowsDecodedAt: try outcome.get())
    }
}

/// The tensor's memory, written by both threads of a ``PipelinedRun`` in disjoint rows and regions.
private struct SharedTensor: @unchecked Sendable {
    // @unchecked: each element is written by one thread only (the one that took its row), and read by nobody
    // until both threads are done (the worker's end is awaited through `PipelinedRun.workerEnded`).
    let buffer: UnsafeMutableBufferPointer<Float>

    func withSpan<R>(_ body: (inout MutableSpan<Float>) -> R) -> R {
        var span = MutableSpan(_unsafeElements: buffer)
        return body(&span)
    }
}

/// One pipelined decode-and-letterbox: output rows are taken from the top, a chunk at a time, by whichever thread is
/// free once their source rows are decoded, and written straight into the tensor (whose padding is written before).
///
/// Thread-safety: `callerDecodesAndResizes` runs on the calling thread, `workerDecodesAndResizes` on at most one
/// worker; they share `state` (behind its lock), the decoding (thread-safe as documented there) and the tensor, in
/// which each writes only the rows it took. The caller returns only once the worker has ended
/// or is kept from starting, so no write outlives the tensor's memory.
private final class PipelinedRun: Sendable {
    let transform: LetterboxTransform
    let geometry: LetterboxGeometry
    let decoding: PipelinedJPEGDecoding
    let resizer: LinearResizer
    let tensor: SharedTensor
    let state = Locked(RunState())
    let workerEnded = DispatchSemaphore(value: 0)
    /// Output rows a thread takes at a time.
    static let chunkRows = 8

    /// Runs on the worker thread after each batch of rows it decoded (`LetterboxTransform.DecodeWorker.afterBatch`).
    let afterBatch: @Sendable () -> Void

    init(
        transform: LetterboxTransform, geometry: LetterboxGeometry, decoding: PipelinedJPEGDecoding,
        tensor: SharedTensor, afterBatch: @escaping @Sendable () -> Void = {}
    ) {
        self.afterBatch = afterBatch
        self.transform = transform
        self.geometry = geometry
        self.decoding = decoding
        self.tensor = tensor
        resizer = LinearResizer(
            source: ImageSize(width: decoding.width, height: decoding.height), target: geometry.resized)
    }

    enum Worker { case notStarted, running, ended, excluded }
    struct RunState {
        /// Output rows `top...` are not taken yet.
        var top = 0
        var worker = Worker.notStarted
    }

    /// Takes up to ``chunkRows`` output rows from the top whose source rows are among the first `decodedRows`.
    private func takeReadyRows(decodedRows: Int) -> Range<Int>? {
        let height = resizer.yRows.count
        return state.withLock { state in
            var end = state.top
            let limit = min(state.top + Self.chunkRows, height)
            while end < limit, resizer.yRows[end].1 < decodedRows { end += 1 }
            guard end > state.top else { return nil }
            defer { state.top = end }
            return state.top..<end
        }
    }

    private var allTaken: Bool { state.withLock { $0.top == resizer.yRows.count } }

    // MARK: Calling thread

    /// Reads the coefficients, calls `afterInput`, then decodes and resizes with the worker what is left; returns when
    /// the last source row was decoded.
    func callerDecodesAndResizes(afterInput: () -> Void) throws(ImageDecodeError) -> ContinuousClock.Instant {
        defer { waitForWorker() }
        do {
            try decoding.readCoefficients()
            afterInput()
            var scratch = LinearResizer.Scratch(width: geometry.resized.width)
            var row = [UInt8](repeating: 0, count: 3 * geometry.resized.width)
            while true {
                var worked = try decoding.decodeNextRows()
                let decoded = decoding.current.rowsDecoded
                if let taken = takeReadyRows(decodedRows: decoded) {
                    resize(taken, decodedRows: decoded, row: &row, scratch: &scratch)
                    worked = true
                }
                if decoded == decoding.height, allTaken { break }
                if !worked {  // the worker is decoding a batch
                    try decoding.wait { $0.outputBusy && $0.rowsDecoded == decoded }
                }
            }
            decoding.stop()  // wakes a waiting worker: nothing is left for it
            try decoding.finish()
        } catch {
            decoding.stop()
            throw error
        }
        guard let decodedAt = decoding.rowsDecodedAt else { preconditionFailure("every row is decoded by now") }
        return decodedAt
    }

    /// Keeps a worker that has not started from starting, or waits for the running one to end (it may still be writing
    /// its last rows into the tensor). Called once, as the calling thread leaves.
    private func waitForWorker() {
        let running = state.withLock { state in
            if state.worker == .notStarted { state.worker = .excluded }
            return state.worker == .running
        }
        if running { workerEnded.wait() }
    }

    // MARK: Worker

    func workerDecodesAndResizes() {
        guard state.withLock({ state in
            guard state.worker == .notStarted else { return false }
            state.worker = .running
            return true
        }) else { return }
        defer {
            state.withLock { $0.worker = .ended }
            workerEnded.signal()
        }
        var scratch = LinearResizer.Scratch(width: geometry.resized.width)
        var row = [UInt8](repeating: 0, count: 3 * geometry.resized.width)
        while true {
            guard let decodedMore = try? decoding.decodeNextRows() else { return }
            if decodedMore {
                afterBatch()
                continue
            }
            let progress = decoding.current
            if progress.stopped { return }
            if let taken = takeReadyRows(decodedRows: progress.rowsDecoded) {
                resize(taken, decodedRows: progress.rowsDecoded, row: &row, scratch: &scratch)
                continue
            }
            if allTaken { return }
            guard (try? decoding.wait(while: { $0 == progress })) != nil else { return }
        }
    }

    // MARK: Shared

    private func resize(
        _ rows: Range<Int>, decodedRows: Int, row: inout [UInt8], scratch: inout LinearResizer.Scratch
    ) {
        decoding.withRows(decodedRows) { pixels in
            for y in rows {
                var span = row.mutableSpan
                resizer.resizeRow(y, from: pixels, into: &span, at: 0, scratch: &scratch)
                _ = consume span
                tensor.withSpan { transform.write(resizedRow: y, row.span, geometry: geometry, into: &$0) }
            }
        }
    }
}
