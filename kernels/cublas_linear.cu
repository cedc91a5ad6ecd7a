/* Linear layers and the row-major SGEMM through cuBLAS (loaded at run time by cuda_libs.cu), in the math mode
 * set by cuda_set_math. All matrices are float (CUDA_R_32F) in and out; the compute type picks the arithmetic:
 *   FP32  CUBLAS_COMPUTE_32F            exact float32 (the handle's math mode is CUBLAS_DEFAULT_MATH: no TF32)
 *   TF32  CUBLAS_COMPUTE_32F_FAST_TF32  tensor cores, inputs rounded to TF32, float accumulation
 *   BF16  CUBLAS_COMPUTE_32F_FAST_16BF  tensor cores, inputs rounded to bfloat16, float accumulation
 * Row-major matrices are handed to column-major cuBLAS as their transposes: a row-major [r, c] matrix M with
 * leading dimension ld is the column-major [c, r] matrix M' = M^T with the same ld. So, with x' [in, N],
 * W' [in, out], y' and dy' [out, N], dx' [in, N], dW' [in, out]:
 *   y  = x W^T     <=>  y'  = W'^T x'       gemm(T, N, m=out, n=N,   k=in;   W' lda=in, x' ldb=in, y' ldc=out)
 *   dx = dy W      <=>  dx' = W' dy'        gemm(N, N, m=in,  n=N,   k=out;  W' lda=in, dy' ldb=out, dx' ldc=in)
 *   dW += dy^T x   <=>  dW' += x' dy'^T     gemm(N, T, m=in,  n=out, k=N;    x' lda=in, dy' ldb=out, dW' ldc=in)
 * cuBLAS is deterministic on one stream with the default (atomics-free) settings. */
#include <stdio.h>

#include "cuda_libs.h"
extern "C" {
#include "common.h"
}

static cublasComputeType_t compute_type(V3Math m) {
    switch (m) {
    case V3_MATH_FP32: return CUBLAS_COMPUTE_32F;
    case V3_MATH_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case V3_MATH_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    }
    V3_FATAL("cuBLAS: unknown math mode %d", (int)m);
    return CUBLAS_COMPUTE_32F;
}

/* Column-major C[m,n] = alpha op(A) op(B) + beta C on float data in the current math mode. m, n, k >= 0; the
 * leading dimensions are clamped to >= 1 (cuBLAS rejects 0 even for empty matrices). */
static void gemm_cm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float *A,
                    int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    v3cu_libs_require("cuBLAS GEMM");
    if (m <= 0 || n <= 0) return;
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    if (ldc < 1) ldc = 1;
    CUBLAS_CHECK(BLAS(cublasGemmEx)(v3_libs.blas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                                    &beta, C, CUDA_R_32F, ldc, compute_type(cuda_get_math()), CUBLAS_GEMM_DEFAULT));
}

extern "C" void cuda_linear_fwd(int N, int in, int out, const float *x, const float *w, const float *b, float *y) {
    if (N <= 0 || out <= 0) return;
    if (in > 0) {
        gemm_cm(CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, 1.0f, w, in, x, in, 0.0f, y, out);
    } else {
        CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * (size_t)N * out, v3cu_stream()));
    }
    if (b) cuda_bias_add(N, out, 1, y, b);
}

extern "C" void cuda_linear_bwd(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db) {
    if (N <= 0) return; /* nothing to accumulate; dx is empty */
    if (dx && in > 0) {
        if (out > 0) gemm_cm(CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, 1.0f, w, in, dy, out, 0.0f, dx, in);
        else CUDA_CHECK(cudaMemsetAsync(dx, 0, sizeof(float) * (size_t)N * in, v3cu_stream()));
    }
    if (in > 0 && out > 0) gemm_cm(CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, 1.0f, x, in, dy, out, 1.0f, dw, in);
    if (db && out > 0) cuda_bias_grad(N, out, 1, dy, db);
}

/* Row-major C[M,N] = alpha op(A) op(B) + beta C is column-major C^T = alpha op(B)^T op(A)^T + beta C^T, and the
 * column-major view of a row-major matrix is its transpose: swap the operands, keep each one's transpose flag. */
extern "C" void cuda_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                           const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 && beta == 1.0f) return;
    gemm_cm(transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, alpha, B, ldb, A, lda,
            beta, C, ldc);
}
