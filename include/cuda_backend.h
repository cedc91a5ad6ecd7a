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

#include "ops.h"
#include "v3loss.h"

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
/* Data streaming (host/loader.c). cuda_host_alloc: pinned host memory (NULL with a v3_error on failure).
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
/* Grows the backend's shared reduction scratch to at least `bytes` now (BatchNorm, bias gradients, MSE use it),
 * so that no step allocates device memory. */
void cuda_scratch_reserve(size_t bytes);

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

/* ---- math modes (cuDNN convolutions and cuBLAS GEMMs; everything else is always float32) ----
 * FP32: exact float32 (no TF32 anywhere: cuDNN FMA math, cuBLAS CUBLAS_COMPUTE_32F).
 * TF32: tensor cores with TF32 inputs, float32 accumulation and storage.
 * BF16: tensor cores with bfloat16 inputs, float32 accumulation; weights, gradients and optimiser state stay
 *       float32 (master weights), activations are converted around each GEMM/convolution. */
typedef enum { V3_MATH_FP32 = 0, V3_MATH_TF32 = 1, V3_MATH_BF16 = 2 } V3Math;
/* "fp32" | "tf32" | "bf16" -> mode; -1 + v3_error for anything else. (host/cuda_common.c) */
int v3_math_parse(const char *s, V3Math *out);
const char *v3_math_name(V3Math m);

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

/* ---- convolutions (kernels/cudnn_conv.cu): cuDNN, one plan per layer shape ----
 * A plan fixes geometry, batch N, input size H x W, transposed or not, and the math mode. Creating it picks the
 * forward, backward-data and backward-filter algorithms once (cudnnFind on scratch buffers, deterministic
 * algorithms only, exact-fp32 algorithms only in FP32 mode), logs the choice (v3_log), and reserves the shared
 * workspace it needs; running it allocates nothing. Semantics exactly as cpu_conv2d_* / cpu_convT2d_* (ops.h):
 * fwd writes y (bias added when b != NULL); bwd OVERWRITES dx (skipped when NULL) and ACCUMULATES dw and db
 * (db may be NULL). All pointers are device pointers. Returns NULL + v3_error on failure. */
typedef struct CudaConv CudaConv;
CudaConv *cuda_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math);
void cuda_conv_destroy(CudaConv *c);
void cuda_conv_fwd(const CudaConv *c, const float *x, const float *w, const float *b, float *y);
void cuda_conv_bwd(const CudaConv *c, const float *x, const float *w, const float *dy, float *dx, float *dw,
                   float *db);
/* One line describing the plan's algorithms, e.g. "conv 64->64 3x3 s1 [384,64,512,32] fp32: fwd IMPLICIT_GEMM ..." */
const char *cuda_conv_describe(const CudaConv *c);

/* The process's algorithm choices (one per shape and math mode), saved as text and loaded back: a resumed run
 * loads the choices of the run it continues, so it uses the same algorithms and stays bit-identical. */
int cuda_conv_algos_save(const char *path);
int cuda_conv_algos_load(const char *path);

/* ---- GEMMs (kernels/cublas_linear.cu): cuBLAS in the current math mode ----
 * Linear layers with the semantics of cpu_linear_* (x [N,in], w [out,in], b [out]; bwd overwrites dx (may be
 * NULL), accumulates dw and db). cuda_sgemm is cpu_sgemm's twin (row-major, C = alpha op(A) op(B) + beta C). */
void cuda_linear_fwd(int N, int in, int out, const float *x, const float *w, const float *b, float *y);
void cuda_linear_bwd(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
                     float *db);
void cuda_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc);

/* ---- small step ops (kernels/step_ops.cu) ---- */
/* y[n, c, hw] += b[c] over an [N, C, HW] tensor (HW = 1 for linear layers). */
void cuda_bias_add(int N, int C, int HW, float *y, const float *b);
/* db[c] += sum over n, hw of dy[n, c, hw], deterministic (fixed-order double partials). */
void cuda_bias_grad(int N, int C, int HW, const float *dy, float *db);
/* Column block copy: dst[i*ldd + j] = src[i*lds + j] for i < rows, j < cols. */
void cuda_copy_cols(int rows, int cols, const float *src, int lds, float *dst, int ldd);
/* GELU on a column block: y[i*ldy + j] = gelu(x[i*ldx + j]). */
void cuda_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy);
/* dx[i*ldd + j] = dy[i*lddy + j] * gelu'(x[i*ldx + j]) (dx may alias dy when the strides agree). */
void cuda_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd);
/* *out = mean((a-b)^2) in double, written to DEVICE memory, deterministic, no synchronisation. */
void cuda_mse_fwd_dev(size_t n, const float *a, const float *b, double *out);
/* out[i] = z[i] + (q[i] - z[i]) rounded as in float32 host code: v3_ste_value on the device. */
void cuda_ste_value(size_t n, const float *z, const float *q, float *out);
/* g[i] += k * (a[i] - b[i]) (commitment gradient); b == NULL means 0. */
void cuda_axpy_diff(size_t n, double k, const float *a, const float *b, float *g);

/* ---- vector quantiser (kernels/vq.cu) ----
 * A workspace for searches of up to N_max rows of dimension d against K codewords. */
typedef struct CudaVq CudaVq;
CudaVq *cuda_vq_create(int K, int d, int N_max);
void cuda_vq_destroy(CudaVq *w);
/* Fused search: ind[i] = argmin_k ||x_i - embed_k||^2 (lowest index on exact ties, as vq_assign), q[i] =
 * embed[ind[i]], *commit_sum = sum_i ||q_i - x_i||^2 (double, device pointer, deterministic), and the per-code
 * counts and row sums of this batch kept in the workspace for cuda_vq_ema. x, embed, ind, q, commit_sum are
 * device pointers. Production path for small codebooks (K*d floats fit in shared memory). */
void cuda_vq_search(CudaVq *w, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum);
/* EMA update from the last cuda_vq_search (same x, ind): cluster_size, embed_avg, embed as vq_ema_update
 * without the dead-code step (decay lambda, Laplace smoothing eps 1e-5). Device pointers. */
void cuda_vq_ema(CudaVq *w, float decay, float *embed, float *embed_avg, float *cluster_size);
/* Dead-code revival: for i < ndead, code dead[i] takes row rows[i] of x [N,d], cluster_size = threshold,
 * embed_avg = threshold * embed. dead and rows are HOST arrays (chosen by the host with the CPU's RNG). */
void cuda_vq_revive(CudaVq *w, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                    float *embed, float *embed_avg, float *cluster_size);
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

/* ---- V3 statistics (kernels/v3stats.cu) ----
 * Forward and backward of v3_loss (v3loss.h) on the device, deterministic (no floating-point atomics). */
typedef struct CudaV3 CudaV3;
CudaV3 *cuda_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds);
void cuda_v3_destroy(CudaV3 *w);
/* Statistics, hinges and the backward scalars, left on the device (no synchronisation). */
void cuda_v3_forward(CudaV3 *w, const float *zc, const float *q, const float *zs);
/* ADDS the gradient of the weighted loss to gzc [N,dc] and gzs [N,ds] (q's share goes to zc), using the last
 * forward's statistics; the inputs must be the same as that forward's. */
void cuda_v3_backward(CudaV3 *w, const float *zc, const float *q, const float *zs, float *gzc, float *gzs);
/* Device pointer to V3_STATS_DOUBLES doubles: Fc, Sc, Fs, Ss, Ss_ss, content, style, sample, fragment, weighted
 * (for one batched copy of all step scalars); v3_stats_unpack fills a V3Stats from such a block. */
#define V3_STATS_DOUBLES 10
const double *cuda_v3_stats_dev(const CudaV3 *w);
static inline void v3_stats_unpack(const double *v, int nB, int nn, V3Stats *st) {
    st->Fc = v[0]; st->Sc = v[1]; st->Fs = v[2]; st->Ss = v[3]; st->Ss_ss = v[4];
    st->content = v[5]; st->style = v[6]; st->sample = v[7]; st->fragment = v[8]; st->weighted = v[9];
    st->nB = nB; st->nn = nn;
}

#ifdef __cplusplus
}
#endif
#endif
