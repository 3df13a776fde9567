internal import CJPEG

/// Owns one libjpeg decompressor (through the CJPEG shim) reading one JPEG in memory, and destroys it in `deinit`.
///
/// Not thread-safe: one thread at a time (two decoders on the same bytes may run on two threads), except in a
/// buffered-image decode, whose input and output sides may run on two threads under the rules of `cjpeg.h`
/// (``PipelinedJPEGDecoding`` keeps them). Bound to its input:
/// libjpeg reads `data` lazily, so the buffer passed to `init` must outlive the decoder. ``PipelinedJPEGDecoding``
/// owns both.
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

    /// Starts a buffered-image decode to RGB (see ``PipelinedJPEGDecoding``): returns the iMCU rows the input side
    /// reads and the output rows per iMCU row.
    func startBufferedRGB() throws(ImageDecodeError) -> (imcuRows: Int, rowsPerIMCU: Int) {
        var layout = cjpeg_buffered_layout()
        try check(cjpeg_start_buffered_rgb(decoder, &layout), doing: "decoding the JPEG")
        return (Int(layout.imcu_rows), Int(layout.rows_per_imcu))
    }

    /// Input side of a buffered-image decode: reads one more iMCU row of coefficients (or the file's end); returns how
    /// many are read and whether the end of the image is reached.
    func consume() throws(ImageDecodeError) -> (imcuRows: Int, finished: Bool) {
        var rows: Int32 = 0, finished: Int32 = 0
        try check(cjpeg_consume(decoder, &rows, &finished), doing: "decoding the JPEG")
        return (Int(rows), finished != 0)
    }

    /// Output side of a buffered-image decode: ``read(rows:into:rowBytes:)`` for rows whose coefficients are read.
    func readOutput(rows: Int, into out: UnsafeMutableBufferPointer<UInt8>, rowBytes: Int) throws(ImageDecodeError)
        -> Int
    {
        precondition(rows * rowBytes <= out.count, "row buffer too small")
        var read: Int32 = 0
        let status = cjpeg_read_output_rows(decoder, out.baseAddress, rowBytes, Int32(clamping: rows), &read)
        if status != 0 {
            try JPEGDecompressor.judge(
                message: String(cString: cjpeg_output_message(decoder)), isWarning: false, doing: "decoding the JPEG")
        }
        return Int(read)
    }

    /// Ends a buffered-image decode, once the input side has reached the end and every row has been read.
    func finishBuffered() throws(ImageDecodeError) {
        try check(cjpeg_finish_buffered(decoder), doing: "decoding the JPEG")
    }

    /// Judges the image's first warning as ``JPEGDecompressor`` judges TurboJPEG's (the same rule, the same messages),
    /// and any later one that said data was missing as the first would have been.
    func checkWarnings(doing what: String) throws(ImageDecodeError) {
        guard let warning = cjpeg_first_warning(decoder) else { return }
        let message = String(cString: warning)
        try JPEGDecompressor.judge(message: message, isWarning: true, doing: what)
        if cjpeg_data_missing(decoder) != 0 {
            throw .truncated(format: .jpeg, reason: "\(what): the data ended before the image did (libjpeg's first "
                + "warning: \(message))")
        }
    }

    /// Reads `data` through to its end, keeping no pixels (``cjpeg_read_through``: no whole-image buffer for a
    /// single-scan file), and judges its warnings, the later ones too: for a file TurboJPEG decoded with a warning, of
    /// which it keeps only the first.
    static func checkWarnings(of data: UnsafeBufferPointer<UInt8>, doing what: String) throws(ImageDecodeError) {
        let decoder = LibJPEGDecoder(data)
        _ = try decoder.header()
        try decoder.check(cjpeg_read_through(decoder.decoder), doing: what)
        try decoder.checkWarnings(doing: what)
    }

    /// The one place a CJPEG status becomes a Swift error: a fatal libjpeg error is `.corrupt` (or `.truncated`).
    private func check(_ status: Int32, doing what: String) throws(ImageDecodeError) {
        guard status != 0 else { return }  // CJPEG_OK
        try JPEGDecompressor.judge(message: String(cString: cjpeg_message(decoder)), isWarning: false, doing: what)
    }
}
