/* The V3 loss backward's coefficients: the hinges h(t) = max(0, r - t)/r (or ours, the log form) with their slopes, and
 * dL/dF_c, dL/dS_c, dL/dF_s, dL/dS_s, dL/dS_s^ss from the statistics (spec v3.md §3, "Backward"). The one
 * definition, shared by the CPU reference (host/model/v3loss.c), the device reduction (kernels/v3loss.cu, inside a
 * kernel) and the gradient bounds of tests/gpu/test_gpu_v3loss.c and bench/bench_v3loss.c.
 * Header-only (static inline; __host__ __device__ under nvcc). Products that feed a sum are rounded explicitly on
 * the device (__dmul_rn/__dadd_rn: no FMA contraction), as the host computes them (C11 mode: no contraction), so
 * host and device give the same bits from the same statistics. */
#ifndef V3_V3_COEF_H
#define V3_V3_COEF_H
#include <math.h>

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

/* ours (loss_config.hinge: log): h(t) = ln(r/t)/ln r for 1 <= t < r, continued linearly below t = 1 as
 * 1 + (1 - t)/ln r (value and slope continuous there), 0 for t >= r. Its push per unit of ln t is the constant
 * 1/ln r, so a term whose ratio is far below r (a sample whose style code varies most) is pulled as hard, in
 * relative terms, as one near it: the linear hinge's pull on a ratio's denominator, S/F^2, vanishes as F grows.
 * The linear piece below 1 bounds the slope by 1/ln r where the log's would grow without bound as t -> 0.
 * Needs r > 1 (config validation). */
V3_HD static inline double v3_hinge_log(double r, double t, int *active) {
    const int a = (r - t) > 0;
    if (active) *active = a;
    if (!a) return 0.0;
    return t >= 1 ? log(r / t) / log(r) : 1.0 + (1.0 - t) / log(r);
}

/* The hinge of cfg's form with relativity rx at ratio t; *g (if not NULL) gets -dh/dt times the common relativity
 * cfg->relativity (the coefficients below divide by it once). For the linear form g = a r/rx, the form the
 * single-r code had, so where rx = r the factor is exactly a and the authors' bits are unchanged. */
V3_HD static inline double v3_hinge_cfg(const V3LossCfg *cfg, double rx, double t, double *g) {
    int a;
    if (!cfg->log_hinge) {
        const double h = v3_hinge(rx, t, &a);
        if (g) *g = a ? cfg->relativity / rx : 0.0;
        return h;
    }
    const double h = v3_hinge_log(rx, t, &a);
    if (g) *g = !a ? 0.0 : t >= 1 ? cfg->relativity / (t * log(rx)) : cfg->relativity / log(rx);
    return h;
}

/* A term's relativity: its own r_* where set (> 0), else the common relativity. */
V3_HD static inline double v3_term_r(double r_term, double r) { return r_term > 0 ? r_term : r; }

/* The four hinges content, style, sample, fragment (in that order) from the statistics, each with its own r, and
 * their slopes g (v3_hinge_cfg; g may be NULL). */
V3_HD static inline void v3_hinges(const V3LossCfg *cfg, double Fc, double Sc, double Fs, double Ss, double Ss_ss,
                                   double h[4], double g[4]) {
    const double r = cfg->relativity, eps = cfg->eps, Sce = Sc + eps, Fse = Fs + eps;
    double dummy[4];
    if (!g) g = dummy;
    h[0] = v3_hinge_cfg(cfg, v3_term_r(cfg->r_content, r), Fc / Sce, &g[0]);
    h[1] = v3_hinge_cfg(cfg, v3_term_r(cfg->r_style, r), Ss / Fse, &g[1]);
    h[2] = v3_hinge_cfg(cfg, v3_term_r(cfg->r_sample, r), Ss_ss / Sce, &g[2]);
    h[3] = v3_hinge_cfg(cfg, v3_term_r(cfg->r_fragment, r), Fc / Fse, &g[3]);
}

/* dL/d(statistic) of the weighted hinge loss. Without supersample_content S_s^ss is S_s, and dSs already
 * includes dSs_ss (the sample term's share); with it, dSs_ss belongs to the supersample means only. */
typedef struct {
    double dFc, dSc, dFs, dSs, dSs_ss;
} V3Coef;

/* The coefficients from the statistics (Ss_ss = Ss without supersample_content), in v3_loss's operation order. */
V3_HD static inline V3Coef v3_coef(const V3LossCfg *cfg, double Fc, double Sc, double Fs, double Ss, double Ss_ss) {
    const double r = cfg->relativity, eps = cfg->eps, Sce = Sc + eps, Fse = Fs + eps;
    double h[4], g[4];
    v3_hinges(cfg, Fc, Sc, Fs, Ss, Ss_ss, h, g);
    /* A term with its own r_x has gradient (w/r_x) = (w * r/r_x)/r: scaling its weight by g = r/r_x keeps the
     * common 1/r below, and the factor is exactly 1.0 where r_x = r, so the single-r form's bits are unchanged. */
    const double wc = cfg->w_content * g[0], wst = cfg->w_style * g[1], wsa = cfg->w_sample * g[2],
                 wf = cfg->w_fragment * g[3];
    V3Coef c;
    c.dFc = -(wc / Sce + wf / Fse) / r;
    c.dSc = V3_DADD(V3_DMUL(wc, Fc), V3_DMUL(wsa, Ss_ss)) / V3_DMUL(Sce, Sce) / r;
    c.dFs = V3_DADD(V3_DMUL(wst, Ss), V3_DMUL(wf, Fc)) / V3_DMUL(Fse, Fse) / r;
    c.dSs = -(wst / Fse) / r;
    c.dSs_ss = -(wsa / Sce) / r;
    if (!cfg->supersample_content) c.dSs += c.dSs_ss;
    return c;
}

/* ours (loss_config.per_sample_hinges): the content, style and fragment hinges taken per sample b, each with that
 * sample's own within-sample spreads F_c[b] = mpd(z_c[b])/2 + mpd(q[b])/2 and F_s[b] = mpd(z_s[b]), then
 * averaged over the B samples: content = mean_b h(F_c[b]/(S_c+eps)), style = mean_b h(S_s/(F_s[b]+eps)),
 * fragment = mean_b h(F_c[b]/(F_s[b]+eps)); the sample hinge compares two between-sample spreads and is unchanged.
 * Why: F_c and F_s are means over samples, so a few samples whose content code is constant (one colour's digits
 * all on one atom) or whose style code varies are outvoted by the rest, and the hinge is 0 while they stay lost
 * (NOTES.md, issue 18). mzc, mq, mzs: the per-sample mpds [B]. Sums run over b in order, products rounded
 * explicitly, so host and device agree bit for bit. */
V3_HD static inline double v3_ps_Fc(const double *mzc, const double *mq, int b) { return 0.5 * mzc[b] + 0.5 * mq[b]; }

/* The four hinge values of the per-sample form (content, style, sample, fragment). */
V3_HD static inline void v3_hinges_ps(const V3LossCfg *cfg, int B, const double *mzc, const double *mq,
                                      const double *mzs, double Sc, double Ss, double Ss_ss, double h[4]) {
    const double r = cfg->relativity, eps = cfg->eps, Sce = Sc + eps;
    const double rc = v3_term_r(cfg->r_content, r), rs = v3_term_r(cfg->r_style, r), rf = v3_term_r(cfg->r_fragment, r);
    double hc = 0, hs = 0, hf = 0;
    for (int b = 0; b < B; b++) {
        const double Fcb = v3_ps_Fc(mzc, mq, b), Fseb = mzs[b] + eps;
        hc += v3_hinge_cfg(cfg, rc, Fcb / Sce, NULL);
        hs += v3_hinge_cfg(cfg, rs, Ss / Fseb, NULL);
        hf += v3_hinge_cfg(cfg, rf, Fcb / Fseb, NULL);
    }
    h[0] = hc / B;
    h[1] = hs / B;
    h[2] = v3_hinge_cfg(cfg, v3_term_r(cfg->r_sample, r), Ss_ss / Sce, NULL);
    h[3] = hf / B;
}

/* The per-sample form's coefficients: dFc_b[b] = dL/dF_c[b] and dFs_b[b] = dL/dF_s[b] (the 1/B of the mean
 * included), and dSc, dSs, dSs_ss in the returned V3Coef (its dFc, dFs are 0). */
V3_HD static inline V3Coef v3_coef_ps(const V3LossCfg *cfg, int B, const double *mzc, const double *mq,
                                      const double *mzs, double Sc, double Ss, double Ss_ss, double *dFc_b,
                                      double *dFs_b) {
    const double r = cfg->relativity, eps = cfg->eps, Sce = Sc + eps;
    const double rc = v3_term_r(cfg->r_content, r), rs = v3_term_r(cfg->r_style, r), rf = v3_term_r(cfg->r_fragment, r);
    double gsa;
    v3_hinge_cfg(cfg, v3_term_r(cfg->r_sample, r), Ss_ss / Sce, &gsa);
    const double wsa = cfg->w_sample * gsa;
    double sc = 0, ss = 0; /* sum_b wc_b F_c[b]; sum_b wst_b / (F_s[b]+eps) */
    for (int b = 0; b < B; b++) {
        const double Fcb = v3_ps_Fc(mzc, mq, b), Fseb = mzs[b] + eps;
        double gc, gs, gf;
        v3_hinge_cfg(cfg, rc, Fcb / Sce, &gc);
        v3_hinge_cfg(cfg, rs, Ss / Fseb, &gs);
        v3_hinge_cfg(cfg, rf, Fcb / Fseb, &gf);
        const double wc = cfg->w_content * gc, wst = cfg->w_style * gs, wf = cfg->w_fragment * gf;
        dFc_b[b] = -(wc / Sce + wf / Fseb) / r / B;
        dFs_b[b] = V3_DADD(V3_DMUL(wst, Ss), V3_DMUL(wf, Fcb)) / V3_DMUL(Fseb, Fseb) / r / B;
        sc = V3_DADD(sc, V3_DMUL(wc, Fcb));
        ss = V3_DADD(ss, wst / Fseb);
    }
    V3Coef c;
    c.dFc = 0;
    c.dFs = 0;
    c.dSc = V3_DADD(sc / B, V3_DMUL(wsa, Ss_ss)) / V3_DMUL(Sce, Sce) / r;
    c.dSs = -(ss / B) / r;
    c.dSs_ss = -(wsa / Sce) / r;
    if (!cfg->supersample_content) c.dSs += c.dSs_ss;
    return c;
}

#endif
