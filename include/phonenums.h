/* PhoneNums (v3.md section 1): pages of 10 digits (a permutation of 0..9) in one of 8 colours.
 *
 * On disk: DIR/pages/NNNNN_<digits>_<colour>.png (48 x 320 RGB, libpng) and DIR/index.tsv: header lines
 * (format version, seed, font, OOD or not) then one line per page: file name, split token (include/splits.h),
 * the 10 digits, colour index, colour name. Fragment k of a page is columns [32 k, 32 k + 32), 3 x 48 x 32,
 * scaled (v / 255 - 0.5) / 0.5 to [-1, 1]. Content = the digit, style = the colour index (0..7; OOD colours
 * are indexed 0..7 within the OOD palette). With n_frag < 10 a sample is n_frag consecutive digits from a
 * random start in [0, 10 - n_frag]. */
#ifndef V3_PHONENUMS_H
#define V3_PHONENUMS_H
#include <stdint.h>

#include "datasource.h"

#define PHONENUMS_H 48
#define PHONENUMS_PATCH_W 32
#define PHONENUMS_DIGITS 10
#define PHONENUMS_W (PHONENUMS_PATCH_W * PHONENUMS_DIGITS)
#define PHONENUMS_N_COLOURS 8

typedef struct {
    const char *font;   /* NULL: /usr/share/fonts/opentype/comic-neue/ComicNeue-Bold.otf (fonts-comic-neue) */
    int pages;          /* 1000 (the authors' default); mini: 80 */
    int ood;            /* the 8 OOD colours */
    uint64_t seed;
    float noise_sigma;  /* < 0 (default): sigma = 10 U(0,1) drawn per page, the authors'; >= 0: this sigma on every
                           page (a diagnostic: no page-level noise factor; the other draws are unchanged) */
} PhonenumsParams;

void phonenums_defaults(PhonenumsParams *p);
/* Render with FreeType and write DIR/pages/ *.png and DIR/index.tsv (DIR created). Progress on stderr.
 * Without FreeType at build time: -1 and "install libfreetype-dev ..." in v3_last_error(). */
int phonenums_generate(const char *dir, const PhonenumsParams *p);

/* Colour c (0..7) of the training palette (ood = 0: black blue green red teal purple orange brown) or the OOD
 * palette (pink salmon gold lime cyan magenta gray peru): its name (NULL when c is out of range) and the RGB value
 * drawn before jitter, int(matplotlib_rgb * 240 + 8). Shared by the generator, the loader's checks and the tests. */
const char *phonenums_colour_name(int ood, int c);
void phonenums_colour_rgb(int ood, int c, uint8_t rgb[3]);

/* PNG I/O (libpng), 8-bit RGB. png_read_rgb: -1 with v3_last_error() naming the file on any decode error,
 * a wrong size or a non-RGB image (expect_w/expect_h: required size, 0 = any). *pix is xmalloc'ed. */
int png_write_rgb(const char *path, const uint8_t *pix, int w, int h);
/* Encode into a malloc'ed buffer (*out, *n bytes; free() it), e.g. for TensorBoard image summaries. */
int png_encode_rgb(const uint8_t *pix, int w, int h, uint8_t **out, size_t *n);
int png_read_rgb(const char *path, int expect_w, int expect_h, uint8_t **pix, int *w, int *h);
#endif
