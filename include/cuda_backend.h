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
#include <stdint.h>

#include "op_list.h"

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

/* The table ops (op_list.h) on the device, as cuda_<name>: every pointer a device pointer unless the op list
 * says HOST. Copies are ordered on the backend stream and complete before returning (host buffers may be
 * pageable); memset 0xFF gives NaN floats. Implemented in kernels/: elementwise.cu (GELU, upsampling, add, MSE),
 * step_ops.cu (column ops, straight-through value, commitment gradient), batchnorm.cu, cudnn_conv.cu
 * (convolutions: a plan picks its cuDNN algorithms once, deterministic and, in FP32, exact-fp32 algorithms only,
 * logs the choice and reserves its workspace; running it allocates nothing; algos_save/load keep the choices of
 * a run for its resume), cublas_linear.cu (linear layers in the current math mode), vq.cu (fused nearest-code
 * search for codebooks that fit in shared memory; EMA; revival), v3loss.cu (V3 statistics), adamw.cu. */
V3_ALL_OPS(V3_DECLARE_CUDA)
/* mean((a-b)^2) returned to the host (cuda_mse_fwd plus one copy; synchronises). */
double cuda_mse_value(size_t n, const float *a, const float *b);

/* Data streaming (host/train/loader.c). cuda_host_alloc: pinned host memory (NULL with a v3_error on failure).
 * cuda_thread_bind: select cuda_init's device in the calling thread (the current device is per thread).
 * A copy stream uploads batches beside the backend stream; cuda_copy_stream_h2d waits for that stream only. */
void *cuda_host_alloc(size_t bytes);
void cuda_host_free(void *p);
int cuda_thread_bind(void);
typedef struct CudaCopyStream CudaCopyStream;
CudaCopyStream *cuda_copy_stream_create(void);
void cuda_copy_stream_destroy(CudaCopyStream *c);
int cuda_copy_stream_h2d(CudaCopyStream *c, void *dst, const void *src, size_t bytes);
/* InsNotes features on the device (kernels/stft.cu), for the loader's device batches: from a DataSource's
 * get_raw (include/datasource.h) to the x get_batch would give, without a round trip through the host.
 * cuda_stft_features uploads n = B * n_frag blocks of INSNOTES_FRAG_AUDIO samples from host `audio`
 * (asynchronously when it is pinned, cuda_host_alloc), computes include/stft.h's log-magnitude STFT (cuFFT R2C),
 * sets rows [mask[2b], mask[2b] + mask[2b+1]) of sample b's fragments to 0, then every exact 0 to 1e-8, and
 * writes out_dev (DEVICE, [n][512][32]). It runs on the workspace's own stream and returns when out_dev is
 * complete, so the backend stream may read it next; call it from a thread bound to cuda_init's device. The
 * workspace loads cuFFT with dlopen and grows its buffers (and remakes its plan) when n changes. Unlike the
 * kernels above, failures are returned, never fatal and never a CPU fallback: NULL or -1 with a v3_error naming
 * what is missing (no device, no cuFFT) or wrong (counts < 1). */
typedef struct CudaStft CudaStft;
CudaStft *cuda_stft_create(void);
void cuda_stft_destroy(CudaStft *s);
int cuda_stft_features(CudaStft *s, const float *audio, int B, int n_frag, const int32_t *mask, float *out_dev);


/* ---- libraries loaded at run time (kernels/cuda_libs.cu) ----
 * cuBLAS and cuDNN are dlopen()ed on first use, so the binary starts (and the CPU path runs) on machines without
 * them. Returns 0, or -1 with a v3_error naming the library that is missing and the file names tried. */
int cuda_libs_load(void);
/* Math mode for GEMMs issued after this call (cuda_linear_*, cuda_sgemm). Convolution plans take theirs at
 * creation. Default V3_MATH_FP32. */
void cuda_set_math(V3Math m);
V3Math cuda_get_math(void);

/* ---- timing (kernels/cuda_runtime.cu): CUDA events on the backend stream ---- */
typedef struct CudaTimer CudaTimer;
CudaTimer *cuda_timer_create(void);
void cuda_timer_destroy(CudaTimer *t);
void cuda_timer_start(CudaTimer *t);
/* Records the stop event, waits for it and returns the milliseconds since cuda_timer_start. */
double cuda_timer_stop_ms(CudaTimer *t);

/* ---- convolution plans (kernels/cudnn_conv.cu): cuda_conv_plan returns a CudaConv ---- */
typedef struct CudaConv CudaConv;
/* One line describing the plan's algorithms, e.g. "conv 64->64 3x3 s1 [384,64,512,32] fp32: fwd IMPLICIT_GEMM ..." */
const char *cuda_conv_describe(const CudaConv *c);


/* ---- GEMMs (kernels/cublas_linear.cu): cuBLAS in the current math mode ----
 * cuda_sgemm is cpu_sgemm's twin (row-major, C = alpha op(A) op(B) + beta C). */
void cuda_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc);

/* ---- small step ops (kernels/step_ops.cu) ---- */
/* y[n, c, hw] += b[c] over an [N, C, HW] tensor (HW = 1 for linear layers). */
void cuda_bias_add(int N, int C, int HW, float *y, const float *b);
/* db[c] += sum over n, hw of dy[n, c, hw], deterministic (fixed-order double partials). */
void cuda_bias_grad(int N, int C, int HW, const float *dy, float *db);

/* ---- vector quantiser (kernels/vq.cu): cuda_vq_create returns a CudaVq; cuda_v3_create a CudaV3 ---- */
typedef struct CudaVq CudaVq;
typedef struct CudaV3 CudaV3;
/* Test and benchmark knob of kernels/v3loss.cu: force the K2 distance rows into global memory and/or the K2 tile
 * (1..4, 0 = automatic) for workspaces created afterwards (a no-op without CUDA). */
void cuda_v3_debug_options(int force_global_rows, int tile);
/* Search variants for the benchmark and tests: only ind (argmin with lowest-index ties). */
typedef enum {
    VQS_NAIVE = 0,   /* one thread per row, codebook from global memory, difference form */
    VQS_SMALLK = 1,  /* codebook in shared memory, one warp per row (the fused kernel's search) */
    VQS_TILED = 2,   /* large K: register-tiled SIMT micro-GEMM over codeword tiles with a running argmin */
    VQS_GEMM = 3,    /* baseline: cuBLAS GEMM (-2 x.c) into an N x K buffer, then a norm-add + argmin kernel */
    VQS_N_VARIANTS
} VqSearchVariant;
const char *cuda_vq_variant_name(int v);
/* 0 if the variant supports the shape (VQS_SMALLK needs K*d*4 bytes of shared memory), else -1 + v3_error. */
int cuda_vq_argmin(CudaVq *w, int variant, int N, const float *x, const float *embed, int *ind);


#ifdef __cplusplus
}
#endif
#endif
