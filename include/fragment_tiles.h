/* Fragments as pictures: RGB tiles of image fragments and of InsNotes spectrograms, and the codebook sheet (every
 * atom decoded with the styles of a few fragments). Shared by `v3 eval` figures, `v3 transfer` and the
 * TensorBoard images of `v3 train`. */
#ifndef V3_FRAGMENT_TILES_H
#define V3_FRAGMENT_TILES_H
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* A fragment [C, H, W] as an 8-bit RGB tile [th, tw, 3]. Images (C = 3): values in [-1, 1] -> [0, 255].
 * Spectrograms (C = 1, log-magnitude [H bins][W frames]): the lowest `bins` bins averaged over `bin_pool`
 * neighbours, low frequencies at the bottom, magma over [lo, hi]; th = bins / bin_pool. */
void fragment_to_rgb(const float *frag, int C, int H, int W, int bins, int bin_pool, float lo, float hi,
                     uint8_t *tile);
/* Tile geometry of the figures: images whole; spectrograms bins 0-255 (0-4 kHz at 16 kHz, where the notes'
 * harmonics are) pooled in pairs. */
void fragment_tile_dims(const ArchSpec *a, int *th, int *tw, int *bins, int *pool);
/* Colour range of spectrograms: [max - 12, max] (12 nats below the loudest value of a and b; b may be NULL). */
void spec_display_range(const float *a, size_t na, const float *b, size_t nb, float *lo, float *hi);
/* Tiles [rows][cols][th][tw][3] into one image with `gap` white pixels between tiles; *w, *h receive its size. */
uint8_t *tiles_to_image(const uint8_t *tiles, int rows, int cols, int th, int tw, int gap, int *w, int *h);

#define SHEET_MAX_STYLES 64
typedef struct {
    int ns, K, th, tw;
    int src[SHEET_MAX_STYLES];  /* fragment index (into the caller's arrays) of each row's style source */
    float *xhat;                /* [ns * K] decoded fragments, row s atom k at s * K + k */
    uint8_t *tiles;             /* [ns][K + 1] tiles: the source fragment, then every atom */
} CodebookSheet;
/* Rows: the first fragment of each style label met in style[0..N), up to max_styles (<= SHEET_MAX_STYLES);
 * every codebook atom decoded (model_decode, eval mode) with that fragment's style embedding zs[src]; x [N] are
 * the fragments themselves. 0, or -1 with v3_last_error(). */
int codebook_sheet_make(Model *m, const float *x, const float *zs, const int32_t *style, int N, int max_styles,
                        CodebookSheet *s);
void codebook_sheet_free(CodebookSheet *s);
#endif
