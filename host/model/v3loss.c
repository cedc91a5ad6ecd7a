/* V3 statistics: four mean-pairwise-distance terms, their hinge losses and the exact backward pass.
 * Distances are taken in difference form in double precision, so rows that are equal give distance 0 exactly and
 * contribute the zero subgradient. Whether quantised codes on the same codeword are equal is the caller's choice
 * of q (loss_config.tie_gradient): the codewords (zero) or PyTorch's straight-through value v3_ste_value, whose
 * rounding leaves them a tiny distance apart and so gives them unit-length pushes (pytorch, the default). */
#include "v3loss.h"
#include "v3_coef.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* mpd over m rows of X (row stride d). If G != NULL, G[k] += gscale * d mpd / d x_k. */
static double mpd(const double *X, int m, int d, double *G, double gscale) {
    double sum = 0, coef = gscale * 2.0 / ((double)m * (m - 1));
    for (int i = 0; i < m; i++)
        for (int j = i + 1; j < m; j++) {
            const double *a = X + (size_t)i * d, *b = X + (size_t)j * d;
            double s = 0;
            for (int t = 0; t < d; t++) {
                double v = a[t] - b[t];
                s += v * v;
            }
            double dist = sqrt(s);
            sum += dist;
            if (G && dist > 0) {
                double k = coef / dist;
                double *ga = G + (size_t)i * d, *gb = G + (size_t)j * d;
                for (int t = 0; t < d; t++) {
                    double v = k * (a[t] - b[t]);
                    ga[t] += v;
                    gb[t] -= v;
                }
            }
        }
    return 2.0 * sum / ((double)m * (m - 1));
}

double v3_cross_mean(const double *X, int B, int n, int d, double *G, double gscale) {
    const int N = B * n;
    const double norm = (double)B * (B - 1) * n * n, coef = gscale * 2.0 / norm;
    double sum = 0;
    for (int i = 0; i < N; i++)
        for (int j = (i / n + 1) * n; j < N; j++) { /* rows of later samples only */
            const double *a = X + (size_t)i * d, *b = X + (size_t)j * d;
            double s = 0;
            for (int t = 0; t < d; t++) {
                double v = a[t] - b[t];
                s += v * v;
            }
            const double dist = sqrt(s);
            sum += dist;
            if (G && dist > 0) {
                const double k = coef / dist;
                double *ga = G + (size_t)i * d, *gb = G + (size_t)j * d;
                for (int t = 0; t < d; t++) {
                    const double v = k * (a[t] - b[t]);
                    ga[t] += v;
                    gb[t] -= v;
                }
            }
        }
    return 2.0 * sum / norm;
}

/* Mean over groups of `per` consecutive rows: X [groups*per, d] -> M [groups, d]. */
static void group_means(const double *X, int groups, int per, int d, double *M) {
    for (int g = 0; g < groups; g++) {
        double *mg = M + (size_t)g * d;
        memset(mg, 0, sizeof(double) * d);
        for (int k = 0; k < per; k++)
            for (int t = 0; t < d; t++) mg[t] += X[((size_t)g * per + k) * d + t];
        for (int t = 0; t < d; t++) mg[t] /= per;
    }
}

/* Mean over samples of the within-sample mpd; G (if given) gets gscale/B times each sample's gradient, or
 * gscale * gb[b] for sample b where gb is given (the per-sample hinges). each (if given) gets every sample's mpd. */
static double frag_var_each(const double *X, int B, int n, int d, double *G, double gscale, const double *gb,
                            double *each) {
    double s = 0;
    for (int b = 0; b < B; b++) {
        double v = mpd(X + (size_t)b * n * d, n, d, G ? G + (size_t)b * n * d : NULL, gb ? gscale * gb[b] : gscale / B);
        if (each) each[b] = v;
        s += v;
    }
    return s / B;
}

/* mpd over group means; G (if given) gets, for every row, 1/per of its group's mean gradient times gscale. */
static double samp_var(const double *X, int groups, int per, int d, double *G, double gscale) {
    double *M = xmalloc(sizeof(double) * groups * d);
    group_means(X, groups, per, d, M);
    double *GM = G ? xcalloc((size_t)groups * d, sizeof(double)) : NULL;
    double v = mpd(M, groups, d, GM, gscale);
    if (G)
        for (int g = 0; g < groups; g++)
            for (int k = 0; k < per; k++)
                for (int t = 0; t < d; t++) G[((size_t)g * per + k) * d + t] += GM[(size_t)g * d + t] / per;
    free(M);
    free(GM);
    return v;
}

void v3_ste_value(size_t n, const float *z, const float *q, float *out) {
    /* Two float32 roundings, in this order; C without -ffast-math may not fold them into q. */
    for (size_t i = 0; i < n; i++) {
        float d = q[i] - z[i];
        out[i] = z[i] + d;
    }
}

int v3_supersample_n(int m) {
    int best = 1;
    for (int c = 1; (long)c * c <= m; c++)
        if (m % c == 0) best = c;
    return best;
}

/* st's four hinge values from h and their weighted sum */
static void set_hinges(const V3LossCfg *cfg, V3Stats *st, const double h[4]) {
    st->content = h[0];
    st->style = h[1];
    st->sample = h[2];
    st->fragment = h[3];
    st->weighted = cfg->w_content * st->content + cfg->w_style * st->style + cfg->w_sample * st->sample +
                   cfg->w_fragment * st->fragment;
}

void v3_stats_finish(const V3LossCfg *cfg, V3Stats *st) {
    double h[4];
    v3_hinges(cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss, h, NULL);
    set_hinges(cfg, st, h);
}

void v3_stats_finish_ps(const V3LossCfg *cfg, V3Stats *st, int B, const double *mzc, const double *mq,
                        const double *mzs) {
    double h[4];
    v3_hinges_ps(cfg, B, mzc, mq, mzs, st->Sc, st->Ss, st->Ss_ss, h);
    set_hinges(cfg, st, h);
}

static double *to_double(const float *x, size_t n) {
    double *d = xmalloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

void v3_loss(const V3LossCfg *cfg, int B, int n, int dc, int ds, const float *zc, const float *q, const float *zs,
             V3Stats *st, float *gzc, float *gzs) {
    int N = B * n;
    double *Zc = to_double(zc, (size_t)N * dc), *Q = to_double(q, (size_t)N * dc), *Zs = to_double(zs, (size_t)N * ds);
    int nn = cfg->supersample_content ? v3_supersample_n(N) : n, nB = N / nn;

    const int ps = cfg->per_sample;
    /* the per-sample mpds (used by the per-sample hinges) and, later, their coefficients */
    double *each = xmalloc(sizeof(double) * 5 * B), *mzc = each, *mq = each + B, *mzs = each + 2 * B,
           *dFc_b = each + 3 * B, *dFs_b = each + 4 * B;
    st->nB = nB;
    st->nn = nn;
    const double Fzc = frag_var_each(Zc, B, n, dc, NULL, 0, NULL, mzc), Fq = frag_var_each(Q, B, n, dc, NULL, 0, NULL, mq);
    st->Fc = 0.5 * Fzc + 0.5 * Fq;
    /* S_c: the spread of the samples' content means (the authors'), or the mean energy distance between the
     * samples' sets of content codes, 2 (C - (n-1)/n F) for z_c and q, halved and added (content_spread energy) */
    const double wf = (double)(n - 1) / n;
    if (cfg->content_energy)
        st->Sc = (v3_cross_mean(Zc, B, n, dc, NULL, 0) - wf * Fzc) + (v3_cross_mean(Q, B, n, dc, NULL, 0) - wf * Fq);
    else
        st->Sc = 0.5 * samp_var(Zc, nB, nn, dc, NULL, 0) + 0.5 * samp_var(Q, nB, nn, dc, NULL, 0);
    st->Fs = frag_var_each(Zs, B, n, ds, NULL, 0, NULL, mzs);
    st->Ss = samp_var(Zs, B, n, ds, NULL, 0);
    st->Ss_ss = cfg->supersample_content ? samp_var(Zs, nB, nn, ds, NULL, 0) : st->Ss;

    if (ps) v3_stats_finish_ps(cfg, st, B, mzc, mq, mzs);
    else v3_stats_finish(cfg, st);

    if (gzc || gzs) {
        const V3Coef c = ps ? v3_coef_ps(cfg, B, mzc, mq, mzs, st->Sc, st->Ss, st->Ss_ss, dFc_b, dFs_b)
                            : v3_coef(cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss);
        /* the within-sample terms: c.dF/B for every sample, or the per-sample dF[b] (gscale 1 times gb[b]) */
        if (gzc) {
            double *G = xcalloc((size_t)N * dc, sizeof(double));
            /* q's gradient lands on z_c (straight-through), so both halves accumulate into G. */
            frag_var_each(Zc, B, n, dc, G, ps ? 0.5 : 0.5 * c.dFc, ps ? dFc_b : NULL, NULL);
            frag_var_each(Q, B, n, dc, G, ps ? 0.5 : 0.5 * c.dFc, ps ? dFc_b : NULL, NULL);
            if (cfg->content_energy) {
                const double *X[2] = {Zc, Q};
                for (int x = 0; x < 2; x++) {
                    v3_cross_mean(X[x], B, n, dc, G, c.dSc);
                    frag_var_each(X[x], B, n, dc, G, -c.dSc * wf, NULL, NULL);
                }
            } else {
                samp_var(Zc, nB, nn, dc, G, 0.5 * c.dSc);
                samp_var(Q, nB, nn, dc, G, 0.5 * c.dSc);
            }
            for (size_t i = 0; i < (size_t)N * dc; i++) gzc[i] += (float)G[i];
            free(G);
        }
        if (gzs) {
            double *G = xcalloc((size_t)N * ds, sizeof(double));
            frag_var_each(Zs, B, n, ds, G, ps ? 1.0 : c.dFs, ps ? dFs_b : NULL, NULL);
            samp_var(Zs, B, n, ds, G, c.dSs);
            if (cfg->supersample_content) samp_var(Zs, nB, nn, ds, G, c.dSs_ss);
            for (size_t i = 0; i < (size_t)N * ds; i++) gzs[i] += (float)G[i];
            free(G);
        }
    }
    free(each);
    free(Zc);
    free(Q);
    free(Zs);
}
