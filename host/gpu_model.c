/* The training step on a device (see gpu_model.h). The structure follows host/model_step.c line for line, so the
 * two can be read side by side: the same stages, buffers and op order, with device pointers and DevOps calls.
 * Differences: the encoder head's content/style split and the decoder's concatenation are strided column ops
 * instead of per-row loops; the loss scalars stay on the device until one read at the end of the step. */
#define _POSIX_C_SOURCE 200809L
#include "gpu_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define MAX_PLAN_SETS 8
#define ARENA_ALIGN 256

typedef struct { void *c0, *c1, *sc; } StagePlans;
/* Everything that depends on the number of rows N = B * n: cuDNN plans and the V3 workspace. */
typedef struct { int N; StagePlans *enc, *dec; void *v3; } PlanSet;

typedef struct {
    const float *x;                         /* input seen in the last forward */
    float *a0, *bn0, *g0, *a1, *s, *sa, *y; /* activations, as Stage */
    float *mean[3], *invstd[3];             /* saved BN statistics of n0, n1, nsc */
} DStage;

struct GpuModel {
    Model *m;
    const DevOps *ops;
    V3Math math;
    int B_max, N_max;
    /* arena */
    char *base;
    size_t cap, used;
    int measuring;
    /* state */
    float *p, *g, *am, *av, *buf, *embed, *embed_avg, *cluster_size;
    /* activations */
    DStage *enc, *dec;
    const float *xin;                       /* the last forward's input: x_in or the loader's device buffer */
    float *x_in, *h, *hg, *hc, *hs, *zc, *zs, *q, *dcp, *dsp, *cat, *p0, *p0g, *gzc, *gzs, *tmp_c, *tmp_s;
    float *q_ste;                           /* z_c + (q - z_c) in float32 (tie_gradient pytorch) */
    const float *q_stats;                   /* what the V3 statistics saw in the last forward: q_ste or q */
    float *pool[4];
    int *ind;
    double *scal; /* [0] reconstruction MSE, [1] commitment sum of squares */
    void *vq;
    PlanSet sets[MAX_PLAN_SETS];
    int nsets;
    PlanSet *cur;
    /* host side */
    float *host_zc; /* k-means initialisation input */
    int *host_ind, host_ind_valid;
    int N, B, last_train;
    VqMode last_mode;
};

#define P(G, off) ((G)->p + (off))
#define GR(G, off) ((G)->g + (off))

static void *take(GpuModel *g, size_t bytes) {
    size_t off = (g->used + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    g->used = off + (bytes ? bytes : 1);
    if (g->measuring) return NULL;
    if (g->used > g->cap) V3_FATAL("gpu_model: arena overflow (%zu > %zu bytes)", g->used, g->cap);
    return g->base + off;
}
#define TAKEF(G, n) ((float *)take((G), sizeof(float) * (size_t)(n)))

static size_t stage_in(const Stage *s) { return (size_t)s->cin * s->H * s->W; }
static size_t stage_out(const Stage *s) { return (size_t)s->cout * s->Ho * s->Wo; }

static void take_stage(GpuModel *g, const Stage *s, DStage *d, int N, size_t *maxact) {
    size_t in = stage_in(s) * N, out = stage_out(s) * N;
    if (in > *maxact) *maxact = in;
    if (out > *maxact) *maxact = out;
    memset(d, 0, sizeof *d);
    d->y = TAKEF(g, out);
    if (s->kind == ST_UPSAMPLE || s->kind == ST_OUTCONV) return;
    size_t mid = (size_t)s->n0.C * s->Ho * s->Wo * N;
    d->a0 = TAKEF(g, mid);
    d->bn0 = TAKEF(g, mid);
    d->mean[0] = TAKEF(g, s->n0.C);
    d->invstd[0] = TAKEF(g, s->n0.C);
    if (s->kind == ST_STEM) return;
    d->g0 = TAKEF(g, mid);
    d->a1 = TAKEF(g, out);
    d->s = TAKEF(g, out);
    d->mean[1] = TAKEF(g, s->n1.C);
    d->invstd[1] = TAKEF(g, s->n1.C);
    if (s->has_sc) {
        d->sa = TAKEF(g, out);
        d->mean[2] = TAKEF(g, s->nsc.C);
        d->invstd[2] = TAKEF(g, s->nsc.C);
    }
    if (mid > *maxact) *maxact = mid;
}

/* Lays out every device buffer in the arena (a measuring pass first gives the size). */
static void take_all(GpuModel *g) {
    Model *m = g->m;
    int N = g->N_max, dc = m->dc, ds = m->ds, dz = dc + ds, K = m->vq.K;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W, maxact = 0;
    g->used = 0;
    g->p = TAKEF(g, m->n_params);
    g->g = TAKEF(g, m->n_params);
    g->am = TAKEF(g, m->n_trainable);
    g->av = TAKEF(g, m->n_trainable);
    g->buf = TAKEF(g, m->n_bufs);
    g->embed = TAKEF(g, (size_t)K * dc);
    g->embed_avg = TAKEF(g, (size_t)K * dc);
    g->cluster_size = TAKEF(g, K);
    for (int i = 0; i < m->n_enc; i++) take_stage(g, &m->enc[i], &g->enc[i], N, &maxact);
    for (int i = 0; i < m->n_dec; i++) take_stage(g, &m->dec[i], &g->dec[i], N, &maxact);
    g->x_in = TAKEF(g, frag * N);
    g->h = TAKEF(g, (size_t)dz * N);
    g->hg = TAKEF(g, (size_t)dz * N);
    g->hc = TAKEF(g, (size_t)dc * N);
    g->hs = TAKEF(g, (size_t)ds * N);
    g->zc = TAKEF(g, (size_t)dc * N);
    g->zs = TAKEF(g, (size_t)ds * N);
    g->q = TAKEF(g, (size_t)dc * N);
    g->q_ste = TAKEF(g, (size_t)dc * N);
    g->dcp = TAKEF(g, (size_t)dc * N);
    g->dsp = TAKEF(g, (size_t)ds * N);
    g->cat = TAKEF(g, (size_t)dz * N);
    g->p0 = TAKEF(g, (size_t)m->flat * N);
    g->p0g = TAKEF(g, (size_t)m->flat * N);
    g->gzc = TAKEF(g, (size_t)dc * N);
    g->gzs = TAKEF(g, (size_t)ds * N);
    g->tmp_c = TAKEF(g, (size_t)dz * N);
    g->tmp_s = TAKEF(g, (size_t)dz * N);
    g->ind = (int *)take(g, sizeof(int) * (size_t)N);
    g->scal = (double *)take(g, sizeof(double) * 2);
    if ((size_t)m->flat * N > maxact) maxact = (size_t)m->flat * N;
    if (frag * N > maxact) maxact = frag * N;
    for (int k = 0; k < 4; k++) g->pool[k] = TAKEF(g, maxact);
}

/* ---- plans per row count ---- */

static void free_set(GpuModel *g, PlanSet *s) {
    const DevOps *o = g->ops;
    StagePlans *lists[2] = {s->enc, s->dec};
    int counts[2] = {g->m->n_enc, g->m->n_dec};
    for (int l = 0; l < 2; l++) {
        if (!lists[l]) continue;
        for (int i = 0; i < counts[l]; i++) {
            if (lists[l][i].c0) o->conv_destroy(lists[l][i].c0);
            if (lists[l][i].c1) o->conv_destroy(lists[l][i].c1);
            if (lists[l][i].sc) o->conv_destroy(lists[l][i].sc);
        }
        free(lists[l]);
    }
    if (s->v3) o->v3_destroy(s->v3);
    memset(s, 0, sizeof *s);
}

static int plan_stage(GpuModel *g, const Stage *s, StagePlans *p, int N) {
    const DevOps *o = g->ops;
    memset(p, 0, sizeof *p);
    if (s->kind == ST_UPSAMPLE) return 0;
    const ConvL *c0 = &s->c0;
    if (!(p->c0 = o->conv_plan(&c0->g, c0->transposed, N, s->H, s->W, g->math))) return -1;
    if (s->kind != ST_BLOCK) return 0;
    if (!(p->c1 = o->conv_plan(&s->c1.g, s->c1.transposed, N, s->Ho, s->Wo, g->math))) return -1;
    if (s->has_sc && !(p->sc = o->conv_plan(&s->sc.g, s->sc.transposed, N, s->H, s->W, g->math))) return -1;
    return 0;
}

/* The plan set for N rows, made on first use (cuDNN algorithm choice happens here, outside any timed step). */
static PlanSet *plans_for(GpuModel *g, int N) {
    for (int i = 0; i < g->nsets; i++)
        if (g->sets[i].N == N) return &g->sets[i];
    if (g->nsets == MAX_PLAN_SETS) { /* evict the oldest set that is not the current one */
        int victim = g->cur == &g->sets[0] ? 1 : 0;
        free_set(g, &g->sets[victim]);
        memmove(&g->sets[victim], &g->sets[victim + 1], sizeof(PlanSet) * (size_t)(g->nsets - victim - 1));
        g->nsets--;
        if (g->cur > &g->sets[victim]) g->cur--;
    }
    Model *m = g->m;
    PlanSet *s = &g->sets[g->nsets];
    memset(s, 0, sizeof *s);
    s->N = N;
    s->enc = xcalloc((size_t)m->n_enc, sizeof(StagePlans));
    s->dec = xcalloc((size_t)m->n_dec, sizeof(StagePlans));
    for (int i = 0; i < m->n_enc; i++)
        if (plan_stage(g, &m->enc[i], &s->enc[i], N)) goto fail;
    for (int i = 0; i < m->n_dec; i++)
        if (plan_stage(g, &m->dec[i], &s->dec[i], N)) goto fail;
    s->v3 = g->ops->v3_create(&m->loss, N / m->cfg.n_fragments, m->cfg.n_fragments, m->dc, m->ds);
    if (!s->v3) goto fail;
    g->nsets++;
    return s;
fail:
    free_set(g, s);
    return NULL;
}

/* ---- create / free / mirrors ---- */

size_t gpu_model_arena_bytes(const GpuModel *g) { return g->cap; }

int gpu_model_upload(GpuModel *g) {
    const DevOps *o = g->ops;
    Model *m = g->m;
    size_t kd = (size_t)m->vq.K * m->dc;
    if (o->h2d(g->p, m->p, sizeof(float) * m->n_params) || o->h2d(g->am, m->m, sizeof(float) * m->n_trainable) ||
        o->h2d(g->av, m->v, sizeof(float) * m->n_trainable) || o->h2d(g->buf, m->buf, sizeof(float) * m->n_bufs) ||
        o->h2d(g->embed, m->vq.embed, sizeof(float) * kd) || o->h2d(g->embed_avg, m->vq.embed_avg, sizeof(float) * kd) ||
        o->h2d(g->cluster_size, m->vq.cluster_size, sizeof(float) * m->vq.K))
        return -1;
    return 0;
}

int gpu_model_download(GpuModel *g) {
    const DevOps *o = g->ops;
    Model *m = g->m;
    size_t kd = (size_t)m->vq.K * m->dc;
    if (o->sync() || o->d2h(m->p, g->p, sizeof(float) * m->n_params) ||
        o->d2h(m->m, g->am, sizeof(float) * m->n_trainable) || o->d2h(m->v, g->av, sizeof(float) * m->n_trainable) ||
        o->d2h(m->buf, g->buf, sizeof(float) * m->n_bufs) || o->d2h(m->vq.embed, g->embed, sizeof(float) * kd) ||
        o->d2h(m->vq.embed_avg, g->embed_avg, sizeof(float) * kd) ||
        o->d2h(m->vq.cluster_size, g->cluster_size, sizeof(float) * m->vq.K))
        return -1;
    return 0;
}

/* The shared reduction scratch the step's kernels need at most: per-channel double partials (BatchNorm: two
 * sets of C x 256; bias gradients: C x 256) and the MSE's 1024 block partials; doubled for headroom. */
static size_t scratch_bytes(const Model *m, int N) {
    size_t C = 0;
    Stage *lists[2] = {m->enc, m->dec};
    int counts[2] = {m->n_enc, m->n_dec};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < counts[l]; i++) {
            const Stage *s = &lists[l][i];
            if ((size_t)s->cout > C) C = (size_t)s->cout;
            if ((size_t)s->cin > C) C = (size_t)s->cin;
        }
    size_t dz = (size_t)(m->dc + m->ds), fl = (size_t)m->flat;
    if (dz > C) C = dz;
    if (fl > C) C = fl;
    (void)N;
    return 2 * (3 * C * 256 * sizeof(double) + 1024 * sizeof(double));
}

GpuModel *gpu_model_create(Model *m, const DevOps *ops, int B_max, V3Math math) {
    if (B_max < 2) {
        v3_error("gpu_model_create: batch size %d (at least 2 samples are needed)", B_max);
        return NULL;
    }
    GpuModel *g = xcalloc(1, sizeof *g);
    g->m = m;
    g->ops = ops;
    g->math = math;
    g->B_max = B_max;
    g->N_max = B_max * m->cfg.n_fragments;
    g->enc = xcalloc((size_t)m->n_enc, sizeof(DStage));
    g->dec = xcalloc((size_t)m->n_dec, sizeof(DStage));
    g->measuring = 1;
    take_all(g);
    g->cap = g->used;
    g->measuring = 0;
    g->base = ops->malloc(g->cap);
    take_all(g);
    g->host_zc = falloc((size_t)g->N_max * m->dc);
    g->host_ind = xmalloc(sizeof(int) * (size_t)g->N_max);
    ops->reserve_scratch(scratch_bytes(m, g->N_max));
    g->vq = ops->vq_create(m->vq.K, m->dc, g->N_max);
    if (!g->vq || gpu_model_upload(g) || !plans_for(g, g->N_max)) {
        gpu_model_free(g);
        return NULL;
    }
    v3_log("v3: device model on %s: %.2f GiB arena (parameters, optimiser state, activations for %d x %d fragments), "
           "math %s\n", ops->name, g->cap / 1073741824.0, B_max, m->cfg.n_fragments, v3_math_name(math));
    return g;
}

void gpu_model_free(GpuModel *g) {
    if (!g) return;
    for (int i = 0; i < g->nsets; i++) free_set(g, &g->sets[i]);
    if (g->vq) g->ops->vq_destroy(g->vq);
    if (g->base) g->ops->free(g->base);
    free(g->enc);
    free(g->dec);
    ffree(g->host_zc);
    free(g->host_ind);
    free(g);
}

/* ---- layers ---- */

static void conv_fwd(GpuModel *g, const void *plan, const ConvL *c, const float *x, float *y) {
    g->ops->conv_fwd(plan, x, P(g, c->w), P(g, c->b), y);
}

static void conv_bwd(GpuModel *g, const void *plan, const ConvL *c, const float *x, const float *dy, float *dx) {
    g->ops->conv_bwd(plan, x, P(g, c->w), dy, dx, GR(g, c->w), GR(g, c->b));
}

static void bn_fwd(GpuModel *g, const BnL *b, int N, int HW, const float *x, float *y, float *mean, float *invstd,
                   int train) {
    if (train)
        g->ops->bn_fwd_train(N, b->C, HW, x, P(g, b->g), P(g, b->b), y, mean, invstd, g->buf + b->rm, g->buf + b->rv,
                             0.1f, 1e-5f);
    else
        g->ops->bn_fwd_eval(N, b->C, HW, x, P(g, b->g), P(g, b->b), y, g->buf + b->rm, g->buf + b->rv, 1e-5f);
}

static void bn_bwd(GpuModel *g, const BnL *b, int N, int HW, const float *x, const float *mean, const float *invstd,
                   const float *dy, float *dx) {
    g->ops->bn_bwd(N, b->C, HW, x, P(g, b->g), mean, invstd, dy, dx, GR(g, b->g), GR(g, b->b));
}

static void stage_fwd(GpuModel *g, const Stage *s, DStage *d, const StagePlans *pl, int N, const float *x, int train) {
    const DevOps *o = g->ops;
    int HWo = s->Ho * s->Wo;
    size_t out = stage_out(s) * N;
    d->x = x;
    switch (s->kind) {
    case ST_UPSAMPLE:
        o->upsample_fwd(N, s->cin, s->H, s->W, s->uh, s->uw, x, d->y);
        return;
    case ST_OUTCONV:
        conv_fwd(g, pl->c0, &s->c0, x, d->y);
        return;
    case ST_STEM:
        conv_fwd(g, pl->c0, &s->c0, x, d->a0);
        bn_fwd(g, &s->n0, N, HWo, d->a0, d->bn0, d->mean[0], d->invstd[0], train);
        o->gelu_fwd(out, d->bn0, d->y);
        return;
    case ST_BLOCK:
        conv_fwd(g, pl->c0, &s->c0, x, d->a0);
        bn_fwd(g, &s->n0, N, HWo, d->a0, d->bn0, d->mean[0], d->invstd[0], train);
        o->gelu_fwd((size_t)s->n0.C * HWo * N, d->bn0, d->g0);
        conv_fwd(g, pl->c1, &s->c1, d->g0, d->a1);
        bn_fwd(g, &s->n1, N, HWo, d->a1, d->s, d->mean[1], d->invstd[1], train);
        if (s->has_sc) {
            conv_fwd(g, pl->sc, &s->sc, x, d->sa);
            bn_fwd(g, &s->nsc, N, HWo, d->sa, d->y, d->mean[2], d->invstd[2], train); /* y as scratch */
            o->add_inplace(out, d->s, d->y);
        } else {
            o->add_inplace(out, d->s, x);
        }
        o->gelu_fwd(out, d->s, d->y);
        return;
    }
}

/* dy (D, may be overwritten) -> dx (NULL for the first stage). T1, T2 are scratch. */
static void stage_bwd(GpuModel *g, const Stage *s, const DStage *d, const StagePlans *pl, int N, float *D, float *dx,
                      float *T1, float *T2) {
    const DevOps *o = g->ops;
    int HWo = s->Ho * s->Wo;
    size_t out = stage_out(s) * N, in = stage_in(s) * N;
    switch (s->kind) {
    case ST_UPSAMPLE:
        o->upsample_bwd(N, s->cin, s->H, s->W, s->uh, s->uw, D, dx);
        return;
    case ST_OUTCONV:
        conv_bwd(g, pl->c0, &s->c0, d->x, D, dx);
        return;
    case ST_STEM:
        o->gelu_bwd(out, d->bn0, D, D);
        bn_bwd(g, &s->n0, N, HWo, d->a0, d->mean[0], d->invstd[0], D, T1);
        conv_bwd(g, pl->c0, &s->c0, d->x, T1, dx);
        return;
    case ST_BLOCK:
        o->gelu_bwd(out, d->s, D, D);
        bn_bwd(g, &s->n1, N, HWo, d->a1, d->mean[1], d->invstd[1], D, T1);
        conv_bwd(g, pl->c1, &s->c1, d->g0, T1, T2);
        o->gelu_bwd((size_t)s->n0.C * HWo * N, d->bn0, T2, T2);
        bn_bwd(g, &s->n0, N, HWo, d->a0, d->mean[0], d->invstd[0], T2, T1);
        conv_bwd(g, pl->c0, &s->c0, d->x, T1, dx);
        if (s->has_sc) {
            bn_bwd(g, &s->nsc, N, HWo, d->sa, d->mean[2], d->invstd[2], D, T1);
            conv_bwd(g, pl->sc, &s->sc, d->x, T1, dx ? T2 : NULL);
            if (dx) o->add_inplace(in, dx, T2);
        } else if (dx) {
            o->add_inplace(in, dx, D);
        }
        return;
    }
}

/* ---- the vector quantiser: search on the device, k-means init and dead-code draws on the host ---- */

static int vq_step(GpuModel *g, int N, VqMode mode) {
    const DevOps *o = g->ops;
    Model *m = g->m;
    VQ *vq = &m->vq;
    int K = vq->K, dc = m->dc;
    if (vq->initted == 0.0f) { /* first forward: k-means on this batch, on the host with the model's RNG */
        if (o->d2h(g->host_zc, g->zc, sizeof(float) * (size_t)N * dc)) return -1;
        vq_kmeans_init(vq, N, g->host_zc, &m->rng);
        size_t kd = (size_t)K * dc;
        if (o->h2d(g->embed, vq->embed, sizeof(float) * kd) || o->h2d(g->embed_avg, vq->embed_avg, sizeof(float) * kd) ||
            o->h2d(g->cluster_size, vq->cluster_size, sizeof(float) * K))
            return -1;
    }
    o->vq_search(g->vq, N, g->zc, g->embed, g->ind, g->q, &g->scal[1]);
    g->host_ind_valid = 0;
    if (mode != VQ_TRAIN) return 0;
    o->vq_ema(g->vq, vq->decay, g->embed, g->embed_avg, g->cluster_size);
    /* The host mirror of the counts feeds the perplexity log (read with the loss at the end of the step) and the
     * dead-code decision, which needs them now: K floats, the step's one mid-forward synchronisation. */
    if (vq->threshold > 0) {
        if (o->d2h(vq->cluster_size, g->cluster_size, sizeof(float) * K)) return -1;
        int ndead = 0, *dead = xmalloc(sizeof(int) * K), *rows = xmalloc(sizeof(int) * K);
        for (int k = 0; k < K; k++)
            if (vq->cluster_size[k] < vq->threshold) dead[ndead++] = k;
        if (ndead) {
            vq_sample_rows(N, ndead, rows, &m->rng);
            o->vq_revive(g->vq, ndead, dead, rows, g->zc, vq->threshold, g->embed, g->embed_avg, g->cluster_size);
            for (int i = 0; i < ndead; i++) vq->cluster_size[dead[i]] = vq->threshold;
        }
        free(dead);
        free(rows);
    }
    return 0;
}

/* ---- whole model ---- */

/* x is host memory, or (x_dev) a device buffer the loader thread already filled: it is then read in place. */
static int enqueue_forward(GpuModel *g, const float *x, int x_dev, int B, int bn_train, VqMode vq_mode) {
    const DevOps *o = g->ops;
    Model *m = g->m;
    int n = m->cfg.n_fragments, N = B * n, dc = m->dc, ds = m->ds, dz = dc + ds;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    if (B < 2 || N > g->N_max)
        return v3_error("device model: batch of %d samples (this model was sized for 2..%d)", B, g->B_max);
    PlanSet *ps = plans_for(g, N);
    if (!ps) return -1;
    g->cur = ps;
    g->N = N;
    g->B = B;
    if (x_dev) g->xin = x;
    else if (o->h2d(g->x_in, x, sizeof(float) * frag * N)) return -1;
    else g->xin = g->x_in;
    const float *cur = g->xin;
    for (int i = 0; i < m->n_enc; i++) {
        stage_fwd(g, &m->enc[i], &g->enc[i], &ps->enc[i], N, cur, bn_train);
        cur = g->enc[i].y;
    }
    o->linear_fwd(N, m->flat, dz, cur, P(g, m->lin1_w), P(g, m->lin1_b), g->h);
    o->gelu_fwd((size_t)N * dz, g->h, g->hg);
    o->copy_cols(N, dc, g->hg, dz, g->hc, dc);
    o->copy_cols(N, ds, g->hg + dc, dz, g->hs, ds);
    o->linear_fwd(N, dc, dc, g->hc, P(g, m->linc_w), P(g, m->linc_b), g->zc);
    o->linear_fwd(N, ds, ds, g->hs, P(g, m->lins_w), P(g, m->lins_b), g->zs);

    if (vq_step(g, N, vq_mode)) return -1;
    /* The V3 statistics see PyTorch's straight-through value in training (model_forward_mode, host/model_step.c) */
    g->q_stats = g->q;
    if (m->tie_pytorch && vq_mode != VQ_EVAL) {
        o->ste_value((size_t)N * dc, g->zc, g->q, g->q_ste);
        g->q_stats = g->q_ste;
    }

    o->linear_fwd(N, dc, dc, g->q, P(g, m->dlinc_w), P(g, m->dlinc_b), g->dcp);
    o->linear_fwd(N, ds, ds, g->zs, P(g, m->dlins_w), P(g, m->dlins_b), g->dsp);
    o->gelu_fwd_cols(N, dc, g->dcp, dc, g->cat, dz); /* content first, then style */
    o->gelu_fwd_cols(N, ds, g->dsp, ds, g->cat + dc, dz);
    o->linear_fwd(N, dz, m->flat, g->cat, P(g, m->lin0_w), P(g, m->lin0_b), g->p0);
    o->gelu_fwd((size_t)N * m->flat, g->p0, g->p0g);
    cur = g->p0g;
    for (int i = 0; i < m->n_dec; i++) {
        stage_fwd(g, &m->dec[i], &g->dec[i], &ps->dec[i], N, cur, bn_train);
        cur = g->dec[i].y;
    }
    o->mse_fwd_dev(frag * N, cur, g->xin, &g->scal[0]);
    o->v3_forward(ps->v3, g->zc, g->q_stats, g->zs);
    g->last_train = bn_train;
    g->last_mode = vq_mode;
    return 0;
}

/* One synchronisation: the step's scalars to the host, assembled as model_forward_mode does. */
static int read_loss(GpuModel *g, LossTerms *out) {
    const DevOps *o = g->ops;
    Model *m = g->m;
    double scal[2], v[V3_STATS_DOUBLES];
    if (o->sync() || o->d2h(scal, g->scal, sizeof scal) || o->d2h(v, o->v3_stats_dev(g->cur->v3), sizeof v))
        return -1;
    if (g->last_mode == VQ_TRAIN && m->vq.threshold <= 0 &&
        o->d2h(m->vq.cluster_size, g->cluster_size, sizeof(float) * m->vq.K))
        return -1;
    int N = g->N, n = m->cfg.n_fragments;
    int nn = m->loss.supersample_content ? v3_supersample_n(N) : n;
    v3_stats_unpack(v, N / nn, nn, &m->last_stats);
    LossTerms L;
    memset(&L, 0, sizeof L);
    L.recon = scal[0];
    L.commit = g->last_mode == VQ_EVAL ? 0.0 : scal[1] / ((double)N * m->dc);
    const V3Stats *st = &m->last_stats;
    L.content = st->content;
    L.style = st->style;
    L.sample = st->sample;
    L.fragment = st->fragment;
    L.Fc = st->Fc;
    L.Sc = st->Sc;
    L.Fs = st->Fs;
    L.Ss = st->Ss;
    L.total = m->cfg.w_recon * L.recon + st->weighted + m->cfg.w_commit * L.commit;
    m->last = L;
    m->last_train = g->last_train;
    if (out) *out = L;
    if (!isfinite(L.total)) return loss_nonfinite_error(&L);
    return 0;
}

int gpu_model_forward_mode(GpuModel *g, const float *x, int B, int bn_train, VqMode vq_mode, LossTerms *out) {
    if (enqueue_forward(g, x, 0, B, bn_train, vq_mode)) return -1;
    return read_loss(g, out);
}

int gpu_model_forward(GpuModel *g, const float *x, int B, int train, LossTerms *out) {
    return gpu_model_forward_mode(g, x, B, train, train ? VQ_TRAIN : VQ_EVAL, out);
}

void gpu_model_backward(GpuModel *g) {
    const DevOps *o = g->ops;
    Model *m = g->m;
    const PlanSet *ps = g->cur;
    int N = g->N, dc = m->dc, ds = m->ds, dz = dc + ds;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    float **pool = g->pool;
    if (o->memset(g->g, 0, sizeof(float) * m->n_params)) V3_FATAL("%s", v3_last_error());

    /* reconstruction */
    const float *xhat = m->n_dec ? g->dec[m->n_dec - 1].y : g->p0g;
    float *D = pool[0], *O = pool[1];
    o->mse_bwd(frag * N, xhat, g->xin, (float)m->cfg.w_recon, D);
    for (int i = m->n_dec - 1; i >= 0; i--) {
        stage_bwd(g, &m->dec[i], &g->dec[i], &ps->dec[i], N, D, O, pool[2], pool[3]);
        float *t = D; D = O; O = t;
    }
    o->gelu_bwd((size_t)N * m->flat, g->p0, D, D);
    o->linear_bwd(N, dz, m->flat, g->cat, P(g, m->lin0_w), D, g->tmp_c, GR(g, m->lin0_w), GR(g, m->lin0_b));
    /* tmp_c = d cat [N, dz]; through the two GELUs into tmp_s = [d dcp (N x dc) | d dsp (N x ds)] */
    o->gelu_bwd_cols(N, dc, g->dcp, dc, g->tmp_c, dz, g->tmp_s, dc);
    o->gelu_bwd_cols(N, ds, g->dsp, ds, g->tmp_c + dc, dz, g->tmp_s + (size_t)N * dc, ds);
    o->linear_bwd(N, dc, dc, g->q, P(g, m->dlinc_w), g->tmp_s, g->gzc, GR(g, m->dlinc_w), GR(g, m->dlinc_b));
    o->linear_bwd(N, ds, ds, g->zs, P(g, m->dlins_w), g->tmp_s + (size_t)N * dc, g->gzs, GR(g, m->dlins_w),
                  GR(g, m->dlins_b));
    /* straight-through: the decoder's gradient w.r.t. q is z_c's; add the V3 and commitment terms */
    o->v3_backward(ps->v3, g->zc, g->q_stats, g->zs, g->gzc, g->gzs);
    if (m->cfg.w_commit != 0) o->axpy_diff((size_t)N * dc, m->cfg.w_commit * 2.0 / ((double)N * dc), g->zc, g->q, g->gzc);
    /* encoder heads */
    o->linear_bwd(N, dc, dc, g->hc, P(g, m->linc_w), g->gzc, g->tmp_s, GR(g, m->linc_w), GR(g, m->linc_b));
    o->linear_bwd(N, ds, ds, g->hs, P(g, m->lins_w), g->gzs, g->tmp_s + (size_t)N * dc, GR(g, m->lins_w),
                  GR(g, m->lins_b));
    o->copy_cols(N, dc, g->tmp_s, dc, g->tmp_c, dz);
    o->copy_cols(N, ds, g->tmp_s + (size_t)N * dc, ds, g->tmp_c + dc, dz);
    o->gelu_bwd((size_t)N * dz, g->h, g->tmp_c, g->tmp_c);
    const float *enc_out = m->n_enc ? g->enc[m->n_enc - 1].y : g->xin;
    D = pool[0];
    O = pool[1];
    o->linear_bwd(N, m->flat, dz, enc_out, P(g, m->lin1_w), g->tmp_c, D, GR(g, m->lin1_w), GR(g, m->lin1_b));
    for (int i = m->n_enc - 1; i >= 0; i--) {
        stage_bwd(g, &m->enc[i], &g->enc[i], &ps->enc[i], N, D, i > 0 ? O : NULL, pool[2], pool[3]);
        float *t = D; D = O; O = t;
    }
}

void gpu_model_adamw(GpuModel *g, float lr) {
    Model *m = g->m;
    const Config *c = &m->cfg;
    m->adam_t++;
    g->ops->adamw(m->n_trainable, g->p, g->g, g->am, g->av, lr, (float)c->beta1, (float)c->beta2, (float)c->eps,
                  (float)c->weight_decay, m->adam_t);
}

static int train_step(GpuModel *g, const float *x, int x_dev, int B, float lr, LossTerms *out) {
    if (enqueue_forward(g, x, x_dev, B, 1, VQ_TRAIN)) return -1;
    gpu_model_backward(g);
    gpu_model_adamw(g, lr);
    return read_loss(g, out);
}

int gpu_model_train_step(GpuModel *g, const float *x, int B, float lr, LossTerms *out) {
    return train_step(g, x, 0, B, lr, out);
}

int gpu_model_train_step_dev(GpuModel *g, const float *x_dev, int B, float lr, LossTerms *out) {
    return train_step(g, x_dev, 1, B, lr, out);
}

const int *gpu_model_indices(GpuModel *g) {
    if (!g->host_ind_valid) {
        if (g->ops->sync() || g->ops->d2h(g->host_ind, g->ind, sizeof(int) * (size_t)g->N))
            V3_FATAL("%s", v3_last_error());
        g->host_ind_valid = 1;
    }
    return g->host_ind;
}

int gpu_model_read_grads(GpuModel *g, float *g_out) {
    if (g->ops->sync()) return -1;
    return g->ops->d2h(g_out, g->g, sizeof(float) * g->m->n_params);
}
