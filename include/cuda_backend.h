/* The CUDA backend's host-side API. Plain C, usable from .c and .cu files; it never includes CUDA headers, so
 * host code compiles the same with or without the toolkit (kernels/cuda_stub.c provides these symbols when the
 * build has no nvcc).
 *
 * Model: one device, one stream. cuda_init() selects the device and creates the stream; every kernel and every
 * copy below runs on that stream, in call order. Kernels take DEVICE pointers and have exactly the semantics and
 * argument order of the cpu_* reference ops in ops.h (see that header for shapes and conventions: backward ops
 * overwrite dx and accumulate dw/db). Kernel wrappers return void: launch failures and asynchronous errors are
 * programming errors or a broken device, reported by CUDA_CHECK (kernels/cuda_check.h) as one line
 * "v3: CUDA error at file:line: ..." and exit(1). Reductions are deterministic (fixed-order partials, double
 * accumulation, no floating-point atomics): the same inputs give bit-identical outputs run to run. */
#ifndef V3_CUDA_BACKEND_H
#define V3_CUDA_BACKEND_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices (compute capability 8.0 or newer: this build carries sm_80 and sm_90 code and
 * compute_90 PTX). With >0, desc receives the first usable device, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)";
 * with 0 it receives the reason ("no CUDA device: <CUDA error string>", or "this build has no CUDA support (nvcc
 * was not found at build time)"). Never crashes, never prints, creates no context. desc may be NULL when n == 0. */
int cuda_probe(char *desc, size_t n);

/* Select CUDA device `device` (a CUDA ordinal) and create the backend's stream. Calling it again with the same
 * device is a no-op. Returns 0, or -1 with a v3_error message. */
int cuda_init(int device);

/* Memory. cuda_malloc_or_die never returns NULL (prints one line and exits on failure; 0 bytes gives a valid
 * 1-byte allocation). cuda_free(NULL) is a no-op. Copies are ordered on the backend stream and complete before
 * returning (host buffers may be pageable). cuda_memset sets `bytes` bytes to `byte` (0xFF gives NaN floats).
 * cuda_sync waits for all queued work; it is where asynchronous kernel faults surface. All int-returning
 * functions give 0, or -1 with a v3_error message. */
void *cuda_malloc_or_die(size_t bytes);
void cuda_free(void *p);
int cuda_h2d(void *dst, const void *src, size_t bytes);
int cuda_d2h(void *dst, const void *src, size_t bytes);
int cuda_memset(void *dst, int byte, size_t bytes);
int cuda_sync(void);

/* Elementwise (kernels/elementwise.cu). */
void cuda_gelu_fwd(size_t n, const float *x, float *y);                   /* exact erf GELU */
void cuda_gelu_bwd(size_t n, const float *x, const float *dy, float *dx); /* dx = dy * gelu'(x) */
void cuda_upsample_fwd(int N, int C, int H, int W, int fh, int fw, const float *x, float *y);
void cuda_upsample_bwd(int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx);
void cuda_add_inplace(size_t n, float *y, const float *x);                /* y += x */
/* mean((a-b)^2), double accumulation; synchronises the stream (the result is returned to the host). */
double cuda_mse_fwd(size_t n, const float *a, const float *b);
void cuda_mse_bwd(size_t n, const float *a, const float *b, float scale, float *da);

/* AdamW, PyTorch semantics, t 1-based (kernels/adamw.cu). */
void cuda_adamw(size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                float eps, float wd, long t);

/* BatchNorm2d (kernels/batchnorm.cu). gamma, beta, mean, invstd, running_* are device arrays of C floats;
 * running_mean/running_var may both be NULL (no update); in cuda_bn2d_bwd dx may be NULL (parameter
 * gradients only). */
void cuda_bn2d_fwd_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                         float *mean, float *invstd, float *running_mean, float *running_var, float momentum,
                         float eps);
void cuda_bn2d_fwd_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                        const float *running_mean, const float *running_var, float eps);
void cuda_bn2d_bwd(int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,
                   const float *dy, float *dx, float *dgamma, float *dbeta);

#ifdef __cplusplus
}
#endif
#endif
