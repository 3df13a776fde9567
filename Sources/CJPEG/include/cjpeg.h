// cjpeg.h — a few libjpeg (jpeglib.h) decompression calls made safe to call from Swift.
//
// libjpeg reports a fatal error by calling error_exit, which must not return: here it longjmps back into the call that
// was running, which then returns CJPEG_ERROR with libjpeg's message (cjpeg_message). Swift cannot setjmp itself, so
// every libjpeg call that can fail goes through this file. Warnings (corrupt or missing data that libjpeg works around)
// do not stop decoding: the first one of the image is kept, as TurboJPEG keeps it, for the caller to judge.
//
// A decoder is not thread-safe: one thread at a time. Two decoders on the same data may run on two threads.
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
/// Asks for RGB output (3 bytes a pixel, libjpeg's default accurate integer IDCT and fancy upsampling, as TurboJPEG
/// decodes) and calls jpeg_start_decompress.
int cjpeg_start_rgb(cjpeg_decoder *decoder);
/// jpeg_skip_scanlines: skips `rows` output rows (their entropy-coded data is still read); `*skipped` is how many.
int cjpeg_skip_rows(cjpeg_decoder *decoder, int rows, int *skipped);
/// Reads up to `rows` output rows into `out`, row after row `stride` bytes apart; `*read` is how many it read
/// (fewer when the image ends).
int cjpeg_read_rows(cjpeg_decoder *decoder, unsigned char *out, size_t stride, int rows, int *read);
/// jpeg_finish_decompress: reads to the end of the image (EOI), after every row has been read.
int cjpeg_finish(cjpeg_decoder *decoder);
/// The next row cjpeg_read_rows would read (libjpeg's output_scanline).
int cjpeg_next_row(const cjpeg_decoder *decoder);

/// libjpeg's message for the last fatal error, or "" when none.
const char *cjpeg_message(const cjpeg_decoder *decoder);
/// The first warning libjpeg emitted for this image, or NULL when none.
const char *cjpeg_first_warning(const cjpeg_decoder *decoder);
