/* The training step over a Backend (see step.h): the one orchestration of forward, losses, backward, VQ update
 * and AdamW, and of the evaluation forward, for every backend. */
#define _POSIX_C_SOURCE 200809L
#include "step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const float *model_test_q_offset = NULL;
const float *model_test_q_const = NULL;

#define MAX_PLAN_SETS 8
#define ARENA_ALIGN 256

typedef struct { void *c0, *c1, *sc; } StagePlans;
/* Everything that depends on the number of rows N: convolution plans and the V3 workspace (training N only). */
typedef struct { int N; StagePlans *enc, *dec; void *v3; } PlanSet;

typedef struct {
    const float *x;                         /* input seen in the last forward */
    float *a0, *bn0, *g0, *a1, *s, *sa, *y; /* activations [N, ...] */
    float *mean[3], *invstd[3];             /* saved BN statistics of n0, n1, nsc */
} StageActs;

struct Step {
    Model *m;
    const Backend *be;
    V3Math math;
    int N_max;
    /* arena */
    char *base;
    size_t cap, used;
    int measuring;
    /* state: the Model's buffers (host_state) or the backend's copy */
    float *p, *g, *am, *av, *buf, *embed, *embed_avg, *cluster_size;
    /* activations */
    StageActs *enc, *dec;
    const float *xin;                       /* the last forward's input: x_in or the caller's backend buffer */
    float *x_in, *h, *hg, *hc, *hs, *zc, *zs, *q, *dcp, *dsp, *cat, *p0, *p0g, *gzc, *gzs, *tmp_c, *tmp_s;
    float *q_ste;                           /* z_c + (q - z_c) in float32 (tie_gradient pytorch) */
    const float *q_stats;                   /* what the V3 statistics saw in the last forward: q_ste or q */
    const float *xhat;                      /* the decoder's output of the last forward */
    float *pool[4];
    int *ind;
    double *scal; /* [0] reconstruction MSE, [1] commitment sum of squares */
    unsigned long long *nonfinite; /* step_grads_finite's count */
    void *vq;
    PlanSet sets[MAX_PLAN_SETS];
    int nsets;
    PlanSet *cur;
    /* host side */
    float *host_zc;       /* k-means initialisation input */
    float *cs_host;       /* the EMA counts on the host: dead-code decisions, perplexity (the Model's own with host_state) */
    float *host_out;      /* host copies for step_outputs (backends without host_state), sized for N_max */
    int *host_ind;
    int N, B, last_train, have_xhat;
    int outputs_valid, ind_valid; /* host_out / host_ind hold the last forward's (made stale by the next one) */
    VqMode last_mode;
    LossTerms last;
    V3Stats last_stats;
};

#define P(S, off) ((S)->p + (off))
#define GR(S, off) ((S)->g + (off))

static void *take(Step *s, size_t bytes) {
    size_t off = (s->used + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    s->used = off + (bytes ? bytes : 1);
    if (s->measuring) return NULL;
    if (s->used > s->cap) V3_FATAL("step: arena overflow (%zu > %zu bytes)", s->used, s->cap);
    return s->base + off;
}
#define TAKEF(S, n) ((float *)take((S), sizeof(float) * (size_t)(n)))

static size_t stage_in(const Stage *s) { return (size_t)s->cin * s->H * s->W; }
static size_t stage_out(const Stage *s) { return (size_t)s->cout * s->Ho * s->Wo; }
static size_t frag_size(const Model *m) { return (size_t)m->arch.C * m->arch.H * m->arch.W; }

static void take_stage(Step *st, const Stage *s, StageActs *d, int N, size_t *maxact) {
    size_t in = stage_in(s) * N, out = stage_out(s) * N;
    if (in > *maxact) *maxact = in;
    if (out > *maxact) *maxact = out;
    memset(d, 0, sizeof *d);
    d->y = TAKEF(st, out);
    if (s->kind == ST_UPSAMPLE || s->kind == ST_OUTCONV) return;
    size_t mid = (size_t)s->n0.C * s->Ho * s->Wo * N;
    d->a0 = TAKEF(st, mid);
    d->bn0 = TAKEF(st, mid);
    d->mean[0] = TAKEF(st, s->n0.C);
    d->invstd[0] = TAKEF(st, s->n0.C);
    if (s->kind == ST_STEM) return;
    d->g0 = TAKEF(st, mid);
    d->a1 = TAKEF(st, out);
    d->s = TAKEF(st, out);
    d->mean[1] = TAKEF(st, s->n1.C);
    d->invstd[1] = TAKEF(st, s->n1.C);
    if (s->has_sc) {
        d->sa = TAKEF(st, out);
        d->mean[2] = TAKEF(st, s->nsc.C);
        d->invstd[2] = TAKEF(st, s->nsc.C);
    }
    if (mid > *maxact) *maxact = mid;
}

/* Lays out every buffer in the arena (a measuring pass first gives the size). */
static void take_all(Step *s) {
    Model *m = s->m;
    int N = s->N_max, dc = m->dc, ds = m->ds, dz = dc + ds, K = m->vq.K;
    size_t frag = frag_size(m), maxact = 0;
    s->used = 0;
    if (s->be->host_state) {
        s->p = m->p;
        s->g = m->g;
        s->am = m->m;
        s->av = m->v;
        s->buf = m->buf;
        s->embed = m->vq.embed;
        s->embed_avg = m->vq.embed_avg;
        s->cluster_size = m->vq.cluster_size;
    } else {
        s->p = TAKEF(s, m->n_params);
        s->g = TAKEF(s, m->n_params);
        s->am = TAKEF(s, m->n_trainable);
        s->av = TAKEF(s, m->n_trainable);
        s->buf = TAKEF(s, m->n_bufs);
        s->embed = TAKEF(s, (size_t)K * dc);
        s->embed_avg = TAKEF(s, (size_t)K * dc);
        s->cluster_size = TAKEF(s, K);
    }
    for (int i = 0; i < m->n_enc; i++) take_stage(s, &m->enc[i], &s->enc[i], N, &maxact);
    for (int i = 0; i < m->n_dec; i++) take_stage(s, &m->dec[i], &s->dec[i], N, &maxact);
    s->x_in = TAKEF(s, frag * N);
    s->h = TAKEF(s, (size_t)dz * N);
    s->hg = TAKEF(s, (size_t)dz * N);
    s->hc = TAKEF(s, (size_t)dc * N);
    s->hs = TAKEF(s, (size_t)ds * N);
    s->zc = TAKEF(s, (size_t)dc * N);
    s->zs = TAKEF(s, (size_t)ds * N);
    s->q = TAKEF(s, (size_t)dc * N);
    s->q_ste = TAKEF(s, (size_t)dc * N);
    s->dcp = TAKEF(s, (size_t)dc * N);
    s->dsp = TAKEF(s, (size_t)ds * N);
    s->cat = TAKEF(s, (size_t)dz * N);
    s->p0 = TAKEF(s, (size_t)m->flat * N);
    s->p0g = TAKEF(s, (size_t)m->flat * N);
    s->gzc = TAKEF(s, (size_t)dc * N);
    s->gzs = TAKEF(s, (size_t)ds * N);
    s->tmp_c = TAKEF(s, (size_t)dz * N);
    s->tmp_s = TAKEF(s, (size_t)dz * N);
    s->ind = (int *)take(s, sizeof(int) * (size_t)N);
    s->scal = (double *)take(s, sizeof(double) * 2);
    s->nonfinite = (unsigned long long *)take(s, sizeof(unsigned long long));
    if ((size_t)m->flat * N > maxact) maxact = (size_t)m->flat * N;
    if (frag * N > maxact) maxact = frag * N;
    for (int k = 0; k < 4; k++) s->pool[k] = TAKEF(s, maxact);
}

size_t step_estimate_bytes(Model *m, const Backend *be, int N) {
    Step s;
    memset(&s, 0, sizeof s);
    s.m = m;
    s.be = be;
    s.N_max = N;
    s.measuring = 1;
    s.enc = xcalloc((size_t)m->n_enc + 1, sizeof(StageActs));
    s.dec = xcalloc((size_t)m->n_dec + 1, sizeof(StageActs));
    take_all(&s);
    free(s.enc);
    free(s.dec);
    return s.used;
}

/* ---- plans per row count ---- */

static void free_set(Step *s, PlanSet *ps) {
    const Backend *be = s->be;
    StagePlans *lists[2] = {ps->enc, ps->dec};
    int counts[2] = {s->m->n_enc, s->m->n_dec};
    for (int l = 0; l < 2; l++) {
        if (!lists[l]) continue;
        for (int i = 0; i < counts[l]; i++) {
            if (lists[l][i].c0) be->conv_destroy(lists[l][i].c0);
            if (lists[l][i].c1) be->conv_destroy(lists[l][i].c1);
            if (lists[l][i].sc) be->conv_destroy(lists[l][i].sc);
        }
        free(lists[l]);
    }
    if (ps->v3) be->v3_destroy(ps->v3);
    memset(ps, 0, sizeof *ps);
}

static int plan_stage(Step *st, const Stage *s, StagePlans *p, int N) {
    const Backend *be = st->be;
    memset(p, 0, sizeof *p);
    if (s->kind == ST_UPSAMPLE) return 0;
    const ConvL *c0 = &s->c0;
    if (!(p->c0 = be->conv_plan(&c0->g, c0->transposed, N, s->H, s->W, st->math))) return -1;
    if (s->kind != ST_BLOCK) return 0;
    if (!(p->c1 = be->conv_plan(&s->c1.g, s->c1.transposed, N, s->Ho, s->Wo, st->math))) return -1;
    if (s->has_sc && !(p->sc = be->conv_plan(&s->sc.g, s->sc.transposed, N, s->H, s->W, st->math))) return -1;
    return 0;
}

/* The V3 workspace of a plan set, with the model's current loss weights (NULL + v3_error on failure). */
static void *make_v3(Step *s, int N) {
    Model *m = s->m;
    int n = m->cfg.n_fragments;
    return s->be->v3_create(&m->loss, N / n, n, m->dc, m->ds);
}

/* The plan set for N rows, made on first use (cuDNN algorithm choice happens here, outside any timed step).
 * The V3 workspace exists only for row counts that are whole samples. */
static PlanSet *plans_for(Step *s, int N) {
    for (int i = 0; i < s->nsets; i++)
        if (s->sets[i].N == N) return &s->sets[i];
    if (s->nsets == MAX_PLAN_SETS) { /* evict the oldest set that is not the current one */
        int victim = s->cur == &s->sets[0] ? 1 : 0;
        free_set(s, &s->sets[victim]);
        memmove(&s->sets[victim], &s->sets[victim + 1], sizeof(PlanSet) * (size_t)(s->nsets - victim - 1));
        s->nsets--;
        if (s->cur > &s->sets[victim]) s->cur--;
    }
    Model *m = s->m;
    int n = m->cfg.n_fragments;
    PlanSet *ps = &s->sets[s->nsets];
    memset(ps, 0, sizeof *ps);
    ps->N = N;
    ps->enc = xcalloc((size_t)m->n_enc, sizeof(StagePlans));
    ps->dec = xcalloc((size_t)m->n_dec, sizeof(StagePlans));
    for (int i = 0; i < m->n_enc; i++)
        if (plan_stage(s, &m->enc[i], &ps->enc[i], N)) goto fail;
    for (int i = 0; i < m->n_dec; i++)
        if (plan_stage(s, &m->dec[i], &ps->dec[i], N)) goto fail;
    if (N % n == 0 && N / n >= 2 && !(ps->v3 = make_v3(s, N))) goto fail;
    s->nsets++;
    return ps;
fail:
    free_set(s, ps);
    return NULL;
}

int step_set_loss(Step *s, const V3LossCfg *cfg) {
    s->m->loss = *cfg;
    for (int i = 0; i < s->nsets; i++) {
        PlanSet *ps = &s->sets[i];
        if (!ps->v3) continue;
        s->be->v3_destroy(ps->v3);
        if (!(ps->v3 = make_v3(s, ps->N))) return -1;
    }
    return 0;
}

/* ---- create / free / state ---- */

size_t step_arena_bytes(const Step *s) { return s->cap; }
const Backend *step_backend(const Step *s) { return s->be; }
int step_capacity(const Step *s) { return s->N_max; }

int step_from_host(Step *s) {
    const Backend *be = s->be;
    Model *m = s->m;
    if (be->host_state) return 0;
    size_t kd = (size_t)m->vq.K * m->dc;
    if (be->h2d(s->p, m->p, sizeof(float) * m->n_params) || be->h2d(s->am, m->m, sizeof(float) * m->n_trainable) ||
        be->h2d(s->av, m->v, sizeof(float) * m->n_trainable) || be->h2d(s->buf, m->buf, sizeof(float) * m->n_bufs) ||
        be->h2d(s->embed, m->vq.embed, sizeof(float) * kd) ||
        be->h2d(s->embed_avg, m->vq.embed_avg, sizeof(float) * kd) ||
        be->h2d(s->cluster_size, m->vq.cluster_size, sizeof(float) * m->vq.K))
        return -1;
    memcpy(s->cs_host, m->vq.cluster_size, sizeof(float) * m->vq.K);
    return 0;
}

int step_to_host(Step *s) {
    const Backend *be = s->be;
    Model *m = s->m;
    if (be->host_state) return 0;
    size_t kd = (size_t)m->vq.K * m->dc;
    if (be->sync() || be->d2h(m->p, s->p, sizeof(float) * m->n_params) ||
        be->d2h(m->m, s->am, sizeof(float) * m->n_trainable) || be->d2h(m->v, s->av, sizeof(float) * m->n_trainable) ||
        be->d2h(m->buf, s->buf, sizeof(float) * m->n_bufs) || be->d2h(m->vq.embed, s->embed, sizeof(float) * kd) ||
        be->d2h(m->vq.embed_avg, s->embed_avg, sizeof(float) * kd) ||
        be->d2h(m->vq.cluster_size, s->cluster_size, sizeof(float) * m->vq.K))
        return -1;
    return 0;
}

/* The shared reduction scratch the step's kernels need at most: per-channel double partials (BatchNorm: two
 * sets of C x 256; bias gradients: C x 256) and the MSE's 1024 block partials; doubled for headroom. */
static size_t scratch_bytes(const Model *m) {
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
    return 2 * (3 * C * 256 * sizeof(double) + 1024 * sizeof(double));
}

Step *step_create(Model *m, const Backend *be, int N_max, V3Math math) {
    if (N_max < 1) {
        v3_error("step_create: %d fragments (at least 1 is needed)", N_max);
        return NULL;
    }
    Step *s = xcalloc(1, sizeof *s);
    s->m = m;
    s->be = be;
    s->math = math;
    s->N_max = N_max;
    s->enc = xcalloc((size_t)m->n_enc + 1, sizeof(StageActs));
    s->dec = xcalloc((size_t)m->n_dec + 1, sizeof(StageActs));
    s->measuring = 1;
    take_all(s);
    s->cap = s->used;
    s->measuring = 0;
    s->base = be->alloc(s->cap);
    take_all(s);
    s->host_zc = falloc((size_t)N_max * m->dc);
    s->cs_host = be->host_state ? m->vq.cluster_size : falloc((size_t)m->vq.K);
    be->reserve_scratch(scratch_bytes(m));
    s->vq = be->vq_create(m->vq.K, m->dc, N_max);
    int n = m->cfg.n_fragments;
    if (!s->vq || step_from_host(s) || (N_max % n == 0 && !plans_for(s, N_max))) {
        step_free(s);
        return NULL;
    }
    if (!be->host_state)
        v3_log("v3: step on %s: %.2f GiB arena (parameters, optimiser state, activations for %d fragments), math %s\n",
               be->name, s->cap / 1073741824.0, N_max, v3_math_name(math));
    return s;
}

void step_free(Step *s) {
    if (!s) return;
    for (int i = 0; i < s->nsets; i++) free_set(s, &s->sets[i]);
    if (s->vq) s->be->vq_destroy(s->vq);
    if (s->base) s->be->free(s->base);
    free(s->enc);
    free(s->dec);
    ffree(s->host_zc);
    if (!s->be->host_state) ffree(s->cs_host);
    ffree(s->host_out);
    free(s->host_ind);
    free(s);
}

/* ---- layers ---- */

static void conv_fwd(Step *s, const void *plan, const ConvL *c, const float *x, float *y) {
    s->be->conv_fwd(plan, x, P(s, c->w), P(s, c->b), y);
}

static void conv_bwd(Step *s, const void *plan, const ConvL *c, const float *x, const float *dy, float *dx) {
    s->be->conv_bwd(plan, x, P(s, c->w), dy, dx, GR(s, c->w), GR(s, c->b));
}

static void bn_fwd(Step *s, const BnL *b, int N, int HW, const float *x, float *y, float *mean, float *invstd,
                   int train) {
    if (train)
        s->be->bn2d_fwd_train(N, b->C, HW, x, P(s, b->g), P(s, b->b), y, mean, invstd, s->buf + b->rm,
                              s->buf + b->rv, 0.1f, 1e-5f);
    else
        s->be->bn2d_fwd_eval(N, b->C, HW, x, P(s, b->g), P(s, b->b), y, s->buf + b->rm, s->buf + b->rv, 1e-5f);
}

static void bn_bwd(Step *s, const BnL *b, int N, int HW, const float *x, const float *mean, const float *invstd,
                   const float *dy, float *dx) {
    s->be->bn2d_bwd(N, b->C, HW, x, P(s, b->g), mean, invstd, dy, dx, GR(s, b->g), GR(s, b->b));
}

static void stage_fwd(Step *st, const Stage *s, StageActs *d, const StagePlans *pl, int N, const float *x,
                      int train) {
    const Backend *be = st->be;
    int HWo = s->Ho * s->Wo;
    size_t out = stage_out(s) * N;
    d->x = x;
    switch (s->kind) {
    case ST_UPSAMPLE:
        be->upsample_fwd(N, s->cin, s->H, s->W, s->uh, s->uw, x, d->y);
        return;
    case ST_OUTCONV:
        conv_fwd(st, pl->c0, &s->c0, x, d->y);
        return;
    case ST_STEM:
        conv_fwd(st, pl->c0, &s->c0, x, d->a0);
        bn_fwd(st, &s->n0, N, HWo, d->a0, d->bn0, d->mean[0], d->invstd[0], train);
        be->gelu_fwd(out, d->bn0, d->y);
        return;
    case ST_BLOCK:
        conv_fwd(st, pl->c0, &s->c0, x, d->a0);
        bn_fwd(st, &s->n0, N, HWo, d->a0, d->bn0, d->mean[0], d->invstd[0], train);
        be->gelu_fwd((size_t)s->n0.C * HWo * N, d->bn0, d->g0);
        conv_fwd(st, pl->c1, &s->c1, d->g0, d->a1);
        bn_fwd(st, &s->n1, N, HWo, d->a1, d->s, d->mean[1], d->invstd[1], train);
        if (s->has_sc) {
            conv_fwd(st, pl->sc, &s->sc, x, d->sa);
            bn_fwd(st, &s->nsc, N, HWo, d->sa, d->y, d->mean[2], d->invstd[2], train); /* y as scratch */
            be->add_inplace(out, d->s, d->y);
        } else {
            be->add_inplace(out, d->s, x);
        }
        be->gelu_fwd(out, d->s, d->y);
        return;
    }
}

/* dy (D, may be overwritten) -> dx (NULL for the first stage). T1, T2 are scratch. */
static void stage_bwd(Step *st, const Stage *s, const StageActs *d, const StagePlans *pl, int N, float *D, float *dx,
                      float *T1, float *T2) {
    const Backend *be = st->be;
    int HWo = s->Ho * s->Wo;
    size_t out = stage_out(s) * N, in = stage_in(s) * N;
    switch (s->kind) {
    case ST_UPSAMPLE:
        be->upsample_bwd(N, s->cin, s->H, s->W, s->uh, s->uw, D, dx);
        return;
    case ST_OUTCONV:
        conv_bwd(st, pl->c0, &s->c0, d->x, D, dx);
        return;
    case ST_STEM:
        be->gelu_bwd(out, d->bn0, D, D);
        bn_bwd(st, &s->n0, N, HWo, d->a0, d->mean[0], d->invstd[0], D, T1);
        conv_bwd(st, pl->c0, &s->c0, d->x, T1, dx);
        return;
    case ST_BLOCK:
        be->gelu_bwd(out, d->s, D, D); /* D = d(pre-activation sum) */
        bn_bwd(st, &s->n1, N, HWo, d->a1, d->mean[1], d->invstd[1], D, T1);
        conv_bwd(st, pl->c1, &s->c1, d->g0, T1, T2);
        be->gelu_bwd((size_t)s->n0.C * HWo * N, d->bn0, T2, T2);
        bn_bwd(st, &s->n0, N, HWo, d->a0, d->mean[0], d->invstd[0], T2, T1);
        conv_bwd(st, pl->c0, &s->c0, d->x, T1, dx);
        if (s->has_sc) {
            bn_bwd(st, &s->nsc, N, HWo, d->sa, d->mean[2], d->invstd[2], D, T1);
            conv_bwd(st, pl->sc, &s->sc, d->x, T1, dx ? T2 : NULL);
            if (dx) be->add_inplace(in, dx, T2);
        } else if (dx) {
            be->add_inplace(in, dx, D);
        }
        return;
    }
}

/* ---- the vector quantiser: search on the backend, k-means init and dead-code draws on the host ---- */

static int vq_step(Step *s, int N, VqMode mode) {
    const Backend *be = s->be;
    Model *m = s->m;
    VQ *vq = &m->vq;
    int K = vq->K, dc = m->dc;
    if (vq->initted == 0.0f) { /* first forward: k-means on this batch, on the host with the model's RNG */
        if (be->d2h(s->host_zc, s->zc, sizeof(float) * (size_t)N * dc)) return -1;
        vq_kmeans_init(vq, N, s->host_zc, &m->rng);
        size_t kd = (size_t)K * dc;
        if (be->h2d(s->embed, vq->embed, sizeof(float) * kd) || be->h2d(s->embed_avg, vq->embed_avg, sizeof(float) * kd) ||
            be->h2d(s->cluster_size, vq->cluster_size, sizeof(float) * K))
            return -1;
        if (!be->host_state) memcpy(s->cs_host, vq->cluster_size, sizeof(float) * K);
    }
    be->vq_search(s->vq, N, s->zc, s->embed, s->ind, s->q, &s->scal[1]);
    s->outputs_valid = s->ind_valid = 0;
    if (mode != VQ_TRAIN) return 0;
    be->vq_ema(s->vq, vq->decay, s->embed, s->embed_avg, s->cluster_size);
    /* The dead-code decision needs the counts now: K floats, the step's one mid-forward synchronisation. */
    if (vq->threshold > 0) {
        if (be->d2h(s->cs_host, s->cluster_size, sizeof(float) * K)) return -1;
        int ndead = 0, *dead = xmalloc(sizeof(int) * K), *rows = xmalloc(sizeof(int) * K);
        for (int k = 0; k < K; k++)
            if (s->cs_host[k] < vq->threshold) dead[ndead++] = k;
        if (ndead) {
            if (vq->revive_largest) { /* the row choice reads this batch's assignment: N ints more */
                if (!s->host_ind) s->host_ind = xmalloc(sizeof(int) * (size_t)s->N_max);
                if (be->d2h(s->host_ind, s->ind, sizeof(int) * (size_t)N)) {
                    free(dead);
                    free(rows);
                    return -1;
                }
            }
            vq_revive_rows(N, ndead, dead, s->host_ind, K, vq->revive_largest, rows, &m->rng);
            be->vq_revive(s->vq, ndead, dead, rows, s->zc, vq->threshold, s->embed, s->embed_avg, s->cluster_size);
            for (int i = 0; i < ndead; i++) s->cs_host[dead[i]] = vq->threshold;
        }
        free(dead);
        free(rows);
    }
    return 0;
}

/* The finite-difference hooks (step.h): q = zc + offset, commitment against fixed codewords. Host memory only. */
static void test_hooks(Step *s, int N) {
    size_t n = (size_t)N * s->m->dc;
    if (!s->be->host_state) V3_FATAL("model_test_q_offset/q_const need a backend with host state, not %s", s->be->name);
    if (model_test_q_offset) {
        s->be->copy_cols(1, (int)n, s->zc, 0, s->q, 0);
        s->be->add_inplace(n, s->q, model_test_q_offset);
    }
    if (model_test_q_const) {
        double c = 0;
        for (size_t i = 0; i < n; i++) {
            double e = (double)model_test_q_const[i] - s->zc[i];
            c += e * e;
        }
        s->scal[1] = c;
    }
}

/* ---- whole model ---- */

/* Encoder on x (N fragments; x is the backend's memory): CNNs, Linear + GELU, the heads -> zc, zs. */
static void encoder_fwd(Step *s, const PlanSet *ps, int N, const float *x, int bn_train) {
    const Backend *be = s->be;
    Model *m = s->m;
    int dc = m->dc, ds = m->ds, dz = dc + ds;
    const float *cur = x;
    for (int i = 0; i < m->n_enc; i++) {
        stage_fwd(s, &m->enc[i], &s->enc[i], &ps->enc[i], N, cur, bn_train);
        cur = s->enc[i].y;
    }
    be->linear_fwd(N, m->flat, dz, cur, P(s, m->lin1_w), P(s, m->lin1_b), s->h);
    be->gelu_fwd((size_t)N * dz, s->h, s->hg);
    be->copy_cols(N, dc, s->hg, dz, s->hc, dc);
    be->copy_cols(N, ds, s->hg + dc, dz, s->hs, ds);
    be->linear_fwd(N, dc, dc, s->hc, P(s, m->linc_w), P(s, m->linc_b), s->zc);
    be->linear_fwd(N, ds, ds, s->hs, P(s, m->lins_w), P(s, m->lins_b), s->zs);
}

/* Decoder from q (content) and zs (style) -> s->xhat. */
static void decoder_fwd(Step *s, const PlanSet *ps, int N, int bn_train) {
    const Backend *be = s->be;
    Model *m = s->m;
    int dc = m->dc, ds = m->ds, dz = dc + ds;
    be->linear_fwd(N, dc, dc, s->q, P(s, m->dlinc_w), P(s, m->dlinc_b), s->dcp);
    be->linear_fwd(N, ds, ds, s->zs, P(s, m->dlins_w), P(s, m->dlins_b), s->dsp);
    be->gelu_fwd_cols(N, dc, s->dcp, dc, s->cat, dz); /* content first, then style */
    be->gelu_fwd_cols(N, ds, s->dsp, ds, s->cat + dc, dz);
    be->linear_fwd(N, dz, m->flat, s->cat, P(s, m->lin0_w), P(s, m->lin0_b), s->p0);
    be->gelu_fwd((size_t)N * m->flat, s->p0, s->p0g);
    const float *cur = s->p0g;
    for (int i = 0; i < m->n_dec; i++) {
        stage_fwd(s, &m->dec[i], &s->dec[i], &ps->dec[i], N, cur, bn_train);
        cur = s->dec[i].y;
    }
    s->xhat = cur;
}

/* The plan set for N rows and the input in the backend's memory. */
static PlanSet *begin(Step *s, const float *x, int x_on_backend, int N) {
    if (N < 1 || N > s->N_max) {
        v3_error("step: %d fragments (this step was sized for 1..%d)", N, s->N_max);
        return NULL;
    }
    PlanSet *ps = plans_for(s, N);
    if (!ps) return NULL;
    s->cur = ps;
    s->N = N;
    s->outputs_valid = s->ind_valid = 0;
    s->have_xhat = 0;
    if (x_on_backend) s->xin = x;
    else if (s->be->h2d(s->x_in, x, sizeof(float) * frag_size(s->m) * N)) return NULL;
    else s->xin = s->x_in;
    return ps;
}

static int enqueue_forward(Step *s, const float *x, int x_on_backend, int B, int bn_train, VqMode vq_mode) {
    const Backend *be = s->be;
    Model *m = s->m;
    int n = m->cfg.n_fragments, N = B * n, dc = m->dc;
    if (B < 2 || N > s->N_max)
        return v3_error("step: batch of %d samples (the V3 loss needs at least 2; this step was sized for %d)", B,
                        s->N_max / n);
    PlanSet *ps = begin(s, x, x_on_backend, N);
    if (!ps) return -1;
    s->B = B;
    encoder_fwd(s, ps, N, s->xin, bn_train);
    if (vq_step(s, N, vq_mode)) return -1;
    if (model_test_q_offset || model_test_q_const) test_hooks(s, N);
    /* The V3 statistics see what the authors' loss sees: in training PyTorch's straight-through value (rounding-level
     * distances between equal codes, NOTES.md "Ties in the quantised codes"), in eval the codewords. The decoder
     * gets the codewords either way (the rounding changes its input by an ulp and creates no ties). The
     * finite-difference surrogate keeps q exact: it is already a smooth function of z_c. */
    s->q_stats = s->q;
    if (m->tie_pytorch && vq_mode != VQ_EVAL && !model_test_q_offset) {
        be->ste_value((size_t)N * dc, s->zc, s->q, s->q_ste);
        s->q_stats = s->q_ste;
    }
    decoder_fwd(s, ps, N, bn_train);
    s->have_xhat = 1;
    be->mse_fwd(frag_size(m) * N, s->xhat, s->xin, &s->scal[0]);
    be->v3_forward(ps->v3, s->zc, s->q_stats, s->zs);
    s->last_train = bn_train;
    s->last_mode = vq_mode;
    return 0;
}

/* One synchronisation: the step's scalars to the host, assembled into the loss terms. */
static int read_loss(Step *s, LossTerms *out) {
    const Backend *be = s->be;
    Model *m = s->m;
    double scal[2], v[V3_STATS_DOUBLES];
    if (be->sync() || be->d2h(scal, s->scal, sizeof scal) || be->d2h(v, be->v3_stats(s->cur->v3), sizeof v))
        return -1;
    if (s->last_mode == VQ_TRAIN && m->vq.threshold <= 0 &&
        be->d2h(s->cs_host, s->cluster_size, sizeof(float) * m->vq.K))
        return -1;
    int N = s->N, n = m->cfg.n_fragments;
    int nn = m->loss.supersample_content ? v3_supersample_n(N) : n;
    v3_stats_unpack(v, N / nn, nn, &s->last_stats);
    LossTerms L;
    memset(&L, 0, sizeof L);
    L.recon = scal[0];
    L.commit = s->last_mode == VQ_EVAL ? 0.0 : scal[1] / ((double)N * m->dc);
    const V3Stats *st = &s->last_stats;
    L.content = st->content;
    L.style = st->style;
    L.sample = st->sample;
    L.fragment = st->fragment;
    L.Fc = st->Fc;
    L.Sc = st->Sc;
    L.Fs = st->Fs;
    L.Ss = st->Ss;
    L.total = m->loss.w_recon * L.recon + st->weighted + m->loss.w_commit * L.commit;
    s->last = L;
    if (out) *out = L;
    if (!isfinite(L.total)) return loss_nonfinite_error(&L);
    return 0;
}

int step_forward(Step *s, const float *x, int x_on_backend, int B, int bn_train, VqMode vq_mode, LossTerms *out) {
    if (enqueue_forward(s, x, x_on_backend, B, bn_train, vq_mode)) return -1;
    return read_loss(s, out);
}

void step_backward(Step *s) {
    const Backend *be = s->be;
    Model *m = s->m;
    const PlanSet *ps = s->cur;
    int N = s->N, dc = m->dc, ds = m->ds, dz = dc + ds;
    float **pool = s->pool;
    if (!ps || !s->have_xhat || !ps->v3) V3_FATAL("step_backward without a training forward");
    if (be->memset(s->g, 0, sizeof(float) * m->n_params)) V3_FATAL("%s", v3_last_error());

    /* reconstruction */
    float *D = pool[0], *O = pool[1];
    be->mse_bwd(frag_size(m) * N, s->xhat, s->xin, (float)m->loss.w_recon, D);
    for (int i = m->n_dec - 1; i >= 0; i--) {
        stage_bwd(s, &m->dec[i], &s->dec[i], &ps->dec[i], N, D, O, pool[2], pool[3]);
        float *t = D; D = O; O = t;
    }
    /* D = d p0g */
    be->gelu_bwd((size_t)N * m->flat, s->p0, D, D);
    be->linear_bwd(N, dz, m->flat, s->cat, P(s, m->lin0_w), D, s->tmp_c, GR(s, m->lin0_w), GR(s, m->lin0_b));
    /* tmp_c = d cat [N, dz]; through the two GELUs into tmp_s = [d dcp (N x dc) | d dsp (N x ds)] */
    be->gelu_bwd_cols(N, dc, s->dcp, dc, s->tmp_c, dz, s->tmp_s, dc);
    be->gelu_bwd_cols(N, ds, s->dsp, ds, s->tmp_c + dc, dz, s->tmp_s + (size_t)N * dc, ds);
    be->linear_bwd(N, dc, dc, s->q, P(s, m->dlinc_w), s->tmp_s, s->gzc, GR(s, m->dlinc_w), GR(s, m->dlinc_b));
    be->linear_bwd(N, ds, ds, s->zs, P(s, m->dlins_w), s->tmp_s + (size_t)N * dc, s->gzs, GR(s, m->dlins_w),
                   GR(s, m->dlins_b));
    /* gzc holds the decoder's gradient w.r.t. q: straight-through, it is z_c's. Add the V3 and commitment terms. */
    be->v3_backward(ps->v3, s->zc, s->q_stats, s->zs, s->gzc, s->gzs);
    if (m->loss.w_commit != 0)
        be->axpy_diff((size_t)N * dc, m->loss.w_commit * 2.0 / ((double)N * dc), s->zc,
                      model_test_q_const ? model_test_q_const : s->q, s->gzc);
    /* encoder heads */
    be->linear_bwd(N, dc, dc, s->hc, P(s, m->linc_w), s->gzc, s->tmp_s, GR(s, m->linc_w), GR(s, m->linc_b));
    be->linear_bwd(N, ds, ds, s->hs, P(s, m->lins_w), s->gzs, s->tmp_s + (size_t)N * dc, GR(s, m->lins_w),
                   GR(s, m->lins_b));
    be->copy_cols(N, dc, s->tmp_s, dc, s->tmp_c, dz);
    be->copy_cols(N, ds, s->tmp_s + (size_t)N * dc, ds, s->tmp_c + dc, dz);
    be->gelu_bwd((size_t)N * dz, s->h, s->tmp_c, s->tmp_c);
    const float *enc_out = m->n_enc ? s->enc[m->n_enc - 1].y : s->xin;
    D = pool[0];
    O = pool[1];
    be->linear_bwd(N, m->flat, dz, enc_out, P(s, m->lin1_w), s->tmp_c, D, GR(s, m->lin1_w), GR(s, m->lin1_b));
    for (int i = m->n_enc - 1; i >= 0; i--) {
        stage_bwd(s, &m->enc[i], &s->enc[i], &ps->enc[i], N, D, i > 0 ? O : NULL, pool[2], pool[3]);
        float *t = D; D = O; O = t;
    }
}

void step_adamw(Step *s, float lr) {
    Model *m = s->m;
    const Config *c = &m->cfg;
    m->adam_t++;
    s->be->adamw(m->n_trainable, s->p, s->g, s->am, s->av, lr, (float)c->beta1, (float)c->beta2, (float)c->eps,
                 (float)c->weight_decay, m->adam_t);
}

int step_train(Step *s, const float *x, int x_on_backend, int B, float lr, LossTerms *out) {
    if (enqueue_forward(s, x, x_on_backend, B, 1, VQ_TRAIN)) return -1;
    step_backward(s);
    step_adamw(s, lr);
    return read_loss(s, out);
}

/* ---- evaluation pieces ---- */

int step_encode(Step *s, const float *x, int N) {
    PlanSet *ps = begin(s, x, 0, N);
    if (!ps) return -1;
    encoder_fwd(s, ps, N, s->xin, 0);
    if (vq_step(s, N, VQ_EVAL)) return -1;
    StepOutputs o;
    if (step_outputs(s, &o)) return -1;
    for (size_t i = 0; i < (size_t)N * s->m->dc; i++)
        if (!isfinite(o.zc[i])) return v3_error("model_encode: non-finite content embedding");
    return 0;
}

int step_decode(Step *s, const float *q, const float *zs, int N, float *xhat) {
    const Backend *be = s->be;
    Model *m = s->m;
    PlanSet *ps = begin(s, NULL, 1, N);
    if (!ps) return -1;
    if (be->h2d(s->q, q, sizeof(float) * (size_t)N * m->dc) || be->h2d(s->zs, zs, sizeof(float) * (size_t)N * m->ds))
        return -1;
    decoder_fwd(s, ps, N, 0);
    return be->sync() || be->d2h(xhat, s->xhat, sizeof(float) * frag_size(m) * N) ? -1 : 0;
}

int step_outputs(Step *s, StepOutputs *o) {
    const Backend *be = s->be;
    Model *m = s->m;
    int N = s->N;
    size_t nc = (size_t)N * m->dc, ns = (size_t)N * m->ds, nx = s->have_xhat ? frag_size(m) * N : 0;
    if (be->host_state) {
        *o = (StepOutputs){N, s->zc, s->q, s->zs, s->have_xhat ? s->xhat : NULL, s->ind};
        return 0;
    }
    /* one host buffer for N_max fragments: zc | q | zs | xhat, each at its N_max offset */
    size_t mc = (size_t)s->N_max * m->dc, ms = (size_t)s->N_max * m->ds;
    float *zc = s->host_out, *q = zc + mc, *zs = q + mc, *xh = zs + ms;
    if (!s->outputs_valid) {
        if (!s->host_out) s->host_out = falloc(2 * mc + ms + frag_size(m) * s->N_max);
        zc = s->host_out, q = zc + mc, zs = q + mc, xh = zs + ms;
        if (be->sync() || be->d2h(zc, s->zc, sizeof(float) * nc) || be->d2h(q, s->q, sizeof(float) * nc) ||
            be->d2h(zs, s->zs, sizeof(float) * ns) || (nx && be->d2h(xh, s->xhat, sizeof(float) * nx)) ||
            !step_indices(s))
            return -1;
        s->outputs_valid = 1;
    }
    *o = (StepOutputs){N, zc, q, zs, nx ? xh : NULL, s->host_ind};
    return 0;
}

const int *step_indices(Step *s) {
    if (s->be->host_state) return s->ind;
    if (!s->ind_valid) {
        if (!s->host_ind) s->host_ind = xmalloc(sizeof(int) * (size_t)s->N_max);
        if (s->be->sync() || s->be->d2h(s->host_ind, s->ind, sizeof(int) * (size_t)s->N)) V3_FATAL("%s", v3_last_error());
        s->ind_valid = 1;
    }
    return s->host_ind;
}

const LossTerms *step_last_terms(const Step *s) { return &s->last; }
const V3Stats *step_last_stats(const Step *s) { return &s->last_stats; }

double step_perplexity(const Step *s) {
    VQ v = s->m->vq;
    v.cluster_size = s->cs_host;
    return vq_perplexity(&v);
}

int step_read_grads(Step *s, float *g_out) {
    if (s->be->sync()) return -1;
    return s->be->d2h(g_out, s->g, sizeof(float) * s->m->n_params);
}

int step_grads_finite(Step *s) {
    unsigned long long bad;
    s->be->count_nonfinite(s->m->n_trainable, s->g, s->nonfinite);
    if (s->be->sync() || s->be->d2h(&bad, s->nonfinite, sizeof bad)) V3_FATAL("%s", v3_last_error());
    return bad == 0;
}

void step_internals(const Step *s, StepInternals *v) {
    if (!s->be->host_state) V3_FATAL("step_internals: backend %s has no host state", s->be->name);
    *v = (StepInternals){s->q_stats, s->q, s->q_ste, s->gzc};
}
