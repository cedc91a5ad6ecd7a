/* Fragments as pictures (host/eval/fragment_tiles.c): colour mapping, orientation, tiling and the codebook sheet. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "fragment_tiles.h"
#include "model.h"
#include "plot.h"
#include "testing.h"

TEST(tiles_image_fragment_maps_values_and_channels) {
    /* 3 x 2 x 2: R plane -1, G plane 0, B plane 1, except pixel (1,0) of R at 1 and (0,1) clipped values */
    float f[12];
    for (int i = 0; i < 4; i++) { f[i] = -1; f[4 + i] = 0; f[8 + i] = 1; }
    f[2] = 1;     /* R at y=1, x=0 */
    f[1] = -3;    /* R at y=0, x=1: clipped to 0 */
    f[9] = 7;     /* B at y=0, x=1: clipped to 255 */
    uint8_t t[12];
    memset(t, 7, sizeof t);
    fragment_to_rgb(f, 3, 2, 2, 2, 1, 0, 1, t);
    CHECK(t[0] == 0 && t[1] == 128 && t[2] == 255, "pixel (0,0) = %d %d %d, want 0 128 255", t[0], t[1], t[2]);
    CHECK(t[6] == 255, "pixel (1,0) red = %d, want 255 (rows must not be swapped with columns)", t[6]);
    CHECK(t[3] == 0 && t[5] == 255, "clipping: %d %d", t[3], t[5]);
    return 0;
}

TEST(tiles_spectrogram_low_bins_at_the_bottom) {
    /* 8 bins x 2 frames: bins 0-1 at the top of the range, others at the bottom; bins 4, pool 2 -> 2 tile rows */
    float f[16];
    for (int b = 0; b < 8; b++)
        for (int x = 0; x < 2; x++) f[b * 2 + x] = b < 2 ? 0.0f : -12.0f;
    uint8_t t[2 * 2 * 3], hi[3], lo[3];
    fragment_to_rgb(f, 1, 8, 2, 4, 2, -12, 0, t);
    colormap_magma(1, hi);
    colormap_magma(0, lo);
    CHECK(!memcmp(t + 6, hi, 3) && !memcmp(t + 9, hi, 3), "bottom row is not bins 0-1 at full scale");
    CHECK(!memcmp(t, lo, 3), "top row (bins 2-3) is not at the bottom of the scale");
    float lo_v, hi_v;
    spec_display_range(f, 16, NULL, 0, &lo_v, &hi_v);
    CHECK(hi_v == 0 && lo_v == -12, "range %g..%g", lo_v, hi_v);
    return 0;
}

TEST(tiles_to_image_places_tiles_with_gaps) {
    uint8_t tiles[2 * 3 * 1 * 2 * 3]; /* 2 rows x 3 cols of 1x2 tiles */
    for (size_t i = 0; i < sizeof tiles; i++) tiles[i] = (uint8_t)(i / 6); /* tile index as the value */
    int w, h;
    uint8_t *img = tiles_to_image(tiles, 2, 3, 1, 2, 1, &w, &h);
    CHECK(w == 3 * 2 + 2 && h == 2 + 1, "size %d x %d", w, h);
    CHECK(img[0] == 0 && img[(size_t)(0 * w + 3) * 3] == 1 && img[(size_t)(2 * w + 6) * 3] == 5, "tile placement");
    CHECK(img[(size_t)(0 * w + 2) * 3] == 255 && img[(size_t)(1 * w + 0) * 3] == 255, "gaps are not white");
    free(img);
    return 0;
}

TEST(tiles_codebook_sheet_rows_are_distinct_styles) {
    Config c;
    config_defaults(&c);
    snprintf(c.path, sizeof c.path, "(test)");
    c.arch = ARCH_TINY;
    c.n_channels = 16;
    c.n_fragments = 3;
    c.n_feature = 8;
    c.fragment_len = 8;
    c.d_emb_c = 6;
    c.d_emb_s = 5;
    c.n_atoms = 4;
    Model *m = model_build(&c, 2);
    CHECK(m, "build: %s", v3_last_error());
    int N = 6;
    size_t frag = (size_t)3 * 8 * 8;
    float *x = falloc(frag * N);
    fill_uniform(x, frag * N, 3, -1, 1);
    LossTerms L;
    model_forward(m, x, 2, 1, &L); /* initialises the codebook */
    int32_t style[6] = {2, 2, 0, 1, 0, 1};
    float *zs = falloc((size_t)N * m->ds);
    CHECK(model_encode(m, x, N) == 0, "encode");
    memcpy(zs, m->zs, sizeof(float) * N * m->ds);
    CodebookSheet sh;
    CHECK(codebook_sheet_make(m, x, zs, style, N, 8, &sh) == 0, "sheet: %s", v3_last_error());
    CHECK(sh.ns == 3 && sh.src[0] == 0 && sh.src[1] == 2 && sh.src[2] == 3 && sh.K == 4, "rows %d: %d %d %d", sh.ns,
          sh.src[0], sh.src[1], sh.src[2]);
    /* row 1, atom 2 is the decoder's output for (embed[2], zs[2]) */
    float *q1 = falloc(m->dc), *z1 = falloc(m->ds), *o = falloc(frag);
    memcpy(q1, m->vq.embed + 2 * m->dc, sizeof(float) * m->dc);
    memcpy(z1, zs + 2 * m->ds, sizeof(float) * m->ds);
    CHECK(model_decode(m, q1, z1, 1, o) == 0, "decode");
    double e = max_scaled_err(sh.xhat + (size_t)(1 * 4 + 2) * frag, o, frag, 1e-6, 1e-5, NULL);
    uint8_t src_tile[8 * 8 * 3];
    fragment_to_rgb(x + 2 * frag, 3, 8, 8, 8, 1, 0, 1, src_tile);
    int src_ok = !memcmp(sh.tiles + (size_t)1 * 5 * sizeof src_tile, src_tile, sizeof src_tile);
    codebook_sheet_free(&sh);
    CHECK(codebook_sheet_make(m, x, zs, style, 0, 8, &sh) == -1, "an empty sheet was accepted");
    model_free(m); ffree(x); ffree(zs); ffree(q1); ffree(z1); ffree(o);
    CHECK(e <= 1, "sheet cell differs from a direct decode: %g", e);
    CHECK(src_ok, "column 0 of row 1 is not its source fragment");
    return 0;
}
