/* 8-bit RGB PNG reading and writing with libpng (include/phonenums.h).
 * libpng reports errors by longjmp; everything that must be freed after a longjmp lives in volatile locals or in a
 * context struct, and the libpng message is captured (not printed) so the caller gets one v3_error line. */
#define _POSIX_C_SOURCE 200809L
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "phonenums.h"

/* Largest image png_read_rgb accepts when the caller asks for "any size": guards xmalloc against a forged header. */
#define PNG_MAX_PIXELS (1u << 26)

typedef struct {
    jmp_buf jb;
    char msg[256];
} PngCtx;

static void on_png_error(png_structp png, png_const_charp msg) {
    PngCtx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jb, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static const char *color_type_name(int t) {
    switch (t) {
    case PNG_COLOR_TYPE_GRAY: return "grey";
    case PNG_COLOR_TYPE_GRAY_ALPHA: return "grey+alpha";
    case PNG_COLOR_TYPE_PALETTE: return "palette";
    case PNG_COLOR_TYPE_RGB: return "RGB";
    case PNG_COLOR_TYPE_RGB_ALPHA: return "RGBA";
    default: return "unknown";
    }
}

int png_read_rgb(const char *path, int expect_w, int expect_h, uint8_t **pix, int *w, int *h) {
    *pix = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return v3_error("%s: cannot open PNG file", path);
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(f);
        return v3_error("%s: not a PNG file (bad signature); expected an 8-bit RGB PNG", path);
    }
    PngCtx ctx = {0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        fclose(f);
        return v3_error("%s: libpng initialisation failed", path);
    }
    /* Skip every ancillary chunk (text, ICC profile, ...: nothing a page needs) unread: libpng buffers a text
     * chunk whole, so a forged length made it allocate and zero up to 2 GB before finding the file short. */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(ctx.jb)) {
        free(buf);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return v3_error("%s: corrupt or truncated PNG (%s); expected an 8-bit RGB PNG", path, ctx.msg);
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 iw, ih;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &iw, &ih, &depth, &ctype, &interlace, NULL, NULL);
    const char *why = NULL;
    char whybuf[160];
    if (depth != 8 || ctype != PNG_COLOR_TYPE_RGB) {
        snprintf(whybuf, sizeof whybuf, "is %d-bit %s, expected 8-bit RGB", depth, color_type_name(ctype));
        why = whybuf;
    } else if ((expect_w > 0 && iw != (png_uint_32)expect_w) || (expect_h > 0 && ih != (png_uint_32)expect_h)) {
        snprintf(whybuf, sizeof whybuf, "is %ux%u (WxH), expected %dx%d", (unsigned)iw, (unsigned)ih, expect_w,
                 expect_h);
        why = whybuf;
    } else if ((uint64_t)iw * ih > PNG_MAX_PIXELS) {
        snprintf(whybuf, sizeof whybuf, "is %ux%u, larger than the %u-pixel limit", (unsigned)iw, (unsigned)ih,
                 PNG_MAX_PIXELS);
        why = whybuf;
    }
    if (why) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return v3_error("%s: PNG %s", path, why);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t stride = (size_t)iw * 3;
    buf = xmalloc(stride * ih);
    rows = xmalloc(sizeof(png_bytep) * ih);
    for (png_uint_32 y = 0; y < ih; y++) rows[y] = buf + y * stride;
    png_read_image(png, rows);
    png_read_end(png, NULL); /* reads to IEND, so a file cut after the image data or a bad CRC there is caught */
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    *pix = buf;
    *w = (int)iw;
    *h = (int)ih;
    return 0;
}

/* Encode an RGB image into the open stream f (a file, or a memory stream). `what` names it in errors. */
static int encode_rgb(const char *what, FILE *f, const uint8_t *pix, int w, int h) {
    PngCtx ctx = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return v3_error("%s: libpng initialisation failed", what);
    }
    png_bytep *volatile rows = NULL;
    if (setjmp(ctx.jb)) {
        free(rows);
        png_destroy_write_struct(&png, &info);
        return v3_error("%s: PNG write failed (%s)", what, ctx.msg);
    }
    png_init_io(png, f);
    /* Noisy pages barely compress (46 KB raw -> ~35 KB); level 3 encodes ~1.5x faster than the default 6 for
     * ~6% larger files. */
    png_set_compression_level(png, 3);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    rows = xmalloc(sizeof(png_bytep) * (size_t)h);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(pix + (size_t)y * w * 3);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    free(rows);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/* Write to path.tmp.<pid>, fsync, rename: a crash never leaves a half-written page under the final name. */
int png_write_rgb(const char *path, const uint8_t *pix, int w, int h) {
    if (w <= 0 || h <= 0) return v3_error("%s: cannot write a %dx%d PNG", path, w, h);
    char tmp[1100];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return v3_error("%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return v3_error("%s: cannot create temporary file %s", path, tmp);
    if (encode_rgb(path, f, pix, w, h)) {
        fclose(f);
        remove(tmp);
        return -1;
    }
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        remove(tmp);
        return v3_error("%s: write failed (disk full?)", path);
    }
    if (rename(tmp, path)) {
        remove(tmp);
        return v3_error("%s: cannot rename %s into place", path, tmp);
    }
    return 0;
}

int png_encode_rgb(const uint8_t *pix, int w, int h, uint8_t **out, size_t *n) {
    if (w <= 0 || h <= 0) return v3_error("cannot encode a %dx%d PNG", w, h);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return v3_error("PNG encoding: cannot open a memory stream");
    int rc = encode_rgb("in-memory PNG", f, pix, w, h);
    fclose(f);
    if (rc) { free(buf); return -1; }
    *out = (uint8_t *)buf;
    *n = len;
    return 0;
}
