/* The reference backend ("ref"): plain C, the specification every other backend is tested against
 * (tests/test_backend_ops.c). Its table ops are declared from the op list (op_list.h, which also states their
 * semantics, shapes and conventions); below are the reference functions the table is built on. */
#ifndef V3_OPS_H
#define V3_OPS_H
#include <stddef.h>
#include <stdint.h>

#include "op_list.h"

#ifdef __cplusplus
extern "C" {
#endif

V3_ALL_OPS(V3_DECLARE_REF)
/* db[c] += sum over n and pixels of dy [N, C, HW], in double (convolution bias gradients; also the cpu backend's) */
void ref_bias_grad(const float *dy, int N, int C, size_t HW, float *db);

/* The convolutions behind ref_conv_fwd/bwd: im2col + one OpenBLAS GEMM per chunk of images, with an internal
 * scratch buffer (grown on demand, capped so large models process the batch in chunks).
 * conv2d: x [N,cin,H,W], w [cout,cin,kh,kw], b [cout] (may be NULL) -> y [N,cout,Ho,Wo].
 * convT2d (stride 1): x [N,cin,H,W], w [cin,cout,kh,kw] -> y [N,cout,H+kh-1-2ph, W+kw-1-2pw]. */
void ref_conv2d_fwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *b,
                    float *y);
void ref_conv2d_bwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *dy,
                    float *dx, float *dw, float *db);
void ref_convT2d_fwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *b,
                     float *y);
void ref_convT2d_bwd(const ConvGeom *g, int N, int H, int W, const float *x, const float *w, const float *dy,
                     float *dx, float *dw, float *db);
/* mean((a-b)^2) with double accumulation, returned (ref_mse_fwd writes it to memory). */
double ref_mse(size_t n, const float *a, const float *b);

/* Call once at start-up: one OpenBLAS thread unless OPENBLAS_NUM_THREADS is set (see ops_gemm.c). */
void cpu_gemm_init(void);
/* The GEMM the CPU ops use (OpenBLAS): C[M,N] = alpha * op(A) op(B) + beta * C, row-major. */
void cpu_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);
/* The SGEMM ceiling of this machine on `threads` OpenBLAS threads for an n x n x n problem, GFLOP/s (benchmarks). */
double cpu_sgemm_ceiling(int threads, int n);
#ifdef __cplusplus
}
#endif
#endif
