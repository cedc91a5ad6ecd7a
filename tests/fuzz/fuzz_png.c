/* Feeds a PhoneNums page to png_read_rgb (datasets/png_io.c), as given and with its chunk CRCs made right. */
#include "fuzz_util.h"

#include <zlib.h>

#include "phonenums.h"

/* A copy with the CRC of each complete chunk after the 8-byte signature recomputed; NULL if nothing changed. */
static uint8_t *fix_png_crcs(const uint8_t *d, size_t n) {
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, d, n);
    for (size_t o = 8; o + 12 <= n;) {
        size_t len = (size_t)c[o] << 24 | (size_t)c[o + 1] << 16 | (size_t)c[o + 2] << 8 | c[o + 3];
        if (len > n - o - 12) break;
        uint32_t crc = (uint32_t)crc32(0, c + o + 4, (uInt)(len + 4));
        for (int i = 0; i < 4; i++) c[o + 8 + len + i] = (uint8_t)(crc >> (24 - 8 * i));
        o += len + 12;
    }
    if (!memcmp(c, d, n)) { free(c); return NULL; }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("page.png");
    uint8_t *fixed = fix_png_crcs(data, size), *pix;
    int w, h;
    for (int pass = 0; pass < 1 + !!fixed; pass++) {
        fz_write(p, pass ? fixed : data, size);
        if (png_read_rgb(p, PHONENUMS_W, PHONENUMS_H, &pix, &w, &h) == 0) free(pix);
        if (png_read_rgb(p, 0, 0, &pix, &w, &h) == 0) free(pix);
    }
    free(fixed);
    return 0;
}
