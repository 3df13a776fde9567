internal import CTurboJPEG

// MARK: - Decompressor

/// Owns one TurboJPEG decompressor handle and releases it in `deinit`.
///
/// Not thread-safe: a handle keeps per-image state, so ``ImageDecoder`` makes one per call
/// (creating one costs a few microseconds against milliseconds of decoding).
final class JPEGDecompressor {
    private let handle: tjhandle

    init() {
        guard let handle = tjInitDecompress() else {
            fatalError("TurboJPEG could not allocate a decompressor (out of memory)")
        }
        self.handle = handle
    }

    deinit { tjDestroy(handle) }

    /// The coded size of the JPEG in `data` (before EXIF orientation).
    func header(_ data: UnsafeBufferPointer<UInt8>) throws(ImageDecodeError) -> (width: Int, height: Int) {
        var width: Int32 = 0
        var height: Int32 = 0
        var subsampling: Int32 = 0
        var colorspace: Int32 = 0
        let status = tjDecompressHeader3(
            handle, data.baseAddress, UInt(data.count), &width, &height, &subsampling, &colorspace)
        try check(status, doing: "reading the JPEG header")
        return (Int(width), Int(height))
    }

    /// Decodes `data` to RGB at `width`×`height`, which must be the header size or one of its DCT-scaled sizes.
    ///
    /// Writes straight into the returned array's storage. Uses TurboJPEG's default decoding: accurate integer IDCT
    /// and fancy upsampling, the libjpeg-turbo defaults that OpenCV's `imread` uses too. With `TJFLAG_LIMITSCANS`:
    /// a progressive file of more scans than TurboJPEG's limit fails as `.corrupt` instead of being read, since every
    /// scan makes libjpeg pass over the whole image's coefficients again, and a crafted file of thousands of cheap
    /// scans would hold the decoding thread for as long as it takes to read them all; and before it, the passes the
    /// scans ask for are counted (`JPEGScanBudget`: fewer scans over a large image do the same).
    func decodeRGB(_ data: UnsafeBufferPointer<UInt8>, width: Int, height: Int) throws(ImageDecodeError) -> [UInt8] {
        // The caller checked the header size (`ImageDecoder.checkSize`); a DCT-scaled size is no larger.
        guard let byteCount = RGBImage.byteCount(width: width, height: height) else {
            throw .invalidDimensions(width: width, height: height)
        }
        let cutShort = try JPEGScanBudget.check(data)
        var status: Int32 = 0
        let pixels = [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, count in
            status = tjDecompress2(
                handle, data.baseAddress, UInt(data.count), buffer.baseAddress,
                Int32(width), 0, Int32(height), Int32(TJPF_RGB.rawValue), TJFLAG_LIMITSCANS)
            // TurboJPEG fills every row even on a warning (missing data is grey); on a fatal error the
            // contents are unspecified but UInt8 needs no initialisation, and the array is discarded.
            count = buffer.count
        }
        try check(status, doing: "decoding the JPEG")
        // libjpeg records only an image's first warning: one it accepts ("extraneous bytes before marker") hid the
        // "Premature end of JPEG file" of a file cut short after it, and the rows it never read came back grey.
        if status != 0 {
            if cutShort {
                throw .truncated(format: .jpeg, reason: "decoding the JPEG: the file ends before its end-of-image "
                    + "marker (libjpeg's first warning: \(String(cString: tjGetErrorStr2(handle))))")
            }
            // Ended with an EOI, and still data may have been missing inside (a cut file with an EOI put after it):
            // libjpeg through CJPEG, which notes every warning, reads it again (only a file with a warning).
            try LibJPEGDecoder.checkWarnings(of: data, doing: "decoding the JPEG")
        }
        return pixels
    }

    /// The one place a TurboJPEG status becomes a Swift error.
    ///
    /// Fatal errors are `.corrupt` (or `.truncated` when the data ran out). Warnings: libjpeg reports a cut-off
    /// file as the warning "Premature end of JPEG file" and pads the image with grey, which we reject as
    /// `.truncated`; entropy-data damage ("premature end of data segment", "bad Huffman code") is `.corrupt`.
    /// Other warnings (e.g. "extraneous bytes before marker", common in camera files) are accepted, as OpenCV
    /// does. libjpeg records only the first warning of an image.
    ///
    /// TurboJPEG's error code cannot tell on its own: once an image has had a warning, `tjGetErrorCode` reports
    /// `TJERR_WARNING` for every later error too, fatal ones included (its warning flag is sticky). So a fatal error
    /// after a warning — a second SOF after the scan behind stray bytes before a marker, found by FuzzImageDecode —
    /// passed as a warning, and the decode returned an image whose rows after the error are unspecified memory. An
    /// error counts as a warning only when its message is one of libjpeg's warnings too.
    private func check(_ status: Int32, doing what: String) throws(ImageDecodeError) {
        guard status != 0 else { return }
        let message = String(cString: tjGetErrorStr2(handle))
        let isWarning = tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue) && Self.isLibJPEGWarning(message)
        try Self.judge(message: message, isWarning: isWarning, doing: what)
    }

    /// libjpeg's warning messages (`jerror.h`'s `JWRN_` entries), each by a part of its text without parameters.
    static let libJPEGWarnings = [
        "Unknown Adobe color transform code", "bad arithmetic code", "Inconsistent progression sequence",
        "extraneous bytes before marker", "premature end of data segment", "bad Huffman code",
        "unknown JFIF revision number", "Premature end of JPEG file", "instead of RST",
        "Invalid SOS parameters for sequential JPEG", "Application transferred too many scanlines", "bad ICC marker",
    ]

    /// Whether `message` is one of libjpeg's warnings (``libJPEGWarnings``) rather than a fatal error's.
    static func isLibJPEGWarning(_ message: String) -> Bool {
        libJPEGWarnings.contains { message.contains($0) }
    }

    /// The rule of ``check(_:doing:)`` for a libjpeg message (TurboJPEG's or ``LibJPEGDecoder``'s): throws for a fatal
    /// error and for the warnings that mean missing or damaged data, returns for the other warnings.
    static func judge(message: String, isWarning: Bool, doing what: String) throws(ImageDecodeError) {
        let lowered = message.lowercased()
        if lowered.contains("premature end of jpeg file") {
            throw .truncated(format: .jpeg, reason: "\(what): \(message)")
        }
        if !isWarning || lowered.contains("premature end of data segment") || lowered.contains("bad huffman code") {
            throw .corrupt(format: .jpeg, reason: "\(what): \(message)")
        }
    }

    /// libjpeg-turbo's DCT scaling factors no larger than 1, largest first (1/1, 7/8, 3/4, ..., 1/8).
    static let downscalingFactors: [(num: Int, denom: Int)] = {
        var count: Int32 = 0
        guard let factors = tjGetScalingFactors(&count) else { return [(1, 1)] }
        return UnsafeBufferPointer(start: factors, count: Int(count))
            .map { (num: Int($0.num), denom: Int($0.denom)) }
            .filter { $0.num <= $0.denom }
            .sorted { $0.num * $1.denom > $1.num * $0.denom }
    }()

    /// `TJSCALED`: the size of `dimension` decoded at `num/denom` (rounded up, as libjpeg does).
    static func scaled(_ dimension: Int, _ factor: (num: Int, denom: Int)) -> Int {
        (dimension * factor.num + factor.denom - 1) / factor.denom
    }
}

// MARK: - Compressor

/// Owns one TurboJPEG compressor handle and releases it in `deinit`. Not thread-safe: one per call.
final class JPEGCompressor {
    private let handle: tjhandle

    init() {
        guard let handle = tjInitCompress() else {
            fatalError("TurboJPEG could not allocate a compressor (out of memory)")
        }
        self.handle = handle
    }

    deinit { tjDestroy(handle) }

    /// Baseline JPEG, 4:2:0 chroma subsampling, written into a worst-case-sized array then trimmed.
    func encode(_ image: RGBImage, quality: Int) throws(ImageEncodeError) -> [UInt8] {
        let capacity = Int(tjBufSize(Int32(image.width), Int32(image.height), Int32(TJSAMP_420.rawValue)))
        var status: Int32 = 0
        let jpeg = image.pixels.withUnsafeBufferPointer { source in
            [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
                var destination = buffer.baseAddress
                var size = UInt(capacity)
                status = tjCompress2(
                    handle, source.baseAddress, Int32(image.width), 0, Int32(image.height),
                    Int32(TJPF_RGB.rawValue), &destination, &size, Int32(TJSAMP_420.rawValue), Int32(quality),
                    TJFLAG_NOREALLOC)
                count = status == 0 ? Int(size) : 0
            }
        }
        guard status == 0 else {
            throw .encoderFailed(format: .jpeg, reason: String(cString: tjGetErrorStr2(handle)))
        }
        return jpeg
    }
}
