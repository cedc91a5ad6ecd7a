/* One training step of the model on the CPU: forward (encoder, VQ, decoder, loss) and the hand-written
 * backward pass, stage by stage, using a pool of four gradient buffers. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "model.h"

const float *model_test_q_offset = NULL;
const float *model_test_q_const = NULL;

#define P(m, off) ((m)->p + (off))
#define G(m, off) ((m)->g + (off))

static size_t stage_in(const Stage *s) { return (size_t)s->cin * s->H * s->W; }
static size_t stage_out(const Stage *s) { return (size_t)s->cout * s->Ho * s->Wo; }

void model_free_activations(Model *m) {
    float **fs[] = {&m->x_in, &m->h, &m->hg, &m->hc, &m->hs, &m->zc, &m->zs, &m->q, &m->dcp, &m->dsp, &m->cat,
                    &m->p0, &m->p0g, &m->xhat, &m->gzc, &m->gzs, &m->tmp_c, &m->tmp_s, &m->q_ste,
                    &m->pool[0], &m->pool[1], &m->pool[2], &m->pool[3]};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) { ffree(*fs[i]); *fs[i] = NULL; }
    free(m->ind);
    m->ind = NULL;
    m->q_stats = NULL;
    Stage *lists[2] = {m->enc, m->dec};
    int counts[2] = {m->n_enc, m->n_dec};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < counts[l]; i++) {
            Stage *s = &lists[l][i];
            float **a[] = {&s->a0, &s->bn0, &s->g0, &s->a1, &s->s, &s->sa, &s->y};
            for (size_t k = 0; k < 7; k++) { ffree(*a[k]); *a[k] = NULL; }
        }
    m->N = 0;
}

/* One activation buffer of n floats, or, when counting (model_activation_bytes), only its size: one walk over
 * the buffers both allocates them and estimates them, so the estimate cannot drift from the allocation. */
static float *act(size_t n, size_t *count) {
    if (count) { *count += n * sizeof(float); return NULL; }
    return falloc(n);
}

static void alloc_stage(Stage *s, int N, size_t *maxact, size_t *count) {
    size_t in = stage_in(s) * N, out = stage_out(s) * N;
    if (in > *maxact) *maxact = in;
    if (out > *maxact) *maxact = out;
    s->y = act(out, count);
    if (s->kind == ST_UPSAMPLE || s->kind == ST_OUTCONV) return;
    size_t mid = (size_t)s->n0.C * s->Ho * s->Wo * N;
    s->a0 = act(mid, count);
    s->bn0 = act(mid, count);
    if (s->kind == ST_STEM) return;
    s->g0 = act(mid, count);
    s->a1 = act(out, count);
    s->s = act(out, count);
    if (s->has_sc) s->sa = act(out, count);
    if (mid > *maxact) *maxact = mid;
}

/* Allocate (count == NULL) or count the activations for N = B*n fragments. */
static void batch_buffers(Model *m, int N, size_t *count) {
    size_t maxact = 0, frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    for (int i = 0; i < m->n_enc; i++) alloc_stage(&m->enc[i], N, &maxact, count);
    for (int i = 0; i < m->n_dec; i++) alloc_stage(&m->dec[i], N, &maxact, count);
    int dz = m->dc + m->ds;
    m->x_in = act(frag * N, count);
    m->h = act((size_t)dz * N, count);
    m->hg = act((size_t)dz * N, count);
    m->hc = act((size_t)m->dc * N, count);
    m->hs = act((size_t)m->ds * N, count);
    m->zc = act((size_t)m->dc * N, count);
    m->zs = act((size_t)m->ds * N, count);
    m->q = act((size_t)m->dc * N, count);
    m->dcp = act((size_t)m->dc * N, count);
    m->dsp = act((size_t)m->ds * N, count);
    m->cat = act((size_t)dz * N, count);
    m->p0 = act((size_t)m->flat * N, count);
    m->p0g = act((size_t)m->flat * N, count);
    m->xhat = act(frag * N, count);
    m->gzc = act((size_t)m->dc * N, count);
    m->gzs = act((size_t)m->ds * N, count);
    m->tmp_c = act((size_t)dz * N, count);
    m->tmp_s = act((size_t)dz * N, count);
    m->q_ste = act((size_t)m->dc * N, count);
    if (count) *count += (size_t)N * sizeof(int);
    else m->ind = xcalloc((size_t)N, sizeof(int));
    if ((size_t)m->flat * N > maxact) maxact = (size_t)m->flat * N;
    if (frag * N > maxact) maxact = frag * N;
    for (int k = 0; k < 4; k++) m->pool[k] = act(maxact, count);
    if (!count) m->pool_n = maxact;
}

/* (Re)allocate activations for N = B*n fragments. */
static void set_batch(Model *m, int N) {
    if (m->N == N) return;
    model_free_activations(m);
    m->N = N;
    batch_buffers(m, N, NULL);
}

size_t model_activation_bytes(Model *m, int N) {
    /* counting leaves every pointer NULL: only a model without activations may be walked */
    if (m->N) return 0;
    size_t bytes = 0;
    batch_buffers(m, N, &bytes);
    return bytes;
}

/* ---- single layers ---- */
static void conv_fwd(Model *m, const ConvL *c, int N, int H, int W, const float *x, float *y) {
    if (c->transposed) cpu_convT2d_fwd(&c->g, N, H, W, x, P(m, c->w), P(m, c->b), y);
    else cpu_conv2d_fwd(&c->g, N, H, W, x, P(m, c->w), P(m, c->b), y);
}

static void conv_bwd(Model *m, const ConvL *c, int N, int H, int W, const float *x, const float *dy, float *dx) {
    if (c->transposed) cpu_convT2d_bwd(&c->g, N, H, W, x, P(m, c->w), dy, dx, G(m, c->w), G(m, c->b));
    else cpu_conv2d_bwd(&c->g, N, H, W, x, P(m, c->w), dy, dx, G(m, c->w), G(m, c->b));
}

static void bn_fwd(Model *m, BnL *b, int N, int HW, const float *x, float *y, int train) {
    if (train)
        cpu_bn2d_fwd_train(N, b->C, HW, x, P(m, b->g), P(m, b->b), y, b->mean, b->invstd, m->buf + b->rm,
                           m->buf + b->rv, 0.1f, 1e-5f);
    else
        cpu_bn2d_fwd_eval(N, b->C, HW, x, P(m, b->g), P(m, b->b), y, m->buf + b->rm, m->buf + b->rv, 1e-5f);
}

static void bn_bwd(Model *m, const BnL *b, int N, int HW, const float *x, const float *dy, float *dx) {
    cpu_bn2d_bwd(N, b->C, HW, x, P(m, b->g), b->mean, b->invstd, dy, dx, G(m, b->g), G(m, b->b));
}

/* ---- stages ---- */
static void stage_fwd(Model *m, Stage *s, int N, const float *x, int train) {
    int HWo = s->Ho * s->Wo;
    size_t out = stage_out(s) * N;
    s->x = x;
    switch (s->kind) {
    case ST_UPSAMPLE:
        cpu_upsample_fwd(N, s->cin, s->H, s->W, s->uh, s->uw, x, s->y);
        return;
    case ST_OUTCONV:
        conv_fwd(m, &s->c0, N, s->H, s->W, x, s->y);
        return;
    case ST_STEM:
        conv_fwd(m, &s->c0, N, s->H, s->W, x, s->a0);
        bn_fwd(m, &s->n0, N, HWo, s->a0, s->bn0, train);
        cpu_gelu_fwd(out, s->bn0, s->y);
        return;
    case ST_BLOCK:
        conv_fwd(m, &s->c0, N, s->H, s->W, x, s->a0);
        bn_fwd(m, &s->n0, N, HWo, s->a0, s->bn0, train);
        cpu_gelu_fwd((size_t)s->n0.C * HWo * N, s->bn0, s->g0);
        conv_fwd(m, &s->c1, N, s->Ho, s->Wo, s->g0, s->a1);
        bn_fwd(m, &s->n1, N, HWo, s->a1, s->s, train);
        if (s->has_sc) {
            conv_fwd(m, &s->sc, N, s->H, s->W, x, s->sa);
            bn_fwd(m, &s->nsc, N, HWo, s->sa, s->y, train); /* y as scratch before the final GELU */
            cpu_add_inplace(out, s->s, s->y);
        } else {
            cpu_add_inplace(out, s->s, x);
        }
        cpu_gelu_fwd(out, s->s, s->y);
        return;
    }
}

/* dy (pool D, may be overwritten) -> dx (pool OUT; NULL for the first stage). T1, T2 are scratch. */
static void stage_bwd(Model *m, Stage *s, int N, float *D, float *dx, float *T1, float *T2) {
    int HWo = s->Ho * s->Wo;
    size_t out = stage_out(s) * N, in = stage_in(s) * N;
    switch (s->kind) {
    case ST_UPSAMPLE:
        cpu_upsample_bwd(N, s->cin, s->H, s->W, s->uh, s->uw, D, dx);
        return;
    case ST_OUTCONV:
        conv_bwd(m, &s->c0, N, s->H, s->W, s->x, D, dx);
        return;
    case ST_STEM:
        cpu_gelu_bwd(out, s->bn0, D, D);
        bn_bwd(m, &s->n0, N, HWo, s->a0, D, T1);
        conv_bwd(m, &s->c0, N, s->H, s->W, s->x, T1, dx);
        return;
    case ST_BLOCK:
        cpu_gelu_bwd(out, s->s, D, D); /* D = d(pre-activation sum) */
        bn_bwd(m, &s->n1, N, HWo, s->a1, D, T1);
        conv_bwd(m, &s->c1, N, s->Ho, s->Wo, s->g0, T1, T2);
        cpu_gelu_bwd((size_t)s->n0.C * HWo * N, s->bn0, T2, T2);
        bn_bwd(m, &s->n0, N, HWo, s->a0, T2, T1);
        conv_bwd(m, &s->c0, N, s->H, s->W, s->x, T1, dx);
        if (s->has_sc) {
            bn_bwd(m, &s->nsc, N, HWo, s->sa, D, T1);
            conv_bwd(m, &s->sc, N, s->H, s->W, s->x, T1, dx ? T2 : NULL);
            if (dx) cpu_add_inplace(in, dx, T2);
        } else if (dx) {
            cpu_add_inplace(in, dx, D);
        }
        return;
    }
}

/* ---- whole model ---- */
/* Encoder on m->x_in (N fragments): CNNs, Linear + GELU, the content and style heads -> m->zc, m->zs. */
static void encoder_fwd(Model *m, int N, int bn_train) {
    int dc = m->dc, ds = m->ds, dz = dc + ds;
    const float *cur = m->x_in;
    for (int i = 0; i < m->n_enc; i++) {
        stage_fwd(m, &m->enc[i], N, cur, bn_train);
        cur = m->enc[i].y;
    }
    cpu_linear_fwd(N, m->flat, dz, cur, P(m, m->lin1_w), P(m, m->lin1_b), m->h);
    cpu_gelu_fwd((size_t)N * dz, m->h, m->hg);
    for (int i = 0; i < N; i++) {
        memcpy(m->hc + (size_t)i * dc, m->hg + (size_t)i * dz, sizeof(float) * dc);
        memcpy(m->hs + (size_t)i * ds, m->hg + (size_t)i * dz + dc, sizeof(float) * ds);
    }
    cpu_linear_fwd(N, dc, dc, m->hc, P(m, m->linc_w), P(m, m->linc_b), m->zc);
    cpu_linear_fwd(N, ds, ds, m->hs, P(m, m->lins_w), P(m, m->lins_b), m->zs);
}

/* Decoder from m->q (content) and m->zs (style) -> m->xhat. */
static void decoder_fwd(Model *m, int N, int bn_train) {
    int dc = m->dc, ds = m->ds, dz = dc + ds;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    cpu_linear_fwd(N, dc, dc, m->q, P(m, m->dlinc_w), P(m, m->dlinc_b), m->dcp);
    cpu_linear_fwd(N, ds, ds, m->zs, P(m, m->dlins_w), P(m, m->dlins_b), m->dsp);
    for (int i = 0; i < N; i++) { /* content first, then style */
        cpu_gelu_fwd((size_t)dc, m->dcp + (size_t)i * dc, m->cat + (size_t)i * dz);
        cpu_gelu_fwd((size_t)ds, m->dsp + (size_t)i * ds, m->cat + (size_t)i * dz + dc);
    }
    cpu_linear_fwd(N, dz, m->flat, m->cat, P(m, m->lin0_w), P(m, m->lin0_b), m->p0);
    cpu_gelu_fwd((size_t)N * m->flat, m->p0, m->p0g);
    const float *cur = m->p0g;
    for (int i = 0; i < m->n_dec; i++) {
        stage_fwd(m, &m->dec[i], N, cur, bn_train);
        cur = m->dec[i].y;
    }
    memcpy(m->xhat, cur, sizeof(float) * frag * N);
}

int model_encode(Model *m, const float *x, int N) {
    if (N < 1) return v3_error("model_encode: %d fragments (expected at least 1)", N);
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    set_batch(m, N);
    memcpy(m->x_in, x, sizeof(float) * frag * N);
    encoder_fwd(m, N, 0);
    vq_forward(&m->vq, N, m->zc, m->q, m->ind, VQ_EVAL, &m->rng);
    for (size_t i = 0; i < (size_t)N * m->dc; i++)
        if (!isfinite(m->zc[i])) return v3_error("model_encode: non-finite content embedding");
    return 0;
}

int model_decode(Model *m, const float *q, const float *zs, int N, float *xhat) {
    if (N < 1) return v3_error("model_decode: %d fragments (expected at least 1)", N);
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    set_batch(m, N);
    memcpy(m->q, q, sizeof(float) * (size_t)N * m->dc);
    memcpy(m->zs, zs, sizeof(float) * (size_t)N * m->ds);
    decoder_fwd(m, N, 0);
    memcpy(xhat, m->xhat, sizeof(float) * frag * N);
    return 0;
}

int model_forward_mode(Model *m, const float *x, int B, int bn_train, VqMode vq_mode, LossTerms *out) {
    int n = m->cfg.n_fragments, N = B * n, dc = m->dc, ds = m->ds;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    set_batch(m, N);
    m->B = B;
    m->n = n;
    memcpy(m->x_in, x, sizeof(float) * frag * N);
    encoder_fwd(m, N, bn_train);
    double commit = vq_forward(&m->vq, N, m->zc, m->q, m->ind, vq_mode, &m->rng);
    if (model_test_q_offset) /* straight-through surrogate for finite-difference tests */
        for (size_t i = 0; i < (size_t)N * dc; i++) m->q[i] = m->zc[i] + model_test_q_offset[i];
    /* The V3 statistics see what the authors' loss sees: in training PyTorch's straight-through value (rounding-level
     * distances between equal codes, NOTES.md "Ties in the quantised codes"), in eval the codewords. The decoder
     * gets the codewords either way (the rounding changes its input by an ulp and creates no ties). The
     * finite-difference surrogate keeps q exact: it is already a smooth function of z_c. */
    m->q_stats = m->q;
    if (m->tie_pytorch && vq_mode != VQ_EVAL && !model_test_q_offset) {
        v3_ste_value((size_t)N * dc, m->zc, m->q, m->q_ste);
        m->q_stats = m->q_ste;
    }
    decoder_fwd(m, N, bn_train);

    LossTerms L;
    memset(&L, 0, sizeof L);
    L.recon = cpu_mse_fwd(frag * N, m->xhat, m->x_in);
    if (model_test_q_const) { /* commitment against the frozen codewords */
        commit = 0;
        for (size_t i = 0; i < (size_t)N * dc; i++) {
            double e = (double)model_test_q_const[i] - m->zc[i];
            commit += e * e;
        }
        commit /= (double)N * dc;
    }
    L.commit = commit;
    v3_loss(&m->loss, B, n, dc, ds, m->zc, m->q_stats, m->zs, &m->last_stats, NULL, NULL);
    L.content = m->last_stats.content;
    L.style = m->last_stats.style;
    L.sample = m->last_stats.sample;
    L.fragment = m->last_stats.fragment;
    L.Fc = m->last_stats.Fc;
    L.Sc = m->last_stats.Sc;
    L.Fs = m->last_stats.Fs;
    L.Ss = m->last_stats.Ss;
    L.total = m->cfg.w_recon * L.recon + m->last_stats.weighted + m->cfg.w_commit * L.commit;
    m->last = L;
    m->last_train = bn_train;
    if (out) *out = L;
    if (!isfinite(L.total)) return loss_nonfinite_error(&L);
    return 0;
}

const char *loss_nonfinite_terms(const LossTerms *L, char *buf, size_t cap) {
    const char *names[] = {"recon", "commit", "content", "style", "sample", "fragment"};
    const double v[] = {L->recon, L->commit, L->content, L->style, L->sample, L->fragment};
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < 6; i++)
        if (!isfinite(v[i]) && n < cap) n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "," : "", names[i]);
    if (!buf[0] && !isfinite(L->total)) snprintf(buf, cap, "total"); /* finite terms whose weighted sum overflowed */
    return buf;
}

int loss_nonfinite_error(const LossTerms *L) {
    char t[128];
    return v3_error("non-finite loss: %s (total %g: recon %g, commit %g, content %g, style %g, sample %g, fragment %g)",
                    loss_nonfinite_terms(L, t, sizeof t), L->total, L->recon, L->commit, L->content, L->style,
                    L->sample, L->fragment);
}

int model_forward(Model *m, const float *x, int B, int train, LossTerms *out) {
    return model_forward_mode(m, x, B, train, train ? VQ_TRAIN : VQ_EVAL, out);
}

void model_backward(Model *m) {
    int B = m->B, n = m->n, N = m->N, dc = m->dc, ds = m->ds, dz = dc + ds;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    float **pool = m->pool;
    memset(m->g, 0, sizeof(float) * m->n_params);

    /* reconstruction */
    float *D = pool[0], *O = pool[1];
    cpu_mse_bwd(frag * N, m->xhat, m->x_in, (float)m->cfg.w_recon, D);
    for (int i = m->n_dec - 1; i >= 0; i--) {
        stage_bwd(m, &m->dec[i], N, D, O, pool[2], pool[3]);
        float *t = D; D = O; O = t;
    }
    /* D = d p0g */
    cpu_gelu_bwd((size_t)N * m->flat, m->p0, D, D);
    cpu_linear_bwd(N, dz, m->flat, m->cat, P(m, m->lin0_w), D, m->tmp_c, G(m, m->lin0_w), G(m, m->lin0_b));
    /* tmp_c = d cat; split into content and style halves through their GELUs */
    for (int i = 0; i < N; i++) {
        cpu_gelu_bwd((size_t)dc, m->dcp + (size_t)i * dc, m->tmp_c + (size_t)i * dz, m->tmp_s + (size_t)i * dc);
        cpu_gelu_bwd((size_t)ds, m->dsp + (size_t)i * ds, m->tmp_c + (size_t)i * dz + dc,
                     m->tmp_s + (size_t)N * dc + (size_t)i * ds);
    }
    cpu_linear_bwd(N, dc, dc, m->q, P(m, m->dlinc_w), m->tmp_s, m->gzc, G(m, m->dlinc_w), G(m, m->dlinc_b));
    cpu_linear_bwd(N, ds, ds, m->zs, P(m, m->dlins_w), m->tmp_s + (size_t)N * dc, m->gzs, G(m, m->dlins_w),
                   G(m, m->dlins_b));
    /* gzc holds the decoder's gradient w.r.t. q: straight-through, it is z_c's. Add V3 and commitment terms. */
    v3_loss(&m->loss, B, n, dc, ds, m->zc, m->q_stats, m->zs, &m->last_stats, m->gzc, m->gzs);
    if (m->cfg.w_commit != 0) {
        double k = m->cfg.w_commit * 2.0 / ((double)N * dc);
        for (int i = 0; i < N; i++)
            for (int t = 0; t < dc; t++) {
                float qc = model_test_q_const ? model_test_q_const[(size_t)i * dc + t] : m->q[(size_t)i * dc + t];
                m->gzc[(size_t)i * dc + t] += (float)(k * ((double)m->zc[(size_t)i * dc + t] - qc));
            }
    }
    /* encoder heads */
    cpu_linear_bwd(N, dc, dc, m->hc, P(m, m->linc_w), m->gzc, m->tmp_s, G(m, m->linc_w), G(m, m->linc_b));
    cpu_linear_bwd(N, ds, ds, m->hs, P(m, m->lins_w), m->gzs, m->tmp_s + (size_t)N * dc, G(m, m->lins_w),
                   G(m, m->lins_b));
    for (int i = 0; i < N; i++) {
        memcpy(m->tmp_c + (size_t)i * dz, m->tmp_s + (size_t)i * dc, sizeof(float) * dc);
        memcpy(m->tmp_c + (size_t)i * dz + dc, m->tmp_s + (size_t)N * dc + (size_t)i * ds, sizeof(float) * ds);
    }
    cpu_gelu_bwd((size_t)N * dz, m->h, m->tmp_c, m->tmp_c);
    const float *enc_out = m->n_enc ? m->enc[m->n_enc - 1].y : m->x_in;
    D = pool[0];
    O = pool[1];
    cpu_linear_bwd(N, m->flat, dz, enc_out, P(m, m->lin1_w), m->tmp_c, D, G(m, m->lin1_w), G(m, m->lin1_b));
    for (int i = m->n_enc - 1; i >= 0; i--) {
        stage_bwd(m, &m->enc[i], N, D, i > 0 ? O : NULL, pool[2], pool[3]);
        float *t = D; D = O; O = t;
    }
}

void model_adamw(Model *m, float lr) {
    const Config *c = &m->cfg;
    m->adam_t++;
    cpu_adamw(m->n_trainable, m->p, m->g, m->m, m->v, lr, (float)c->beta1, (float)c->beta2, (float)c->eps,
              (float)c->weight_decay, m->adam_t);
}
