/* Few-shot OOD adaptation for `v3 eval` (spec v3.md §6): fine-tune from the checkpoint on a handful of samples of
 * the new styles with the codebook frozen, as the authors do, then measure with the in-distribution atom map. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval_parts.h"
#include "loader.h"
#include "rng.h"

int eval_few_shot_adapt(EvalRun *r, DataSource *shots, double lr, double wd, int epochs, int *steps, double *loss) {
    Model *m = r->m;
    if (eval_run_reload(r)) return -1;
    /* a fresh optimiser: the checkpoint's Adam moments belong to the original training */
    memset(m->m, 0, sizeof(float) * m->n_trainable);
    memset(m->v, 0, sizeof(float) * m->n_trainable);
    m->adam_t = 0;
    double wd_saved = m->cfg.weight_decay;
    m->cfg.weight_decay = wd;
    int S = (int)shots->n_samples, B = m->cfg.batch_size;
    size_t se = datasource_sample_elems(shots);
    float *x = falloc(se * B);
    int *perm = xmalloc(sizeof(int) * (S > 0 ? S : 1));
    uint64_t *idx = xmalloc(sizeof(uint64_t) * B), *aug = xmalloc(sizeof(uint64_t) * B);
    int rc = 0;
    *steps = 0;
    *loss = 0;
    for (int ep = 0; ep < epochs && !rc; ep++) {
        Rng g;
        rng_seed(&g, rng_derive_seed(r->seed, 0xf5e70000ull + (uint64_t)ep));
        rng_permutation(&g, S, perm);
        for (int s0 = 0; s0 < S && !rc; s0 += B) {
            int b = S - s0 < B ? S - s0 : B;
            if (b < 2) break;
            for (int i = 0; i < b; i++) {
                idx[i] = (uint64_t)perm[s0 + i];
                aug[i] = loader_aug_seed(r->seed ^ 0xf5e7ull, ep, idx[i]);
            }
            LossTerms L;
            rc = shots->get_batch(shots, idx, aug, b, x, NULL, NULL);
            if (!rc) rc = model_forward_mode(m, x, b, 1, VQ_FROZEN, &L);
            if (!rc) {
                model_backward(m);
                model_adamw(m, (float)lr);
                (*steps)++;
                *loss = L.total;
            }
        }
    }
    m->cfg.weight_decay = wd_saved;
    ffree(x);
    free(perm);
    free(idx);
    free(aug);
    if (!rc && *steps == 0)
        return v3_error("%s (%s split): %d sample(s): few-shot adaptation needs at least 2", shots->dir, shots->split, S);
    return rc;
}
