/* Elementwise kernels: exact-erf GELU (forward/backward), nearest upsampling (forward/backward), y += x, and
 * the mean squared error (forward: deterministic two-stage reduction; backward: elementwise).
 * Arithmetic mirrors the CPU reference (host/ref/elementwise.c) operation for operation: GELU in double,
 * upsampling backward sums the fh*fw window in float in the same order, MSE in double. */
#include <math.h>

#include "cuda_backend.h"
#include "cuda_check.h"

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void gelu_fwd_kernel(size_t n, const float *__restrict__ x, float *__restrict__ y) {
    GRID_STRIDE(i, n) {
        double v = x[i];
        y[i] = (float)(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)));
    }
}

__global__ void gelu_bwd_kernel(size_t n, const float *__restrict__ x, const float *__restrict__ dy,
                                float *__restrict__ dx) {
    GRID_STRIDE(i, n) {
        double v = x[i];
        double cdf = 0.5 * (1.0 + erf(v * 0.70710678118654752440));
        double pdf = exp(-0.5 * v * v) * 0.39894228040143267794;
        dx[i] = (float)(dy[i] * (cdf + v * pdf));
    }
}

extern "C" void cuda_gelu_fwd(size_t n, const float *x, float *y) {
    if (!n) return;
    gelu_fwd_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, x, y);
    CUDA_CHECK_LAUNCH();
}

extern "C" void cuda_gelu_bwd(size_t n, const float *x, const float *dy, float *dx) {
    if (!n) return;
    gelu_bwd_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, x, dy, dx);
    CUDA_CHECK_LAUNCH();
}

/* One thread per output element: y[p, oh, ow] = x[p, oh/fh, ow/fw] (p = n*C + c). */
__global__ void upsample_fwd_kernel(size_t total, int H, int W, int fh, int fw, const float *__restrict__ x,
                                    float *__restrict__ y) {
    size_t Ho = (size_t)H * fh, Wo = (size_t)W * fw;
    GRID_STRIDE(i, total) {
        size_t ow = i % Wo, t = i / Wo;
        size_t oh = t % Ho, p = t / Ho;
        y[i] = x[(p * H + oh / fh) * W + ow / fw];
    }
}

/* One thread per input element: dx[p, h, w] = sum over the fh x fw window of dy (float, row-major order). */
__global__ void upsample_bwd_kernel(size_t total, int H, int W, int fh, int fw, const float *__restrict__ dy,
                                    float *__restrict__ dx) {
    size_t Wo = (size_t)W * fw, Ho = (size_t)H * fh;
    GRID_STRIDE(i, total) {
        size_t w = i % W, t = i / W;
        size_t h = t % H, p = t / H;
        const float *d = dy + (p * Ho + h * fh) * Wo + w * fw;
        float s = 0;
        for (int a = 0; a < fh; a++)
            for (int b = 0; b < fw; b++) s += d[(size_t)a * Wo + b];
        dx[i] = s;
    }
}

extern "C" void cuda_upsample_fwd(int N, int C, int H, int W, int fh, int fw, const float *x, float *y) {
    size_t total = (size_t)N * C * H * fh * W * fw;
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || fh <= 0 || fw <= 0) return;
    upsample_fwd_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, v3cu_stream()>>>(total, H, W, fh, fw, x, y);
    CUDA_CHECK_LAUNCH();
}

extern "C" void cuda_upsample_bwd(int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx) {
    size_t total = (size_t)N * C * H * W;
    if (N <= 0 || C <= 0 || H <= 0 || W <= 0 || fh <= 0 || fw <= 0) return;
    upsample_bwd_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, v3cu_stream()>>>(total, H, W, fh, fw, dy, dx);
    CUDA_CHECK_LAUNCH();
}

__global__ void add_inplace_kernel(size_t n, float *__restrict__ y, const float *__restrict__ x) {
    GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" void cuda_add_inplace(size_t n, float *y, const float *x) {
    if (!n) return;
    add_inplace_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, y, x);
    CUDA_CHECK_LAUNCH();
}

/* Tree sum of one double per thread over a block of V3CU_BLOCK threads (fixed order); result in thread 0. */
__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = V3CU_BLOCK / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    return sh[0];
}

/* Stage 1: block b sums (a-b)^2 over its grid-stride share into part[b]. The grid size depends only on n, so
 * the partition, and with it the rounding, is the same on every run and every device. */
#define MSE_MAX_BLOCKS 1024
__global__ void mse_partial_kernel(size_t n, const float *__restrict__ a, const float *__restrict__ b,
                                   double *__restrict__ part) {
    __shared__ double sh[V3CU_BLOCK];
    double s = 0;
    GRID_STRIDE(i, n) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    double t = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = t;
}

/* Stage 2: one block sums the m partials in a fixed order and scales the sum (1/n: the mean). */
__global__ void sum_partials_kernel(int m, const double *__restrict__ part, double scale, double *__restrict__ out) {
    __shared__ double sh[V3CU_BLOCK];
    double s = 0;
    for (int i = threadIdx.x; i < m; i += V3CU_BLOCK) s += part[i];
    double t = block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = t * scale;
}

/* The mean into device memory, no synchronisation (the training step reads it with its other scalars). */
extern "C" void cuda_mse_fwd(size_t n, const float *a, const float *b, double *out) {
    size_t g = (n + V3CU_BLOCK - 1) / V3CU_BLOCK;
    int blocks = g > MSE_MAX_BLOCKS ? MSE_MAX_BLOCKS : (g ? (int)g : 1);
    double *part = (double *)v3cu_scratch(MSE_MAX_BLOCKS * sizeof(double));
    cudaStream_t s = v3cu_stream();
    mse_partial_kernel<<<blocks, V3CU_BLOCK, 0, s>>>(n, a, b, part);
    CUDA_CHECK_LAUNCH();
    sum_partials_kernel<<<1, V3CU_BLOCK, 0, s>>>(blocks, part, n ? 1.0 / (double)n : NAN, out);
    CUDA_CHECK_LAUNCH();
}

extern "C" double cuda_mse_value(size_t n, const float *a, const float *b) {
    if (!n) return NAN; /* mean of nothing, as the CPU reference (0/0) */
    double *res = (double *)v3cu_scratch((MSE_MAX_BLOCKS + 1) * sizeof(double)) + MSE_MAX_BLOCKS;
    cuda_mse_fwd(n, a, b, res);
    double mean = 0;
    cudaStream_t s = v3cu_stream();
    CUDA_CHECK(cudaMemcpyAsync(&mean, res, sizeof mean, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return mean;
}

__global__ void mse_bwd_kernel(size_t n, const float *__restrict__ a, const float *__restrict__ b, double k,
                               float *__restrict__ da) {
    GRID_STRIDE(i, n) da[i] = (float)(k * ((double)a[i] - b[i]));
}

extern "C" void cuda_mse_bwd(size_t n, const float *a, const float *b, float scale, float *da) {
    if (!n) return;
    double k = 2.0 * scale / (double)n;
    mse_bwd_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, a, b, k, da);
    CUDA_CHECK_LAUNCH();
}

/* Per-thread counts, summed in each block, one integer atomicAdd per block: exact and order-independent. */
__global__ void count_nonfinite_kernel(size_t n, const float *__restrict__ x, unsigned long long *count) {
    __shared__ unsigned long long part[V3CU_BLOCK];
    unsigned long long c = 0;
    GRID_STRIDE(i, n) c += !isfinite(x[i]);
    part[threadIdx.x] = c;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0 && part[0]) atomicAdd(count, part[0]);
}

extern "C" void cuda_count_nonfinite(size_t n, const float *x, unsigned long long *count) {
    CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof *count, v3cu_stream()));
    if (!n) return;
    count_nonfinite_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, x, count);
    CUDA_CHECK_LAUNCH();
}
