// cjpeg.h — a few libjpeg (jpeglib.h) decompression calls made safe to call from Swift.
//
// libjpeg reports a fatal error by calling error_exit, which must not return: here it longjmps back into the call that
// was running, which then returns CJPEG_ERROR with libjpeg's message (cjpeg_message). Swift cannot setjmp itself, so
// every libjpeg call that can fail goes through this file. Warnings (corrupt or missing data that libjpeg works around)
// do not stop decoding: the first one of the image is kept, as TurboJPEG keeps it, for the caller to judge.
//
// A decoder is not thread-safe: one thread at a time, with one exception (buffered-image mode, below). Two decoders on
// the same data may run on two threads.
//
// Buffered-image mode splits a decode between two threads: an input side reads the entropy-coded data into libjpeg's
// whole-image coefficient buffer (cjpeg_consume, one iMCU row a call), while an output side turns the rows read so far
// into pixels (cjpeg_read_output_rows: IDCT, upsampling, colour conversion). The two touch disjoint parts of the
// decompressor, with one exception that libjpeg makes: before decompressing iMCU row k, the output side reads the input
// side's counters (input_scan_number, input_iMCU_row, and the coefficient array's first undefined row) to check that
// row k has been read, and reads more input itself if not. So the caller must keep the output side behind the input:
// a read of output rows in iMCU row k (each read within one iMCU row) needs iMCU rows 0...k+1 consumed (k+1 for the
// context rows of fancy upsampling), or the whole file. And no output call may run while the input side reads past the
// scan's last row: it then parses the markers up to EOI, and a marker there (a second SOF) rewrites fields the output
// side reads (image size, component count) before libjpeg rejects it. Then those checks only ever see values past what they test
// (int-sized fields, written by the input side as it advances), and libjpeg never reads input on the output side. Calls
// of one side must be ordered with respect to each other (one thread at a time per side), and the caller's own
// synchronisation must make a consumed row's coefficients visible to the output side before it reads them.
#pragma once

#include <stddef.h>

typedef struct cjpeg_decoder cjpeg_decoder;

enum {
    CJPEG_OK = 0,
    CJPEG_ERROR = -1,  // fatal: libjpeg's message is in cjpeg_message; the decoder can only be destroyed
};

/// Header facts read by cjpeg_read_header.
typedef struct cjpeg_header {
    int width;
    int height;
    int components;
    /// Non-zero when the image has more than one scan (progressive, or a multi-scan sequential file): libjpeg then
    /// reads every scan when decompression starts, before the first row.
    int multiple_scans;
} cjpeg_header;

/// A decoder reading `size` bytes at `data`, which must stay valid until cjpeg_destroy. NULL when out of memory.
cjpeg_decoder *cjpeg_create(const unsigned char *data, size_t size);
void cjpeg_destroy(cjpeg_decoder *decoder);

/// jpeg_read_header.
int cjpeg_read_header(cjpeg_decoder *decoder, cjpeg_header *header);

/// Geometry of a buffered-image decode: the coefficient rows the input side reads, and output rows per coefficient row.
typedef struct cjpeg_buffered_layout {
    int imcu_rows;
    int rows_per_imcu;
} cjpeg_buffered_layout;

/// Buffered-image mode for a single-scan file: asks for RGB output (3 bytes a pixel, libjpeg's default accurate integer
/// IDCT and fancy upsampling, as TurboJPEG decodes), starts decompression and the one output pass
/// (jpeg_start_decompress, jpeg_start_output), reading no coefficient yet. Then, on the input side, cjpeg_consume until
/// finished; on the output side, cjpeg_read_output_rows; at the end, cjpeg_finish_buffered. A second scan fails
/// cjpeg_consume (libjpeg, told by the header that the file has one scan, expects the end of the image after it), so
/// the input side never reads more than one scan and needs no scan limit.
int cjpeg_start_buffered_rgb(cjpeg_decoder *decoder, cjpeg_buffered_layout *layout);
/// Input side: jpeg_consume_input once (one iMCU row of coefficients, or the markers after the last); `*imcu_rows` is
/// how many iMCU rows are read, `*finished` non-zero once the end of the image (EOI) is reached.
int cjpeg_consume(cjpeg_decoder *decoder, int *imcu_rows, int *finished);
/// Output side: reads up to `rows` output rows into `out`, row after row `stride` bytes apart; `*read` is how many it
/// read (fewer when the image ends). A fatal error's message goes to cjpeg_output_message.
int cjpeg_read_output_rows(cjpeg_decoder *decoder, unsigned char *out, size_t stride, int rows, int *read);
/// jpeg_finish_output and jpeg_finish_decompress, once the input side has finished and every row has been read.
int cjpeg_finish_buffered(cjpeg_decoder *decoder);
/// After cjpeg_read_header: reads the image through to its end without keeping its pixels (every row but the last
/// skipped, no whole-image buffer for a single-scan file), so that every warning is emitted and noted.
int cjpeg_read_through(cjpeg_decoder *decoder);

/// libjpeg's message for the output side's last fatal error in buffered-image mode, or "" when none.
const char *cjpeg_output_message(const cjpeg_decoder *decoder);

/// libjpeg's message for the last fatal error, or "" when none.
const char *cjpeg_message(const cjpeg_decoder *decoder);
/// The first warning libjpeg emitted for this image, or NULL when none.
const char *cjpeg_first_warning(const cjpeg_decoder *decoder);
/// 1 when a warning, the first or a later one, said the data ran out ("Premature end of JPEG file") or a scan's
/// data ended early ("premature end of data segment"): libjpeg padded what it did not read. libjpeg keeps only the
/// first warning's text, and an accepted one ("extraneous bytes before marker") would hide these.
int cjpeg_data_missing(const cjpeg_decoder *decoder);
