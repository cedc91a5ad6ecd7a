/* The fast CPU backend (backend_cpu, host/cpu/): the reference table (host/ref/) with the ops below replaced by
 * faster implementations of the same semantics (op_list.h). Each replacement is checked against its ref_ op in
 * test_backend_ops with the tolerance stated in tests/backend_cases.c. */
#ifndef V3_CPU_BACKEND_H
#define V3_CPU_BACKEND_H
#include "op_list.h"

/* The ops the cpu backend implements itself; every other entry of its table is the ref_ op. */
#define V3_CPU_OPS(OP)                                                                                          \
    OP(conv_plan, void *, (const ConvGeom *g, int transposed, int N, int H, int W, V3Math math))                \
    OP(conv_destroy, void, (void *plan))                                                                        \
    OP(conv_fwd, void, (const void *plan, const float *x, const float *w, const float *b, float *y))            \
    OP(conv_bwd, void,                                                                                          \
       (const void *plan, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db))   \
    OP(gelu_fwd, void, (size_t n, const float *x, float *y))                                                    \
    OP(gelu_bwd, void, (size_t n, const float *x, const float *dy, float *dx))                                  \
    OP(gelu_fwd_cols, void, (int rows, int cols, const float *x, int ldx, float *y, int ldy))                  \
    OP(gelu_bwd_cols, void,                                                                                     \
       (int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd))           \
    OP(bn2d_fwd_train, void,                                                                                    \
       (int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y, float *mean,    \
        float *invstd, float *running_mean, float *running_var, float momentum, float eps))                     \
    OP(bn2d_fwd_eval, void,                                                                                     \
       (int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,                 \
        const float *running_mean, const float *running_var, float eps))                                        \
    OP(bn2d_bwd, void,                                                                                          \
       (int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,      \
        const float *dy, float *dx, float *dgamma, float *dbeta))                                               \
    OP(vq_create, void *, (int K, int d, int N_max))                                                            \
    OP(vq_destroy, void, (void *w))                                                                             \
    OP(vq_search, void,                                                                                         \
       (void *w, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum))           \
    OP(vq_ema, void, (void *w, float decay, float *embed, float *embed_avg, float *cluster_size))              \
    OP(vq_revive, void,                                                                                         \
       (void *w, int ndead, const int *dead, const int *rows, const float *x, float threshold, float *embed,   \
        float *embed_avg, float *cluster_size))                                                                 \
    OP(v3_create, void *, (const V3LossCfg *cfg, int B, int n, int dc, int ds))                                 \
    OP(v3_destroy, void, (void *w))                                                                             \
    OP(v3_forward, void, (void *w, const float *zc, const float *q, const float *zs))                           \
    OP(v3_backward, void, (void *w, const float *zc, const float *q, const float *zs, float *gzc, float *gzs)) \
    OP(v3_stats, const double *, (const void *w))                                                               \
    OP(mse_fwd, void, (size_t n, const float *a, const float *b, double *out))                                  \
    OP(axpy_diff, void, (size_t n, double k, const float *a, const float *b, float *g))                        \
    OP(count_nonfinite, void, (size_t n, const float *x, unsigned long long *count))                           \
    OP(add_inplace, void, (size_t n, float *y, const float *x))

#define V3_DECLARE_CPU(name, ret, params) ret cpu_##name params;
V3_CPU_OPS(V3_DECLARE_CPU)

/* Sets flush-to-zero for denormals on every thread of the OpenMP pool (backend_cpu.c; run once the thread count is
 * final, before training); returns what it did, for the log and platform.txt. */
const char *cpu_denormals_init(void);

/* The convolution library the cpu backend was built with ("oneDNN 2.6.3", or the reference im2col + GEMM), and the
 * implementation a plan runs for which = 0 forward, 1 data gradient, 2 weight gradient (oneDNN's name for it). */
const char *cpu_conv_library(void);
const char *cpu_conv_impl(const void *plan, int which);
#endif
