/* Model construction: architecture tables, parameter registration with the authors' state_dict names,
 * PyTorch-default initialisation, and the parameter-count report. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "memory_limit.h"
#include "model.h"
#include "step.h"

/* The authors' four architectures plus our small `tiny` one (v3.md §2 table). */
int arch_spec(const Config *c, ArchSpec *a) {
    int nc = c->n_channels;
    memset(a, 0, sizeof *a);
    a->H = c->n_feature;
    a->W = c->fragment_len;
    switch (c->arch) {
    case ARCH_INSNOTES:
        a->C = 1;
        a->e1 = (EncSpec){1, nc / 16, 3, 2, 9, 3, 2, 2};
        a->e2 = (EncSpec){nc / 16, nc, 4, 2, 5, 3, 2, 1};
        a->d2 = (DecSpec){nc, nc / 16, 4, 2, 5, 3, 2, 1};
        a->d1 = (DecSpec){nc / 16, 1, 3, 2, 9, 3, 2, 2};
        break;
    case ARCH_PHONENUMS:
    case ARCH_SPRITES:
    case ARCH_SVHN: {
        int nb = c->arch == ARCH_SVHN ? 3 : 2;
        a->C = 3;
        a->e1 = (EncSpec){3, nc / 4, 2, nb, 5, 5, 2, 2};
        a->e2 = (EncSpec){nc / 4, nc, 2, nb, 5, 5, 2, 2};
        a->d2 = (DecSpec){nc, nc / 4, 2, nb, 5, 5, 2, 2};
        a->d1 = (DecSpec){nc / 4, 3, 2, nb, 5, 5, 2, 2};
        break;
    }
    case ARCH_TINY:
        a->C = 3;
        a->e1 = (EncSpec){3, nc / 4, 1, 1, 3, 3, 2, 2};
        a->e2 = (EncSpec){nc / 4, nc, 1, 1, 3, 3, 2, 2};
        a->d2 = (DecSpec){nc, nc / 4, 1, 1, 3, 3, 2, 2};
        a->d1 = (DecSpec){nc / 4, 3, 1, 1, 3, 3, 2, 2};
        break;
    default:
        return v3_error("%s: model_config: unknown architecture", c->path);
    }
    if (c->in_channels > 0) a->C = a->e1.cin = a->d1.cout = c->in_channels;
    /* Encoder output size: every stride-2 step must see an even size (the authors' decoder assumes it). */
    int h = a->H, w = a->W;
    const EncSpec *es[2] = {&a->e1, &a->e2};
    for (int e = 0; e < 2; e++) /* each CNN starts at ch >> L channels and doubles L times */
        if ((es[e]->ch >> es[e]->L) < 1)
            return v3_error("%s: model_config.n_channels: %d leaves encoder cnn_%d with %d channels in its first "
                            "layer (%d >> %d); expected n_channels >= %d for this architecture", c->path,
                            c->n_channels, e + 1, es[e]->ch >> es[e]->L, es[e]->ch, es[e]->L,
                            c->n_channels * (1 << es[e]->L) / (es[e]->ch > 0 ? es[e]->ch : 1));
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < es[e]->L; i++) {
            if ((es[e]->sh == 2 && h % 2) || (es[e]->sw == 2 && w % 2))
                return v3_error("%s: model_config: fragment %dx%d (n_feature x fragment_len) halves to an odd size "
                                "%dx%d at a stride-2 layer; expected sizes divisible by the total stride",
                                c->path, a->H, a->W, h, w);
            h /= es[e]->sh;
            w /= es[e]->sw;
        }
    if (h < 1 || w < 1) return v3_error("%s: model_config: fragment too small for the architecture", c->path);
    a->bc = a->e2.ch;
    a->bh = h;
    a->bw = w;
    return 0;
}

/* ---- registration ---- */
/* A PyTorch shape: up to 4 dims (unused trailing dims are ignored). */
typedef struct { int ndim; int64_t d[4]; } Shape;
static Shape shape4(int ndim, int64_t a, int64_t b, int64_t c, int64_t d) { return (Shape){ndim, {a, b, c, d}}; }
#define SHAPE1(a) shape4(1, (a), 0, 0, 0)

static void reg(TensorInfo **tab, int *cnt, size_t *total, Shape s, int trainable, int enc, const char *fmt, ...) {
    *tab = xrealloc(*tab, sizeof(TensorInfo) * (*cnt + 1));
    TensorInfo *t = &(*tab)[(*cnt)++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    size_t n = 1;
    t->ndim = s.ndim;
    for (int i = 0; i < s.ndim; i++) {
        t->shape[i] = s.d[i];
        n *= (size_t)s.d[i];
    }
    t->off = *total;
    t->n = n;
    t->trainable = trainable;
    t->enc = enc;
    *total += n;
}

typedef struct { Model *m; int enc; } Reg;
#define PREG(R, s, ...) (reg(&(R)->m->params, &(R)->m->n_params_t, &(R)->m->n_params, (s), 1, (R)->enc, __VA_ARGS__), \
                         (R)->m->params[(R)->m->n_params_t - 1].off)
#define BREG(R, s, ...) (reg(&(R)->m->bufs, &(R)->m->n_bufs_t, &(R)->m->n_bufs, (s), 0, (R)->enc, __VA_ARGS__), \
                         (R)->m->bufs[(R)->m->n_bufs_t - 1].off)

static ConvL conv_reg(Reg *R, const char *prefix, int cin, int cout, int kh, int kw, int sh, int sw, int transposed) {
    ConvL c;
    memset(&c, 0, sizeof c);
    c.g = (ConvGeom){cin, cout, kh, kw, sh, sw, kh / 2, kw / 2};
    c.transposed = transposed;
    /* Conv2d weight [out, in, kh, kw]; ConvTranspose2d [in, out, kh, kw] (the layouts ops.h computes with) */
    Shape ws = transposed ? shape4(4, cin, cout, kh, kw) : shape4(4, cout, cin, kh, kw);
    c.w = PREG(R, ws, "%s.weight", prefix);
    c.b = PREG(R, SHAPE1(cout), "%s.bias", prefix);
    return c;
}

static BnL bn_reg(Reg *R, const char *prefix, int C) {
    BnL b;
    memset(&b, 0, sizeof b);
    b.C = C;
    b.g = PREG(R, SHAPE1(C), "%s.weight", prefix);
    b.b = PREG(R, SHAPE1(C), "%s.bias", prefix);
    b.rm = BREG(R, SHAPE1(C), "%s.running_mean", prefix);
    b.rv = BREG(R, SHAPE1(C), "%s.running_var", prefix);
    return b;
}

static Stage *stage_push(Stage **arr, int *n) {
    *arr = xrealloc(*arr, sizeof(Stage) * (*n + 1));
    Stage *s = &(*arr)[(*n)++];
    memset(s, 0, sizeof *s);
    return s;
}

/* ResBlock / ResBlockT as in the authors' resblocks.py (names conv_0, bn_0, conv_1, bn_1, shortcut.0/.1). */
static void block_reg(Reg *R, Stage **arr, int *n, const char *prefix, int cin, int cout, int kh, int kw, int sh,
                      int sw, int transposed, int *H, int *W) {
    char p[96];
    Stage *s = stage_push(arr, n);
    s->kind = ST_BLOCK;
    s->cin = cin;
    s->cout = cout;
    s->H = *H;
    s->W = *W;
    int mid = transposed ? cin : cout;
    snprintf(p, sizeof p, "%s.conv_0", prefix);
    s->c0 = conv_reg(R, p, cin, mid, kh, kw, sh, sw, transposed);
    snprintf(p, sizeof p, "%s.bn_0", prefix);
    s->n0 = bn_reg(R, p, mid);
    snprintf(p, sizeof p, "%s.conv_1", prefix);
    s->c1 = conv_reg(R, p, mid, cout, kh, kw, 1, 1, transposed);
    snprintf(p, sizeof p, "%s.bn_1", prefix);
    s->n1 = bn_reg(R, p, cout);
    if (cin != cout) {
        s->has_sc = 1;
        snprintf(p, sizeof p, "%s.shortcut.0", prefix);
        s->sc = conv_reg(R, p, cin, cout, 1, 1, sh, sw, transposed);
        s->sc.g.ph = s->sc.g.pw = 0;
        snprintf(p, sizeof p, "%s.shortcut.1", prefix);
        s->nsc = bn_reg(R, p, cout);
    }
    s->Ho = conv_out_size(*H, kh, sh, kh / 2);
    s->Wo = conv_out_size(*W, kw, sw, kw / 2);
    *H = s->Ho;
    *W = s->Wo;
}

static void enc_cnn(Reg *R, Model *m, const char *name, const EncSpec *e, int *H, int *W) {
    char p[96];
    int f = e->ch >> e->L;
    Stage *s = stage_push(&m->enc, &m->n_enc);
    s->kind = ST_STEM;
    s->cin = e->cin;
    s->cout = f;
    s->H = s->Ho = *H;
    s->W = s->Wo = *W;
    snprintf(p, sizeof p, "encoder.%s.0", name);
    s->c0 = conv_reg(R, p, e->cin, f, e->kh, e->kw, 1, 1, 0);
    snprintf(p, sizeof p, "encoder.%s.1", name);
    s->n0 = bn_reg(R, p, f);
    for (int j = 0; j < e->nb; j++) {
        snprintf(p, sizeof p, "encoder.%s.resblock_start_%d", name, j);
        block_reg(R, &m->enc, &m->n_enc, p, f, f, e->kh, e->kw, 1, 1, 0, H, W);
    }
    for (int i = 0; i < e->L; i++) {
        int ci = f << i, co = f << (i + 1);
        snprintf(p, sizeof p, "encoder.%s.resblock_%d_0", name, i);
        block_reg(R, &m->enc, &m->n_enc, p, ci, co, e->kh, e->kw, e->sh, e->sw, 0, H, W);
        for (int j = 1; j < e->nb; j++) {
            snprintf(p, sizeof p, "encoder.%s.resblock_%d_%d", name, i, j);
            block_reg(R, &m->enc, &m->n_enc, p, co, co, e->kh, e->kw, 1, 1, 0, H, W);
        }
    }
}

static void dec_cnn(Reg *R, Model *m, const char *name, const DecSpec *d, int *H, int *W) {
    char p[96];
    for (int i = 0; i < d->L; i++) {
        int ci = d->ch >> i, co = d->ch >> (i + 1);
        for (int j = 0; j < d->nb - 1; j++) {
            snprintf(p, sizeof p, "decoder.%s.resblock_%d_%d", name, i, j);
            block_reg(R, &m->dec, &m->n_dec, p, ci, ci, d->kh, d->kw, 1, 1, 1, H, W);
        }
        snprintf(p, sizeof p, "decoder.%s.resblock_%d_%d", name, i, d->nb - 1);
        block_reg(R, &m->dec, &m->n_dec, p, ci, co, d->kh, d->kw, 1, 1, 1, H, W);
        Stage *u = stage_push(&m->dec, &m->n_dec);
        u->kind = ST_UPSAMPLE;
        u->cin = u->cout = co;
        u->H = *H;
        u->W = *W;
        u->uh = d->uh;
        u->uw = d->uw;
        *H *= d->uh;
        *W *= d->uw;
        u->Ho = *H;
        u->Wo = *W;
    }
    int f = d->ch >> d->L;
    for (int j = 0; j < d->nb; j++) {
        snprintf(p, sizeof p, "decoder.%s.resblock_end_%d", name, j);
        block_reg(R, &m->dec, &m->n_dec, p, f, f, d->kh, d->kw, 1, 1, 1, H, W);
    }
    Stage *o = stage_push(&m->dec, &m->n_dec);
    o->kind = ST_OUTCONV;
    o->cin = f;
    o->cout = d->cout;
    o->H = o->Ho = *H;
    o->W = o->Wo = *W;
    snprintf(p, sizeof p, "decoder.%s.output_conv", name);
    o->c0 = conv_reg(R, p, f, d->cout, d->kh, d->kw, 1, 1, 1);
}

/* U(-1/sqrt(fan_in), +1/sqrt(fan_in)) for conv/linear weights and biases (kaiming_uniform a=sqrt(5));
 * ConvTranspose's fan_in is out_channels*kh*kw (dim 1 of its weight). BN: gamma 1, beta 0. */
static void init_uniform(Model *m, size_t off, size_t n, int fan_in) {
    float bound = (float)(1.0 / sqrt((double)fan_in));
    for (size_t i = 0; i < n; i++) m->p[off + i] = rng_uniform_range(&m->rng, -bound, bound);
}

static void init_conv(Model *m, const ConvL *c) {
    int fan = (c->transposed ? c->g.cout : c->g.cin) * c->g.kh * c->g.kw;
    init_uniform(m, c->w, (size_t)c->g.cin * c->g.cout * c->g.kh * c->g.kw, fan);
    init_uniform(m, c->b, (size_t)c->g.cout, fan);
}

static void init_bn(Model *m, const BnL *b) {
    for (int i = 0; i < b->C; i++) {
        m->p[b->g + i] = 1.0f;
        m->p[b->b + i] = 0.0f;
        m->buf[b->rm + i] = 0.0f;
        m->buf[b->rv + i] = 1.0f;
    }
}

static void init_stage(Model *m, const Stage *s) {
    if (s->kind == ST_UPSAMPLE) return;
    init_conv(m, &s->c0);
    if (s->kind == ST_OUTCONV) return;
    init_bn(m, &s->n0);
    if (s->kind == ST_STEM) return;
    init_conv(m, &s->c1);
    init_bn(m, &s->n1);
    if (s->has_sc) {
        init_conv(m, &s->sc);
        init_bn(m, &s->nsc);
    }
}

static void linear_reg(Reg *R, const char *prefix, int in, int out, size_t *w, size_t *b) {
    *w = PREG(R, shape4(2, out, in, 0, 0), "%s.weight", prefix); /* Linear weight [out, in] */
    *b = PREG(R, SHAPE1(out), "%s.bias", prefix);
}

/* Everything a host step allocates, estimated from the registered shapes before any of it is allocated. */
static int check_memory(Model *m) {
    const Config *c = &m->cfg;
    size_t state = sizeof(float) * (2 * m->n_params + 2 * m->n_trainable + m->n_bufs); /* weights, grads, AdamW */
    size_t K = (size_t)c->n_atoms, d = (size_t)m->dc, N = (size_t)c->batch_size * (size_t)c->n_fragments;
    /* codebook, its EMA state, and the k-means initialisation's double-precision sums and assignments */
    size_t book = sizeof(float) * (2 * K * d + K) + sizeof(double) * (K * d + K) + sizeof(int) * (N + 2 * K);
    size_t acts = model_activation_bytes(m, (int)N);
    size_t batches = 3 * sizeof(float) * N * (size_t)m->arch.C * m->arch.H * m->arch.W; /* loader's buffers */
    size_t need = state + book + acts + batches;
    int opt;
    size_t limit = v3_memory_limit(&opt);
    if (need <= limit) return 0;
    return v3_error("%s: model_config: this configuration needs about %.2f GiB (weights, gradients and AdamW "
                    "state %.2f, codebook %.2f, activations for batch_size %d x n_fragments %d = %zu fragments %.2f, "
                    "batches %.2f) but the limit is %.2f GiB (%s)", c->path[0] ? c->path : "(config)", v3_gib(need),
                    v3_gib(state), v3_gib(book), c->batch_size, c->n_fragments, N, v3_gib(acts), v3_gib(batches),
                    v3_gib(limit), opt ? "--max-memory" : "this machine's memory");
}

Model *model_build(const Config *c, uint64_t seed) {
    if (config_validate(c)) return NULL;
    Model *m = xcalloc(1, sizeof *m);
    m->cfg = *c;
    if (arch_spec(c, &m->arch)) { free(m); return NULL; }
    m->dc = c->d_emb_c;
    m->ds = c->d_emb_s;
    m->flat = m->arch.bc * m->arch.bh * m->arch.bw;
    Reg R = {m, 1};
    int H = m->arch.H, W = m->arch.W;
    enc_cnn(&R, m, "cnn_1", &m->arch.e1, &H, &W);
    enc_cnn(&R, m, "cnn_2", &m->arch.e2, &H, &W);
    linear_reg(&R, "encoder.linear_1", m->flat, m->dc + m->ds, &m->lin1_w, &m->lin1_b);
    linear_reg(&R, "encoder.linear_c", m->dc, m->dc, &m->linc_w, &m->linc_b);
    linear_reg(&R, "encoder.linear_s", m->ds, m->ds, &m->lins_w, &m->lins_b);
    R.enc = 0;
    linear_reg(&R, "decoder.linear_c", m->dc, m->dc, &m->dlinc_w, &m->dlinc_b);
    linear_reg(&R, "decoder.linear_s", m->ds, m->ds, &m->dlins_w, &m->dlins_b);
    linear_reg(&R, "decoder.linear_0", m->dc + m->ds, m->flat, &m->lin0_w, &m->lin0_b);
    H = m->arch.bh;
    W = m->arch.bw;
    dec_cnn(&R, m, "cnn_transpose_2", &m->arch.d2, &H, &W);
    dec_cnn(&R, m, "cnn_transpose_1", &m->arch.d1, &H, &W);
    if (H != m->arch.H || W != m->arch.W) {
        v3_error("%s: model_config: decoder output %dx%d does not match the fragment %dx%d", c->path, H, W,
                 m->arch.H, m->arch.W);
        model_free(m);
        return NULL;
    }
    m->n_trainable = m->n_params;
    /* The authors' bn_c/bn_s (BatchNorm1d) exist in the state_dict but never run: untrained, kept last. */
    R.enc = 1;
    int first_unused = m->n_params_t;
    size_t bnc = PREG(&R, SHAPE1(m->dc), "encoder.bn_c.weight");
    (void)PREG(&R, SHAPE1(m->dc), "encoder.bn_c.bias");
    size_t bns = PREG(&R, SHAPE1(m->ds), "encoder.bn_s.weight");
    (void)PREG(&R, SHAPE1(m->ds), "encoder.bn_s.bias");
    for (int i = first_unused; i < m->n_params_t; i++) m->params[i].trainable = 0;
    for (int i = 0; i < m->n_params_t; i++)
        if (m->params[i].enc) m->n_enc_params += m->params[i].n;

    m->host_backend = &backend_cpu;
    if (check_memory(m)) { model_free(m); return NULL; }
    m->p = falloc(m->n_params);
    m->g = falloc(m->n_params);
    m->m = falloc(m->n_trainable);
    m->v = falloc(m->n_trainable);
    m->buf = falloc(m->n_bufs);
    rng_seed(&m->rng, seed);
    for (int i = 0; i < m->n_enc; i++) init_stage(m, &m->enc[i]);
    init_uniform(m, m->lin1_w, (size_t)m->flat * (m->dc + m->ds), m->flat);
    init_uniform(m, m->lin1_b, (size_t)(m->dc + m->ds), m->flat);
    init_uniform(m, m->linc_w, (size_t)m->dc * m->dc, m->dc);
    init_uniform(m, m->linc_b, (size_t)m->dc, m->dc);
    init_uniform(m, m->lins_w, (size_t)m->ds * m->ds, m->ds);
    init_uniform(m, m->lins_b, (size_t)m->ds, m->ds);
    init_uniform(m, m->dlinc_w, (size_t)m->dc * m->dc, m->dc);
    init_uniform(m, m->dlinc_b, (size_t)m->dc, m->dc);
    init_uniform(m, m->dlins_w, (size_t)m->ds * m->ds, m->ds);
    init_uniform(m, m->dlins_b, (size_t)m->ds, m->ds);
    init_uniform(m, m->lin0_w, (size_t)(m->dc + m->ds) * m->flat, m->dc + m->ds);
    init_uniform(m, m->lin0_b, (size_t)m->flat, m->dc + m->ds);
    for (int i = 0; i < m->n_dec; i++) init_stage(m, &m->dec[i]);
    for (int i = 0; i < m->dc; i++) m->p[bnc + i] = 1.0f; /* BatchNorm1d gamma = 1, beta = 0 */
    for (int i = 0; i < m->ds; i++) m->p[bns + i] = 1.0f;

    vq_init(&m->vq, c->n_atoms, m->dc, (float)c->vq_ema_decay, (float)c->threshold_ema_dead_code, c->kmeans_iters);
    m->vq.revive_largest = !strcmp(c->revive_from, "largest");
    m->loss = (V3LossCfg){.w_content = c->w_content, .w_style = c->w_style, .w_sample = c->w_sample,
                          .w_fragment = c->w_fragment, .relativity = c->relativity,
                          .r_content = c->r_content, .r_style = c->r_style, .r_sample = c->r_sample,
                          .r_fragment = c->r_fragment, .eps = 1e-5,
                          .supersample_content = c->supersample_content, .per_sample = c->per_sample_hinges,
                          .content_energy = !strcmp(c->content_spread, "energy"),
                          .log_hinge = !strcmp(c->hinge, "log"),
                          .w_recon = c->w_recon,
                          .w_commit = c->w_commit};
    m->tie_pytorch = !strcmp(c->tie_gradient, "pytorch");
    return m;
}

void model_free(Model *m) {
    if (!m) return;
    step_free(m->host_step);
    free(m->enc); free(m->dec); free(m->params); free(m->bufs);
    ffree(m->p); ffree(m->g); ffree(m->m); ffree(m->v); ffree(m->buf);
    vq_free(&m->vq);
    free(m);
}

void model_print_info(const Model *m, FILE *f) {
    const ArchSpec *a = &m->arch;
    size_t unused = 2 * (size_t)m->dc + 2 * (size_t)m->ds;
    fprintf(f, "architecture      %s (fragment %d x %d x %d, bottleneck [%d, %d, %d] = %d)\n",
            arch_name(m->cfg.arch), a->C, a->H, a->W, a->bc, a->bh, a->bw, m->flat);
    fprintf(f, "encoder params    %zu (incl. %zu in the unused bn_c/bn_s)\n", m->n_enc_params, unused);
    fprintf(f, "decoder params    %zu\n", m->n_params - m->n_enc_params);
    fprintf(f, "total params      %zu\n", m->n_params);
    fprintf(f, "trained params    %zu (without bn_c/bn_s)\n", m->n_trainable);
    fprintf(f, "codebook          %d x %d (EMA buffers, not parameters)\n", m->vq.K, m->vq.d);
    int N = m->cfg.batch_size * m->cfg.n_fragments;
    fprintf(f, "GFLOP per step    %.2f (conv and linear, forward + backward, batch %d x %d fragments)\n",
            model_step_flops(m, N) / 1e9, m->cfg.batch_size, m->cfg.n_fragments);
    fprintf(f, "BN buffers        %zu floats\n", m->n_bufs);
}

static double conv_macs(const ConvL *c, int H, int W, int Ho, int Wo) {
    /* a transposed conv does the MACs of the conv it is the adjoint of: one per input pixel, channel pair, tap */
    if (c->transposed) return (double)H * W * c->g.cin * c->g.cout * c->g.kh * c->g.kw;
    return (double)Ho * Wo * c->g.cin * c->g.cout * c->g.kh * c->g.kw;
}

double model_step_flops(const Model *m, int N) {
    double macs = 0, first = 0; /* per fragment; first: the first layer's forward (its data gradient is skipped) */
    const Stage *lists[2] = {m->enc, m->dec};
    int counts[2] = {m->n_enc, m->n_dec};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < counts[l]; i++) {
            const Stage *s = &lists[l][i];
            if (s->kind == ST_UPSAMPLE) continue;
            double c0 = conv_macs(&s->c0, s->H, s->W, s->Ho, s->Wo);
            if (l == 0 && i == 0) first = c0;
            macs += c0;
            if (s->kind != ST_BLOCK) continue;
            macs += conv_macs(&s->c1, s->Ho, s->Wo, s->Ho, s->Wo);
            if (s->has_sc) macs += conv_macs(&s->sc, s->H, s->W, s->Ho, s->Wo);
        }
    int dc = m->dc, ds = m->ds, dz = dc + ds;
    macs += (double)m->flat * dz + (double)dc * dc + (double)ds * ds; /* encoder: lin1, content and style heads */
    macs += (double)dc * dc + (double)ds * ds + (double)dz * m->flat; /* decoder: the two heads, lin0 */
    return 2.0 * N * (3 * macs - first);
}
