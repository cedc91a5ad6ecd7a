/* TensorBoard images during training (at validation, every tb_images_every_n_epochs): the first validation
 * sample and its reconstruction, and the codebook sheet of include/fragment_tiles.h, without labels (the eval
 * figures have them). */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fragment_tiles.h"
#include "loader.h"
#include "tb_events.h"
#include "train_images.h"

int train_tb_images(TbWriter *tb, Model *m, DataSource *val, uint64_t seed, int64_t step) {
    if (!tb) return 0;
    const ArchSpec *a = &m->arch;
    int n = m->cfg.n_fragments, S = val->n_samples < 8 ? (int)val->n_samples : 8;
    size_t frag = (size_t)a->C * a->H * a->W;
    int th, tw, bins, pool, w, h;
    fragment_tile_dims(a, &th, &tw, &bins, &pool);
    float *x = falloc(frag * S * n), *zs = falloc((size_t)S * n * m->ds), *xh = falloc(frag * n),
          *q0 = falloc((size_t)n * m->dc);
    int32_t *style = xmalloc(sizeof(int32_t) * S * n);
    uint8_t *tiles = xmalloc((size_t)2 * n * th * tw * 3), *img;
    CodebookSheet sh;
    memset(&sh, 0, sizeof sh);
    int rc = loader_eval_batch(val, seed, 0, S, x, NULL, style);
    if (!rc) rc = model_encode(m, x, S * n);
    if (rc) goto done;
    /* copies: model_decode reallocates the model's activations (m->q, m->zs) for its own batch size */
    memcpy(zs, m->zs, sizeof(float) * (size_t)S * n * m->ds);
    memcpy(q0, m->q, sizeof(float) * (size_t)n * m->dc);
    /* reconstruction of sample 0 from its quantised codes and styles: inputs above outputs */
    if ((rc = model_decode(m, q0, zs, n, xh))) goto done;
    float lo = 0, hi = 1;
    if (a->C == 1) spec_display_range(x, frag * n, xh, frag * n, &lo, &hi);
    for (int k = 0; k < n; k++) {
        fragment_to_rgb(x + (size_t)k * frag, a->C, a->H, a->W, bins, pool, lo, hi, tiles + (size_t)k * th * tw * 3);
        fragment_to_rgb(xh + (size_t)k * frag, a->C, a->H, a->W, bins, pool, lo, hi,
                        tiles + (size_t)(n + k) * th * tw * 3);
    }
    img = tiles_to_image(tiles, 2, n, th, tw, 2, &w, &h);
    tb_image_rgb(tb, "val/reconstruction (top: input, bottom: output)", step, img, w, h);
    free(img);
    if ((rc = codebook_sheet_make(m, x, zs, style, S * n, 8, &sh))) goto done;
    img = tiles_to_image(sh.tiles, sh.ns, sh.K + 1, sh.th, sh.tw, 2, &w, &h);
    tb_image_rgb(tb, "val/codebook_sheet (rows: style sources; columns: source, atoms)", step, img, w, h);
    free(img);
done:
    codebook_sheet_free(&sh);
    ffree(x);
    ffree(zs);
    ffree(xh);
    ffree(q0);
    free(style);
    free(tiles);
    return rc;
}
