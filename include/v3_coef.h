/* The V3 loss backward's coefficients: the hinges h(t) = max(0, r - t)/r with their activity indicators, and
 * dL/dF_c, dL/dS_c, dL/dF_s, dL/dS_s, dL/dS_s^ss from the statistics (spec v3.md §3, "Backward"). The one
 * definition, shared by the CPU reference (host/model/v3loss.c), the device reduction (kernels/v3loss.cu, inside a
 * kernel) and the gradient bounds of tests/gpu/test_gpu_v3loss.c and bench/bench_v3loss.c.
 * Header-only (static inline; __host__ __device__ under nvcc). Products that feed a sum are rounded explicitly on
 * the device (__dmul_rn/__dadd_rn: no FMA contraction), as the host computes them (C11 mode: no contraction), so
 * host and device give the same bits from the same statistics. */
#ifndef V3_V3_COEF_H
#define V3_V3_COEF_H
#include "v3loss.h"

#ifdef __CUDACC__
#define V3_HD __host__ __device__
#else
#define V3_HD
#endif
#ifdef __CUDA_ARCH__
#define V3_DMUL(x, y) __dmul_rn((x), (y))
#define V3_DADD(x, y) __dadd_rn((x), (y))
#else
#define V3_DMUL(x, y) ((x) * (y))
#define V3_DADD(x, y) ((x) + (y))
#endif

/* h(t) = (r - t)/r where r - t > 0, else 0. *active (if not NULL): the indicator a = [r - t > 0], the ReLU's
 * gradient being 0 at exactly 0. */
V3_HD static inline double v3_hinge(double r, double t, int *active) {
    const int a = (r - t) > 0;
    if (active) *active = a;
    return a ? (r - t) / r : 0.0;
}

/* dL/d(statistic) of the weighted hinge loss. Without supersample_content S_s^ss is S_s, and dSs already
 * includes dSs_ss (the sample term's share); with it, dSs_ss belongs to the supersample means only. */
typedef struct {
    double dFc, dSc, dFs, dSs, dSs_ss;
} V3Coef;

/* The coefficients from the statistics (Ss_ss = Ss without supersample_content), in v3_loss's operation order. */
V3_HD static inline V3Coef v3_coef(const V3LossCfg *cfg, double Fc, double Sc, double Fs, double Ss, double Ss_ss) {
    const double r = cfg->relativity, eps = cfg->eps, Sce = Sc + eps, Fse = Fs + eps;
    int a_con, a_sty, a_samp, a_frag;
    v3_hinge(r, Fc / Sce, &a_con);
    v3_hinge(r, Ss / Fse, &a_sty);
    v3_hinge(r, Ss_ss / Sce, &a_samp);
    v3_hinge(r, Fc / Fse, &a_frag);
    const double wc = cfg->w_content * a_con, wst = cfg->w_style * a_sty, wsa = cfg->w_sample * a_samp,
                 wf = cfg->w_fragment * a_frag;
    V3Coef c;
    c.dFc = -(wc / Sce + wf / Fse) / r;
    c.dSc = V3_DADD(V3_DMUL(wc, Fc), V3_DMUL(wsa, Ss_ss)) / V3_DMUL(Sce, Sce) / r;
    c.dFs = V3_DADD(V3_DMUL(wst, Ss), V3_DMUL(wf, Fc)) / V3_DMUL(Fse, Fse) / r;
    c.dSs = -(wst / Fse) / r;
    c.dSs_ss = -(wsa / Sce) / r;
    if (!cfg->supersample_content) c.dSs += c.dSs_ss;
    return c;
}

#endif
