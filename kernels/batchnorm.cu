/* BatchNorm2d over [N, C, HW]: train-mode forward (batch statistics, running-stat update), eval-mode forward,
 * and the backward of the train-mode forward.
 *
 * Per-channel reductions are deterministic two-stage sums in double: a (C, S) grid where block (c, s) sums a
 * fixed contiguous chunk of channel c's M = N*HW elements (block tree, fixed order) into one partial, then one
 * thread per channel adds its S partials in order. S depends only on the shape. No atomics. The statistics are
 * computed as the CPU reference does (host/ref/bn.c): two passes (mean, then the sum of squared deviations), all
 * per-channel coefficients in double with explicitly rounded operations, and the elementwise normalisation
 * y = x*a + b in float without fused multiply-add, so outputs match the reference up to the order of the double
 * sums. */
#include <math.h>

#include "cuda_backend.h"
#include "cuda_check.h"

#define BN_CHUNK_MIN 4096 /* elements per stats block, at least */
#define BN_MAX_SPLIT 256  /* blocks per channel, at most */

typedef struct {
    int S;          /* blocks per channel */
    long long M;    /* elements per channel */
    long long chunk;
} Split;

static Split bn_split(int N, int HW) {
    Split sp;
    sp.M = (long long)N * HW;
    long long s = (sp.M + BN_CHUNK_MIN - 1) / BN_CHUNK_MIN;
    if (s < 1) s = 1;
    if (s > BN_MAX_SPLIT) s = BN_MAX_SPLIT;
    sp.S = (int)s;
    sp.chunk = (sp.M + s - 1) / s;
    return sp;
}

/* Fixed-order tree sums over V3CU_BLOCK threads; results valid in thread 0. */
__device__ void block_sum2(double &a, double &b, double *sa, double *sb) {
    sa[threadIdx.x] = a;
    sb[threadIdx.x] = b;
    __syncthreads();
    for (int w = V3CU_BLOCK / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            sa[threadIdx.x] += sa[threadIdx.x + w];
            sb[threadIdx.x] += sb[threadIdx.x + w];
        }
        __syncthreads();
    }
    a = sa[0];
    b = sb[0];
}

/* Element j of channel c: x[(n*C + c)*HW + k], j = n*HW + k. */
__device__ __forceinline__ size_t bn_index(long long j, int C, int HW, int c) {
    long long n = j / HW, k = j - n * HW;
    return ((size_t)n * C + c) * HW + (size_t)k;
}

/* Pass 1 (center == NULL): part[c*S+s] = sum x.  Pass 2: part[c*S+s] = sum (x - center[c])^2. */
__global__ void bn_stats_partial_kernel(int C, int HW, long long M, long long chunk, const float *__restrict__ x,
                                        const double *__restrict__ center, double *__restrict__ part) {
    __shared__ double sa[V3CU_BLOCK], sb[V3CU_BLOCK];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    long long j0 = (long long)s * chunk, j1 = j0 + chunk < M ? j0 + chunk : M;
    double acc = 0, unused = 0;
    if (center) {
        double mu = center[c];
        for (long long j = j0 + threadIdx.x; j < j1; j += V3CU_BLOCK) {
            double d = x[bn_index(j, C, HW, c)] - mu;
            acc += d * d;
        }
    } else {
        for (long long j = j0 + threadIdx.x; j < j1; j += V3CU_BLOCK) acc += x[bn_index(j, C, HW, c)];
    }
    block_sum2(acc, unused, sa, sb);
    if (threadIdx.x == 0) part[(size_t)c * S + s] = acc;
}

__global__ void bn_mean_kernel(int C, int S, double cnt, const double *__restrict__ part, double *__restrict__ mu) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s = 0;
    for (int i = 0; i < S; i++) s += part[(size_t)c * S + i];
    mu[c] = s / cnt;
}

/* From the squared-deviation partials: mean/invstd outputs, running stats, and the affine coefficients ab[2C]. */
__global__ void bn_var_kernel(int C, int S, double cnt, const double *__restrict__ part, const double *__restrict__ mu_d,
                              const float *__restrict__ gamma, const float *__restrict__ beta, float *__restrict__ mean,
                              float *__restrict__ invstd, float *__restrict__ running_mean,
                              float *__restrict__ running_var, float momentum, float eps, float *__restrict__ ab) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double ss = 0;
    for (int i = 0; i < S; i++) ss += part[(size_t)c * S + i];
    double mu = mu_d[c];
    double var = ss / cnt;
    double is = 1.0 / sqrt(var + (double)eps);
    mean[c] = (float)mu;
    invstd[c] = (float)is;
    double gi = __dmul_rn((double)gamma[c], is);
    ab[c] = (float)gi;
    ab[C + c] = (float)__dsub_rn((double)beta[c], __dmul_rn(gi, mu));
    if (running_mean) {
        double unbiased = cnt > 1 ? ss / (cnt - 1) : var;
        double om = 1.0 - (double)momentum;
        running_mean[c] = (float)__dadd_rn(__dmul_rn(om, (double)running_mean[c]), __dmul_rn((double)momentum, mu));
        running_var[c] =
            (float)__dadd_rn(__dmul_rn(om, (double)running_var[c]), __dmul_rn((double)momentum, unbiased));
    }
}

__global__ void bn_eval_coef_kernel(int C, const float *__restrict__ gamma, const float *__restrict__ beta,
                                    const float *__restrict__ running_mean, const float *__restrict__ running_var,
                                    float eps, float *__restrict__ ab) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double is = 1.0 / sqrt((double)running_var[c] + (double)eps);
    double gi = __dmul_rn((double)gamma[c], is);
    ab[c] = (float)gi;
    ab[C + c] = (float)__dsub_rn((double)beta[c], __dmul_rn(gi, (double)running_mean[c]));
}

/* y = x * a[c] + b[c], float, rounded after the multiply as the reference. */
__global__ void bn_apply_kernel(size_t total, int C, int HW, const float *__restrict__ x, const float *__restrict__ ab,
                                float *__restrict__ y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)((i / (size_t)HW) % (size_t)C);
        y[i] = __fadd_rn(__fmul_rn(x[i], ab[c]), ab[C + c]);
    }
}

static unsigned chan_grid(int C) { return (unsigned)((C + V3CU_BLOCK - 1) / V3CU_BLOCK); }

/* Scratch layout (doubles first, then floats): part[2*C*S] | mu[C] | coef[3C] | ab[2C] floats. */
static char *bn_scratch(int C, int S, double **part, double **mu, double **coef, float **ab) {
    size_t np = (size_t)2 * C * S, nd = np + (size_t)C + (size_t)3 * C;
    char *base = (char *)v3cu_scratch(nd * sizeof(double) + (size_t)2 * C * sizeof(float));
    *part = (double *)base;
    *mu = *part + np;
    *coef = *mu + C;
    *ab = (float *)(*coef + (size_t)3 * C);
    return base;
}

extern "C" void cuda_bn2d_fwd_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                                    float *y, float *mean, float *invstd, float *running_mean, float *running_var,
                                    float momentum, float eps) {
    if (C <= 0 || N < 0 || HW < 0) return;
    Split sp = bn_split(N, HW);
    double *part, *mu, *coef;
    float *ab;
    bn_scratch(C, sp.S, &part, &mu, &coef, &ab);
    cudaStream_t st = v3cu_stream();
    dim3 grid((unsigned)C, (unsigned)sp.S);
    double cnt = (double)N * HW;
    bn_stats_partial_kernel<<<grid, V3CU_BLOCK, 0, st>>>(C, HW, sp.M, sp.chunk, x, NULL, part);
    CUDA_CHECK_LAUNCH();
    bn_mean_kernel<<<chan_grid(C), V3CU_BLOCK, 0, st>>>(C, sp.S, cnt, part, mu);
    CUDA_CHECK_LAUNCH();
    bn_stats_partial_kernel<<<grid, V3CU_BLOCK, 0, st>>>(C, HW, sp.M, sp.chunk, x, mu, part);
    CUDA_CHECK_LAUNCH();
    bn_var_kernel<<<chan_grid(C), V3CU_BLOCK, 0, st>>>(C, sp.S, cnt, part, mu, gamma, beta, mean, invstd,
                                                       running_mean, running_var, momentum, eps, ab);
    CUDA_CHECK_LAUNCH();
    size_t total = (size_t)N * C * HW;
    if (!total) return;
    bn_apply_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, st>>>(total, C, HW, x, ab, y);
    CUDA_CHECK_LAUNCH();
}

extern "C" void cuda_bn2d_fwd_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta,
                                   float *y, const float *running_mean, const float *running_var, float eps) {
    size_t total = (size_t)N * C * HW;
    if (C <= 0 || N <= 0 || HW <= 0) return;
    double *part, *mu, *coef;
    float *ab;
    bn_scratch(C, 0, &part, &mu, &coef, &ab);
    cudaStream_t st = v3cu_stream();
    bn_eval_coef_kernel<<<chan_grid(C), V3CU_BLOCK, 0, st>>>(C, gamma, beta, running_mean, running_var, eps, ab);
    CUDA_CHECK_LAUNCH();
    bn_apply_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, st>>>(total, C, HW, x, ab, y);
    CUDA_CHECK_LAUNCH();
}

/* part[(c*S+s)*2 + 0] = sum dy, [.. + 1] = sum dy * (x - mean) * invstd over block (c, s)'s chunk. */
__global__ void bn_bwd_partial_kernel(int C, int HW, long long M, long long chunk, const float *__restrict__ x,
                                      const float *__restrict__ dy, const float *__restrict__ mean,
                                      const float *__restrict__ invstd, double *__restrict__ part) {
    __shared__ double sa[V3CU_BLOCK], sb[V3CU_BLOCK];
    int c = blockIdx.x, s = blockIdx.y, S = gridDim.y;
    long long j0 = (long long)s * chunk, j1 = j0 + chunk < M ? j0 + chunk : M;
    double mu = mean[c], is = invstd[c], sdy = 0, sdyx = 0;
    for (long long j = j0 + threadIdx.x; j < j1; j += V3CU_BLOCK) {
        size_t i = bn_index(j, C, HW, c);
        double g = dy[i];
        sdy += g;
        sdyx += g * ((x[i] - mu) * is);
    }
    block_sum2(sdy, sdyx, sa, sb);
    if (threadIdx.x == 0) {
        part[((size_t)c * S + s) * 2] = sdy;
        part[((size_t)c * S + s) * 2 + 1] = sdyx;
    }
}

/* Per channel: parameter gradients (accumulated) and the dx coefficients coef[3c..3c+2] = k1, mean dy,
 * mean dy*xhat. */
__global__ void bn_bwd_final_kernel(int C, int S, double M, const double *__restrict__ part,
                                    const float *__restrict__ gamma, const float *__restrict__ invstd,
                                    float *__restrict__ dgamma, float *__restrict__ dbeta, double *__restrict__ coef) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sdy = 0, sdyx = 0;
    for (int i = 0; i < S; i++) {
        sdy += part[((size_t)c * S + i) * 2];
        sdyx += part[((size_t)c * S + i) * 2 + 1];
    }
    dgamma[c] += (float)sdyx;
    dbeta[c] += (float)sdy;
    coef[3 * (size_t)c] = __dmul_rn((double)gamma[c], (double)invstd[c]);
    coef[3 * (size_t)c + 1] = sdy / M;
    coef[3 * (size_t)c + 2] = sdyx / M;
}

/* dx = k1 * (dy - mean(dy) - xhat * mean(dy*xhat)), in double, operation for operation as the reference. */
__global__ void bn_bwd_dx_kernel(size_t total, int C, int HW, const float *__restrict__ x, const float *__restrict__ dy,
                                 const float *__restrict__ mean, const float *__restrict__ invstd,
                                 const double *__restrict__ coef, float *__restrict__ dx) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)((i / (size_t)HW) % (size_t)C);
        double k1 = coef[3 * (size_t)c], mdy = coef[3 * (size_t)c + 1], mdyx = coef[3 * (size_t)c + 2];
        double xh = __dmul_rn(__dmul_rn(__dsub_rn((double)x[i], (double)mean[c]), (double)invstd[c]), mdyx);
        dx[i] = (float)__dmul_rn(k1, __dsub_rn(__dsub_rn((double)dy[i], mdy), xh));
    }
}

extern "C" void cuda_bn2d_bwd(int N, int C, int HW, const float *x, const float *gamma, const float *mean,
                              const float *invstd, const float *dy, float *dx, float *dgamma, float *dbeta) {
    if (C <= 0 || N < 0 || HW < 0) return;
    Split sp = bn_split(N, HW);
    double *part, *mu, *coef;
    float *ab;
    bn_scratch(C, sp.S, &part, &mu, &coef, &ab);
    cudaStream_t st = v3cu_stream();
    dim3 grid((unsigned)C, (unsigned)sp.S);
    bn_bwd_partial_kernel<<<grid, V3CU_BLOCK, 0, st>>>(C, HW, sp.M, sp.chunk, x, dy, mean, invstd, part);
    CUDA_CHECK_LAUNCH();
    bn_bwd_final_kernel<<<chan_grid(C), V3CU_BLOCK, 0, st>>>(C, sp.S, (double)sp.M, part, gamma, invstd, dgamma,
                                                             dbeta, coef);
    CUDA_CHECK_LAUNCH();
    size_t total = (size_t)N * C * HW;
    if (!dx || !total) return;
    bn_bwd_dx_kernel<<<v3cu_grid(total), V3CU_BLOCK, 0, st>>>(total, C, HW, x, dy, mean, invstd, coef, dx);
    CUDA_CHECK_LAUNCH();
}
