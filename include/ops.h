/* The op API. Every op has a plain C reference (ops_cpu_*.c, the specification) and, where the CUDA backend
 * provides it, a kernel in kernels/ with the same semantics. Layout conventions (all row-major, float32):
 *   images   [N, C, H, W]                      conv weights  [Cout, Cin, kh, kw]
 *   convT weights [Cin, Cout, kh, kw] (PyTorch ConvTranspose2d layout)   linear weights [out, in]
 * Backward functions OVERWRITE input gradients (dx) and ACCUMULATE (+=) parameter gradients (dw, db),
 * so a step zeroes parameter gradients once and layers can share nothing. Long sums accumulate in double. */
#ifndef V3_OPS_H
#define V3_OPS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int cin, cout, kh, kw, sh, sw, ph, pw;
} ConvGeom;

static inline int conv_out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* The conv ops lower to im2col + one OpenBLAS GEMM per chunk of images; their scratch buffer is internal
 * (grown on demand, capped so large models process the batch in chunks). */

/* conv2d: x [N,cin,H,W], w [cout,cin,kh,kw], b [cout] (may be NULL) -> y [N,cout,Ho,Wo] */
void cpu_conv2d_fwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *b,
                    float *y);
/* dx may be NULL (first layer); dw, db accumulate (db may be NULL). */
void cpu_conv2d_bwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *dy,
                    float *dx, float *dw, float *db);
/* Transposed conv, stride 1, padding (ph,pw), same spatial size when k = 2p+1:
 * x [N,cin,H,W], w [cin,cout,kh,kw], b [cout] -> y [N,cout,H+kh-1-2ph, W+kw-1-2pw]. g->sh = g->sw must be 1. */
void cpu_convT2d_fwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *b,
                     float *y);
void cpu_convT2d_bwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *dy,
                     float *dx, float *dw, float *db);

/* BatchNorm2d, train mode: batch statistics over (N,H,W) per channel, biased variance for normalising;
 * running_mean/var updated with momentum and the unbiased variance (if running_* not NULL).
 * Saves mean[C] and invstd[C] for the backward pass. */
void cpu_bn2d_fwd_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                        float *mean, float *invstd, float *running_mean, float *running_var, float momentum,
                        float eps);
/* Eval mode: running statistics. */
void cpu_bn2d_fwd_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                       const float *running_mean, const float *running_var, float eps);
/* Backward of the train-mode forward (batch statistics). dx overwritten, dgamma/dbeta accumulate. */
void cpu_bn2d_bwd(int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,
                  const float *dy, float *dx, float *dgamma, float *dbeta);

/* Exact erf GELU. */
void cpu_gelu_fwd(size_t n, const float *x, float *y);
void cpu_gelu_bwd(size_t n, const float *x, const float *dy, float *dx); /* dx = dy * gelu'(x) */

/* Linear: x [N,in], w [out,in], b [out] -> y [N,out]. dx may be NULL. */
void cpu_linear_fwd(int N, int in, int out, const float *x, const float *w, const float *b, float *y);
void cpu_linear_bwd(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
                    float *db);

/* Nearest upsampling by integer factors (fh, fw): x [N,C,H,W] -> y [N,C,H*fh,W*fw]. */
void cpu_upsample_fwd(int N, int C, int H, int W, int fh, int fw, const float *x, float *y);
void cpu_upsample_bwd(int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx);

/* Mean squared error mean((a-b)^2) with double accumulation; backward writes da = scale * 2 (a-b) / n. */
double cpu_mse_fwd(size_t n, const float *a, const float *b);
void cpu_mse_bwd(size_t n, const float *a, const float *b, float scale, float *da);

/* y += x */
void cpu_add_inplace(size_t n, float *y, const float *x);

/* AdamW (PyTorch semantics): p *= (1 - lr*wd); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). t is the 1-based step count. */
void cpu_adamw(size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2,
               float eps, float wd, long t);

/* Call once at start-up: one OpenBLAS thread unless OPENBLAS_NUM_THREADS is set (see ops_gemm.c). */
void cpu_gemm_init(void);
/* The GEMM the CPU ops use (OpenBLAS): C[M,N] = alpha * op(A) op(B) + beta * C, row-major. */
void cpu_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);
#ifdef __cplusplus
}
#endif
#endif
