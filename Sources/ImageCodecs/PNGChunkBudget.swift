/// The compressed ancillary chunks of a PNG, counted before libspng reads it.
///
/// libspng inflates every `zTXt`, compressed `iTXt` and `iCCP` chunk as it meets it, each up to the chunk limit (16
/// MiB), and a stream that fails at its very end is dropped with the space it took, so the limit on all chunks together
/// never fills: a file of a thousand 8 KiB chunks, each inflating to 8 MiB, held a worker for 17 s and then decoded. A
/// photo carries a colour profile and a few text chunks; a file with more than `maxCompressedChunks` is refused
/// undecoded. The chunks are followed by their lengths up to `IEND`; a file whose chunks cannot be followed is left to
/// libspng, which refuses it with its own message.
///
/// Thread-safety: stateless.
enum PNGChunkBudget {
    /// `zTXt`, `iTXt` and `iCCP` chunks a file may hold.
    static let maxCompressedChunks = 8

    /// - Throws: `.corrupt` naming the count, for a file over the budget.
    static func check(_ data: UnsafeBufferPointer<UInt8>) throws(ImageDecodeError) {
        var offset = 8  // the signature
        var compressed = 0
        while data.count - offset >= 12 {
            let length = Int(data[offset]) << 24 | Int(data[offset + 1]) << 16 | Int(data[offset + 2]) << 8
                | Int(data[offset + 3])
            let type = UInt32(data[offset + 4]) << 24 | UInt32(data[offset + 5]) << 16 | UInt32(data[offset + 6]) << 8
                | UInt32(data[offset + 7])
            let compressedChunk: Bool
            switch type {
            case 0x7A54_5874, 0x6943_4350: compressedChunk = true  // zTXt, iCCP
            case 0x6954_5874: compressedChunk = isCompressedITXt(data, at: offset + 8, length: length)
            case 0x4945_4E44: return  // IEND
            default: compressedChunk = false
            }
            if compressedChunk {
                compressed += 1
                guard compressed <= maxCompressedChunks else {
                    throw .corrupt(format: .png, reason: "more than \(maxCompressedChunks) compressed ancillary "
                        + "chunks (zTXt, iTXt, iCCP); each is inflated as it is read")
                }
            }
            guard length <= data.count - offset - 12 else { return }
            offset += 12 + length
        }
    }

    /// Whether the iTXt chunk whose data starts at `start` is compressed: its flag, the byte after the keyword's
    /// terminating zero (a chunk too short to say counts as compressed: libspng refuses it anyway).
    private static func isCompressedITXt(_ data: UnsafeBufferPointer<UInt8>, at start: Int, length: Int) -> Bool {
        let end = min(start + length, data.count)
        guard let zero = data[start..<end].firstIndex(of: 0), zero + 1 < end else { return true }
        return data[zero + 1] != 0
    }
}
