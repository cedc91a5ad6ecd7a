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
