/* TensorBoard images during training (at validation, every tb_images_every_n_epochs): the first validation
 * sample and its reconstruction, and a codebook sheet (every atom decoded with the style of fragments of
 * distinct style labels), drawn from the host model without labels (the eval figures have them). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval.h"
#include "loader.h"
#include "tb_events.h"
#include "train_images.h"

/* Tile geometry of a fragment as drawn: spectrograms show bins 0-255 pooled in pairs (see eval_figures.c). */
static void tile_dims(const ArchSpec *a, int *th, int *tw, int *bins, int *pool) {
    int spec = a->C == 1;
    *bins = spec ? (a->H >= 256 ? 256 : a->H) : a->H;
    *pool = spec && *bins >= 2 ? 2 : 1;
    *th = spec ? *bins / *pool : a->H;
    *tw = a->W;
}

/* Place tile t [th][tw][3] at grid cell (r, c) of an image with 2-px white gaps. */
static void put_tile(uint8_t *img, int img_w, int th, int tw, int r, int c, const uint8_t *t) {
    for (int y = 0; y < th; y++)
        memcpy(img + ((size_t)(r * (th + 2) + y) * img_w + (size_t)c * (tw + 2)) * 3, t + (size_t)y * tw * 3,
               (size_t)tw * 3);
}

static void spec_range(const float *a, size_t n, const float *b, size_t nb, float *lo, float *hi) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) if (a[i] > m) m = a[i];
    for (size_t i = 0; i < nb; i++) if (b[i] > m) m = b[i];
    *hi = m;
    *lo = m - 12.0f;
}

int train_tb_images(TbWriter *tb, Model *m, DataSource *val, uint64_t seed, int64_t step) {
    if (!tb) return 0;
    const ArchSpec *a = &m->arch;
    int n = m->cfg.n_fragments, K = m->vq.K, S = val->n_samples < 8 ? (int)val->n_samples : 8;
    size_t frag = (size_t)a->C * a->H * a->W;
    int th, tw, bins, pool;
    tile_dims(a, &th, &tw, &bins, &pool);
    float *x = falloc(frag * S * n), *xh = NULL, *q = NULL, *zs = NULL;
    int32_t *style = xmalloc(sizeof(int32_t) * S * n);
    uint8_t *tile = xmalloc((size_t)th * tw * 3), *img = NULL;
    int rc = loader_eval_batch(val, seed, 0, S, x, NULL, style);
    if (!rc) rc = model_encode(m, x, S * n);
    if (rc) goto done;
    /* style sources: the first fragment of each style label met, up to 8 */
    int src[8], ns = 0;
    for (int i = 0; i < S * n && ns < 8; i++) {
        int seen = 0;
        for (int j = 0; j < ns; j++) seen |= style[src[j]] == style[i];
        if (!seen) src[ns++] = i;
    }
    int N = ns * K > n ? ns * K : n;
    xh = falloc(frag * N);
    q = falloc((size_t)N * m->dc);
    zs = falloc((size_t)N * m->ds);
    float *zs_all = falloc((size_t)S * n * m->ds);
    memcpy(zs_all, m->zs, sizeof(float) * (size_t)S * n * m->ds);
    /* reconstruction of sample 0: its quantised codes and styles through the decoder */
    memcpy(q, m->q, sizeof(float) * (size_t)n * m->dc);
    memcpy(zs, m->zs, sizeof(float) * (size_t)n * m->ds);
    if ((rc = model_decode(m, q, zs, n, xh))) { ffree(zs_all); goto done; }
    float lo = 0, hi = 1;
    if (a->C == 1) spec_range(x, frag * n, xh, frag * n, &lo, &hi);
    int W1 = n * (tw + 2), H1 = 2 * (th + 2);
    img = xcalloc((size_t)W1 * H1 * 3, 1);
    memset(img, 255, (size_t)W1 * H1 * 3);
    for (int k = 0; k < n; k++) {
        fragment_to_rgb(x + (size_t)k * frag, a->C, a->H, a->W, bins, pool, lo, hi, tile);
        put_tile(img, W1, th, tw, 0, k, tile);
        fragment_to_rgb(xh + (size_t)k * frag, a->C, a->H, a->W, bins, pool, lo, hi, tile);
        put_tile(img, W1, th, tw, 1, k, tile);
    }
    tb_image_rgb(tb, "val/reconstruction (top: input, bottom: output)", step, img, W1, H1);
    free(img);
    img = NULL;
    /* codebook sheet: rows = style sources, columns = source then every atom */
    for (int s = 0; s < ns; s++)
        for (int k = 0; k < K; k++) {
            memcpy(q + ((size_t)s * K + k) * m->dc, m->vq.embed + (size_t)k * m->dc, sizeof(float) * m->dc);
            memcpy(zs + ((size_t)s * K + k) * m->ds, zs_all + (size_t)src[s] * m->ds, sizeof(float) * m->ds);
        }
    ffree(zs_all);
    if ((rc = model_decode(m, q, zs, ns * K, xh))) goto done;
    if (a->C == 1) spec_range(xh, frag * ns * K, x, frag * S * n, &lo, &hi);
    int W2 = (K + 1) * (tw + 2), H2 = ns * (th + 2);
    img = xmalloc((size_t)W2 * H2 * 3);
    memset(img, 255, (size_t)W2 * H2 * 3);
    for (int s = 0; s < ns; s++) {
        fragment_to_rgb(x + (size_t)src[s] * frag, a->C, a->H, a->W, bins, pool, lo, hi, tile);
        put_tile(img, W2, th, tw, s, 0, tile);
        for (int k = 0; k < K; k++) {
            fragment_to_rgb(xh + ((size_t)s * K + k) * frag, a->C, a->H, a->W, bins, pool, lo, hi, tile);
            put_tile(img, W2, th, tw, s, k + 1, tile);
        }
    }
    tb_image_rgb(tb, "val/codebook_sheet (rows: style sources; columns: source, atoms)", step, img, W2, H2);
done:
    ffree(x);
    ffree(xh);
    ffree(q);
    ffree(zs);
    free(style);
    free(tile);
    free(img);
    return rc;
}
