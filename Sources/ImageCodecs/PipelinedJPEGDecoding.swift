import Foundation

/// A JPEG decoded by two threads at once through one libjpeg decompressor in buffered-image mode: one thread reads the
/// entropy-coded data into libjpeg's whole-image coefficient buffer (the sequential part of a decode), while the other
/// turns the coefficient rows read so far into RGB rows (IDCT, upsampling, colour conversion), a little behind it.
///
/// The input side, ``readCoefficients()``, belongs to the thread that created the decoding and runs from start to end.
/// The output side, ``decodeNextRows()``, is taken one batch of rows at a time by whichever thread calls it first (the
/// other gets `false`), so a worker that starts late, or not at all, leaves it to the calling thread, and the two can
/// share it. Each batch lies within one iMCU row and only reads coefficient rows already read, the next one included
/// (fancy upsampling's context), and none runs while the input side reads the markers after the scan: the rules
/// `cjpeg.h` sets for the two sides to run at once. No work is done twice; the price is the whole-image coefficient
/// buffer (128 bytes per 8×8 block of each component).
///
/// The pixels and the verdict are those of ``ImageDecoder/decode(_:options:)``: the same libjpeg-turbo, the same
/// settings (accurate integer IDCT, fancy upsampling, RGB; libjpeg's buffered-image output of a single-scan file runs
/// the same IDCT and upsampling as its one-pass output), the file read to its end, and the first warning judged by
/// TurboJPEG's rule. Images this class does not take — not a JPEG, EXIF orientation other than up, DCT-scaled
/// decoding, several scans, anything failing before the first row — make the initialiser return nil, and the caller
/// decodes them the usual way. So libjpeg reads one scan here, whatever the file holds: a scan its header did not
/// announce fails the decode as `.corrupt` (libjpeg expects the end of the image after the only scan), and a
/// progressive or multi-scan file goes to TurboJPEG, whose scan limit applies.
///
/// Thread-safety: ``readCoefficients()`` and ``finish()`` belong to the thread that created the decoding; the other
/// members may be called from any thread. The two sides share the decompressor under the rules of `cjpeg.h`, their
/// progress behind a condition lock; rows are written once, before their count is published.
public final class PipelinedJPEGDecoding: @unchecked Sendable {
    // @unchecked: `data` is written only before any other thread can see this object; `pixels` rows are written by the
    // thread holding the output side (`state.outputBusy`) before their count is published under `condition`, and read
    // only below a published count; the decompressor's two sides are kept apart as `cjpeg.h` requires.

    /// The image's width and height in pixels (no EXIF orientation to apply: such images are not taken).
    public let width: Int
    public let height: Int

    private let rowBytes: Int
    private let imcuRows: Int
    private let rowsPerIMCU: Int
    /// A private copy of the file, which libjpeg reads lazily.
    private let data: UnsafeMutableBufferPointer<UInt8>
    private let pixels: UnsafeMutableBufferPointer<UInt8>
    private let ownsPixels: Bool
    private let decoder: LibJPEGDecoder

    /// How far each side has got.
    public struct Progress: Sendable, Equatable {
        /// iMCU rows of coefficients read by the input side.
        public var coefficientRows = 0
        /// Whether the input side has read the file to its end.
        public var inputFinished = false
        /// Rows `0..<rowsDecoded` are decoded.
        public var rowsDecoded = 0
        /// Whether a thread is decoding a batch of rows.
        public var outputBusy = false
        /// Whether the input side is reading the markers after the scan: no batch of rows runs meanwhile.
        public var inputReadsMarkers = false
        /// Whether ``stop()`` was called: the output side decodes no more rows.
        public var stopped = false
        /// Whether either side failed (the error is thrown by ``readCoefficients()``, ``decodeNextRows()``,
        /// ``wait(while:)`` or ``finish()``).
        public var failed = false
    }
    private let condition = NSCondition()
    private var progress = Progress()
    private var failure: ImageDecodeError?
    private var decodedAt: ContinuousClock.Instant?

    /// Rows the output side decodes at a time (fewer at the end of an iMCU row).
    static let batchRows = 16

    /// Reads the header and starts the buffered-image decode; nil when this image is not one to decode this way.
    ///
    /// - Parameters:
    ///   - bytes: the whole file.
    ///   - options: as for ``ImageDecoder/decode(_:options:)``; only their defaults for orientation and scaling are
    ///     taken (an image that would be rotated or scaled returns nil).
    /// - Throws: ``ImageDecodeError/tooLarge(width:height:maxPixels:)`` and the other errors of the JPEG header, as
    ///   ``ImageDecoder/decode(_:options:)`` throws them.
    public convenience init?(_ bytes: [UInt8], options: DecodeOptions = .init()) throws(ImageDecodeError) {
        try self.init(bytes, options: options, pixels: nil)
    }

    /// As the public initialiser; with `pixels`, rows go to that buffer (at least width × height × 3 bytes), which
    /// must stay valid until every row is decoded or ``stop()`` has returned.
    package init?(_ bytes: [UInt8], options: DecodeOptions, pixels external: UnsafeMutableBufferPointer<UInt8>?)
        throws(ImageDecodeError)
    {
        guard ImageDecoder.detectFormat(bytes) == .jpeg, options.minimumDecodedSize == nil else { return nil }
        // TurboJPEG's header check first: it refuses some files libjpeg takes, and gives header errors their messages.
        let (width, height) = try bytes.withUnsafeBufferPointer { (data) throws(ImageDecodeError) in
            let size = try JPEGDecompressor().header(data)
            guard !options.applyEXIFOrientation || EXIFOrientation.inJPEG(data) == .up else { return (0, 0) }
            return size
        }
        guard width > 0 else { return nil }  // an orientation to apply
        let byteCount = try ImageDecoder.checkSize(width: width, height: height, options: options)
        let data = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
        _ = data.initialize(from: bytes)
        let decoder = LibJPEGDecoder(UnsafeBufferPointer(data))
        guard let header = try? decoder.header(), header.width == width, header.height == height,
            !header.multipleScans, let layout = try? decoder.startBufferedRGB()
        else {
            data.deallocate()
            return nil
        }
        self.width = width
        self.height = height
        rowBytes = 3 * width
        imcuRows = layout.imcuRows
        rowsPerIMCU = layout.rowsPerIMCU
        self.data = data
        self.decoder = decoder
        if let external {
            precondition(external.count >= byteCount, "pixel buffer too small for \(width)x\(height)")
            pixels = external
            ownsPixels = false
        } else {
            pixels = .allocate(capacity: byteCount)
            ownsPixels = true
        }
    }

    deinit {
        // The decompressor reads `data`; it goes when this object does, after every thread has let go of it.
        data.deallocate()
        if ownsPixels { pixels.deallocate() }
    }

    // MARK: - Input side (the calling thread)

    /// Reads every coefficient row, to the end of the file, publishing its progress after each iMCU row.
    ///
    /// - Throws: ``ImageDecodeError``: a fatal error in the entropy-coded data (the output side then stops too).
    public func readCoefficients() throws(ImageDecodeError) {
        while true {
            // Past the scan's last row, libjpeg reads the markers up to the end of the image, and a marker there can
            // rewrite fields of the decompressor that the output side reads: a second SOF stores its image size and
            // component count before libjpeg fails on it ("two SOF markers"), and an output side decoding rows at
            // that moment reads past its buffers (found by FuzzImageDecode). So those reads wait for the batch of
            // rows being decoded, and no batch starts until they end.
            let readsMarkers = holdOutputSideIfScanRead()
            let consumed: (imcuRows: Int, finished: Bool)
            do {
                consumed = try decoder.consume()
            } catch {
                fail(error, releasingOutputSide: readsMarkers)
                throw error
            }
            condition.lock()
            progress.coefficientRows = consumed.imcuRows
            progress.inputFinished = consumed.finished
            if readsMarkers { progress.inputReadsMarkers = false }
            condition.broadcast()
            condition.unlock()
            if consumed.finished { return }
        }
    }

    /// Before a read past the scan's last coefficient row: waits for the output side's batch, if one is running, and
    /// keeps new ones from starting (`inputReadsMarkers`). Returns whether it did so.
    private func holdOutputSideIfScanRead() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard progress.coefficientRows >= imcuRows else { return false }
        while progress.outputBusy { condition.wait() }
        progress.inputReadsMarkers = true
        condition.broadcast()
        return true
    }

    /// Once every row is decoded and the input side has finished: ends the decode and throws the verdict on the file.
    public func finish() throws(ImageDecodeError) {
        let ready = withLock { (p: Progress) in p.rowsDecoded == height && p.inputFinished && !p.failed }
        if !ready, let failure = withLock({ _ in failure }) { throw failure }
        precondition(ready, "finish() before every row is decoded")
        try decoder.finishBuffered()
        try decoder.checkWarnings(doing: "decoding the JPEG")
    }

    // MARK: - Output side (any thread)

    /// Decodes the next batch of rows if their coefficients are read and no other thread is decoding.
    ///
    /// - Returns: true when this call decoded rows; false when there was nothing it could decode now (every row is
    ///   decoded, the next batch's coefficients are not read yet, or another thread is decoding one).
    /// - Throws: the decode's failure, this call's or an earlier one of either side.
    public func decodeNextRows() throws(ImageDecodeError) -> Bool {
        condition.lock()
        if let failure {
            condition.unlock()
            throw failure
        }
        let next = progress.rowsDecoded
        let end = min(next + Self.batchRows, (next / rowsPerIMCU + 1) * rowsPerIMCU, decodableRows(progress))
        guard !progress.outputBusy, !progress.inputReadsMarkers, !progress.stopped, end > next else {
            condition.unlock()
            return false
        }
        progress.outputBusy = true
        condition.unlock()
        let read: Int
        do throws(ImageDecodeError) {
            read = try decoder.readOutput(
                rows: end - next, into: UnsafeMutableBufferPointer(rebasing: pixels[(next * rowBytes)...]),
                rowBytes: rowBytes)
            if read == 0 {
                throw .corrupt(format: .jpeg, reason: "decoding the JPEG: no row after row \(next)")
            }
        } catch {
            condition.lock()
            progress.outputBusy = false
            condition.unlock()
            fail(error)
            throw error
        }
        condition.lock()
        progress.rowsDecoded = next + read
        progress.outputBusy = false
        if progress.rowsDecoded == height { decodedAt = .now }
        condition.broadcast()
        condition.unlock()
        return true
    }

    /// Rows the output side may decode now: those of iMCU rows whose next row is read too, or every row once the last
    /// coefficient row is read.
    private func decodableRows(_ progress: Progress) -> Int {
        progress.coefficientRows >= imcuRows ? height : max(0, progress.coefficientRows - 1) * rowsPerIMCU
    }

    // MARK: - Either thread

    /// The progress of both sides now.
    public var current: Progress { withLock { $0 } }

    /// Blocks while `condition` holds for the progress (re-checked at each change of it); returns the progress that
    /// ended the wait. Throws the decode's failure instead, when there is one.
    @discardableResult
    public func wait(while condition: (Progress) -> Bool) throws(ImageDecodeError) -> Progress {
        self.condition.lock()
        defer { self.condition.unlock() }
        while failure == nil, condition(progress) { self.condition.wait() }
        if let failure { throw failure }
        return progress
    }

    /// Tells every thread that no more rows are wanted: waiters wake (their condition sees `stopped`), no batch of rows
    /// starts any more, and none is running when this returns. Call it once done with the decoding, or on giving up.
    public func stop() {
        condition.lock()
        progress.stopped = true
        condition.broadcast()
        while progress.outputBusy { condition.wait() }
        condition.unlock()
    }

    /// For a second thread: decodes batches of rows as their coefficients are read, until every row is decoded, the
    /// decoding is stopped, or it failed.
    public func helpDecode() {
        while true {
            guard let decoded = try? decodeNextRows() else { return }
            if decoded { continue }
            let seen = current
            if seen.stopped || seen.rowsDecoded == height { return }
            guard (try? wait(while: { $0 == seen })) != nil else { return }
        }
    }

    /// The calling thread's part after ``readCoefficients()``: decodes the rows left (the worker, if any, may decode
    /// some), waits for every row, stops the decoding and judges the file (``finish()``).
    public func decodeRemainingRows() throws(ImageDecodeError) {
        do {
            while true {
                if try decodeNextRows() { continue }
                let seen = current
                if seen.rowsDecoded == height { break }
                try wait { $0.outputBusy && $0.rowsDecoded == seen.rowsDecoded }
            }
            stop()
            try finish()
        } catch {
            stop()
            throw error
        }
    }

    /// When the last row was decoded; nil until then.
    public var rowsDecodedAt: ContinuousClock.Instant? { withLock { _ in decodedAt } }

    /// Calls `body` with rows `0..<rows` (3 × width bytes each, R G B), which must be decoded already (as learnt from
    /// ``current``, ``wait(while:)`` or ``decodeNextRows()``).
    public func withRows<R>(_ rows: Int, _ body: (Span<UInt8>) -> R) -> R {
        precondition(rows >= 0 && rows <= height)
        return body(Span(_unsafeElements: UnsafeBufferPointer(rebasing: pixels[0..<(rows * rowBytes)])))
    }

    /// A copy of the decoded image, once every row is decoded (what the tests compare with a one-pass decode).
    func image() -> RGBImage {
        RGBImage(width: width, height: height, pixels: Array(pixels[0..<(height * rowBytes)]))
    }

    private func fail(_ error: ImageDecodeError, releasingOutputSide: Bool = false) {
        condition.lock()
        if failure == nil { failure = error }
        progress.failed = true
        if releasingOutputSide { progress.inputReadsMarkers = false }
        condition.broadcast()
        condition.unlock()
    }

    private func withLock<R>(_ body: (Progress) -> R) -> R {
        condition.lock()
        defer { condition.unlock() }
        return body(progress)
    }
}
