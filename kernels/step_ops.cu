/* Small kernels the GPU training step needs around the library calls: bias add and bias gradient (per channel,
 * deterministic), column-block copies and GELUs (the split of the encoder head into content/style halves and
 * the decoder's concatenation), the MSE written to device memory (no synchronisation), and the commitment
 * gradient. Arithmetic mirrors the CPU reference: GELU in double, reductions in double in a fixed order. */
#include <math.h>

#include "cuda_backend.h"
#include "cuda_check.h"

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---- bias ---- */

__global__ void bias_add_kernel(size_t total, int C, int HW, float *__restrict__ y, const float *__restrict__ b) {
    GRID_STRIDE(i, total) y[i] += b[(i / (size_t)HW) % (size_t)C];
}

extern "C" void cuda_bias_add(int N, int C, int HW, float *y, const float *b) {
    size_t total = (size_t)N * C * HW;
    if (!total || !b) return;
    bias_add_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, v3cu_stream()>>>(total, C, HW, y, b);
    CUDA_CHECK_LAUNCH();
}

/* Fixed-order tree sum over a block of V3CU_BLOCK threads; result valid in thread 0. */
static __device__ double block_sum_d(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = V3CU_BLOCK / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads(); /* sh may be reused by the caller */
    return r;
}

/* Bias gradient, stage 1: grid (C, S). Block (c, s) sums chunk s of channel c's M = N*HW elements (element m is
 * dy[(m / HW) * C * HW + c * HW + m % HW]) into part[c * S + s]. The split depends only on the shape. */
__global__ void bias_grad_partial_kernel(int C, int HW, size_t M, size_t chunk, int S, const float *__restrict__ dy,
                                         double *__restrict__ part) {
    __shared__ double sh[V3CU_BLOCK];
    int c = blockIdx.x, s = blockIdx.y;
    size_t lo = (size_t)s * chunk, hi = lo + chunk < M ? lo + chunk : M;
    double acc = 0;
    for (size_t m = lo + threadIdx.x; m < hi; m += V3CU_BLOCK) {
        size_t n = m / (size_t)HW, p = m % (size_t)HW;
        acc += dy[(n * C + c) * (size_t)HW + p];
    }
    double t = block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[(size_t)c * S + s] = t;
}

/* Stage 2: one thread per channel adds its S partials in order and accumulates into db. */
__global__ void bias_grad_final_kernel(int C, int S, const double *__restrict__ part, float *__restrict__ db) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s = 0;
    for (int k = 0; k < S; k++) s += part[(size_t)c * S + k];
    db[c] = (float)((double)db[c] + s);
}

extern "C" void cuda_bias_grad(int N, int C, int HW, const float *dy, float *db) {
    if (!db || C <= 0) return;
    size_t M = (size_t)N * HW;
    if (!M) return;
    size_t chunk = 4096;
    size_t S = (M + chunk - 1) / chunk;
    if (S > 256) {
        S = 256;
        chunk = (M + S - 1) / S;
    }
    double *part = (double *)v3cu_scratch((size_t)C * S * sizeof(double));
    cudaStream_t st = v3cu_stream();
    bias_grad_partial_kernel<<<dim3((unsigned)C, (unsigned)S), V3CU_BLOCK, 0, st>>>(C, HW, M, chunk, (int)S, dy, part);
    CUDA_CHECK_LAUNCH();
    bias_grad_final_kernel<<<(C + V3CU_BLOCK - 1) / V3CU_BLOCK, V3CU_BLOCK, 0, st>>>(C, (int)S, part, db);
    CUDA_CHECK_LAUNCH();
}

/* ---- column blocks ---- */

__global__ void copy_cols_kernel(size_t total, int cols, const float *__restrict__ src, int lds, float *__restrict__ dst,
                                 int ldd) {
    GRID_STRIDE(i, total) {
        size_t r = i / (size_t)cols, c = i % (size_t)cols;
        dst[r * ldd + c] = src[r * lds + c];
    }
}

extern "C" void cuda_copy_cols(int rows, int cols, const float *src, int lds, float *dst, int ldd) {
    size_t total = (size_t)rows * cols;
    if (!total) return;
    copy_cols_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, v3cu_stream()>>>(total, cols, src, lds, dst, ldd);
    CUDA_CHECK_LAUNCH();
}

__global__ void gelu_fwd_cols_kernel(size_t total, int cols, const float *__restrict__ x, int ldx,
                                     float *__restrict__ y, int ldy) {
    GRID_STRIDE(i, total) {
        size_t r = i / (size_t)cols, c = i % (size_t)cols;
        double v = x[r * ldx + c];
        y[r * ldy + c] = (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
    }
}

extern "C" void cuda_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy) {
    size_t total = (size_t)rows * cols;
    if (!total) return;
    gelu_fwd_cols_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, v3cu_stream()>>>(total, cols, x, ldx, y, ldy);
    CUDA_CHECK_LAUNCH();
}

/* dx may alias dy (same element read then written by one thread), so no __restrict__ on them. */
__global__ void gelu_bwd_cols_kernel(size_t total, int cols, const float *__restrict__ x, int ldx, const float *dy,
                                     int lddy, float *dx, int ldd) {
    GRID_STRIDE(i, total) {
        size_t r = i / (size_t)cols, c = i % (size_t)cols;
        double v = x[r * ldx + c];
        double cdf = 0.5 * (1.0 + erf(v * 0.70710678118654752440));
        double pdf = exp(-0.5 * v * v) * 0.39894228040143267794;
        dx[r * ldd + c] = (float)(dy[r * lddy + c] * (cdf + v * pdf));
    }
}

extern "C" void cuda_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx,
                                   int ldd) {
    size_t total = (size_t)rows * cols;
    if (!total) return;
    gelu_bwd_cols_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, v3cu_stream()>>>(total, cols, x, ldx, dy, lddy, dx, ldd);
    CUDA_CHECK_LAUNCH();
}

/* ---- straight-through value as PyTorch forms it (tie_gradient: pytorch) ---- */

/* out = z + (q - z), each operation rounded to nearest in float32 (__fsub_rn/__fadd_rn cannot be contracted or
 * reassociated), bit-identical to v3_ste_value on the host. */
__global__ void ste_value_kernel(size_t n, const float *__restrict__ z, const float *__restrict__ q,
                                 float *__restrict__ out) {
    GRID_STRIDE(i, n) out[i] = __fadd_rn(z[i], __fsub_rn(q[i], z[i]));
}

extern "C" void cuda_ste_value(size_t n, const float *z, const float *q, float *out) {
    if (!n) return;
    ste_value_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, z, q, out);
    CUDA_CHECK_LAUNCH();
}

/* ---- commitment gradient ---- */

__global__ void axpy_diff_kernel(size_t n, double k, const float *__restrict__ a, const float *__restrict__ b,
                                 float *__restrict__ g) {
    GRID_STRIDE(i, n) g[i] += (float)(k * ((double)a[i] - (b ? (double)b[i] : 0.0)));
}

extern "C" void cuda_axpy_diff(size_t n, double k, const float *a, const float *b, float *g) {
    if (!n) return;
    axpy_diff_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, k, a, b, g);
    CUDA_CHECK_LAUNCH();
}
