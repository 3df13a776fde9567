// cjpeg.c — see include/cjpeg.h.
#include "cjpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

struct cjpeg_decoder {
    struct jpeg_decompress_struct info;
    struct jpeg_error_mgr errors;  // libjpeg's standard manager, with the three hooks below
    int created;
    int has_warning;
    int data_missing;  // a warning, first or not, that the data ran out or a scan's data ended early
    char message[JMSG_LENGTH_MAX];         // the input side's (and every single-threaded call's) fatal error
    char output_message[JMSG_LENGTH_MAX];  // the output side's, in buffered-image mode
    char warning[JMSG_LENGTH_MAX];
};

// Where a fatal error escapes to, and its message, per thread: in buffered-image mode two threads call libjpeg on one
// decompressor at once (see cjpeg.h), so the escape cannot live in the decoder.
static _Thread_local jmp_buf *escape;
static _Thread_local char thread_message[JMSG_LENGTH_MAX];

static void on_error_exit(j_common_ptr info) {
    (*info->err->format_message)(info, thread_message);
    longjmp(*escape, 1);
}

// Keeps the first warning (msg_level -1) and whether any said data is missing; drops trace messages; never prints.
static void on_emit_message(j_common_ptr info, int level) {
    cjpeg_decoder *decoder = (cjpeg_decoder *)info->client_data;
    if (level >= 0) return;
    int code = info->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) decoder->data_missing = 1;
    if (!decoder->has_warning) {
        (*info->err->format_message)(info, decoder->warning);
        decoder->has_warning = 1;
    }
    info->err->num_warnings++;
}

static void on_output_message(j_common_ptr info) { (void)info; }

cjpeg_decoder *cjpeg_create(const unsigned char *data, size_t size) {
    cjpeg_decoder *decoder = calloc(1, sizeof(cjpeg_decoder));
    if (decoder == NULL) return NULL;
    decoder->info.err = jpeg_std_error(&decoder->errors);
    decoder->errors.error_exit = on_error_exit;
    decoder->errors.emit_message = on_emit_message;
    decoder->errors.output_message = on_output_message;
    decoder->info.client_data = decoder;
    jmp_buf here;
    escape = &here;
    if (setjmp(here)) {  // jpeg_create_decompress fails only when out of memory
        free(decoder);
        return NULL;
    }
    jpeg_create_decompress(&decoder->info);
    decoder->created = 1;
    jpeg_mem_src(&decoder->info, data, (unsigned long)size);
    return decoder;
}

void cjpeg_destroy(cjpeg_decoder *decoder) {
    if (decoder == NULL) return;
    if (decoder->created) jpeg_destroy_decompress(&decoder->info);  // also aborts a decompression in progress
    free(decoder);
}

// Runs libjpeg calls with this thread's escape armed; a fatal error copies its message to `slot` and returns
// CJPEG_ERROR. The jmp_buf must be set in the function that calls libjpeg.
#define GUARDED_INTO(slot, call)                                        \
    do {                                                                \
        jmp_buf here;                                                   \
        escape = &here;                                                 \
        if (setjmp(here)) {                                             \
            memcpy((slot), thread_message, JMSG_LENGTH_MAX);            \
            return CJPEG_ERROR;                                         \
        }                                                               \
        call;                                                           \
    } while (0)
#define GUARDED(decoder, call) GUARDED_INTO((decoder)->message, call)

int cjpeg_read_header(cjpeg_decoder *decoder, cjpeg_header *header) {
    GUARDED(decoder, jpeg_read_header(&decoder->info, TRUE));
    header->width = (int)decoder->info.image_width;
    header->height = (int)decoder->info.image_height;
    header->components = decoder->info.num_components;
    header->multiple_scans = jpeg_has_multiple_scans(&decoder->info) ? 1 : 0;
    return CJPEG_OK;
}

// jpeg_read_scanlines in batches; the caller has armed the escape.
static void read_rows(cjpeg_decoder *decoder, unsigned char *out, size_t stride, int rows, int *read) {
    enum { BATCH = 16 };
    JSAMPROW pointers[BATCH];
    while (*read < rows && decoder->info.output_scanline < decoder->info.output_height) {
        int count = rows - *read < BATCH ? rows - *read : BATCH;
        for (int i = 0; i < count; i++) pointers[i] = out + (size_t)(*read + i) * stride;
        JDIMENSION got = jpeg_read_scanlines(&decoder->info, pointers, (JDIMENSION)count);
        if (got == 0) break;  // suspension cannot happen with a memory source; stop rather than spin
        *read += (int)got;
    }
}

int cjpeg_start_buffered_rgb(cjpeg_decoder *decoder, cjpeg_buffered_layout *layout) {
    decoder->info.out_color_space = JCS_EXT_RGB;
    decoder->info.buffered_image = TRUE;
    GUARDED(decoder, {
        jpeg_start_decompress(&decoder->info);
        jpeg_start_output(&decoder->info, 1);
    });
    layout->imcu_rows = (int)decoder->info.total_iMCU_rows;
    layout->rows_per_imcu = decoder->info.max_v_samp_factor * DCTSIZE;
    return CJPEG_OK;
}

int cjpeg_consume(cjpeg_decoder *decoder, int *imcu_rows, int *finished) {
    int status = 0;
    GUARDED(decoder, status = jpeg_consume_input(&decoder->info));
    *imcu_rows = (int)decoder->info.input_iMCU_row;
    *finished = status == JPEG_REACHED_EOI;
    if (status == JPEG_SUSPENDED) {  // a memory source never suspends: it inserts an EOI (with a warning) at the end
        memcpy(decoder->message, "libjpeg suspended reading from memory", 38);
        return CJPEG_ERROR;
    }
    return CJPEG_OK;
}

int cjpeg_read_output_rows(cjpeg_decoder *decoder, unsigned char *out, size_t stride, int rows, int *read) {
    *read = 0;
    GUARDED_INTO(decoder->output_message, read_rows(decoder, out, stride, rows, read));
    return CJPEG_OK;
}

int cjpeg_finish_buffered(cjpeg_decoder *decoder) {
    GUARDED(decoder, {
        jpeg_finish_output(&decoder->info);
        jpeg_finish_decompress(&decoder->info);
    });
    return CJPEG_OK;
}

int cjpeg_read_through(cjpeg_decoder *decoder) {
    GUARDED(decoder, {
        jpeg_start_decompress(&decoder->info);
        JDIMENSION height = decoder->info.output_height;
        // All rows but the last skipped (skipping them all would skip the entropy data too), the last one read into a
        // row from the decompressor's own pool (freed with it, also when an error escapes).
        if (height > 1) jpeg_skip_scanlines(&decoder->info, height - 1);
        JSAMPARRAY row = (*decoder->info.mem->alloc_sarray)((j_common_ptr)&decoder->info, JPOOL_IMAGE,
            decoder->info.output_width * (JDIMENSION)decoder->info.output_components, 1);
        jpeg_read_scanlines(&decoder->info, row, 1);
        jpeg_finish_decompress(&decoder->info);
    });
    return CJPEG_OK;
}

const char *cjpeg_message(const cjpeg_decoder *decoder) { return decoder->message; }

const char *cjpeg_output_message(const cjpeg_decoder *decoder) { return decoder->output_message; }

int cjpeg_data_missing(const cjpeg_decoder *decoder) { return decoder->data_missing; }

const char *cjpeg_first_warning(const cjpeg_decoder *decoder) {
    return decoder->has_warning ? decoder->warning : NULL;
}
