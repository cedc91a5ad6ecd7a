/* The op list: every operation a backend provides to the training step (host/model/step.c), written ONCE here as an
 * X-macro entry OP(name, return type, (parameters)). From it come
 *   - each backend's declarations:     ref_<name> (ops.h), cuda_<name> (cuda_backend.h), cpu_<name> later;
 *   - the Backend struct's members:    be->name (backend.h);
 *   - each backend's table:            host/ref/backend_ref.c, host/backend/backend_cuda.c;
 *   - the CUDA stubs of CPU-only builds (kernels/cuda_stub.c);
 *   - the op-by-op tests on every backend (tests/test_backend_ops.c; the cases in tests/backend_cases.c).
 * Adding an op: an entry here, its ref_ implementation, its CUDA kernel, its case in tests/backend_cases.c, and
 * its call in the step (NOTES.md, "Adding an op end to end").
 *
 * Semantics (shared by every backend; the ref_ op is the specification). Layouts are row-major float32:
 *   images [N, C, H, W]; conv weights [Cout, Cin, kh, kw]; transposed-conv weights [Cin, Cout, kh, kw]
 *   (PyTorch ConvTranspose2d); linear weights [out, in].
 * Backward ops OVERWRITE input gradients (dx; NULL skips them) and ACCUMULATE (+=) parameter gradients (dw, db,
 * dgamma, dbeta), so a step zeroes parameter gradients once. Long sums accumulate in double. Pointers are the
 * backend's memory (device pointers on CUDA). Handles (conv plans, VQ and V3 workspaces) belong to the backend
 * that made them. */
#ifndef V3_OP_LIST_H
#define V3_OP_LIST_H
#include <stddef.h>

#include "v3loss.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int cin, cout, kh, kw, sh, sw, ph, pw;
} ConvGeom;
static inline int conv_out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* Math mode of convolutions and GEMMs (CUDA; the CPU backends are always exact float32).
 * FP32: exact float32. TF32: tensor cores, TF32 inputs, float32 accumulation and storage.
 * BF16: tensor cores, bfloat16 inputs, float32 accumulation; weights, gradients and optimiser state float32. */
typedef enum { V3_MATH_FP32 = 0, V3_MATH_TF32 = 1, V3_MATH_BF16 = 2 } V3Math;
/* "fp32" | "tf32" | "bf16" -> mode; -1 + v3_error for anything else. (host/backend/cuda_common.c) */
int v3_math_parse(const char *s, V3Math *out);
const char *v3_math_name(V3Math m);

/* Memory. Copies are synchronous; memset is ordered with the queued work; sync waits for it (where
 * asynchronous faults surface). int results: 0, or -1 with a v3_error. alloc never returns NULL (it exits with
 * one line when memory runs out). reserve_scratch grows the shared reduction scratch now, so no step allocates. */
#define V3_MEM_OPS(OP)                                                                                          \
    OP(alloc, void *, (size_t bytes))                                                                           \
    OP(free, void, (void *p))                                                                                   \
    OP(h2d, int, (void *dst, const void *src, size_t bytes))                                                    \
    OP(d2h, int, (void *dst, const void *src, size_t bytes))                                                    \
    OP(memset, int, (void *dst, int byte, size_t bytes))                                                        \
    OP(sync, int, (void))                                                                                       \
    OP(reserve_scratch, void, (size_t bytes))                                                                   \
    /* The backend's algorithm choices (cuDNN), saved beside a checkpoint and loaded on resume so a resumed run \
     * uses the same algorithms and stays bit-identical; backends without choices do nothing and return 0. */   \
    OP(algos_save, int, (const char *path))                                                                     \
    OP(algos_load, int, (const char *path))

/* Compute ops, in the step's order of use. */
#define V3_COMPUTE_OPS(OP)                                                                                      \
    /* conv_plan: a convolution of fixed geometry, batch N and input H x W (transposed: stride 1, output       \
     * [N, cout, H+kh-1-2ph, W+kw-1-2pw]); CUDA picks its algorithms here. NULL + v3_error on failure.          \
     * conv_fwd: y = conv(x, w) + b (b may be NULL). conv_bwd: dx (may be NULL), dw, db (may be NULL). */       \
    OP(conv_plan, void *, (const ConvGeom *g, int transposed, int N, int H, int W, V3Math math))                \
    OP(conv_destroy, void, (void *plan))                                                                        \
    OP(conv_fwd, void, (const void *plan, const float *x, const float *w, const float *b, float *y))            \
    OP(conv_bwd, void,                                                                                          \
       (const void *plan, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db))   \
    /* BatchNorm2d over (N, HW) per channel. Train: batch statistics (biased variance), saves mean and invstd  \
     * [C], updates running_* with momentum and the unbiased variance (both may be NULL). Eval: running         \
     * statistics. bwd: of the train-mode forward; dx may be NULL. */                                            \
    OP(bn2d_fwd_train, void,                                                                                    \
       (int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y, float *mean,    \
        float *invstd, float *running_mean, float *running_var, float momentum, float eps))                     \
    OP(bn2d_fwd_eval, void,                                                                                     \
       (int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,                 \
        const float *running_mean, const float *running_var, float eps))                                        \
    OP(bn2d_bwd, void,                                                                                          \
       (int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,      \
        const float *dy, float *dx, float *dgamma, float *dbeta))                                               \
    /* Exact erf GELU; bwd: dx = dy * gelu'(x) (dx may alias dy). */                                            \
    OP(gelu_fwd, void, (size_t n, const float *x, float *y))                                                    \
    OP(gelu_bwd, void, (size_t n, const float *x, const float *dy, float *dx))                                  \
    /* The same on column blocks: y[i*ldy + j] = gelu(x[i*ldx + j]) for i < rows, j < cols. */                  \
    OP(gelu_fwd_cols, void, (int rows, int cols, const float *x, int ldx, float *y, int ldy))                  \
    OP(gelu_bwd_cols, void,                                                                                     \
       (int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd))           \
    /* dst[i*ldd + j] = src[i*lds + j] for i < rows, j < cols. */                                               \
    OP(copy_cols, void, (int rows, int cols, const float *src, int lds, float *dst, int ldd))                  \
    /* y += x */                                                                                                \
    OP(add_inplace, void, (size_t n, float *y, const float *x))                                                 \
    /* Nearest upsampling by (fh, fw): x [N,C,H,W] -> y [N,C,H*fh,W*fw]. */                                     \
    OP(upsample_fwd, void, (int N, int C, int H, int W, int fh, int fw, const float *x, float *y))             \
    OP(upsample_bwd, void, (int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx))           \
    /* Linear: x [N,in], w [out,in], b [out] -> y [N,out]. */                                                   \
    OP(linear_fwd, void, (int N, int in, int out, const float *x, const float *w, const float *b, float *y))   \
    OP(linear_bwd, void,                                                                                        \
       (int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,         \
        float *db))                                                                                             \
    /* *out = mean((a-b)^2) in double, written to the backend's memory (no synchronisation); bwd: da = scale * \
     * 2 (a-b) / n. */                                                                                          \
    OP(mse_fwd, void, (size_t n, const float *a, const float *b, double *out))                                  \
    OP(mse_bwd, void, (size_t n, const float *a, const float *b, float scale, float *da))                      \
    /* out = z + (q - z) rounded in float32: PyTorch's straight-through value (v3loss.h). */                    \
    OP(ste_value, void, (size_t n, const float *z, const float *q, float *out))                                 \
    /* g += k * (a - b) (the commitment gradient); b == NULL means 0. */                                        \
    OP(axpy_diff, void, (size_t n, double k, const float *a, const float *b, float *g))                        \
    /* Vector quantiser (vq.h). create: a workspace for up to N_max rows of dimension d against K codes.        \
     * search: ind = nearest code (lowest index on ties), q = embed[ind], *commit_sum = sum ||q - x||^2 (in     \
     * the backend's memory); the workspace remembers x and ind for vq_ema. ema: the EMA update with Laplace    \
     * smoothing, without dead codes. revive: code dead[i] takes row rows[i] of x, cluster_size = threshold,    \
     * embed_avg = threshold * embed; dead and rows are HOST arrays (drawn with the model's RNG). */            \
    OP(vq_create, void *, (int K, int d, int N_max))                                                            \
    OP(vq_destroy, void, (void *w))                                                                             \
    OP(vq_search, void,                                                                                         \
       (void *w, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum))           \
    OP(vq_ema, void, (void *w, float decay, float *embed, float *embed_avg, float *cluster_size))              \
    OP(vq_revive, void,                                                                                         \
       (void *w, int ndead, const int *dead, const int *rows, const float *x, float threshold, float *embed,   \
        float *embed_avg, float *cluster_size))                                                                 \
    /* V3 statistics and hinges (v3loss.h) for B samples of n fragments. forward leaves them in the backend's  \
     * memory; backward ADDS the weighted loss's gradient to gzc, gzs (q's share to zc), using the last         \
     * forward on the same inputs; v3_stats points to V3_STATS_DOUBLES doubles in the backend's memory. */      \
    OP(v3_create, void *, (const V3LossCfg *cfg, int B, int n, int dc, int ds))                                 \
    OP(v3_destroy, void, (void *w))                                                                             \
    OP(v3_forward, void, (void *w, const float *zc, const float *q, const float *zs))                           \
    OP(v3_backward, void, (void *w, const float *zc, const float *q, const float *zs, float *gzc, float *gzs)) \
    OP(v3_stats, const double *, (const void *w))                                                               \
    /* *count = the number of non-finite (NaN or infinite) values of x, in the backend's memory: the step's    \
     * check that a gradient is finite before the update. */                                                     \
    OP(count_nonfinite, void, (size_t n, const float *x, unsigned long long *count))                           \
    /* AdamW (PyTorch): p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;                            \
     * p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps); t is 1-based. */                                    \
    OP(adamw, void,                                                                                             \
       (size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2, float eps,  \
        float wd, long t))

#define V3_ALL_OPS(OP) V3_MEM_OPS(OP) V3_COMPUTE_OPS(OP)

/* The statistics block v3_stats points to: Fc, Sc, Fs, Ss, Ss_ss, content, style, sample, fragment, weighted. */
#define V3_STATS_DOUBLES 10
static inline void v3_stats_unpack(const double *v, int nB, int nn, V3Stats *st) {
    st->Fc = v[0]; st->Sc = v[1]; st->Fs = v[2]; st->Ss = v[3]; st->Ss_ss = v[4];
    st->content = v[5]; st->style = v[6]; st->sample = v[7]; st->fragment = v[8]; st->weighted = v[9];
    st->nB = nB; st->nn = nn;
}
static inline void v3_stats_pack(const V3Stats *st, double *v) {
    v[0] = st->Fc; v[1] = st->Sc; v[2] = st->Fs; v[3] = st->Ss; v[4] = st->Ss_ss;
    v[5] = st->content; v[6] = st->style; v[7] = st->sample; v[8] = st->fragment; v[9] = st->weighted;
}

/* Declarations of one backend's ops: V3_ALL_OPS(V3_DECLARE_REF) declares ref_alloc, ref_free, ... */
#define V3_DECLARE_REF(name, ret, params) ret ref_##name params;
#define V3_DECLARE_CUDA(name, ret, params) ret cuda_##name params;

#ifdef __cplusplus
}
#endif
#endif
