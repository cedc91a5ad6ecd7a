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

/* Mean over samples of the within-sample mpd; G (if given) gets gscale/B times each sample's gradient. */
static double frag_var(const double *X, int B, int n, int d, double *G, double gscale) {
    double s = 0;
    for (int b = 0; b < B; b++)
        s += mpd(X + (size_t)b * n * d, n, d, G ? G + (size_t)b * n * d : NULL, gscale / B);
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

void v3_stats_finish(const V3LossCfg *cfg, V3Stats *st) {
    double h[4];
    v3_hinges(cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss, h, NULL);
    st->content = h[0];
    st->style = h[1];
    st->sample = h[2];
    st->fragment = h[3];
    st->weighted = cfg->w_content * st->content + cfg->w_style * st->style + cfg->w_sample * st->sample +
                   cfg->w_fragment * st->fragment;
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

    st->nB = nB;
    st->nn = nn;
    st->Fc = 0.5 * frag_var(Zc, B, n, dc, NULL, 0) + 0.5 * frag_var(Q, B, n, dc, NULL, 0);
    st->Sc = 0.5 * samp_var(Zc, nB, nn, dc, NULL, 0) + 0.5 * samp_var(Q, nB, nn, dc, NULL, 0);
    st->Fs = frag_var(Zs, B, n, ds, NULL, 0);
    st->Ss = samp_var(Zs, B, n, ds, NULL, 0);
    st->Ss_ss = cfg->supersample_content ? samp_var(Zs, nB, nn, ds, NULL, 0) : st->Ss;

    v3_stats_finish(cfg, st);

    if (gzc || gzs) {
        const V3Coef c = v3_coef(cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss);
        if (gzc) {
            double *G = xcalloc((size_t)N * dc, sizeof(double));
            /* q's gradient lands on z_c (straight-through), so both halves accumulate into G. */
            frag_var(Zc, B, n, dc, G, 0.5 * c.dFc);
            frag_var(Q, B, n, dc, G, 0.5 * c.dFc);
            samp_var(Zc, nB, nn, dc, G, 0.5 * c.dSc);
            samp_var(Q, nB, nn, dc, G, 0.5 * c.dSc);
            for (size_t i = 0; i < (size_t)N * dc; i++) gzc[i] += (float)G[i];
            free(G);
        }
        if (gzs) {
            double *G = xcalloc((size_t)N * ds, sizeof(double));
            frag_var(Zs, B, n, ds, G, c.dFs);
            samp_var(Zs, B, n, ds, G, c.dSs);
            if (cfg->supersample_content) samp_var(Zs, nB, nn, ds, G, c.dSs_ss);
            for (size_t i = 0; i < (size_t)N * ds; i++) gzs[i] += (float)G[i];
            free(G);
        }
    }
    free(Zc);
    free(Q);
    free(Zs);
}
