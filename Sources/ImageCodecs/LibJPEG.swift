internal import CJPEG

/// Owns one libjpeg decompressor (through the CJPEG shim) reading one JPEG in memory, and destroys it in `deinit`.
///
/// Not thread-safe: one thread at a time (two decoders on the same bytes may run on two threads). Bound to its input:
/// libjpeg reads `data` lazily, so the buffer passed to `init` must outlive the decoder. ``BandedJPEGDecoding`` owns
/// both.
final class LibJPEGDecoder {
    private let decoder: OpaquePointer

    /// Header facts: the coded size and whether libjpeg reads every scan before the first row.
    struct Header {
        var width: Int
        var height: Int
        var multipleScans: Bool
    }

    init(_ data: UnsafeBufferPointer<UInt8>) {
        guard let decoder = cjpeg_create(data.baseAddress, data.count) else {
            fatalError("libjpeg could not allocate a decompressor (out of memory)")
        }
        self.decoder = decoder
    }

    deinit { cjpeg_destroy(decoder) }

    func header() throws(ImageDecodeError) -> Header {
        var header = cjpeg_header()
        try check(cjpeg_read_header(decoder, &header), doing: "reading the JPEG header")
        return Header(width: Int(header.width), height: Int(header.height), multipleScans: header.multiple_scans != 0)
    }

    /// Starts decompression to RGB with TurboJPEG's defaults (accurate integer IDCT, fancy upsampling).
    func startRGB() throws(ImageDecodeError) {
        try check(cjpeg_start_rgb(decoder), doing: "decoding the JPEG")
    }

    /// Skips `rows` rows (libjpeg still reads their entropy-coded data); returns how many it skipped.
    func skip(_ rows: Int) throws(ImageDecodeError) -> Int {
        var skipped: Int32 = 0
        try check(cjpeg_skip_rows(decoder, Int32(clamping: rows), &skipped), doing: "decoding the JPEG")
        return Int(skipped)
    }

    /// Reads up to `rows` rows into `out` (3 × width bytes each, back to back); returns how many it read.
    func read(rows: Int, into out: UnsafeMutableBufferPointer<UInt8>, rowBytes: Int) throws(ImageDecodeError) -> Int {
        precondition(rows * rowBytes <= out.count, "row buffer too small")
        var read: Int32 = 0
        try check(
            cjpeg_read_rows(decoder, out.baseAddress, rowBytes, Int32(clamping: rows), &read), doing: "decoding the JPEG")
        return Int(read)
    }

    /// Reads the rest of the file to its end (EOI), once every row has been read.
    func finish() throws(ImageDecodeError) {
        try check(cjpeg_finish(decoder), doing: "decoding the JPEG")
    }

    /// The next row ``read(rows:into:rowBytes:)`` reads.
    var nextRow: Int { Int(cjpeg_next_row(decoder)) }

    /// Judges the image's first warning as ``JPEGDecompressor`` judges TurboJPEG's (the same rule, the same messages).
    func checkWarnings(doing what: String) throws(ImageDecodeError) {
        guard let warning = cjpeg_first_warning(decoder) else { return }
        try JPEGDecompressor.judge(message: String(cString: warning), isWarning: true, doing: what)
    }

    /// The one place a CJPEG status becomes a Swift error: a fatal libjpeg error is `.corrupt` (or `.truncated`).
    private func check(_ status: Int32, doing what: String) throws(ImageDecodeError) {
        guard status != 0 else { return }  // CJPEG_OK
        try JPEGDecompressor.judge(message: String(cString: cjpeg_message(decoder)), isWarning: false, doing: what)
    }
}
