/* Comparison of one training step against the golden files written by the independent PyTorch reference
 * (tools/torch_reference.py golden --out-dir tests/golden), shared by tests/test_golden.c (CPU model) and
 * tests/gpu/test_gpu_golden.c (device model). Static functions: include from one translation unit per binary.
 *
 * Error measure per tensor: max_i |ours_i - ref_i| / max(max_i |ref_i|, 1e-30); NaN/Inf anywhere gives +INF, so
 * NaN never passes. The reference is float64 (weights, inputs and codebook are float32 values, cast exactly), so
 * the errors measured are those of our float32 path. Tolerances (measured maxima in NOTES.md, "Golden test"):
 *   forward outputs z_c, z_s, q, xhat (train and eval)  GOLD_TOL_FWD   (and ind exactly equal)
 *   loss terms, each |ours - ref| / |ref|              GOLD_TOL_LOSS
 *   parameter gradients, per tensor                    GOLD_TOL_GRAD
 *     BN-invariant tensors (gold_bn_invariant: conv biases feeding a BatchNorm, true gradient exactly 0, the
 *     reference's ~1e-18; a 1x1 conv from one channel into a BatchNorm, gradient ~0 but for the BN epsilon):
 *     max |ours - ref| / max(max |ref|, max |ref gradient of that BatchNorm's beta|) <= GOLD_TOL_GRAD
 *   parameters after one AdamW step, per element:
 *     |ours - ref| <= lr * |u(g_ours) - u(g_ref)| + GOLD_ADAM_ULPS * 2^-24 * (|p_before| + lr)
 *     with u(g) = g / (|g| + eps), the exact first-step Adam direction: the first term is what the gradient
 *     difference (checked above) moves the step by, the second float32 rounding (ours and the F32 storage of the
 *     reference). For most elements the first term is ~0, so this checks decoupled weight decay, bias correction
 *     and eps; for the BN-fed biases (gradient ~0) it allows up to ~lr.
 *   BN running statistics after the training forward     GOLD_TOL_BN
 *   eval forward after the step (from the reference's parameters after the step: gold_load_after)  GOLD_TOL_FWD
 *   codebook cluster_size, embed_avg, embed after the EMA GOLD_TOL_VQ */
#ifndef V3_GOLDEN_CHECK_H
#define V3_GOLDEN_CHECK_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "backend.h"
#include "step.h"
#include "model.h"
#include "safetensors.h"
#include "weights_io.h"

#define GOLD_DIR "tests/golden/"
/* Measured on the CPU (2-core x86-64 dev machine, OpenBLAS; V3_TEST_VERBOSE=1 ./tests/run_tests golden prints every
 * tensor): forward 1.3e-5 (xhat), losses 1.2e-6, gradients 1.0e-4 (BN-invariant 2.6e-6), AdamW arithmetic 0.53 of
 * its bound, BN statistics 9.1e-8, VQ 6.0e-8, eval forward 2.8e-5 (eval.xhat). */
#define GOLD_TOL_FWD (1e-4 * gold_scale)
#define GOLD_TOL_LOSS (1e-5 * gold_scale)
#define GOLD_TOL_GRAD (5e-4 * gold_scale)
#define GOLD_ADAM_ULPS 8.0
#define GOLD_TOL_BN (1e-5 * gold_scale)
#define GOLD_TOL_VQ (1e-5 * gold_scale)
/* 1 on the CPU. The GPU test sets 10: cuDNN may pick FFT or Winograd convolutions in fp32 (FMA math), whose
 * rounding is larger than a direct sum's; that gives the GPU-vs-CPU fp32 bounds of tests/gpu/test_gpu_model.c. */
static double gold_scale = 1.0;

typedef struct {
    Config cfg;
    Model *m;
    StFile gold;
    float *x;
    int B, n, N;
    double lr;
    /* worst errors per group (for the report) */
    double e_fwd, e_loss, e_grad, e_grad_bnbias, e_adam, e_adam_upd, e_adam_arith, e_bn, e_vq, e_eval;
    char w_fwd[96], w_loss[96], w_grad[96], w_adam[96], w_bn[96], w_vq[96], w_eval[96];
    size_t adam_loose; /* elements whose AdamW tolerance is dominated by the gradient difference (|g| ~ eps) */
} Golden;

static int gold_quiet; /* set while a test expects a failure (no details printed) */
#define GOLD_LOG(...) do { if (!gold_quiet) fprintf(stderr, __VA_ARGS__); } while (0)
static int gold_verbose(void) { return !gold_quiet && getenv("V3_TEST_VERBOSE") != NULL; }

/* Tensor `name` of the golden file as doubles (F64 read exactly, other dtypes converted); its element count must
 * be `n`. NULL with a message on stderr otherwise. */
static double *gold_get(const Golden *G, const char *name, size_t n) {
    const StTensor *t = st_find(&G->gold, name);
    if (!t) {
        GOLD_LOG("    golden tensor '%s' missing from %s\n", name, G->gold.path);
        return NULL;
    }
    if ((size_t)st_numel(t) != n) {
        GOLD_LOG("    golden tensor '%s' has %lld elements, expected %zu\n", name, (long long)st_numel(t), n);
        return NULL;
    }
    double *d = xmalloc(sizeof(double) * (n ? n : 1));
    if (t->dtype == ST_F64) {
        memcpy(d, G->gold.data + t->begin, sizeof(double) * n); /* little-endian host */
    } else {
        float *f = xmalloc(sizeof(float) * (n ? n : 1));
        int64_t shape[ST_MAX_DIMS];
        for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
        if (st_get_f32(&G->gold, name, t->ndim, shape, f)) {
            GOLD_LOG("    %s\n", v3_last_error());
            free(f);
            free(d);
            return NULL;
        }
        for (size_t i = 0; i < n; i++) d[i] = f[i];
        free(f);
    }
    return d;
}

/* max |a - b| / max(max |b|, 1e-30); +INF if anything is not finite. */
static double gold_rel(const float *a, const double *b, size_t n, size_t *worst) {
    double num = 0, den = 0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            if (worst) *worst = i;
            return INFINITY;
        }
        double e = fabs((double)a[i] - b[i]);
        if (e > num) { num = e; w = i; }
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    if (worst) *worst = w;
    return num / (den > 1e-30 ? den : 1e-30);
}

static void gold_note(double e, const char *name, double *worst, char *wname) {
    if (!(e <= *worst)) { *worst = e; snprintf(wname, 96, "%s", name); }
}

/* Compare ours [n] with golden `name`; fails (returns 1) above tol. */
static int gold_cmp(Golden *G, const char *name, const float *ours, size_t n, double tol, double *worst, char *wname) {
    double *ref = gold_get(G, name, n);
    if (!ref) return 1;
    size_t wi = 0;
    double e = gold_rel(ours, ref, n, &wi);
    gold_note(e, name, worst, wname);
    int bad = !(e <= tol);
    if (bad || gold_verbose())
        GOLD_LOG("    %-52s rel err %.3g (tol %g)%s [worst element %zu: ours %.9g ref %.9g]\n", name, e, tol,
                bad ? " FAIL" : "", wi, n ? (double)ours[wi] : 0.0, n ? ref[wi] : 0.0);
    free(ref);
    return bad;
}

/* Codeword indices must be equal. */
static int gold_cmp_ind(Golden *G, const char *name, const int *ours, size_t n) {
    double *ref = gold_get(G, name, n);
    if (!ref) return 1;
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if ((double)ours[i] != ref[i]) {
            GOLD_LOG("    %s[%zu]: ours %d, reference %.0f\n", name, i, ours[i], ref[i]);
            bad = 1;
        }
    free(ref);
    return bad;
}

static int gold_check_losses(Golden *G, const char *prefix, const LossTerms *L, double *worst, char *wname) {
    const struct { const char *k; double v; } t[] = {
        {"recon", L->recon},     {"commit", L->commit}, {"content", L->content}, {"style", L->style},
        {"sample", L->sample},   {"fragment", L->fragment}, {"total", L->total}, {"F_c", L->Fc},
        {"S_c", L->Sc},          {"F_s", L->Fs},        {"S_s", L->Ss},
    };
    int bad = 0;
    char name[96];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, t[i].k);
        double *ref = gold_get(G, name, 1);
        if (!ref) return 1;
        double e = fabs(t[i].v - ref[0]) / (fabs(ref[0]) > 1e-30 ? fabs(ref[0]) : 1e-30);
        if (!isfinite(t[i].v)) e = INFINITY;
        if (ref[0] == 0 && t[i].v == 0) e = 0; /* the eval commitment term */
        gold_note(e, name, worst, wname);
        int b = !(e <= GOLD_TOL_LOSS);
        if (b || gold_verbose())
            GOLD_LOG("    %-52s ours %.12g ref %.12g rel err %.3g%s\n", name, t[i].v, ref[0], e, b ? " FAIL" : "");
        bad |= b;
        free(ref);
    }
    return bad;
}

/* "P.conv_0.X" -> "P.bn_0.bias", "P.conv_1.X" -> "P.bn_1.bias", "P.shortcut.0.X" -> "P.shortcut.1.bias",
 * "encoder.cnn_k.0.X" -> "encoder.cnn_k.1.bias" (X = weight or bias): the beta of the BatchNorm right after a
 * conv. 0 if the tensor is not such a conv's. */
static int gold_bn_after(const char *name, char *out, size_t cap) {
    static const char *pairs[][2] = {{".conv_0.", ".bn_0.bias"}, {".conv_1.", ".bn_1.bias"},
                                     {".shortcut.0.", ".shortcut.1.bias"}, {".0.", ".1.bias"}};
    const char *dot = strrchr(name, '.');
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return 0;
    size_t L = (size_t)(dot - name) + 1; /* prefix incl. the last dot */
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        size_t l = strlen(pairs[i][0]);
        if (L > l && !strncmp(name + L - l, pairs[i][0], l)) {
            if (i == 3 && (strncmp(name, "encoder.cnn_", 12) || strchr(name + 12, '.') != name + L - l))
                return 0; /* only the encoder stems' conv "encoder.cnn_k.0" */
            snprintf(out, cap, "%.*s%s", (int)(L - l), name, pairs[i][1]);
            return 1;
        }
    }
    return 0;
}

/* Tensors whose gradient BatchNorm makes (almost) zero: BN(conv(x) + b) does not depend on a conv bias b, and not
 * on the scale of an output channel's weights, so a conv with a single weight per output channel (a 1x1 conv from
 * one channel) has a gradient that only the BN epsilon keeps from 0. Their float32 gradient is pure cancellation;
 * its error is measured against the gradient scale at the BN (max |grad beta|) instead of its own size.
 * Returns 1 and the BN beta's name for such a tensor. */
static int gold_bn_invariant(const Golden *G, const char *name, char *bn, size_t cap) {
    if (!gold_bn_after(name, bn, cap)) return 0;
    const char *dot = strrchr(name, '.');
    if (!strcmp(dot, ".bias")) return 1;
    char key[160];
    snprintf(key, sizeof key, "grad.%s", name);
    const StTensor *t = st_find(&G->gold, key);
    if (!t || t->ndim != 4) return 0;
    int64_t out = !strncmp(name, "decoder.", 8) ? t->shape[1] : t->shape[0]; /* ConvTranspose2d [in, out, kh, kw] */
    return out > 0 && st_numel(t) == out;
}

/* Gradients g [n_params] (ours) against grad.<name> of every trainable tensor. */
static int gold_check_grads(Golden *G, const float *g) {
    const Model *m = G->m;
    int bad = 0, n_inv = 0;
    char key[160], bn[128];
    for (int i = 0; i < m->n_params_t; i++) {
        const TensorInfo *t = &m->params[i];
        if (!t->trainable) continue;
        snprintf(key, sizeof key, "grad.%s", t->name);
        if (gold_bn_invariant(G, t->name, bn, sizeof bn)) {
            double *ref = gold_get(G, key, t->n);
            snprintf(key, sizeof key, "grad.%s", bn);
            const TensorInfo *tb = NULL;
            for (int j = 0; j < m->n_params_t; j++)
                if (!strcmp(m->params[j].name, bn)) tb = &m->params[j];
            double *rb = tb ? gold_get(G, key, tb->n) : NULL;
            if (!ref || !rb) { free(ref); free(rb); return 1; }
            double scale = 0, refmax = 0, diff = 0;
            for (size_t k = 0; k < tb->n; k++) scale = fmax(scale, fabs(rb[k]));
            for (size_t k = 0; k < t->n; k++) {
                refmax = fmax(refmax, fabs(ref[k]));
                double d = fabs((double)g[t->off + k] - ref[k]);
                diff = isfinite(d) ? fmax(diff, d) : INFINITY;
            }
            double den = fmax(fmax(scale, refmax), 1e-30), e = diff / den;
            int is_bias = !strcmp(strrchr(t->name, '.'), ".bias");
            if (is_bias && !(refmax <= 1e-9 * scale)) {
                GOLD_LOG("    grad.%s: the reference gradient (max %.3g) is not ~0 against %s (max %.3g): the "
                         "golden file does not match this test's assumption\n", t->name, refmax, bn, scale);
                bad = 1;
            }
            if (!(e <= G->e_grad_bnbias)) G->e_grad_bnbias = e;
            int b = !(e <= GOLD_TOL_GRAD);
            if (b || gold_verbose())
                GOLD_LOG("    grad.%-47s (BN-invariant) max|ours-ref| %.3g / max(max|ref| %.3g, max|grad %s| %.3g) = "
                         "%.3g%s\n", t->name, diff, refmax, bn, scale, e, b ? " FAIL" : "");
            bad |= b;
            n_inv++;
            free(ref);
            free(rb);
            continue;
        }
        bad |= gold_cmp(G, key, g + t->off, t->n, GOLD_TOL_GRAD, &G->e_grad, G->w_grad);
    }
    if (gold_verbose()) GOLD_LOG("    %d BN-invariant tensors checked against their BatchNorm's beta gradient\n", n_inv);
    return bad;
}

static double gold_u(double g, double eps) { return g / (fabs(g) + eps); }

/* Parameters after one AdamW step (before = the imported weights, g = our gradients). */
static int gold_check_adamw(Golden *G, const float *before, const float *after, const float *g) {
    const Model *m = G->m;
    double lr = G->lr, eps = m->cfg.eps;
    int bad = 0;
    char key[160];
    for (int i = 0; i < m->n_params_t; i++) {
        const TensorInfo *t = &m->params[i];
        if (!t->trainable) continue;
        snprintf(key, sizeof key, "after.%s", t->name);
        double *ref = gold_get(G, key, t->n);
        snprintf(key, sizeof key, "grad.%s", t->name);
        double *gr = gold_get(G, key, t->n);
        if (!ref || !gr) { free(ref); free(gr); return 1; }
        double worst = 0, worst_upd = 0;
        size_t wk = 0;
        for (size_t k = 0; k < t->n; k++) {
            double a = after[t->off + k], p0 = before[t->off + k];
            double gterm = lr * fabs(gold_u(g[t->off + k], eps) - gold_u(gr[k], eps));
            double base = GOLD_ADAM_ULPS * ldexp(1.0, -24) * (fabs(p0) + lr), tol = gterm + base;
            double d = fabs(a - ref[k]);
            double e = isfinite(a) ? d / tol : INFINITY;
            if (!(e <= worst)) { worst = e; wk = k; }
            if (gterm > base) G->adam_loose++;           /* the gradient difference dominates the tolerance */
            else {                                       /* the step is fixed by the gradients: arithmetic only */
                if (d / lr > worst_upd) worst_upd = d / lr;
                if (!(e <= G->e_adam_arith)) G->e_adam_arith = e;
            }
        }
        if (!(worst <= G->e_adam)) { G->e_adam = worst; snprintf(G->w_adam, 96, "%s", t->name); }
        if (worst_upd > G->e_adam_upd) G->e_adam_upd = worst_upd;
        int b = !(worst <= 1.0);
        if (b || gold_verbose())
            GOLD_LOG("    after.%-46s err/tol %.3g, max |diff|/lr %.3g [element %zu: ours %.9g ref %.9g before "
                    "%.9g]%s\n", t->name, worst, worst_upd, wk, (double)after[t->off + wk], ref[wk],
                    (double)before[t->off + wk], b ? " FAIL" : "");
        bad |= b;
        free(ref);
        free(gr);
    }
    return bad;
}

/* Overwrite every trainable parameter with the reference's after.<name>, so the eval forward after the step starts
 * from the reference's state. Why: a conv bias feeding a BatchNorm has a true gradient of 0; in float32 it is
 * rounding noise of ~1e-8, comparable to Adam's eps, so our first AdamW step moves it by up to ~lr where the
 * float64 reference leaves it (gold_check_adamw allows that), and in eval mode (running statistics) a bias shift
 * is no longer absorbed by the BN: the eval outputs would differ by ~1e-2 for a reason that is not an error of
 * the eval path. 0, or 1 if a tensor is missing. */
static int gold_load_after(Golden *G, float *p) {
    const Model *m = G->m;
    char key[160];
    for (int i = 0; i < m->n_params_t; i++) {
        const TensorInfo *t = &m->params[i];
        if (!t->trainable) continue;
        snprintf(key, sizeof key, "after.%s", t->name);
        double *ref = gold_get(G, key, t->n);
        if (!ref) return 1;
        for (size_t k = 0; k < t->n; k++) p[t->off + k] = (float)ref[k];
        free(ref);
    }
    return 0;
}

/* BatchNorm running statistics (the model's buffer table) after the training forward. */
static int gold_check_bn(Golden *G, const float *buf) {
    const Model *m = G->m;
    int bad = 0;
    char key[160];
    for (int i = 0; i < m->n_bufs_t; i++) {
        snprintf(key, sizeof key, "after.%s", m->bufs[i].name);
        bad |= gold_cmp(G, key, buf + m->bufs[i].off, m->bufs[i].n, GOLD_TOL_BN, &G->e_bn, G->w_bn);
    }
    return bad;
}

static int gold_check_vq(Golden *G, const VQ *vq) {
    size_t K = (size_t)vq->K, d = (size_t)vq->d;
    int bad = 0;
    bad |= gold_cmp(G, "after.vq._codebook.cluster_size", vq->cluster_size, K, GOLD_TOL_VQ, &G->e_vq, G->w_vq);
    bad |= gold_cmp(G, "after.vq._codebook.embed_avg", vq->embed_avg, K * d, GOLD_TOL_VQ, &G->e_vq, G->w_vq);
    bad |= gold_cmp(G, "after.vq._codebook.embed", vq->embed, K * d, GOLD_TOL_VQ, &G->e_vq, G->w_vq);
    return bad;
}

/* Config, model, weights (tiny_model.safetensors through weights_import), golden tensors and x. */
static int gold_open(Golden *G) {
    memset(G, 0, sizeof *G);
    G->e_grad_bnbias = 0;
    config_defaults(&G->cfg);
    if (config_load(GOLD_DIR "tiny_golden.yaml", &G->cfg)) {
        GOLD_LOG("    %s\n", v3_last_error());
        return 1;
    }
    G->m = model_build(&G->cfg, 0);
    if (!G->m) { GOLD_LOG("    model_build: %s\n", v3_last_error()); return 1; }
    StFile w;
    if (st_read(GOLD_DIR "tiny_model.safetensors", &w)) { GOLD_LOG("    %s\n", v3_last_error()); return 1; }
    int rc = weights_import(G->m, &w);
    st_free(&w);
    if (rc) { GOLD_LOG("    weights_import: %s\n", v3_last_error()); return 1; }
    if (st_read(GOLD_DIR "tiny_golden.safetensors", &G->gold)) {
        GOLD_LOG("    %s\n", v3_last_error());
        return 1;
    }
    G->B = G->cfg.batch_size;
    G->n = G->cfg.n_fragments;
    G->N = G->B * G->n;
    G->lr = G->cfg.lr;
    const ArchSpec *a = &G->m->arch;
    int64_t xs[5] = {G->B, G->n, a->C, a->H, a->W};
    G->x = falloc((size_t)G->N * a->C * a->H * a->W);
    if (st_get_f32(&G->gold, "x", 5, xs, G->x)) { GOLD_LOG("    %s\n", v3_last_error()); return 1; }
    return 0;
}

static void gold_close(Golden *G) {
    if (G->gold.file || G->gold.t) st_free(&G->gold);
    model_free(G->m);
    ffree(G->x);
    memset(G, 0, sizeof *G);
}

static void gold_report(Golden *G, const char *who) {
    if (!G->w_fwd[0]) snprintf(G->w_fwd, 96, "not read back");
    printf("    %s vs torch float64: forward %.3g (%s), losses %.3g (%s), gradients %.3g (%s), BN-invariant %.3g, "
           "AdamW err/tol %.3g (%s; %zu elements where the gradient difference dominates the tolerance, over the "
           "others max err/tol %.3g and max |diff|/lr %.3g), BN stats %.3g (%s), VQ %.3g (%s), "
           "eval %.3g (%s)\n", who, G->e_fwd, G->w_fwd, G->e_loss, G->w_loss, G->e_grad, G->w_grad, G->e_grad_bnbias,
           G->e_adam, G->w_adam, G->adam_loose, G->e_adam_arith, G->e_adam_upd, G->e_bn, G->w_bn, G->e_vq, G->w_vq, G->e_eval,
           G->w_eval);
}

/* The same step through the device model (include/step.h) on `ops` (backend_cuda in make test-gpu, backend_emu in the
 * CPU suite). The device model keeps its activations to itself, so the forward is checked through ind and every
 * loss term (recon covers xhat, the V3 statistics z_c, q, z_s); gradients, parameters after AdamW, BN statistics
 * and the codebook are read back (step_read_grads, step_to_host) and checked as on the CPU; the eval
 * forward after the step through eval.ind and eval.loss.* (recon over the whole batch). 0 = pass, 1 = fail. */
static int gold_device_step(const Backend *ops, V3Math math, const char *who) {
    Golden G;
    if (gold_open(&G)) return 1;
    Model *m = G.m;
    int B = G.B, N = G.N, bad = 0;
    float *before = falloc(m->n_params), *grads = falloc(m->n_params);
    memcpy(before, m->p, sizeof(float) * m->n_params);
    Step *g = step_create(m, ops, B * m->cfg.n_fragments, math);
    if (!g) {
        GOLD_LOG("    step_create: %s\n", v3_last_error());
        gold_close(&G);
        return 1;
    }
    LossTerms L, E;
    if (step_forward(g, G.x, 0, B, 1, VQ_TRAIN, &L)) {
        GOLD_LOG("    device forward: %s\n", v3_last_error());
        bad = 1;
        goto out;
    }
    bad |= gold_cmp_ind(&G, "ind", step_indices(g), (size_t)N);
    bad |= gold_check_losses(&G, "loss.", &L, &G.e_loss, G.w_loss);
    step_backward(g);
    for (size_t i = 0; i < m->n_params; i++) grads[i] = NAN;
    if (step_read_grads(g, grads)) { GOLD_LOG("    %s\n", v3_last_error()); bad = 1; goto out; }
    bad |= gold_check_grads(&G, grads);
    step_adamw(g, (float)G.lr);
    for (size_t i = 0; i < m->n_params; i++) m->p[i] = NAN; /* the download must bring every value back */
    for (size_t i = 0; i < m->n_bufs; i++) m->buf[i] = NAN;
    if (step_to_host(g)) { GOLD_LOG("    %s\n", v3_last_error()); bad = 1; goto out; }
    bad |= gold_check_adamw(&G, before, m->p, grads);
    bad |= gold_check_bn(&G, m->buf);
    bad |= gold_check_vq(&G, &m->vq);
    if (gold_load_after(&G, m->p) || step_from_host(g)) { bad = 1; goto out; }
    if (step_forward(g, G.x, 0, B, 0, VQ_EVAL, &E)) {
        GOLD_LOG("    device eval forward: %s\n", v3_last_error());
        bad = 1;
        goto out;
    }
    bad |= gold_cmp_ind(&G, "eval.ind", step_indices(g), (size_t)N);
    bad |= gold_check_losses(&G, "eval.loss.", &E, &G.e_eval, G.w_eval);
    gold_report(&G, who);
out:
    step_free(g);
    ffree(before);
    ffree(grads);
    gold_close(&G);
    return bad;
}
#endif
