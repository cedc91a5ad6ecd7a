/* The CUDA backend's symbols for builds without nvcc (the Makefile compiles this file instead of the kernels/ .cu files).
 * cuda_probe reports 0 devices with the reason; cuda_init and the copies fail with a v3_error message; the
 * kernels and allocation are unreachable when cuda_probe says 0, so calling them is an internal error. */
#include <stddef.h>
#include <stdio.h>

#include "common.h"
#include "cuda_backend.h"

#define NO_CUDA "this build has no CUDA support (nvcc was not found at build time)"
#define UNREACHABLE(fn) V3_FATAL("%s called, but " NO_CUDA, fn)

int cuda_probe(char *desc, size_t n) {
    if (desc && n) snprintf(desc, n, "%s", NO_CUDA);
    return 0;
}

int cuda_init(int device) { return v3_error("cannot use CUDA device %d: %s", device, NO_CUDA); }

void *cuda_malloc_or_die(size_t bytes) {
    UNREACHABLE("cuda_malloc_or_die");
    return NULL;
}

void cuda_free(void *p) {
    if (p) UNREACHABLE("cuda_free");
}

int cuda_h2d(void *dst, const void *src, size_t bytes) { return v3_error("cuda_h2d: %s", NO_CUDA); }
int cuda_d2h(void *dst, const void *src, size_t bytes) { return v3_error("cuda_d2h: %s", NO_CUDA); }
int cuda_memset(void *dst, int byte, size_t bytes) { return v3_error("cuda_memset: %s", NO_CUDA); }
int cuda_sync(void) { return v3_error("cuda_sync: %s", NO_CUDA); }
void cuda_scratch_reserve(size_t bytes) { UNREACHABLE("cuda_scratch_reserve"); }

void cuda_gelu_fwd(size_t n, const float *x, float *y) { UNREACHABLE("cuda_gelu_fwd"); }
void cuda_gelu_bwd(size_t n, const float *x, const float *dy, float *dx) { UNREACHABLE("cuda_gelu_bwd"); }
void cuda_upsample_fwd(int N, int C, int H, int W, int fh, int fw, const float *x, float *y) {
    UNREACHABLE("cuda_upsample_fwd");
}
void cuda_upsample_bwd(int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx) {
    UNREACHABLE("cuda_upsample_bwd");
}
void cuda_add_inplace(size_t n, float *y, const float *x) { UNREACHABLE("cuda_add_inplace"); }
double cuda_mse_fwd(size_t n, const float *a, const float *b) {
    UNREACHABLE("cuda_mse_fwd");
    return 0;
}
void cuda_mse_bwd(size_t n, const float *a, const float *b, float scale, float *da) { UNREACHABLE("cuda_mse_bwd"); }
void cuda_adamw(size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                float eps, float wd, long t) {
    UNREACHABLE("cuda_adamw");
}
void cuda_bn2d_fwd_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                         float *mean, float *invstd, float *running_mean, float *running_var, float momentum,
                         float eps) {
    UNREACHABLE("cuda_bn2d_fwd_train");
}
void cuda_bn2d_fwd_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                        const float *running_mean, const float *running_var, float eps) {
    UNREACHABLE("cuda_bn2d_fwd_eval");
}
void cuda_bn2d_bwd(int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,
                   const float *dy, float *dx, float *dgamma, float *dbeta) {
    UNREACHABLE("cuda_bn2d_bwd");
}

/* ---- later API (math modes, libraries, timers, convolutions, GEMMs, step ops, VQ, V3 statistics) ---- */
int cuda_libs_load(void) { return v3_error("cannot load cuBLAS/cuDNN: %s", NO_CUDA); }
void cuda_set_math(V3Math m) { (void)m; }
V3Math cuda_get_math(void) { return V3_MATH_FP32; }
CudaTimer *cuda_timer_create(void) {
    UNREACHABLE("cuda_timer_create");
    return NULL;
}
void cuda_timer_destroy(CudaTimer *t) { if (t) UNREACHABLE("cuda_timer_destroy"); }
void cuda_timer_start(CudaTimer *t) { UNREACHABLE("cuda_timer_start"); }
double cuda_timer_stop_ms(CudaTimer *t) {
    UNREACHABLE("cuda_timer_stop_ms");
    return 0;
}
CudaConv *cuda_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    v3_error("cuda_conv_plan: %s", NO_CUDA);
    return NULL;
}
void cuda_conv_destroy(CudaConv *c) { if (c) UNREACHABLE("cuda_conv_destroy"); }
void cuda_conv_fwd(const CudaConv *c, const float *x, const float *w, const float *b, float *y) {
    UNREACHABLE("cuda_conv_fwd");
}
void cuda_conv_bwd(const CudaConv *c, const float *x, const float *w, const float *dy, float *dx, float *dw,
                   float *db) {
    UNREACHABLE("cuda_conv_bwd");
}
const char *cuda_conv_describe(const CudaConv *c) { return NO_CUDA; }
int cuda_conv_algos_save(const char *path) { return v3_error("cuda_conv_algos_save: %s", NO_CUDA); }
int cuda_conv_algos_load(const char *path) { return v3_error("cuda_conv_algos_load: %s", NO_CUDA); }
void cuda_linear_fwd(int N, int in, int out, const float *x, const float *w, const float *b, float *y) {
    UNREACHABLE("cuda_linear_fwd");
}
void cuda_linear_bwd(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
                     float *db) {
    UNREACHABLE("cuda_linear_bwd");
}
void cuda_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc) {
    UNREACHABLE("cuda_sgemm");
}
void cuda_bias_add(int N, int C, int HW, float *y, const float *b) { UNREACHABLE("cuda_bias_add"); }
void cuda_bias_grad(int N, int C, int HW, const float *dy, float *db) { UNREACHABLE("cuda_bias_grad"); }
void cuda_copy_cols(int rows, int cols, const float *src, int lds, float *dst, int ldd) {
    UNREACHABLE("cuda_copy_cols");
}
void cuda_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy) {
    UNREACHABLE("cuda_gelu_fwd_cols");
}
void cuda_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd) {
    UNREACHABLE("cuda_gelu_bwd_cols");
}
void cuda_mse_fwd_dev(size_t n, const float *a, const float *b, double *out) { UNREACHABLE("cuda_mse_fwd_dev"); }
void cuda_ste_value(size_t n, const float *z, const float *q, float *out) { UNREACHABLE("cuda_ste_value"); }
void cuda_axpy_diff(size_t n, double k, const float *a, const float *b, float *g) { UNREACHABLE("cuda_axpy_diff"); }
CudaVq *cuda_vq_create(int K, int d, int N_max) {
    UNREACHABLE("cuda_vq_create");
    return NULL;
}
void cuda_vq_destroy(CudaVq *w) { if (w) UNREACHABLE("cuda_vq_destroy"); }
void cuda_vq_search(CudaVq *w, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum) {
    UNREACHABLE("cuda_vq_search");
}
void cuda_vq_ema(CudaVq *w, float decay, float *embed, float *embed_avg, float *cluster_size) {
    UNREACHABLE("cuda_vq_ema");
}
void cuda_vq_revive(CudaVq *w, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                    float *embed, float *embed_avg, float *cluster_size) {
    UNREACHABLE("cuda_vq_revive");
}
const char *cuda_vq_variant_name(int v) { return "none"; }
int cuda_vq_argmin(CudaVq *w, int variant, int N, const float *x, const float *embed, int *ind) {
    return v3_error("cuda_vq_argmin: %s", NO_CUDA);
}
CudaV3 *cuda_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds) {
    UNREACHABLE("cuda_v3_create");
    return NULL;
}
void cuda_v3_destroy(CudaV3 *w) { if (w) UNREACHABLE("cuda_v3_destroy"); }
void cuda_v3_forward(CudaV3 *w, const float *zc, const float *q, const float *zs) { UNREACHABLE("cuda_v3_forward"); }
void cuda_v3_backward(CudaV3 *w, const float *zc, const float *q, const float *zs, float *gzc, float *gzs) {
    UNREACHABLE("cuda_v3_backward");
}
const double *cuda_v3_stats_dev(const CudaV3 *w) {
    UNREACHABLE("cuda_v3_stats_dev");
    return NULL;
}

void *cuda_host_alloc(size_t bytes) {
    v3_error("cuda_host_alloc: %s", NO_CUDA);
    return NULL;
}
void cuda_host_free(void *p) {
    if (p) UNREACHABLE("cuda_host_free");
}
int cuda_thread_bind(void) { return v3_error("cuda_thread_bind: %s", NO_CUDA); }
CudaCopyStream *cuda_copy_stream_create(void) {
    v3_error("cuda_copy_stream_create: %s", NO_CUDA);
    return NULL;
}
void cuda_copy_stream_destroy(CudaCopyStream *c) {
    if (c) UNREACHABLE("cuda_copy_stream_destroy");
}
int cuda_copy_stream_h2d(CudaCopyStream *c, void *dst, const void *src, size_t bytes) {
    return v3_error("cuda_copy_stream_h2d: %s", NO_CUDA);
}

/* InsNotes features on the GPU: unavailable, so the loader reports it instead of falling back to the CPU. */
CudaStft *cuda_stft_create(void) {
    v3_error("GPU STFT: this build has no CUDA support (built without CUDA: nvcc was not found at build time)");
    return NULL;
}
void cuda_stft_destroy(CudaStft *s) {
    if (s) UNREACHABLE("cuda_stft_destroy");
}
int cuda_stft_features(CudaStft *s, const float *audio, int B, int n_frag, const int32_t *mask, float *out_dev) {
    return v3_error("cuda_stft_features: %s", NO_CUDA);
}

/* Griffin-Lim on the GPU (include/griffinlim.h): unavailable; griffinlim_cpu is the working path. */
#include "griffinlim.h"
int griffinlim_gpu(const float *mag, int frames, int iters, uint64_t seed, float *audio) {
    return v3_error("GPU Griffin-Lim: this build has no CUDA support (built without CUDA: nvcc was not found at "
                    "build time); use griffinlim_cpu");
}
