import Foundation

/// A JPEG decoded into one RGB buffer by two threads at once, each reading a horizontal band of rows with its own
/// libjpeg decompressor, whose rows a consumer may read as soon as they are decoded.
///
/// The calling thread decodes the upper band, rows `0..<split`, with ``decodeUpperBand(_:)``. A worker decodes the lower
/// band with ``decodeLowerBand()``: its decompressor skips to `split` (`jpeg_skip_scanlines`, which still reads the
/// entropy-coded data of the rows it skips: the price of the second thread) and decodes `split..<height`. Whoever
/// reaches the lower band first claims it: when the calling thread finishes its band before a worker has started
/// decoding the lower one (not started, or still skipping), it reads on with its own decompressor, with no skip, so it
/// never waits for a worker that has not started (a busy Dispatch pool costs no more than decoding alone). Nor for long
/// on one that stalls mid-band (descheduled on a busy machine): it then takes the rest of the band over
/// (``waitForRows(through:)``).
///
/// The pixels are exactly those of ``ImageDecoder/decode(_:options:)``: the same libjpeg-turbo, the same settings
/// (accurate integer IDCT, fancy upsampling, RGB), and libjpeg's skip reproduces the upsampling context of the rows
/// after it. So are the errors: the verdict is that of the decompressor that read the file to its end (whichever
/// decoded the lower band), judged by the rule TurboJPEG's path uses (a fatal error, or the image's first warning when
/// it means missing or damaged data). Images this class does not take — not a JPEG, EXIF orientation other than up,
/// DCT-scaled decoding, several scans (progressive files, which libjpeg reads whole before the first row), anything
/// failing before the first row — make the initialiser return nil, and the caller decodes them the usual way, which
/// also gives header errors their usual messages.
///
/// Thread-safety: ``decodeUpperBand(_:)``, ``waitForRows(through:)``, ``finish()``, ``withRows(_:_:)`` and ``image()``
/// belong to the thread that created the decoding; ``decodeLowerBand()`` may run once on one other thread at the same
/// time. They share only the lower band's progress, behind a condition lock; the two decompressors write disjoint rows.
public final class BandedJPEGDecoding: @unchecked Sendable {
    // @unchecked: `data` and `pixels` are written only before the worker can start (data) or in disjoint row ranges by
    // the two threads (pixels), whose hand-over goes through `condition`; `state` is only touched under `condition`.

    /// The image's width and height in pixels (no EXIF orientation to apply: such images are not taken).
    public let width: Int
    public let height: Int
    /// The first row of the lower band; `height` when there is none (the calling thread decodes every row).
    public let split: Int

    private let rowBytes: Int
    /// A private copy of the file, so both decompressors read memory that lives as long as this object.
    private let data: UnsafeMutableBufferPointer<UInt8>
    private let pixels: UnsafeMutableBufferPointer<UInt8>
    private let ownsPixels: Bool
    /// The calling thread's decompressor, header read and decompression started; kept at row `split` while a worker
    /// has the lower band, for a takeover.
    private var upper: LibJPEGDecoder?

    private enum Owner { case unclaimed, worker, caller }
    private struct State {
        var lowerOwner: Owner
        /// Rows of the lower band the worker has decoded.
        var lowerRows = 0
        /// The row the worker's current batch ends at (it decodes only below `lowerLimit`, which the calling thread
        /// lowers when it takes the rest of the band over from a stalled worker).
        var lowerCommitted: Int
        var lowerLimit: Int
        /// When the calling thread took the rest of the lower band over: its verdict on the file, which it read to
        /// the end (the worker stops at `lowerLimit`).
        var takeoverVerdict: Result<Void, ImageDecodeError>?
        /// Set once the worker has ended: its verdict on the whole file.
        var lowerOutcome: Result<Void, ImageDecodeError>?
        /// Set when the calling thread has given up (its band failed): the worker stops at its next batch.
        var cancelled = false
        /// When the last row was decoded, by either thread.
        var rowsDecodedAt: ContinuousClock.Instant?
    }
    private let condition = NSCondition()
    private var state: State
    private let afterLowerBatch: (@Sendable (Int) -> Void)?

    /// Rows a decompressor reads between two reports of progress.
    package static let batchRows = 16
    /// How long the calling thread waits for the worker's next batch (about 30 µs of work) before it takes the rest of
    /// the lower band over: the worker has then been descheduled, on a machine busy with other work.
    static let stallTimeout = 0.000_3

    /// Reads the header and starts the upper band's decompressor; nil when this image is not one to decode in bands.
    ///
    /// - Parameters:
    ///   - bytes: the whole file.
    ///   - options: as for ``ImageDecoder/decode(_:options:)``; only their defaults for orientation and scaling
    ///     are taken (an image that would be rotated or scaled returns nil).
    ///   - splitRow: given the width and height, the first row of the lower band; clamped to `1...height`, where
    ///     `height` means no lower band.
    /// - Throws: ``ImageDecodeError/tooLarge(width:height:maxPixels:)`` and the other errors of the JPEG header, as
    ///   ``ImageDecoder/decode(_:options:)`` throws them.
    public convenience init?(
        _ bytes: [UInt8], options: DecodeOptions = .init(), splitRow: (_ width: Int, _ height: Int) -> Int
    ) throws(ImageDecodeError) {
        try self.init(bytes, options: options, pixels: nil, splitRow: splitRow)
    }

    /// As the public initialiser; with `pixels`, rows go to that buffer (at least width × height × 3 bytes), which
    /// must stay valid until the lower band's worker has ended (``finish()`` has returned or thrown).
    /// `afterLowerBatch`, for tests that need a slow worker, runs on the worker after each batch it publishes, with
    /// the number of lower-band rows decoded.
    package init?(
        _ bytes: [UInt8], options: DecodeOptions, pixels external: UnsafeMutableBufferPointer<UInt8>?,
        splitRow: (Int, Int) -> Int, afterLowerBatch: (@Sendable (Int) -> Void)? = nil
    ) throws(ImageDecodeError) {
        self.afterLowerBatch = afterLowerBatch
        guard ImageDecoder.detectFormat(bytes) == .jpeg, options.minimumDecodedSize == nil else { return nil }
        // TurboJPEG's header check first: it refuses some files libjpeg takes, and gives header errors their messages.
        let (width, height) = try bytes.withUnsafeBufferPointer { (data) throws(ImageDecodeError) in
            let size = try JPEGDecompressor().header(data)
            guard !options.applyEXIFOrientation || EXIFOrientation.inJPEG(data) == .up else { return (0, 0) }
            return size
        }
        guard width > 0 else { return nil }  // an orientation to apply
        try ImageDecoder.checkSize(width: width, height: height, options: options)
        let data = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
        _ = data.initialize(from: bytes)
        let upper = LibJPEGDecoder(UnsafeBufferPointer(data))
        guard let header = try? upper.header(), header.width == width, header.height == height,
            !header.multipleScans, (try? upper.startRGB()) != nil
        else {
            data.deallocate()
            return nil
        }
        self.width = width
        self.height = height
        split = min(max(splitRow(width, height), 1), height)
        rowBytes = 3 * width
        self.data = data
        self.upper = upper
        if let external {
            precondition(external.count >= width * height * 3, "pixel buffer too small for \(width)x\(height)")
            pixels = external
            ownsPixels = false
        } else {
            pixels = .allocate(capacity: width * height * 3)
            ownsPixels = true
        }
        state = State(lowerOwner: split == height ? .caller : .unclaimed, lowerCommitted: split, lowerLimit: height)
    }

    deinit {
        upper = nil  // before the bytes it reads
        data.deallocate()
        if ownsPixels { pixels.deallocate() }
    }

    // MARK: - The calling thread

    /// Decodes the upper band, calling `rowsDecoded(n)` after each batch of rows (rows `0..<n` are then ready); then,
    /// if no worker has claimed the lower band, claims it and decodes it the same way.
    ///
    /// - Returns: true when this thread decoded every row and the verdict is in (the file read to its end); false when
    ///   a worker has the lower band: follow it with ``waitForRows(through:)`` and end with ``finish()``.
    /// - Throws: ``ImageDecodeError``: a fatal error in the upper band, or the verdict on the file when this thread
    ///   decoded it all. After a throw, the worker (if any) has ended.
    public func decodeUpperBand(_ rowsDecoded: (Int) -> Void) throws(ImageDecodeError) -> Bool {
        guard let upper else { preconditionFailure("decodeUpperBand called twice") }
        do {
            try read(upper, upTo: split, rowsDecoded)
            // Kept, at row `split`, in case the worker stalls and this thread takes its band over.
            guard claimLowerBand(for: .caller) else { return false }
            self.upper = nil
            try read(upper, upTo: height, rowsDecoded)
            markRowsDecoded()
            try upper.finish()
            try upper.checkWarnings(doing: "decoding the JPEG")
            return true
        } catch {
            self.upper = nil
            abandon()
            throw error
        }
    }

    /// Once a worker has the lower band: blocks until rows `0...row` are decoded; returns how many rows from the top
    /// are (more than `row`, at most `height`).
    ///
    /// When the worker publishes nothing for ``stallTimeout`` (descheduled on a busy machine), this thread takes the
    /// rest of the band over: the worker stops after its current batch, and this thread's decompressor skips to
    /// there and decodes the remaining rows, then waits only for that batch.
    ///
    /// - Throws: the worker's verdict when it failed, or this thread's after a takeover.
    public func waitForRows(through row: Int) throws(ImageDecodeError) -> Int {
        condition.lock()
        defer { condition.unlock() }
        while split + state.lowerRows <= row, state.lowerOutcome == nil {
            let before = state.lowerRows
            if upper != nil, !condition.wait(until: Date(timeIntervalSinceNow: Self.stallTimeout)),
                state.lowerRows == before, state.lowerOutcome == nil
            {
                try takeOver()
            } else if upper == nil {
                condition.wait()
            }
        }
        if case .failure(let error) = state.lowerOutcome { throw error }
        return split + state.lowerRows
    }

    /// Once a worker has the lower band: waits for it to have ended, and throws the verdict on the file.
    public func finish() throws(ImageDecodeError) {
        condition.lock()
        defer { condition.unlock() }
        while state.lowerOwner == .worker, state.lowerOutcome == nil { condition.wait() }
        if case .failure(let error) = state.takeoverVerdict ?? state.lowerOutcome { throw error }
    }

    /// Called with `condition` locked, from ``waitForRows(through:)``: stops the worker after its current batch and
    /// decodes the rows below it with the upper band's decompressor, the lock released meanwhile.
    private func takeOver() throws(ImageDecodeError) {
        guard let upper else { return }
        self.upper = nil
        let from = state.lowerCommitted
        state.lowerLimit = from
        condition.unlock()
        defer { condition.lock() }
        let verdict = Result { () throws(ImageDecodeError) in
            guard try upper.skip(from - split) == from - split else {
                throw .corrupt(format: .jpeg, reason: "decoding the JPEG: could not skip to row \(from)")
            }
            try read(upper, upTo: height) { _ in }
            try upper.finish()
            try upper.checkWarnings(doing: "decoding the JPEG")
        }
        condition.lock()
        state.takeoverVerdict = verdict
        // The worker publishes its last batch, then ends; rows `from...` are this thread's.
        while state.lowerOutcome == nil { condition.wait() }
        if case .success = verdict { state.lowerRows = height - split }
        state.rowsDecodedAt = state.rowsDecodedAt ?? ContinuousClock.now
        condition.unlock()
        if case .failure(let error) = verdict { throw error }
    }

    /// Calls `body` with rows `0..<rows` (3 × width bytes each, R G B), which must be decoded already; from any thread
    /// that has learnt so (through ``decodeUpperBand(_:)``'s reports, ``waitForRows(through:)`` or the lower band's
    /// success).
    public func withRows<R>(_ rows: Int, _ body: (Span<UInt8>) -> R) -> R {
        precondition(rows >= 0 && rows <= height)
        return body(Span(_unsafeElements: UnsafeBufferPointer(rebasing: pixels[0..<(rows * rowBytes)])))
    }

    /// A copy of the decoded image, once every row is decoded.
    public func image() -> RGBImage {
        RGBImage(width: width, height: height, pixels: Array(pixels[0..<(height * rowBytes)]))
    }

    // MARK: - The worker

    /// Skips to the lower band, claims it unless the calling thread has, and decodes it, publishing each batch of rows.
    ///
    /// The band is claimed only once the skip is done, so a worker that starts late or is slowed in its skip leaves
    /// the band to the calling thread rather than holding it up.
    ///
    /// - Returns: nil when the band, or the end of it, was not this thread's (taken first; the skip failed, and the
    ///   calling thread decodes the band itself and meets the same error; or the calling thread took the rest over);
    ///   otherwise this thread's verdict on the file, which also goes to the calling thread (``waitForRows(through:)``,
    ///   ``finish()``). After a success every row of the image is decoded but, maybe, the upper band's.
    @discardableResult
    public func decodeLowerBand() -> Result<Void, ImageDecodeError>? {
        let decoder = LibJPEGDecoder(UnsafeBufferPointer(data))
        guard (try? skipToLowerBand(decoder)) == true, claimLowerBand(for: .worker) else { return nil }
        let outcome: Result<Bool, ImageDecodeError>
        do {
            outcome = .success(try decodeLower(decoder))
        } catch {
            outcome = .failure(error)
        }
        condition.lock()
        state.lowerOutcome = outcome.map { _ in () }
        condition.broadcast()
        condition.unlock()
        switch outcome {
        case .success(let decodedToTheEnd): return decodedToTheEnd ? .success(()) : nil
        case .failure(let error): return .failure(error)
        }
    }

    /// Reads the header and skips the upper band; false when the band is claimed already (no use skipping) or the
    /// skip fell short.
    private func skipToLowerBand(_ decoder: LibJPEGDecoder) throws(ImageDecodeError) -> Bool {
        guard lowerBandIsUnclaimed else { return false }
        _ = try decoder.header()
        try decoder.startRGB()
        return try decoder.skip(split) == split
    }

    private var lowerBandIsUnclaimed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state.lowerOwner == .unclaimed
    }

    /// Decodes the lower band batch by batch, each committed under the lock, until the end or the limit the calling
    /// thread set when it took the rest over; only a worker that reached the end reads the file's end and judges it.
    /// - Returns: false when the calling thread took the rest of the band over.
    private func decodeLower(_ decoder: LibJPEGDecoder) throws(ImageDecodeError) -> Bool {
        var next = split
        while true {
            condition.lock()
            let end = min(next + Self.batchRows, state.lowerLimit)
            let cancelled = state.cancelled
            if end > next, !cancelled { state.lowerCommitted = end }
            condition.unlock()
            if cancelled {  // the calling thread failed first and reports its own error
                throw .corrupt(format: .jpeg, reason: "decoding the JPEG: stopped after the upper band failed")
            }
            guard end > next else { break }
            try read(decoder, upTo: end) { _ in }
            next = end
            condition.lock()
            state.lowerRows = next - split
            condition.broadcast()
            condition.unlock()
            afterLowerBatch?(next - split)
        }
        guard next == height else { return false }
        markRowsDecoded()
        try decoder.finish()
        try decoder.checkWarnings(doing: "decoding the JPEG")
        return true
    }

    // MARK: - Shared

    /// Reads rows from `decoder.nextRow` up to `end` in batches, reporting the rows decoded from the top after each.
    private func read(_ decoder: LibJPEGDecoder, upTo end: Int, _ rowsDecoded: (Int) -> Void)
        throws(ImageDecodeError)
    {
        var next = decoder.nextRow
        while next < end {
            let count = min(Self.batchRows, end - next)
            let read = try decoder.read(
                rows: count, into: UnsafeMutableBufferPointer(rebasing: pixels[(next * rowBytes)...]),
                rowBytes: rowBytes)
            guard read > 0 else {
                throw .corrupt(format: .jpeg, reason: "decoding the JPEG: no row after row \(next)")
            }
            next += read
            rowsDecoded(next)
        }
    }

    /// When the last row was decoded, by either thread; nil until then.
    public var rowsDecodedAt: ContinuousClock.Instant? {
        condition.lock()
        defer { condition.unlock() }
        return state.rowsDecodedAt
    }

    private func markRowsDecoded() {
        let now = ContinuousClock.now
        condition.lock()
        state.rowsDecodedAt = now
        condition.unlock()
    }

    /// Takes the lower band for `owner` if nobody has; true when `owner` has it now.
    private func claimLowerBand(for owner: Owner) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if state.lowerOwner == .unclaimed { state.lowerOwner = owner }
        return state.lowerOwner == owner
    }

    /// After a failure on the calling thread: keeps a worker from starting, or stops the one running and waits for
    /// it to end (it writes into `pixels`, which may be the caller's).
    private func abandon() {
        condition.lock()
        defer { condition.unlock() }
        if state.lowerOwner == .unclaimed { state.lowerOwner = .caller }
        state.cancelled = true
        while state.lowerOwner == .worker, state.lowerOutcome == nil { condition.wait() }
    }
}
