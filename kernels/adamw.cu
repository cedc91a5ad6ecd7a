/* AdamW (PyTorch semantics), one thread per parameter, grid-stride. The per-step scalars are computed on the host
 * with the same expressions as the CPU reference (host/ref/elementwise.c, ref_adamw), and the per-element float
 * arithmetic uses explicitly rounded intrinsics (no fused multiply-add contraction), so the update is
 * bit-identical to the reference. */
#include <math.h>

#include "cuda_backend.h"
#include "cuda_check.h"

__global__ void adamw_kernel(size_t n, float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                             float *__restrict__ v, float beta1, float beta2, float eps, float step, float bc2s,
                             float decay) {
    float ob1 = 1.0f - beta1, ob2 = 1.0f - beta2;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        float pi = __fmul_rn(p[i], decay);
        float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(ob1, gi));
        float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(ob2, gi), gi));
        float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2s), eps);
        p[i] = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step, mi), den));
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" void cuda_adamw(size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                           float eps, float wd, long t) {
    if (!n) return;
    double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    float step = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    float decay = 1.0f - lr * wd;
    adamw_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, p, g, m, v, beta1, beta2, eps, step, bc2s,
                                                                  decay);
    CUDA_CHECK_LAUNCH();
}
