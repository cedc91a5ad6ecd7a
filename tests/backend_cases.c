/* The op-by-op cases and check helpers shared by tests/test_backend_ops.c, tests/gpu/test_gpu_backend_ops.c and
 * benchmarks (see backend_cases.h). Three parts: the tolerance table, the case list, the runner. */
#include "backend_cases.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "rng.h"
#include "v3loss.h"

#define NAME_OF(name, ret, params) #name,
const char *const bo_op_names[BO_N_OPS] = {V3_COMPUTE_OPS(NAME_OF)};
#undef NAME_OF

int bo_op_index(const char *op) {
    for (int k = 0; k < BO_N_OPS; k++)
        if (!strcmp(bo_op_names[k], op)) return k;
    return -1;
}

/* ---- the tolerance table: one row per compute op ---------------------------------------------------------
 * bound = rtol |ref| + (srel + ksum sqrt(K)) max|ref|; all zero: bit-exact. K is the length of the sum behind an
 * element (given per buffer by its case). The float32 rows follow tests/gpu: elementwise ops 1e-6 relative
 * (different but correctly rounded libm/CUDA erf, exp, sqrt); sums in float (GEMMs, convolutions) 1e-5 plus
 * 1e-6 sqrt(K) of the tensor's scale (summation order and algorithm; K reaches 6.3M for a full-batch dw);
 * double-accumulated reductions (BatchNorm, EMA, MSE, VQ commitment) 1e-5 or tighter; V3 statistics are double
 * sums of the same terms (1e-9). Ops that only move or round values once the same way are bit-exact. */
const BoTol bo_tols[] = {
    {"conv_plan", 0, 0, 0, "handle: checked through conv_fwd and conv_bwd"},
    {"conv_destroy", 0, 0, 0, "handle: released after every conv case (a leak or double free is a crash)"},
    {"conv_fwd", 1e-5, 1e-5, 1e-6, "float sums of cin*kh*kw terms; any algorithm"},
    {"conv_bwd", 1e-5, 1e-5, 1e-6, "dx: cout*kh*kw terms, dw/db: N*pixels terms (accumulated)"},
    {"bn2d_fwd_train", 1e-5, 1e-6, 0, "double statistics; y, mean, invstd, running stats"},
    {"bn2d_fwd_eval", 1e-6, 1e-7, 0, "elementwise with running statistics"},
    {"bn2d_bwd", 1e-5, 1e-6, 0, "double sums over N*HW; dx, dgamma, dbeta (accumulated)"},
    {"gelu_fwd", 1e-6, 1e-12, 0, "erf: correctly rounded on both sides up to an ulp or two"},
    {"gelu_bwd", 1e-6, 1e-12, 0, "erf and exp"},
    {"gelu_fwd_cols", 1e-6, 1e-12, 0, "as gelu_fwd; the gaps between columns bit-exact (untouched)"},
    {"gelu_bwd_cols", 1e-6, 1e-12, 0, "as gelu_bwd"},
    {"copy_cols", 0, 0, 0, "a copy"},
    {"add_inplace", 0, 0, 0, "one float addition per element"},
    {"upsample_fwd", 0, 0, 0, "a copy"},
    {"upsample_bwd", 1e-6, 1e-7, 0, "sums of fh*fw values in any order"},
    {"linear_fwd", 1e-5, 1e-5, 1e-6, "GEMM over in"},
    {"linear_bwd", 1e-5, 1e-5, 1e-6, "dx over out, dw/db over N (accumulated)"},
    {"mse_fwd", 1e-6, 0, 0, "double sum of n squares of float differences"},
    {"mse_bwd", 1e-6, 1e-7, 0, "elementwise"},
    {"ste_value", 0, 0, 0, "z + (q - z): two float roundings in this order"},
    {"axpy_diff", 1e-6, 1e-7, 0, "g += float(k (a - b)); srel for cancellation against g"},
    {"vq_create", 0, 0, 0, "handle: checked through vq_search, vq_ema, vq_revive"},
    {"vq_destroy", 0, 0, 0, "handle: released after every VQ case"},
    {"vq_search", 1e-6, 0, 0, "ind and q bit-exact (nearest code, lowest index on ties); commit_sum a double sum"},
    {"vq_ema", 1e-6, 1e-6, 0, "double cluster sums, float EMA"},
    {"vq_revive", 0, 0, 0, "copies and one multiplication"},
    {"v3_create", 0, 0, 0, "handle: checked through v3_forward and v3_backward"},
    {"v3_destroy", 0, 0, 0, "handle: released after every V3 case"},
    {"v3_forward", 1e-9, 1e-12, 0, "the statistics block: double sums of the same terms"},
    {"v3_backward", 1e-5, 1e-6, 0, "gradients added to gzc, gzs (started at the gradient's own scale)"},
    {"v3_stats", 0, 0, 0, "the block v3_forward's case compares (a VIEW buffer)"},
    {"count_nonfinite", 0, 0, 0, "an integer count"},
    {"adamw", 1e-6, 1e-7, 0, "elementwise float update (sqrt, division); srel for m near 0"},
};
const int bo_n_tols = (int)(sizeof bo_tols / sizeof bo_tols[0]);

const BoTol *bo_tol(const char *op) {
    for (int k = 0; k < bo_n_tols; k++)
        if (!strcmp(bo_tols[k].op, op)) return &bo_tols[k];
    return NULL;
}

/* ---- the calls (dev[k]: buffer k of the case, in the order the builders add them) ---------------------------- */

#define F(k) ((float *)dev[k])
#define D(k) ((double *)dev[k])

static void call_gelu_fwd(const Backend *be, const BoCase *c, void *h, void *const *dev) { be->gelu_fwd(c->n, F(0), F(1)); }
static void call_gelu_bwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->gelu_bwd(c->n, F(0), F(1), F(2));
}
/* dx aliasing dy, as the step calls it */
static void call_gelu_bwd_inplace(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->gelu_bwd(c->n, F(0), F(1), F(1));
}
static void call_gelu_fwd_cols(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->gelu_fwd_cols(c->i[0], c->i[1], F(0), c->i[2], F(1), c->i[3]);
}
static void call_gelu_bwd_cols(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->gelu_bwd_cols(c->i[0], c->i[1], F(0), c->i[2], F(1), c->i[3], F(2), c->i[4]);
}
static void call_copy_cols(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->copy_cols(c->i[0], c->i[1], F(0), c->i[2], F(1), c->i[3]);
}
static void call_add_inplace(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->add_inplace(c->n, F(0), F(1));
}
static void call_upsample_fwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->upsample_fwd(c->i[0], c->i[1], c->i[2], c->i[3], c->i[4], c->i[5], F(0), F(1));
}
static void call_upsample_bwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->upsample_bwd(c->i[0], c->i[1], c->i[2], c->i[3], c->i[4], c->i[5], F(0), F(1));
}
static void call_linear_fwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->linear_fwd(c->i[0], c->i[1], c->i[2], F(0), F(1), F(2), F(3));
}
static void call_linear_bwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->linear_bwd(c->i[0], c->i[1], c->i[2], F(0), F(1), F(2), F(3), F(4), F(5));
}
static void call_mse_fwd(const Backend *be, const BoCase *c, void *h, void *const *dev) { be->mse_fwd(c->n, F(0), F(1), D(2)); }
static void call_mse_bwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->mse_bwd(c->n, F(0), F(1), (float)c->x[0], F(2));
}
static void call_ste_value(const Backend *be, const BoCase *c, void *h, void *const *dev) { be->ste_value(c->n, F(0), F(1), F(2)); }
static void call_axpy_diff(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->axpy_diff(c->n, c->x[0], F(0), F(1), F(2));
}
static void call_bn_train(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->bn2d_fwd_train(c->i[0], c->i[1], c->i[2], F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7), (float)c->x[0],
                       (float)c->x[1]);
}
static void call_bn_eval(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->bn2d_fwd_eval(c->i[0], c->i[1], c->i[2], F(0), F(1), F(2), F(3), F(4), F(5), (float)c->x[1]);
}
static void call_bn_bwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->bn2d_bwd(c->i[0], c->i[1], c->i[2], F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7));
}
static void call_count_nonfinite(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->count_nonfinite(c->n, F(0), (unsigned long long *)dev[1]);
}
static void call_adamw(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->adamw(c->n, F(0), F(1), F(2), F(3), (float)c->x[0], (float)c->x[1], (float)c->x[2], (float)c->x[3],
              (float)c->x[4], c->t);
}

/* convolutions: through a plan of the case's geometry (FP32) */
static void *setup_conv(const Backend *be, const BoCase *c, void **dev) {
    return be->conv_plan(&c->g, c->transposed, c->i[0], c->i[1], c->i[2], V3_MATH_FP32);
}
static void teardown_conv(const Backend *be, void *h) { be->conv_destroy(h); }
static void call_conv_fwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->conv_fwd(h, F(0), F(1), F(2), F(3));
}
static void call_conv_bwd(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->conv_bwd(h, F(0), F(1), F(2), F(3), F(4), F(5));
}

/* the vector quantiser: through a workspace for N_max rows */
static void *setup_vq(const Backend *be, const BoCase *c, void **dev) { return be->vq_create(c->i[0], c->i[1], c->i[3]); }
static void teardown_vq(const Backend *be, void *h) { be->vq_destroy(h); }
/* buffers: 0 x, 1 embed, 2 ind, 3 q, 4 commit_sum [, 5 embed_avg, 6 cluster_size] */
static void call_vq_search(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->vq_search(h, c->i[2], F(0), F(1), (int *)dev[2], F(3), D(4));
}
static void call_vq_ema(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    call_vq_search(be, c, h, dev);
    be->vq_ema(h, (float)c->x[0], F(1), F(5), F(6));
}
/* buffers: 0 x, 1 embed, 2 embed_avg, 3 cluster_size */
static void call_vq_revive(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->vq_revive(h, c->ndead, c->dead, c->rows, F(0), (float)c->x[1], F(1), F(2), F(3));
}

/* V3: buffers 0 zc, 1 q, 2 zs, 3 the statistics block (VIEW) [, 4 gzc, 5 gzs] */
static void *setup_v3(const Backend *be, const BoCase *c, void **dev) {
    void *w = be->v3_create(&c->cfg, c->i[0], c->i[1], c->i[2], c->i[3]);
    if (w) dev[3] = (void *)be->v3_stats(w);
    return w;
}
static void teardown_v3(const Backend *be, void *h) { be->v3_destroy(h); }
static void call_v3_forward(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->v3_forward(h, F(0), F(1), F(2));
}
static void call_v3_backward(const Backend *be, const BoCase *c, void *h, void *const *dev) {
    be->v3_forward(h, F(0), F(1), F(2));
    be->v3_backward(h, F(0), F(1), F(2), F(4), F(5));
}
#undef F
#undef D

/* ---- fills with structure ------------------------------------------------------------------------------------ */

/* GELU: every 7th input small (relative accuracy near 0). */
static int fill_gelu(const BoCase *c, void **host, char *msg, size_t cap) {
    float *x = host[0];
    for (size_t i = 0; i < c->b[0].n; i += 7) x[i] *= 1e-4f;
    return 0;
}

/* bn2d_bwd: mean and invstd of x, as the training forward saved them. */
static int fill_bn_bwd(const BoCase *c, void **host, char *msg, size_t cap) {
    int N = c->i[0], C = c->i[1], HW = c->i[2];
    const float *x = host[0];
    float *mean = host[2], *invstd = host[3];
    for (int ch = 0; ch < C; ch++) {
        double s = 0, ss = 0, cnt = (double)N * HW;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++) s += x[((size_t)n * C + ch) * HW + k];
        double mu = s / cnt;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++) {
                double d = x[((size_t)n * C + ch) * HW + k] - mu;
                ss += d * d;
            }
        mean[ch] = (float)mu;
        invstd[ch] = (float)(1.0 / sqrt(ss / cnt + 1e-5));
    }
    return 0;
}

/* VQ: rows near the codewords (so every code is used), row 0 equal to code 1, and code 3 a duplicate of code 1
 * (an exact tie: the lowest index, 1, must win). */
static int fill_vq(const BoCase *c, void **host, char *msg, size_t cap) {
    int K = c->i[0], d = c->i[1], N = c->i[2];
    float *x = host[0], *e = host[1];
    for (int r = 0; r < N; r++)
        for (int t = 0; t < d; t++) x[(size_t)r * d + t] = e[(size_t)(r % K) * d + t] + 0.6f * x[(size_t)r * d + t];
    if (K > 1 && N > 0) memcpy(x, e + d, sizeof(float) * d);
    if (K > 3) memcpy(e + (size_t)3 * d, e + d, sizeof(float) * d);
    return 0;
}

/* V3: q near zc, or (i[4] == 1) q rows from a few codewords with every third zc row equal to its q row (exact zero
 * distances); gzc, gzs start at the gradient's own scale (else the addition could hide an error), which also
 * checks that the case has active hinges. */
static int fill_v3(const BoCase *c, void **host, char *msg, size_t cap) {
    int B = c->i[0], n = c->i[1], dc = c->i[2], ds = c->i[3], N = B * n;
    float *zc = host[0], *q = host[1], *zs = host[2];
    if (c->i[4]) {
        for (int r = 0; r < N; r++) {
            memcpy(q + (size_t)r * dc, zc + (size_t)((r * 7 + r / 3) % 5) * dc, sizeof(float) * dc);
            if (r % 3 == 0) memcpy(zc + (size_t)r * dc, q + (size_t)r * dc, sizeof(float) * dc);
        }
    } else {
        for (size_t i = 0; i < (size_t)N * dc; i++) q[i] = zc[i] + 0.1f * q[i];
    }
    if (c->nb < 6) return 0;
    size_t nc = (size_t)N * dc, ns = (size_t)N * ds;
    float *gc = xcalloc(nc, sizeof(float)), *gs = xcalloc(ns, sizeof(float));
    V3Stats st;
    v3_loss(&c->cfg, B, n, dc, ds, zc, q, zs, &st, gc, gs);
    float sc = 0, ss = 0;
    for (size_t i = 0; i < nc; i++) sc = fabsf(gc[i]) > sc ? fabsf(gc[i]) : sc;
    for (size_t i = 0; i < ns; i++) ss = fabsf(gs[i]) > ss ? fabsf(gs[i]) : ss;
    free(gc);
    free(gs);
    if (!(sc > 0) || !(ss > 0)) {
        snprintf(msg, cap, "test bug: the V3 gradient of this case is zero (max |gzc| %g, |gzs| %g): no hinge active", sc, ss);
        return -1;
    }
    float *pc = host[4], *ps = host[5];
    for (size_t i = 0; i < nc; i++) pc[i] *= sc;
    for (size_t i = 0; i < ns; i++) ps[i] *= ss;
    return 0;
}

/* count_nonfinite: NaN, +Inf, -Inf planted at the ends, the middle and a stride (the count must be exact). */
static int fill_nonfinite(const BoCase *c, void **host, char *msg, size_t cap) {
    float *x = host[0];
    size_t n = c->n;
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    if (!n) return 0;
    x[0] = bad[0];
    x[n - 1] = bad[1];
    x[n / 2] = bad[2];
    for (size_t i = 13, k = 0; i < n; i += 1000003, k++) x[i] = bad[k % 3];
    return 0;
}

/* ---- the case list ------------------------------------------------------------------------------------------- */

typedef struct {
    BoCase *v;
    int n, cap;
} CaseList;

static BoCase *add_case(CaseList *L, const char *op, const char *ops, BoCallFn call, int full, const char *fmt, ...) {
    if (L->n == L->cap) {
        L->cap = L->cap ? 2 * L->cap : 64;
        L->v = realloc(L->v, sizeof(BoCase) * (size_t)L->cap);
        if (!L->v) V3_FATAL("out of memory");
    }
    BoCase *c = &L->v[L->n++];
    memset(c, 0, sizeof *c);
    c->op = op;
    c->ops = ops ? ops : op;
    c->call = call;
    c->full = full;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->shape, sizeof c->shape, fmt, ap);
    va_end(ap);
    return c;
}

static BoBuf *add_buf(BoCase *c, const char *name, BoType t, BoRole r, size_t n, float lo, float hi, double K) {
    if (c->nb == BO_MAX_BUFS) V3_FATAL("case %s: more than %d buffers", c->op, BO_MAX_BUFS);
    BoBuf *b = &c->b[c->nb++];
    *b = (BoBuf){.name = name, .type = t, .role = r, .n = n, .lo = lo, .hi = hi, .K = K};
    return b;
}
#define IN(c, name, n, lo, hi) add_buf(c, name, BO_F32, BO_IN, n, lo, hi, 1)
#define OUT(c, name, n, K) add_buf(c, name, BO_F32, BO_OUT, n, 0, 0, K)
#define INOUT(c, name, n, lo, hi, K) add_buf(c, name, BO_F32, BO_INOUT, n, lo, hi, K)
#define NONE(c, name) add_buf(c, name, BO_F32, BO_NONE, 0, 0, 0, 1)

static void strided(BoBuf *b, int rows, int cols, int ld) {
    b->rows = rows;
    b->cols = cols;
    b->ld = ld;
    b->lo = -3;
    b->hi = 3;
}

/* Flat ops over n elements. */
static void flat_cases(CaseList *L, size_t n, int full, const char *what) {
    BoCase *c;
    if (!what) what = "";
    c = add_case(L, "gelu_fwd", NULL, call_gelu_fwd, full, "n=%zu%s", n, what);
    c->n = n, c->fill = fill_gelu;
    IN(c, "x", n, -8, 8), OUT(c, "y", n, 1);
    c = add_case(L, "gelu_bwd", NULL, call_gelu_bwd, full, "n=%zu%s", n, what);
    c->n = n, c->fill = fill_gelu;
    IN(c, "x", n, -8, 8), IN(c, "dy", n, -2, 2), OUT(c, "dx", n, 1);
    c = add_case(L, "gelu_bwd", NULL, call_gelu_bwd_inplace, full, "n=%zu, dx = dy (in place)%s", n, what);
    c->n = n, c->fill = fill_gelu;
    IN(c, "x", n, -8, 8), INOUT(c, "dy/dx", n, -2, 2, 1);
    c = add_case(L, "add_inplace", NULL, call_add_inplace, full, "n=%zu%s", n, what);
    c->n = n;
    INOUT(c, "y", n, -3, 3, 1), IN(c, "x", n, -3, 3);
}

static void mse_cases(CaseList *L, size_t n, int full, const char *what) {
    BoCase *c = add_case(L, "mse_fwd", NULL, call_mse_fwd, full, "n=%zu%s", n, what);
    c->n = n;
    IN(c, "a", n, -1, 1), IN(c, "b", n, -1, 1), add_buf(c, "out", BO_F64, BO_OUT, 1, 0, 0, (double)n);
    c = add_case(L, "mse_bwd", NULL, call_mse_bwd, full, "n=%zu, scale 0.7%s", n, what);
    c->n = n, c->x[0] = 0.7;
    IN(c, "a", n, -1, 1), IN(c, "b", n, -1, 1), OUT(c, "da", n, 1);
}

static void z_cases(CaseList *L, size_t n, double k, int full, const char *what) {
    BoCase *c = add_case(L, "ste_value", NULL, call_ste_value, full, "n=%zu%s", n, what);
    c->n = n;
    IN(c, "z", n, -1, 1), IN(c, "q", n, -1, 1), OUT(c, "out", n, 1);
    for (int nb = 0; nb < 2; nb++) {
        c = add_case(L, "axpy_diff", NULL, call_axpy_diff, full, "n=%zu, k=%g%s%s", n, k, nb ? ", b NULL" : "", what);
        c->n = n, c->x[0] = k;
        IN(c, "a", n, -1, 1);
        if (nb) NONE(c, "b");
        else IN(c, "b", n, -1, 1);
        INOUT(c, "g", n, (float)-k, (float)k, 1);
    }
}

static void cols_cases(CaseList *L, int rows, int cols, int lda, int ldb, int ldc, int full, const char *what) {
    BoCase *c = add_case(L, "copy_cols", NULL, call_copy_cols, full, "%d x %d, lds %d, ldd %d%s", rows, cols, lda, ldb, what);
    c->i[0] = rows, c->i[1] = cols, c->i[2] = lda, c->i[3] = ldb;
    IN(c, "src", (size_t)rows * lda, -3, 3);
    strided(OUT(c, "dst", (size_t)rows * ldb, 1), rows, cols, ldb);
    c = add_case(L, "gelu_fwd_cols", NULL, call_gelu_fwd_cols, full, "%d x %d, ldx %d, ldy %d%s", rows, cols, lda, ldb, what);
    c->i[0] = rows, c->i[1] = cols, c->i[2] = lda, c->i[3] = ldb;
    IN(c, "x", (size_t)rows * lda, -8, 8);
    strided(OUT(c, "y", (size_t)rows * ldb, 1), rows, cols, ldb);
    c = add_case(L, "gelu_bwd_cols", NULL, call_gelu_bwd_cols, full, "%d x %d, ldx %d, lddy %d, ldd %d%s", rows, cols,
                 lda, ldb, ldc, what);
    c->i[0] = rows, c->i[1] = cols, c->i[2] = lda, c->i[3] = ldb, c->i[4] = ldc;
    IN(c, "x", (size_t)rows * lda, -8, 8), IN(c, "dy", (size_t)rows * ldb, -2, 2);
    strided(OUT(c, "dx", (size_t)rows * ldc, 1), rows, cols, ldc);
}

static void upsample_cases(CaseList *L, int N, int C, int H, int W, int fh, int fw, int full, const char *what) {
    size_t nx = (size_t)N * C * H * W, ny = nx * fh * fw;
    BoCase *c = add_case(L, "upsample_fwd", NULL, call_upsample_fwd, full, "N=%d C=%d %dx%d by %dx%d%s", N, C, H, W,
                         fh, fw, what);
    int p[6] = {N, C, H, W, fh, fw};
    memcpy(c->i, p, sizeof p);
    IN(c, "x", nx, -2, 2), OUT(c, "y", ny, 1);
    c = add_case(L, "upsample_bwd", NULL, call_upsample_bwd, full, "N=%d C=%d %dx%d by %dx%d%s", N, C, H, W, fh, fw, what);
    memcpy(c->i, p, sizeof p);
    IN(c, "dy", ny, -2, 2), OUT(c, "dx", nx, (double)fh * fw);
}

static void linear_cases(CaseList *L, int N, int in, int out, int full, const char *what) {
    BoCase *c = add_case(L, "linear_fwd", NULL, call_linear_fwd, full, "N=%d in=%d out=%d%s", N, in, out, what);
    c->i[0] = N, c->i[1] = in, c->i[2] = out;
    IN(c, "x", (size_t)N * in, -1, 1), IN(c, "w", (size_t)out * in, -0.1f, 0.1f), IN(c, "b", out, -0.5f, 0.5f);
    OUT(c, "y", (size_t)N * out, in);
    c = add_case(L, "linear_bwd", NULL, call_linear_bwd, full, "N=%d in=%d out=%d%s", N, in, out, what);
    c->i[0] = N, c->i[1] = in, c->i[2] = out;
    IN(c, "x", (size_t)N * in, -1, 1), IN(c, "w", (size_t)out * in, -0.1f, 0.1f), IN(c, "dy", (size_t)N * out, -1, 1);
    OUT(c, "dx", (size_t)N * in, out), INOUT(c, "dw", (size_t)out * in, -1, 1, N), INOUT(c, "db", out, -1, 1, N);
}

static void bn_cases(CaseList *L, int N, int C, int HW, int no_running, int no_dx, int full, const char *what) {
    size_t n = (size_t)N * C * HW;
    double K = (double)N * HW;
    BoCase *c = add_case(L, "bn2d_fwd_train", NULL, call_bn_train, full, "N=%d C=%d HW=%d%s%s", N, C, HW,
                         no_running ? ", running stats NULL" : "", what);
    c->i[0] = N, c->i[1] = C, c->i[2] = HW, c->x[0] = 0.1, c->x[1] = 1e-5;
    IN(c, "x", n, -2, 3), IN(c, "gamma", C, 0.5f, 1.5f), IN(c, "beta", C, -0.5f, 0.5f);
    OUT(c, "y", n, K), OUT(c, "mean", C, K), OUT(c, "invstd", C, K);
    if (no_running) NONE(c, "running_mean"), NONE(c, "running_var");
    else INOUT(c, "running_mean", C, -0.5f, 0.5f, K), INOUT(c, "running_var", C, 0.5f, 1.5f, K);
    c = add_case(L, "bn2d_fwd_eval", NULL, call_bn_eval, full, "N=%d C=%d HW=%d%s", N, C, HW, what);
    c->i[0] = N, c->i[1] = C, c->i[2] = HW, c->x[1] = 1e-5;
    IN(c, "x", n, -2, 3), IN(c, "gamma", C, 0.5f, 1.5f), IN(c, "beta", C, -0.5f, 0.5f), OUT(c, "y", n, 1);
    IN(c, "running_mean", C, -0.5f, 0.5f), IN(c, "running_var", C, 0.5f, 1.5f);
    c = add_case(L, "bn2d_bwd", NULL, call_bn_bwd, full, "N=%d C=%d HW=%d%s%s", N, C, HW, no_dx ? ", dx NULL" : "", what);
    c->i[0] = N, c->i[1] = C, c->i[2] = HW, c->fill = fill_bn_bwd;
    IN(c, "x", n, -2, 3), IN(c, "gamma", C, 0.5f, 1.5f), IN(c, "mean", C, 0, 0), IN(c, "invstd", C, 0, 0);
    IN(c, "dy", n, -1, 1);
    if (no_dx) NONE(c, "dx");
    else OUT(c, "dx", n, K);
    INOUT(c, "dgamma", C, -1, 1, K), INOUT(c, "dbeta", C, -1, 1, K);
}

/* One convolution (transposed: stride 1) at batch N on an H x W input: conv_fwd (with or without bias) and
 * conv_bwd (dx NULL as for the step's first layer, or db NULL). */
static void conv_cases(CaseList *L, const ConvGeom *g, int transposed, int N, int H, int W, int no_bias, int no_dx,
                       int no_db, int full, const char *what) {
    int Ho = transposed ? H + g->kh - 1 - 2 * g->ph : conv_out_size(H, g->kh, g->sh, g->ph);
    int Wo = transposed ? W + g->kw - 1 - 2 * g->pw : conv_out_size(W, g->kw, g->sw, g->pw);
    size_t nx = (size_t)N * g->cin * H * W, ny = (size_t)N * g->cout * Ho * Wo, nw = (size_t)g->cin * g->cout * g->kh * g->kw;
    double Kf = (double)g->cin * g->kh * g->kw, Kb = (double)g->cout * g->kh * g->kw;
    double Kw = (double)N * (H * W > Ho * Wo ? H * W : Ho * Wo);
    char geo[96];
    snprintf(geo, sizeof geo, "%s%d->%d %dx%d s%d,%d p%d,%d, %dx%d N=%d", transposed ? "T " : "", g->cin, g->cout,
             g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, H, W, N);
    const char *ops = "conv_plan,conv_fwd,conv_bwd,conv_destroy";
    BoCase *c = add_case(L, "conv_fwd", ops, call_conv_fwd, full, "%s%s%s", geo, no_bias ? ", b NULL" : "", what);
    c->g = *g, c->transposed = transposed, c->i[0] = N, c->i[1] = H, c->i[2] = W;
    c->setup = setup_conv, c->teardown = teardown_conv;
    IN(c, "x", nx, -1, 1), IN(c, "w", nw, -0.5f, 0.5f);
    if (no_bias) NONE(c, "b");
    else IN(c, "b", g->cout, -0.5f, 0.5f);
    OUT(c, "y", ny, Kf);
    c = add_case(L, "conv_bwd", ops, call_conv_bwd, full, "%s%s%s%s", geo, no_dx ? ", dx NULL" : "",
                 no_db ? ", db NULL" : "", what);
    c->g = *g, c->transposed = transposed, c->i[0] = N, c->i[1] = H, c->i[2] = W;
    c->setup = setup_conv, c->teardown = teardown_conv;
    IN(c, "x", nx, -1, 1), IN(c, "w", nw, -0.5f, 0.5f), IN(c, "dy", ny, -1, 1);
    if (no_dx) NONE(c, "dx");
    else OUT(c, "dx", nx, Kb);
    INOUT(c, "dw", nw, -1, 1, Kw);
    if (no_db) NONE(c, "db");
    else INOUT(c, "db", g->cout, -1, 1, Kw);
}

static void vq_cases(CaseList *L, int K, int d, int N, int N_max, float decay, float threshold, int full,
                     const char *what) {
    const char *ops = "vq_create,vq_search,vq_ema,vq_revive,vq_destroy";
    for (int ema = 0; ema < 2; ema++) {
        BoCase *c = add_case(L, ema ? "vq_ema" : "vq_search", ops, ema ? call_vq_ema : call_vq_search, full,
                             "K=%d d=%d N=%d (N_max %d)%s%s", K, d, N, N_max, ema ? ", after vq_search" : "", what);
        c->i[0] = K, c->i[1] = d, c->i[2] = N, c->i[3] = N_max, c->x[0] = decay;
        c->setup = setup_vq, c->teardown = teardown_vq, c->fill = fill_vq;
        IN(c, "x", (size_t)N * d, -0.3f, 0.3f);
        if (ema) INOUT(c, "embed", (size_t)K * d, -1, 1, N);
        else IN(c, "embed", (size_t)K * d, -1, 1);
        add_buf(c, "ind", BO_I32, BO_OUT, N, 0, 0, 1)->tol = "vq_search";
        BoBuf *q = OUT(c, "q", (size_t)N * d, 1);
        q->exact = 1;
        add_buf(c, "commit_sum", BO_F64, BO_OUT, 1, 0, 0, (double)N * d)->tol = "vq_search";
        if (ema) INOUT(c, "embed_avg", (size_t)K * d, -1, 1, N), INOUT(c, "cluster_size", K, 0, 20, N);
    }
    BoCase *c = add_case(L, "vq_revive", ops, call_vq_revive, full, "K=%d d=%d N=%d, %d dead, threshold %g%s", K, d, N,
                         K > 2 ? 3 : 1, threshold, what);
    c->i[0] = K, c->i[1] = d, c->i[2] = N, c->i[3] = N_max, c->x[1] = threshold;
    c->setup = setup_vq, c->teardown = teardown_vq;
    c->ndead = K > 2 ? 3 : 1;
    int dead[3] = {0, K - 1, K / 2}, rows[3] = {N - 1, 0, N / 2};
    memcpy(c->dead, dead, sizeof(int) * c->ndead);
    memcpy(c->rows, rows, sizeof(int) * c->ndead);
    IN(c, "x", (size_t)N * d, -1, 1), INOUT(c, "embed", (size_t)K * d, -1, 1, 1);
    INOUT(c, "embed_avg", (size_t)K * d, -1, 1, 1), INOUT(c, "cluster_size", K, 0, 20, 1);
}

static void v3_cases(CaseList *L, const V3LossCfg *cfg, int B, int n, int dc, int ds, int dup, int full,
                     const char *what) {
    const char *ops = "v3_create,v3_forward,v3_backward,v3_stats,v3_destroy";
    for (int bwd = 0; bwd < 2; bwd++) {
        BoCase *c = add_case(L, bwd ? "v3_backward" : "v3_forward", ops, bwd ? call_v3_backward : call_v3_forward,
                             full, "B=%d n=%d dc=%d ds=%d r=%g%s%s%s", B, n, dc, ds, cfg->relativity,
                             cfg->supersample_content ? ", supersample" : "", dup ? ", tied codes" : "", what);
        c->cfg = *cfg, c->i[0] = B, c->i[1] = n, c->i[2] = dc, c->i[3] = ds, c->i[4] = dup;
        c->setup = setup_v3, c->teardown = teardown_v3, c->fill = fill_v3;
        size_t N = (size_t)B * n;
        IN(c, "zc", N * dc, -1, 1), IN(c, "q", N * dc, -1, 1), IN(c, "zs", N * ds, -1, 1);
        add_buf(c, "stats", BO_F64, BO_VIEW, V3_STATS_DOUBLES, 0, 0, 1)->tol = "v3_forward";
        if (bwd) INOUT(c, "gzc", N * dc, -1, 1, 1), INOUT(c, "gzs", N * ds, -1, 1, 1);
    }
}

static void count_case(CaseList *L, size_t n, int full, const char *what) {
    BoCase *c = add_case(L, "count_nonfinite", NULL, call_count_nonfinite, full, "n=%zu%s%s", n,
                         n ? ", NaN/Inf planted" : "", what);
    c->n = n, c->fill = fill_nonfinite;
    IN(c, "x", n, -1e30f, 1e30f);
    add_buf(c, "count", BO_U64, BO_OUT, 1, 0, 0, 1);
}

static void adamw_case(CaseList *L, size_t n, long t, const Config *cfg, int full, const char *what) {
    BoCase *c = add_case(L, "adamw", NULL, call_adamw, full, "n=%zu t=%ld%s", n, t, what);
    c->n = n, c->t = t;
    c->x[0] = cfg->lr, c->x[1] = cfg->beta1, c->x[2] = cfg->beta2, c->x[3] = cfg->eps, c->x[4] = cfg->weight_decay;
    INOUT(c, "p", n, -1, 1, 1), IN(c, "g", n, -1, 1), INOUT(c, "m", n, -0.1f, 0.1f, 1), INOUT(c, "v", n, 0, 0.01f, 1);
}

static void small_cases(CaseList *L) {
    static const size_t sizes[] = {0, 1, 257, 4099, 2097152 + 77}; /* empty, one, past a 256 block, past 8192 blocks */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        flat_cases(L, sizes[k], 0, "");
        count_case(L, sizes[k], 0, "");
    }
    mse_cases(L, 1, 0, ""), mse_cases(L, 4099, 0, "");
    z_cases(L, 1, 0.5, 0, ""), z_cases(L, 4099, 1e-3, 0, "");
    cols_cases(L, 1, 1, 1, 1, 1, 0, ""), cols_cases(L, 5, 7, 9, 11, 10, 0, ""), cols_cases(L, 33, 100, 129, 100, 200, 0, "");
    upsample_cases(L, 2, 3, 5, 3, 2, 1, 0, ""), upsample_cases(L, 1, 2, 3, 4, 3, 2, 0, "");
    linear_cases(L, 1, 1, 1, 0, ""), linear_cases(L, 3, 5, 7, 0, ""), linear_cases(L, 17, 33, 65, 0, "");
    bn_cases(L, 3, 5, 7, 0, 0, 0, ""), bn_cases(L, 1, 3, 1, 0, 0, 0, ""), bn_cases(L, 4, 3, 9, 1, 1, 0, "");
    const ConvGeom g1 = {3, 4, 3, 5, 2, 1, 1, 2}, g2 = {1, 2, 9, 3, 2, 2, 4, 1}, g3 = {3, 4, 5, 3, 1, 1, 2, 1},
                   g4 = {2, 3, 3, 3, 1, 1, 0, 0}, g5 = {3, 2, 4, 2, 1, 1, 1, 0};
    conv_cases(L, &g1, 0, 3, 10, 8, 0, 0, 0, 0, "");
    conv_cases(L, &g2, 0, 2, 11, 5, 1, 1, 1, 0, "");
    conv_cases(L, &g3, 1, 2, 7, 6, 0, 0, 0, 0, "");
    conv_cases(L, &g4, 1, 2, 5, 6, 1, 0, 1, 0, "");
    conv_cases(L, &g5, 1, 3, 6, 5, 0, 1, 0, 0, "");
    vq_cases(L, 5, 3, 8, 8, 0.9f, 2.0f, 0, ""), vq_cases(L, 17, 3, 50, 64, 0.98f, 16.0f, 0, "");
    V3LossCfg v = {.w_content = 1.0, .w_style = 0.7, .w_sample = 1.3, .w_fragment = 0.9, .relativity = 3.0, .eps = 1e-5};
    v3_cases(L, &v, 2, 3, 5, 4, 0, 0, "");
    v3_cases(L, &v, 3, 4, 7, 3, 1, 0, "");
    v.supersample_content = 1;
    v3_cases(L, &v, 4, 4, 7, 3, 0, 0, "");
    v.supersample_content = 0, v.r_content = 8.0, v.r_style = 1.5, v.r_fragment = 5.0; /* term_relativity */
    v3_cases(L, &v, 3, 4, 7, 3, 0, 0, ", term r 8/1.5/3/5");
    v.per_sample = 1; /* per_sample_hinges, with and without the term relativities and supersampling */
    v3_cases(L, &v, 3, 4, 7, 3, 0, 0, ", per-sample hinges, term r");
    v.r_content = v.r_style = v.r_fragment = 0;
    v3_cases(L, &v, 5, 4, 7, 3, 1, 0, ", per-sample hinges");
    v.supersample_content = 1;
    v3_cases(L, &v, 4, 4, 7, 3, 0, 0, ", per-sample hinges, supersample");
    v.supersample_content = 0, v.per_sample = 0, v.content_energy = 1; /* content_spread energy */
    v3_cases(L, &v, 4, 5, 9, 3, 0, 0, ", content energy");
    v3_cases(L, &v, 3, 4, 7, 3, 1, 0, ", content energy");
    v.per_sample = 1;
    v3_cases(L, &v, 5, 3, 6, 4, 0, 0, ", content energy, per-sample hinges");
    v.log_hinge = 1; /* loss_config.hinge: log, with the per-sample hinges and the energy S_c, then alone */
    v3_cases(L, &v, 5, 3, 6, 4, 0, 0, ", log hinge, content energy, per-sample hinges");
    v.per_sample = 0, v.content_energy = 0, v.r_style = 1.5;
    v3_cases(L, &v, 3, 4, 7, 3, 1, 0, ", log hinge, term r");
    Config cfg;
    config_defaults(&cfg);
    adamw_case(L, 1, 1, &cfg, 0, ""), adamw_case(L, 4099, 1, &cfg, 0, ""), adamw_case(L, 2097152 + 77, 1000, &cfg, 0, "");
}

/* The authors' sizes: layers and tensors of the models configs/phonenums.yaml and configs/insnotes.yaml build,
 * at their full channel and spatial sizes. The full training batch is N = batch_size x n_fragments (320
 * PhoneNums, 384 InsNotes). Every case runs three times in `make test` (ref, cpu, emu) and the file is to stay
 * under ~20 s on 2 cores, so the batch is cut where the reference ops would be slow:
 *   convolutions (conv_fwd, conv_bwd): the PhoneNums stem at the full batch; every other layer at the largest
 *     multiple of n_fragments whose forward stays under CONV_FLOPS and whose input plus output under CONV_ELEMS
 *     floats (at least one sample: n_fragments): the stem, the first down-sampling block's convolution and 1x1
 *     shortcut, the last encoder block's second convolution (widest), the first decoder convolution (transposed,
 *     widest), the first decoder shortcut (transposed 1x1) and the output convolution;
 *   BatchNorm: the last encoder block (widest) at the full batch, the stem (few channels, large images) at two
 *     samples' batch;
 *   column ops (the heads [N, dc + ds]): two samples' rows (the ref ops open an OpenMP parallel region per row,
 *     milliseconds each on a loaded machine);
 *   at the full batch: the encoder's first linear layer and the content head, the first up-sampling stage,
 *     GELU/add on the decoder input p0 [N, flat], the reconstruction MSE, the straight-through value and the
 *     commitment gradient [N, dc], the VQ (search, EMA, revival), the V3 loss (both supersample settings, and
 *     with tied codes);
 *   the step's update and gradient check: AdamW on the largest PhoneNums parameter tensor and count_nonfinite
 *     over all PhoneNums parameters (InsNotes' 55M would need ~1.5 GB of copies). */
#define CONV_FLOPS 0.4e9
#define CONV_ELEMS 8e6

static int conv_batch(const ConvGeom *g, int transposed, int H, int W, int N_full, int n, int force_full) {
    int Ho = transposed ? H + g->kh - 1 - 2 * g->ph : conv_out_size(H, g->kh, g->sh, g->ph);
    int Wo = transposed ? W + g->kw - 1 - 2 * g->pw : conv_out_size(W, g->kw, g->sw, g->pw);
    double flops = 2.0 * g->cin * g->cout * g->kh * g->kw * (double)(transposed ? H * W : Ho * Wo);
    double elems = (double)g->cin * H * W + (double)g->cout * Ho * Wo;
    double fit = CONV_FLOPS / flops < CONV_ELEMS / elems ? CONV_FLOPS / flops : CONV_ELEMS / elems;
    if (force_full || fit >= N_full) return N_full;
    int N = (int)fit;
    N -= N % n;
    return N < n ? n : N;
}

static void model_conv(CaseList *L, const char *tag, const char *layer, const ConvL *cl, int H, int W, int N_full,
                       int n, int force_full, int no_dx) {
    int N = conv_batch(&cl->g, cl->transposed, H, W, N_full, n, force_full);
    char what[96];
    snprintf(what, sizeof what, " (%s %s%s)", tag, layer, N == N_full ? ", full batch" : ", reduced batch");
    conv_cases(L, &cl->g, cl->transposed, N, H, W, 0, no_dx, 0, 1, what);
}

static int model_cases(CaseList *L, const char *path, const char *tag, int phonenums) {
    Config cfg;
    config_defaults(&cfg);
    if (config_load(path, &cfg)) return -1;
    Model *m = model_build(&cfg, 1);
    if (!m) return -1;
    const int n = cfg.n_fragments, N = cfg.batch_size * n;
    const size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    const Stage *e = m->enc, *d = m->dec, *last = &e[m->n_enc - 1], *oc = &d[m->n_dec - 1];
    char what[96];
#define WHAT(...) (snprintf(what, sizeof what, __VA_ARGS__), what)
    /* convolutions (the first encoder layer's backward has no dx, as in the step) */
    model_conv(L, tag, "enc stem", &e[0].c0, e[0].H, e[0].W, N, n, phonenums, 1);
    for (int i = 0; i < m->n_enc; i++)
        if (e[i].has_sc) {
            model_conv(L, tag, "enc first down-sampling conv", &e[i].c0, e[i].H, e[i].W, N, n, 0, 0);
            model_conv(L, tag, "enc first shortcut", &e[i].sc, e[i].H, e[i].W, N, n, 0, 0);
            break;
        }
    model_conv(L, tag, "enc last conv", &last->c1, last->Ho, last->Wo, N, n, 0, 0);
    model_conv(L, tag, "dec first conv", &d[0].c0, d[0].H, d[0].W, N, n, 0, 0);
    for (int i = 0; i < m->n_dec; i++)
        if (d[i].has_sc) {
            model_conv(L, tag, "dec first shortcut", &d[i].sc, d[i].H, d[i].W, N, n, 0, 0);
            break;
        }
    model_conv(L, tag, "dec output conv", &oc->c0, oc->H, oc->W, N, n, 0, 0);
    /* BatchNorm */
    bn_cases(L, N, last->n1.C, last->Ho * last->Wo, 0, 0, 1, WHAT(" (%s enc last block BN, full batch)", tag));
    bn_cases(L, 2 * n, e[0].n0.C, e[0].Ho * e[0].Wo, 0, 0, 1, WHAT(" (%s enc stem BN, reduced batch)", tag));
    /* linear layers: encoder lin1 (flat -> dc + ds), content head (dc -> dc) */
    linear_cases(L, N, m->flat, m->dc + m->ds, 1, WHAT(" (%s enc lin1)", tag));
    linear_cases(L, N, m->dc, m->dc, 1, WHAT(" (%s content head)", tag));
    for (int i = 0; i < m->n_dec; i++)
        if (d[i].kind == ST_UPSAMPLE) {
            upsample_cases(L, N, d[i].cin, d[i].H, d[i].W, d[i].uh, d[i].uw, 1, WHAT(" (%s dec[%d] upsample)", tag, i));
            break;
        }
    cols_cases(L, 2 * n, m->dc, m->dc, m->dc + m->ds, m->dc, 1, WHAT(" (%s heads, reduced batch)", tag));
    /* flat sizes */
    flat_cases(L, (size_t)N * m->flat, 1, WHAT(" (%s p0: N x flat)", tag));
    mse_cases(L, (size_t)N * frag, 1, WHAT(" (%s reconstruction: N x fragment)", tag));
    z_cases(L, (size_t)N * m->dc, cfg.w_commit * 2.0 / ((double)N * m->dc), 1, WHAT(" (%s N x dc)", tag));
    /* the VQ and the V3 loss */
    WHAT(" (%s)", tag);
    vq_cases(L, m->vq.K, m->dc, N, N, m->vq.decay, m->vq.threshold, 1, what);
    v3_cases(L, &m->loss, cfg.batch_size, n, m->dc, m->ds, 0, 1, what);
    v3_cases(L, &m->loss, cfg.batch_size, n, m->dc, m->ds, 1, 1, what);
    V3LossCfg ss = m->loss;
    ss.supersample_content = !ss.supersample_content;
    v3_cases(L, &ss, cfg.batch_size, n, m->dc, m->ds, 0, 1, what);
    V3LossCfg ours = m->loss; /* loss_config.per_sample_hinges, then content_spread energy with it */
    ours.supersample_content = 0, ours.per_sample = 1;
    v3_cases(L, &ours, cfg.batch_size, n, m->dc, m->ds, 0, 1, WHAT(" (%s, per-sample hinges)", tag));
    ours.content_energy = 1;
    v3_cases(L, &ours, cfg.batch_size, n, m->dc, m->ds, 0, 1, WHAT(" (%s, per-sample hinges, content energy)", tag));
    ours.content_energy = 0, ours.log_hinge = 1;
    v3_cases(L, &ours, cfg.batch_size, n, m->dc, m->ds, 0, 1, WHAT(" (%s, per-sample log hinges)", tag));
    /* the step's update and gradient check */
    if (phonenums) {
        size_t big = 0;
        for (int i = 0; i < m->n_params_t; i++)
            if (m->params[i].trainable && m->params[i].n > big) big = m->params[i].n;
        adamw_case(L, big, 3, &cfg, 1, WHAT(" (%s largest parameter tensor)", tag));
        count_case(L, m->n_trainable, 1, WHAT(" (%s all trainable parameters)", tag));
    }
#undef WHAT
    model_free(m);
    return 0;
}

int bo_cases(const BoCase **cases) {
    static CaseList L;
    static int built;
    if (!built) {
        small_cases(&L);
        int v = v3_verbose;
        v3_verbose = -1; /* the configs' notes about keys we ignore */
        int rc = model_cases(&L, "configs/phonenums.yaml", "phonenums", 1);
        if (!rc) rc = model_cases(&L, "configs/insnotes.yaml", "insnotes", 0);
        v3_verbose = v;
        if (rc) {
            free(L.v);
            memset(&L, 0, sizeof L);
            return -1;
        }
        built = 1;
    }
    *cases = L.v;
    return L.n;
}

/* ---- running a case ------------------------------------------------------------------------------------------ */

#define GUARD 256 /* bytes each side of every buffer */
#define GUARD_BYTE 0x5A

static size_t esize(BoType t) { return t == BO_F64 || t == BO_U64 ? 8 : 4; }
static size_t nbytes(const BoBuf *b) { return b->n * esize(b->type); }

static void fill_f32(float *x, size_t n, Rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform_range(r, lo, hi);
}

int bo_inputs(const BoCase *c, unsigned long long seed, BoData *in, char *msg, size_t cap) {
    memset(in, 0, sizeof *in);
    for (int k = 0; k < c->nb; k++) {
        const BoBuf *b = &c->b[k];
        if (b->role == BO_NONE) continue;
        if ((b->role == BO_OUT && b->cols == 0) || b->role == BO_VIEW) continue; /* poisoned on the backend */
        size_t bytes = nbytes(b);
        unsigned char *p = xmalloc(bytes ? bytes : 1);
        in->p[k] = p;
        Rng r;
        rng_seed(&r, seed * 7919u + (unsigned)k);
        if (b->role == BO_OUT) { /* strided: NaN where the op writes, values that must stay in the gaps */
            memset(p, 0xFF, bytes);
            for (int i = 0; i < b->rows; i++)
                fill_f32((float *)p + (size_t)i * b->ld + b->cols, (size_t)(b->ld - b->cols), &r, b->lo, b->hi);
            continue;
        }
        if (b->type == BO_F32) fill_f32((float *)p, b->n, &r, b->lo, b->hi);
        else if (b->type == BO_F64)
            for (size_t i = 0; i < b->n; i++) ((double *)p)[i] = b->lo + (b->hi - b->lo) * rng_uniform(&r);
        else if (b->type == BO_I32)
            for (size_t i = 0; i < b->n; i++) ((int *)p)[i] = (int)b->lo + (int)rng_below(&r, (uint32_t)(b->hi - b->lo) + 1);
        else
            for (size_t i = 0; i < b->n; i++) ((uint64_t *)p)[i] = rng_u64(&r);
    }
    if (c->fill && c->fill(c, in->p, msg, cap)) {
        bo_data_free(c, in);
        return -1;
    }
    return 0;
}

void bo_data_free(const BoCase *c, BoData *d) {
    for (int k = 0; k < BO_MAX_BUFS; k++) free(d->p[k]);
    memset(d, 0, sizeof *d);
}

void bo_release(BoRun *r) {
    if (r->h && r->c->teardown) r->c->teardown(r->be, r->h);
    for (int k = 0; k < BO_MAX_BUFS; k++)
        if (r->base[k]) r->be->free(r->base[k]);
    memset(r, 0, sizeof *r);
}

int bo_prepare(BoRun *r, const Backend *be, const BoCase *c, const BoData *in, char *msg, size_t cap) {
    memset(r, 0, sizeof *r);
    r->be = be;
    r->c = c;
    for (int k = 0; k < c->nb; k++) {
        const BoBuf *b = &c->b[k];
        if (b->role == BO_NONE || b->role == BO_VIEW) continue;
        size_t bytes = nbytes(b);
        unsigned char guard[GUARD];
        memset(guard, GUARD_BYTE, GUARD);
        r->base[k] = be->alloc(bytes + 2 * GUARD);
        r->dev[k] = (unsigned char *)r->base[k] + GUARD;
        int rc = be->h2d(r->base[k], guard, GUARD) || be->h2d((unsigned char *)r->dev[k] + bytes, guard, GUARD);
        /* plain outputs: poisoned by the backend itself (strided ones come with their gaps) */
        if (!rc) rc = in->p[k] ? be->h2d(r->dev[k], in->p[k], bytes) : be->memset(r->dev[k], 0xFF, bytes);
        if (rc) {
            snprintf(msg, cap, "%s: uploading %s: %s", be->name, b->name, v3_last_error());
            bo_release(r);
            return -1;
        }
    }
    if (c->setup) {
        v3_clear_error();
        r->h = c->setup(be, c, r->dev);
        if (!r->h) {
            snprintf(msg, cap, "%s: setup failed: %s", be->name, v3_last_error());
            bo_release(r);
            return -1;
        }
    }
    for (int k = 0; k < c->nb; k++)
        if (c->b[k].role == BO_VIEW && (!r->dev[k] || be->memset(r->dev[k], 0xFF, nbytes(&c->b[k])))) {
            snprintf(msg, cap, "%s: %s: no memory to poison: %s", be->name, c->b[k].name, v3_last_error());
            bo_release(r);
            return -1;
        }
    return 0;
}

void bo_call(BoRun *r) { r->c->call(r->be, r->c, r->h, r->dev); }

int bo_download(BoRun *r, BoData *out, char *msg, size_t cap) {
    const Backend *be = r->be;
    const BoCase *c = r->c;
    memset(out, 0, sizeof *out);
    if (be->sync()) {
        snprintf(msg, cap, "%s: sync: %s", be->name, v3_last_error());
        return -1;
    }
    for (int k = 0; k < c->nb; k++) {
        const BoBuf *b = &c->b[k];
        if (b->role == BO_NONE) continue;
        size_t bytes = nbytes(b);
        unsigned char *p = xmalloc(bytes ? bytes : 1);
        memset(p, 0xFF, bytes); /* a copy that does not happen leaves NaN */
        out->p[k] = p;
        int rc = be->d2h(p, r->dev[k], bytes);
        if (!rc && b->role != BO_VIEW) {
            unsigned char lead[GUARD], trail[GUARD];
            memset(lead, 0, GUARD), memset(trail, 0, GUARD);
            rc = be->d2h(lead, r->base[k], GUARD) || be->d2h(trail, (unsigned char *)r->dev[k] + bytes, GUARD);
            for (size_t i = 0; !rc && i < GUARD; i++)
                if (lead[i] != GUARD_BYTE || trail[i] != GUARD_BYTE) {
                    snprintf(msg, cap, "%s: %s: written outside the buffer (%s guard byte %zu changed)", be->name,
                             b->name, lead[i] != GUARD_BYTE ? "leading" : "trailing", i);
                    bo_data_free(c, out);
                    return -1;
                }
        }
        if (rc) {
            snprintf(msg, cap, "%s: downloading %s: %s", be->name, b->name, v3_last_error());
            bo_data_free(c, out);
            return -1;
        }
    }
    return 0;
}

/* ---- comparing ----------------------------------------------------------------------------------------------- */

static double val(const BoBuf *b, const void *p, size_t i) {
    return b->type == BO_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static int compare_buf(const BoCase *c, const BoBuf *b, const void *got, const void *ref, double *worst, char *msg,
                       size_t cap) {
    size_t n = b->n;
    if (b->type == BO_I32 || b->type == BO_U64) {
        for (size_t i = 0; i < n; i++) {
            long long g = b->type == BO_I32 ? ((const int *)got)[i] : (long long)((const uint64_t *)got)[i];
            long long e = b->type == BO_I32 ? ((const int *)ref)[i] : (long long)((const uint64_t *)ref)[i];
            if (g != e) {
                snprintf(msg, cap, "%s[%zu]: got %lld, ref %lld (exact)", b->name, i, g, e);
                return 0;
            }
        }
        return 1;
    }
    const char *row = b->tol ? b->tol : c->op;
    const BoTol *t = bo_tol(row);
    if (!t) {
        snprintf(msg, cap, "%s: no tolerance row '%s'", b->name, row);
        return 0;
    }
    /* NaN or Inf anywhere fails, also where both sides agree bit for bit */
    size_t bad = n;
    double S = 0;
    if (b->type == BO_F32) {
        const float *g = got, *e = ref;
        float m = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(g[i]) || !isfinite(e[i])) bad = bad < i ? bad : i;
            m = fabsf(e[i]) > m ? fabsf(e[i]) : m;
        }
        S = m;
    } else {
        const double *g = got, *e = ref;
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(g[i]) || !isfinite(e[i])) bad = bad < i ? bad : i;
            S = fabs(e[i]) > S ? fabs(e[i]) : S;
        }
    }
    if (bad < n) {
        double g = val(b, got, bad), e = val(b, ref, bad);
        if (!isfinite(e))
            snprintf(msg, cap, "%s[%zu]: the reference is %g (ref left an output unwritten or overflowed)", b->name, bad, e);
        else
            snprintf(msg, cap, "%s[%zu]: got %g, ref %.9g (never passes: an output left unwritten or not finite)",
                     b->name, bad, g, e);
        return 0;
    }
    if (memcmp(got, ref, nbytes(b)) == 0) return 1;
    int exact = b->exact || (t->rtol == 0 && t->srel == 0 && t->ksum == 0);
    if (exact) {
        for (size_t i = 0; i < n; i++)
            if (memcmp((const char *)got + i * esize(b->type), (const char *)ref + i * esize(b->type), esize(b->type))) {
                snprintf(msg, cap, "%s[%zu]: got %.9g, ref %.9g (bit-exact)", b->name, i, val(b, got, i), val(b, ref, i));
                break;
            }
        return 0;
    }
    double scale = (t->srel + t->ksum * sqrt(b->K > 1 ? b->K : 1)) * S;
    size_t wi = 0;
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double g = val(b, got, i), e = val(b, ref, i), bound = t->rtol * fabs(e) + scale, err = fabs(g - e);
        double q = err == 0 ? 0 : bound > 0 ? err / bound : INFINITY;
        if (q > w) w = q, wi = i;
    }
    if (w > *worst) *worst = w;
    if (w <= 1) return 1;
    snprintf(msg, cap, "%s[%zu]: got %.9g, ref %.9g: error %.3g is %.3g x the bound (rtol %g, srel %g, ksum %g, K %g, "
             "max|ref| %.3g)", b->name, wi, val(b, got, wi), val(b, ref, wi), fabs(val(b, got, wi) - val(b, ref, wi)), w,
             t->rtol, t->srel, t->ksum, b->K, S);
    return 0;
}

int bo_compare(const BoCase *c, const BoData *in, const BoData *got, const BoData *ref, double *worst, char *msg,
               size_t cap) {
    *worst = 0;
    for (int k = 0; k < c->nb; k++) {
        const BoBuf *b = &c->b[k];
        if (b->role == BO_NONE) continue;
        if (b->role == BO_IN) {
            if (memcmp(got->p[k], in->p[k], nbytes(b))) {
                snprintf(msg, cap, "input %s was modified", b->name);
                return 0;
            }
            continue;
        }
        if (!compare_buf(c, b, got->p[k], ref->p[k], worst, msg, cap)) return 0;
    }
    return 1;
}

/* ---- the runner ---------------------------------------------------------------------------------------------- */

static int listed(const char *list, const char *op) {
    if (!list) return 1;
    size_t n = strlen(op);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, op, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* One case on one backend: prepare, call (timed), download. 0, or -1 with msg. */
static int run_on(const Backend *be, const BoCase *c, const BoData *in, BoData *out, double *secs, char *msg, size_t cap) {
    BoRun r;
    if (bo_prepare(&r, be, c, in, msg, cap)) return -1;
    double t0 = now_seconds();
    bo_call(&r);
    int rc = be->sync();
    *secs = now_seconds() - t0;
    if (rc) snprintf(msg, cap, "%s: sync after the call: %s", be->name, v3_last_error());
    else rc = bo_download(&r, out, msg, cap);
    bo_release(&r);
    return rc ? -1 : 0;
}

int bo_check(const Backend *const *bes, int nbes, const BoOpts *o, BoReport *rep) {
    memset(rep, 0, sizeof *rep);
    FILE *log = o->log;
    const BoCase *cs;
    int nc = bo_cases(&cs);
    if (nc < 0) {
        if (log) fprintf(log, "    backend ops: the cases could not be built: %s\n", v3_last_error());
        return rep->failed = 1;
    }
    unsigned long long seed = o->seed ? o->seed : 20240531ULL;
    char msg[640];
    for (int i = 0; i < nc; i++) {
        const BoCase *c = &cs[i];
        if (!listed(o->ops, c->op) || (o->small_only && c->full)) continue;
        int op = bo_op_index(c->op);
        rep->cases++;
        double t_case = now_seconds();
        BoData in, ref;
        double tref = 0;
        const char *stage = "inputs";
        int rc = bo_inputs(c, seed + (unsigned long long)i, &in, msg, sizeof msg);
        if (!rc) {
            stage = "reference";
            rc = run_on(&backend_ref, c, &in, &ref, &tref, msg, sizeof msg);
            if (rc) bo_data_free(c, &in);
        }
        if (rc) { /* the case itself is broken: every backend fails it */
            rep->runs += nbes, rep->failed += nbes, rep->op_runs[op] += nbes, rep->op_failed[op] += nbes;
            if (log) fprintf(log, "    FAIL %s [%s]: %s: %s\n", c->op, c->shape, stage, msg);
            continue;
        }
        for (int b = 0; b < nbes; b++) {
            BoData got;
            double t = 0, worst = 0;
            int ok = run_on(bes[b], c, &in, &got, &t, msg, sizeof msg) == 0;
            if (ok) {
                ok = bo_compare(c, &in, &got, &ref, &worst, msg, sizeof msg);
                bo_data_free(c, &got);
            }
            rep->runs++, rep->op_runs[op]++;
            if (!ok) rep->failed++, rep->op_failed[op]++;
            if (log && !ok)
                fprintf(log, "    FAIL %s [%s] on %s: %s (seed %llu)\n", c->op, c->shape, bes[b]->name, msg,
                        seed + (unsigned long long)i);
            else if (log && o->verbose)
                fprintf(log, "    ok   %-15s %-4s worst %.2g of tol  ref %.3fs %s %.3fs  [%s]\n", c->op, bes[b]->name,
                        worst, tref, bes[b]->name, t, c->shape);
        }
        bo_data_free(c, &in);
        bo_data_free(c, &ref);
        if (log && o->verbose)
            fprintf(log, "    case %-15s %.3fs in all [%s]\n", c->op, now_seconds() - t_case, c->shape);
    }
    return rep->failed;
}

/* ---- memory ops and coverage --------------------------------------------------------------------------------- */

int bo_check_memory(const Backend *be, FILE *log) {
    static const size_t sizes[] = {0, 1, 3, 4099, (1u << 20) + 3};
    int fails = 0;
    be->reserve_scratch((size_t)1 << 20);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        unsigned char *src = xmalloc(n + 1), *back = xmalloc(n + 1);
        Rng r;
        rng_seed(&r, 77 + s);
        for (size_t i = 0; i < n; i++) src[i] = (unsigned char)rng_u64(&r);
        unsigned char *d = be->alloc(n);
        const char *what = NULL;
        memset(back, 0, n + 1);
        if (be->h2d(d, src, n) || be->d2h(back, d, n)) what = "h2d/d2h failed";
        else if (memcmp(back, src, n)) what = "h2d then d2h did not give the bytes back";
        if (!what && n) { /* memset of the whole buffer */
            memset(back, 0, n);
            if (be->memset(d, 0xA5, n) || be->sync() || be->d2h(back, d, n)) what = "memset/sync/d2h failed";
            for (size_t i = 0; !what && i < n; i++)
                if (back[i] != 0xA5) what = "memset of the whole buffer left other bytes";
        }
        if (!what && n >= 3) { /* an unaligned part, after an unaligned upload */
            if (be->h2d(d + 1, src + 1, n - 1) || be->memset(d + 1, 0x3C, n - 2) || be->d2h(back, d, n)) {
                what = "partial h2d/memset/d2h failed";
            } else {
                for (size_t i = 0; !what && i < n; i++) {
                    unsigned char want = i == 0 ? 0xA5 : i == n - 1 ? src[n - 1] : 0x3C;
                    if (back[i] != want) what = "a partial memset or an unaligned h2d touched the wrong bytes";
                }
            }
        }
        if (!what && n >= 3) { /* an unaligned download */
            memset(back, 0, n);
            if (be->d2h(back, d + 1, n - 1) || back[n - 2] != src[n - 1] || back[0] != 0x3C)
                what = "an unaligned d2h gave other bytes";
        }
        if (!what && be->sync()) what = "sync failed";
        be->free(d);
        free(src);
        free(back);
        if (what) {
            fails++;
            if (log) fprintf(log, "    FAIL memory ops on %s, %zu bytes: %s (%s)\n", be->name, n, what, v3_last_error());
        }
    }
    return fails;
}

int bo_uncovered_ops(FILE *log) {
    const BoCase *cs;
    int nc = bo_cases(&cs), missing = 0;
    if (nc < 0) {
        if (log) fprintf(log, "    the cases could not be built: %s\n", v3_last_error());
        return BO_N_OPS;
    }
    for (int k = 0; k < BO_N_OPS; k++) {
        int have = 0;
        for (int i = 0; i < nc && !have; i++) have = listed(cs[i].ops, bo_op_names[k]);
        if (!have || !bo_tol(bo_op_names[k])) {
            missing++;
            if (log)
                fprintf(log, "    op %s has %s\n", bo_op_names[k], !have ? "no case in tests/backend_cases.c"
                                                                          : "no row in the tolerance table");
        }
    }
    for (int k = 0; k < bo_n_tols; k++)
        if (bo_op_index(bo_tols[k].op) < 0) {
            missing++;
            if (log) fprintf(log, "    the tolerance table names %s, which is not an op of the list\n", bo_tols[k].op);
        }
    return missing;
}
