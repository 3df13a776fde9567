// cjpeg.c — see include/cjpeg.h.
#include "cjpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

struct cjpeg_decoder {
    struct jpeg_decompress_struct info;
    struct jpeg_error_mgr errors;  // libjpeg's standard manager, with the three hooks below
    jmp_buf escape;
    int created;
    int has_warning;
    char message[JMSG_LENGTH_MAX];
    char warning[JMSG_LENGTH_MAX];
};

static void on_error_exit(j_common_ptr info) {
    cjpeg_decoder *decoder = (cjpeg_decoder *)info->client_data;
    (*info->err->format_message)(info, decoder->message);
    longjmp(decoder->escape, 1);
}

// Keeps the first warning (msg_level -1) and drops trace messages; never prints.
static void on_emit_message(j_common_ptr info, int level) {
    cjpeg_decoder *decoder = (cjpeg_decoder *)info->client_data;
    if (level >= 0) return;
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
    if (setjmp(decoder->escape)) {  // jpeg_create_decompress fails only when out of memory
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

// Runs one libjpeg call with the escape armed. The jmp_buf must be set in the function that calls libjpeg.
#define GUARDED(decoder, call)                          \
    do {                                                \
        if (setjmp((decoder)->escape)) return CJPEG_ERROR; \
        call;                                           \
    } while (0)

int cjpeg_read_header(cjpeg_decoder *decoder, cjpeg_header *header) {
    GUARDED(decoder, jpeg_read_header(&decoder->info, TRUE));
    header->width = (int)decoder->info.image_width;
    header->height = (int)decoder->info.image_height;
    header->components = decoder->info.num_components;
    header->multiple_scans = jpeg_has_multiple_scans(&decoder->info) ? 1 : 0;
    return CJPEG_OK;
}

int cjpeg_start_rgb(cjpeg_decoder *decoder) {
    decoder->info.out_color_space = JCS_EXT_RGB;
    GUARDED(decoder, jpeg_start_decompress(&decoder->info));
    return CJPEG_OK;
}

int cjpeg_skip_rows(cjpeg_decoder *decoder, int rows, int *skipped) {
    *skipped = 0;
    if (rows <= 0) return CJPEG_OK;
    GUARDED(decoder, *skipped = (int)jpeg_skip_scanlines(&decoder->info, (JDIMENSION)rows));
    return CJPEG_OK;
}

int cjpeg_read_rows(cjpeg_decoder *decoder, unsigned char *out, size_t stride, int rows, int *read) {
    enum { BATCH = 16 };
    JSAMPROW pointers[BATCH];
    *read = 0;
    if (setjmp(decoder->escape)) return CJPEG_ERROR;
    while (*read < rows && decoder->info.output_scanline < decoder->info.output_height) {
        int count = rows - *read < BATCH ? rows - *read : BATCH;
        for (int i = 0; i < count; i++) pointers[i] = out + (size_t)(*read + i) * stride;
        JDIMENSION got = jpeg_read_scanlines(&decoder->info, pointers, (JDIMENSION)count);
        if (got == 0) break;  // suspension cannot happen with a memory source; stop rather than spin
        *read += (int)got;
    }
    return CJPEG_OK;
}

int cjpeg_finish(cjpeg_decoder *decoder) {
    GUARDED(decoder, jpeg_finish_decompress(&decoder->info));
    return CJPEG_OK;
}

int cjpeg_next_row(const cjpeg_decoder *decoder) { return (int)decoder->info.output_scanline; }

const char *cjpeg_message(const cjpeg_decoder *decoder) { return decoder->message; }

const char *cjpeg_first_warning(const cjpeg_decoder *decoder) {
    return decoder->has_warning ? decoder->warning : NULL;
}
