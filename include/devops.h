/* The device operations the GPU training step (host/gpu_model.c) is written against, as a table of functions.
 * Two tables exist:
 *   dev_cuda  the CUDA backend (include/cuda_backend.h): device memory, cuDNN, cuBLAS and our kernels;
 *   dev_emu   an emulated device in host memory whose every op is the CPU reference op (host/devops_emu.c).
 * The emulated device lets the CPU test suite run the GPU step's orchestration (buffer layout, splits and
 * concatenations, op order, VQ and V3 state handling) against the plain CPU model on machines without a GPU;
 * the CUDA kernels themselves are checked against the same CPU references by `make test-gpu`.
 * Handles (conv plans, VQ and V3 workspaces) are opaque pointers owned by the table that made them. */
#ifndef V3_DEVOPS_H
#define V3_DEVOPS_H
#include <stddef.h>

#include "cuda_backend.h"
#include "ops.h"
#include "v3loss.h"

typedef struct DevOps {
    const char *name;
    /* memory (synchronous copies; memset is ordered with the queued work) */
    void *(*malloc)(size_t bytes);
    void (*free)(void *p);
    int (*h2d)(void *dst, const void *src, size_t bytes);
    int (*d2h)(void *dst, const void *src, size_t bytes);
    int (*memset)(void *dst, int byte, size_t bytes);
    int (*sync)(void);
    void (*reserve_scratch)(size_t bytes);
    /* elementwise and BatchNorm (semantics of ops.h) */
    void (*gelu_fwd)(size_t n, const float *x, float *y);
    void (*gelu_bwd)(size_t n, const float *x, const float *dy, float *dx);
    void (*upsample_fwd)(int N, int C, int H, int W, int fh, int fw, const float *x, float *y);
    void (*upsample_bwd)(int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx);
    void (*add_inplace)(size_t n, float *y, const float *x);
    void (*mse_fwd_dev)(size_t n, const float *a, const float *b, double *out);
    void (*mse_bwd)(size_t n, const float *a, const float *b, float scale, float *da);
    void (*adamw)(size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                  float eps, float wd, long t);
    void (*bn_fwd_train)(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                         float *mean, float *invstd, float *running_mean, float *running_var, float momentum,
                         float eps);
    void (*bn_fwd_eval)(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                        const float *running_mean, const float *running_var, float eps);
    void (*bn_bwd)(int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,
                   const float *dy, float *dx, float *dgamma, float *dbeta);
    /* layers */
    void *(*conv_plan)(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math);
    void (*conv_destroy)(void *plan);
    void (*conv_fwd)(const void *plan, const float *x, const float *w, const float *b, float *y);
    void (*conv_bwd)(const void *plan, const float *x, const float *w, const float *dy, float *dx, float *dw,
                     float *db);
    void (*linear_fwd)(int N, int in, int out, const float *x, const float *w, const float *b, float *y);
    void (*linear_bwd)(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
                       float *db);
    void (*copy_cols)(int rows, int cols, const float *src, int lds, float *dst, int ldd);
    void (*gelu_fwd_cols)(int rows, int cols, const float *x, int ldx, float *y, int ldy);
    void (*gelu_bwd_cols)(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd);
    void (*axpy_diff)(size_t n, double k, const float *a, const float *b, float *g);
    void (*ste_value)(size_t n, const float *z, const float *q, float *out); /* v3_ste_value */
    /* vector quantiser */
    void *(*vq_create)(int K, int d, int N_max);
    void (*vq_destroy)(void *w);
    void (*vq_search)(void *w, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum);
    void (*vq_ema)(void *w, float decay, float *embed, float *embed_avg, float *cluster_size);
    void (*vq_revive)(void *w, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                      float *embed, float *embed_avg, float *cluster_size);
    /* V3 statistics */
    void *(*v3_create)(const V3LossCfg *cfg, int B, int n, int dc, int ds);
    void (*v3_destroy)(void *w);
    void (*v3_forward)(void *w, const float *zc, const float *q, const float *zs);
    void (*v3_backward)(void *w, const float *zc, const float *q, const float *zs, float *gzc, float *gzs);
    const double *(*v3_stats_dev)(const void *w);
} DevOps;

extern const DevOps dev_cuda;
extern const DevOps dev_emu;
#endif
