/* Fragments as pictures and the codebook sheet (include/fragment_tiles.h). */
#include "fragment_tiles.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "plot.h"

void fragment_to_rgb(const float *frag, int C, int H, int W, int bins, int bin_pool, float lo, float hi,
                     uint8_t *tile) {
    if (C == 3) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++) {
                    float v = (frag[((size_t)c * H + y) * W + x] + 1.0f) * 127.5f;
                    tile[((size_t)y * W + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v));
                }
        return;
    }
    int th = bins / bin_pool;
    for (int r = 0; r < th; r++) {
        int b0 = (th - 1 - r) * bin_pool; /* low frequencies at the bottom */
        for (int x = 0; x < W; x++) {
            double s = 0;
            for (int k = 0; k < bin_pool; k++) s += frag[(size_t)(b0 + k) * W + x];
            colormap_magma((s / bin_pool - lo) / (hi - lo), tile + ((size_t)r * W + x) * 3);
        }
    }
}

void fragment_tile_dims(const ArchSpec *a, int *th, int *tw, int *bins, int *pool) {
    int spec = a->C == 1;
    *bins = spec && a->H >= 256 ? 256 : a->H;
    *pool = spec && *bins >= 2 ? 2 : 1;
    *th = *bins / *pool;
    *tw = a->W;
}

void spec_display_range(const float *a, size_t na, const float *b, size_t nb, float *lo, float *hi) {
    float m = -INFINITY;
    for (size_t i = 0; i < na; i++) if (a[i] > m) m = a[i];
    for (size_t i = 0; b && i < nb; i++) if (b[i] > m) m = b[i];
    *hi = m;
    *lo = m - 12.0f;
}

uint8_t *tiles_to_image(const uint8_t *tiles, int rows, int cols, int th, int tw, int gap, int *w, int *h) {
    *w = cols * (tw + gap) - gap;
    *h = rows * (th + gap) - gap;
    uint8_t *img = xmalloc((size_t)*w * *h * 3);
    memset(img, 255, (size_t)*w * *h * 3);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint8_t *t = tiles + ((size_t)r * cols + c) * th * tw * 3;
            for (int y = 0; y < th; y++)
                memcpy(img + ((size_t)(r * (th + gap) + y) * *w + (size_t)c * (tw + gap)) * 3, t + (size_t)y * tw * 3,
                       (size_t)tw * 3);
        }
    return img;
}

int codebook_sheet_make(Model *m, const float *x, const float *zs, const int32_t *style, int N, int max_styles,
                        CodebookSheet *s) {
    memset(s, 0, sizeof *s);
    const ArchSpec *a = &m->arch;
    int K = m->vq.K, dc = m->dc, ds = m->ds;
    size_t frag = (size_t)a->C * a->H * a->W;
    if (max_styles > SHEET_MAX_STYLES) max_styles = SHEET_MAX_STYLES;
    for (int i = 0; i < N && s->ns < max_styles; i++) {
        int seen = 0;
        for (int j = 0; j < s->ns; j++) seen |= style[s->src[j]] == style[i];
        if (!seen) s->src[s->ns++] = i;
    }
    if (s->ns == 0) return v3_error("codebook sheet: no fragments");
    s->K = K;
    int n = s->ns * K, bins, pool;
    fragment_tile_dims(a, &s->th, &s->tw, &bins, &pool);
    float *q = falloc((size_t)n * dc), *z = falloc((size_t)n * ds);
    s->xhat = falloc(frag * n);
    for (int r = 0; r < s->ns; r++)
        for (int k = 0; k < K; k++) {
            memcpy(q + ((size_t)r * K + k) * dc, m->vq.embed + (size_t)k * dc, sizeof(float) * dc);
            memcpy(z + ((size_t)r * K + k) * ds, zs + (size_t)s->src[r] * ds, sizeof(float) * ds);
        }
    int rc = model_decode(m, q, z, n, s->xhat);
    ffree(q);
    ffree(z);
    if (rc) { codebook_sheet_free(s); return -1; }
    float lo = 0, hi = 1;
    if (a->C == 1) { /* one colour scale for the whole sheet: the decoded cells and the sources */
        spec_display_range(s->xhat, frag * n, NULL, 0, &lo, &hi);
        for (int r = 0; r < s->ns; r++) {
            float l2, h2;
            spec_display_range(x + (size_t)s->src[r] * frag, frag, NULL, 0, &l2, &h2);
            if (h2 > hi) { hi = h2; lo = l2; }
        }
    }
    size_t tsz = (size_t)s->th * s->tw * 3;
    s->tiles = xmalloc(tsz * s->ns * (K + 1));
    for (int r = 0; r < s->ns; r++)
        for (int c = 0; c <= K; c++) {
            const float *f = c == 0 ? x + (size_t)s->src[r] * frag : s->xhat + ((size_t)r * K + c - 1) * frag;
            fragment_to_rgb(f, a->C, a->H, a->W, bins, pool, lo, hi, s->tiles + ((size_t)r * (K + 1) + c) * tsz);
        }
    return 0;
}

void codebook_sheet_free(CodebookSheet *s) {
    ffree(s->xhat);
    free(s->tiles);
    s->xhat = NULL;
    s->tiles = NULL;
}
