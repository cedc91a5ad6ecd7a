/* Opening a trained run for evaluation: its config.yaml, the chosen checkpoint, and eval-mode encoding of a split. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "eval.h"
#include "loader.h"
#include "progress.h"

/* The epoch checkpoint with the lowest validation loss (later step on ties), else latest.v3ck. */
static int choose_checkpoint(const char *run_dir, char *out, size_t n) {
    char ckdir[700];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", run_dir);
    DIR *d = opendir(ckdir);
    if (!d) return v3_error("%s: no checkpoints directory (%s); is this a `v3 train --out` directory?", ckdir,
                            strerror(errno));
    double best = INFINITY;
    uint64_t best_step = 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t L = strlen(e->d_name);
        if (strncmp(e->d_name, "epoch", 5) || L < 5 || strcmp(e->d_name + L - 5, ".v3ck")) continue;
        char p[1000];
        snprintf(p, sizeof p, "%s/%.256s", ckdir, e->d_name);
        CkptMeta mm;
        if (checkpoint_peek(p, &mm) || isnan(mm.val_loss)) continue;
        if (mm.val_loss < best || (mm.val_loss == best && mm.step > best_step)) {
            best = mm.val_loss;
            best_step = mm.step;
            snprintf(out, n, "%s", p);
            found = 1;
        }
    }
    closedir(d);
    if (found) return 0;
    snprintf(out, n, "%s/latest.v3ck", ckdir);
    if (access(out, F_OK)) return v3_error("%s: no checkpoint in this run (neither epoch*.v3ck nor latest.v3ck)", ckdir);
    return 0;
}

int eval_run_open(EvalRun *r, const char *run_dir, const char *checkpoint, const char *data_dir) {
    memset(r, 0, sizeof *r);
    char cpath[1100];
    snprintf(cpath, sizeof cpath, "%s/config.yaml", run_dir);
    if (access(cpath, R_OK))
        return v3_error("%s: missing (runs trained before config.yaml was written need it: copy the config used for "
                        "training there)", cpath);
    config_defaults(&r->cfg);
    if (config_load(cpath, &r->cfg) || config_validate(&r->cfg)) return -1;
    if (data_dir) snprintf(r->cfg.data_dir, sizeof r->cfg.data_dir, "%s", data_dir);
    snprintf(r->data_dir, sizeof r->data_dir, "%s", r->cfg.data_dir);
    if (checkpoint) {
        snprintf(r->ckpt, sizeof r->ckpt, "%s", checkpoint);
        if (access(r->ckpt, R_OK)) return v3_error("%s: checkpoint not found: %s", r->ckpt, strerror(errno));
    } else if (choose_checkpoint(run_dir, r->ckpt, sizeof r->ckpt)) {
        return -1;
    }
    r->seed = r->cfg.has_seed ? r->cfg.random_seed : 0;
    if (!(r->m = model_build(&r->cfg, r->seed))) return -1;
    if (eval_run_reload(r)) return -1;
    r->seed = r->meta.seed;
    return 0;
}

int eval_run_reload(EvalRun *r) {
    if (checkpoint_load(r->ckpt, r->m, &r->meta))
        return v3_error("%s (does the checkpoint belong to this run's config.yaml?)", v3_last_error());
    if (!r->m->vq.initted) return v3_error("%s: the codebook was never initialised (a checkpoint from step 0?)", r->ckpt);
    return 0;
}

void eval_run_close(EvalRun *r) {
    model_free(r->m);
    r->m = NULL;
}

int eval_encode(EvalRun *r, DataSource *ds, int max_samples, int keep_x, Encoded *e) {
    Model *m = r->m;
    const ArchSpec *a = &m->arch;
    memset(e, 0, sizeof *e);
    if ((int)ds->n_frag != m->cfg.n_fragments || (int)ds->C != a->C || (int)ds->H != a->H || (int)ds->W != a->W)
        return v3_error("%s (%s split): fragments are %u x [%u, %u, %u] but the model expects %d x [%d, %d, %d]",
                        ds->dir, ds->split, ds->n_frag, ds->C, ds->H, ds->W, m->cfg.n_fragments, a->C, a->H, a->W);
    int S = (int)ds->n_samples, n = (int)ds->n_frag, B = m->cfg.batch_size;
    if (max_samples > 0 && max_samples < S) S = max_samples;
    if (S < 1) return v3_error("%s (%s split): no samples", ds->dir, ds->split);
    size_t frag = (size_t)a->C * a->H * a->W;
    e->N = S * n;
    e->n_frag = n;
    e->dc = m->dc;
    e->ds = m->ds;
    e->zc = falloc((size_t)e->N * e->dc);
    e->q = falloc((size_t)e->N * e->dc);
    e->zs = falloc((size_t)e->N * e->ds);
    e->atom = xmalloc(sizeof(int) * e->N);
    e->content = xmalloc(sizeof(int32_t) * e->N);
    e->style = xmalloc(sizeof(int32_t) * e->N);
    if (keep_x) e->x = falloc(frag * e->N);
    float *xb = falloc(frag * (size_t)B * n);
    double t0 = now_seconds();
    for (int s0 = 0; s0 < S; s0 += B) {
        int b = S - s0 < B ? S - s0 : B;
        size_t f0 = (size_t)s0 * n;
        if (loader_eval_batch(ds, r->seed, (uint64_t)s0, b, xb, e->content + f0, e->style + f0) ||
            model_encode(m, xb, b * n)) {
            ffree(xb);
            encoded_free(e);
            return -1;
        }
        memcpy(e->zc + f0 * e->dc, m->zc, sizeof(float) * (size_t)b * n * e->dc);
        memcpy(e->q + f0 * e->dc, m->q, sizeof(float) * (size_t)b * n * e->dc);
        memcpy(e->zs + f0 * e->ds, m->zs, sizeof(float) * (size_t)b * n * e->ds);
        memcpy(e->atom + f0, m->ind, sizeof(int) * (size_t)b * n);
        if (keep_x) memcpy(e->x + f0 * frag, xb, sizeof(float) * frag * b * n);
        double el = now_seconds() - t0;
        progress_update(s0 + b == S, "encoding %s/%s: %d/%d samples  %.0f frag/s", ds->dir, ds->split, s0 + b, S,
                        (s0 + b) * n / (el > 0 ? el : 1e-9));
    }
    progress_break();
    ffree(xb);
    return 0;
}

void encoded_free(Encoded *e) {
    ffree(e->zc);
    ffree(e->q);
    ffree(e->zs);
    ffree(e->x);
    free(e->atom);
    free(e->content);
    free(e->style);
    memset(e, 0, sizeof *e);
}
