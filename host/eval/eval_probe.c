/* Linear probe (include/eval_metrics.h; our addition to the authors' evaluation, spec v3.md §6): multinomial
 * logistic regression on standardised features. Objective: mean cross-entropy + (l2/2) * ||W||^2 (bias not
 * penalised), parameters W [d, C] and b [C] from 0.
 * Optimiser: L-BFGS (10 pairs) with Armijo backtracking, full batch; `iters` L-BFGS iterations at most. It is
 * deterministic: the matrix products are single OpenBLAS dgemm calls (deterministic for a fixed thread count),
 * the per-row softmax is an OpenMP loop over independent rows and every sum runs serially in a fixed order.
 * Double precision throughout: the features are standardised once into a double copy (Ntr*d*8 bytes). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common.h"
#include "eval_metrics.h"

enum { LBFGS_M = 10 };

typedef struct {
    int n, d, C;
    const double *X; /* [n, d] standardised */
    const int *y;    /* [n] */
    double l2;
    double *Z;       /* [n, C] logits, then dLoss/dZ */
    double *rowloss; /* [n] */
} Prob;

static void logits(const double *X, int n, int d, int C, const double *th, double *Z) {
    const double *W = th, *b = th + (size_t)d * C;
    for (int i = 0; i < n; i++) memcpy(Z + (size_t)i * C, b, sizeof(double) * C);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, d, 1.0, X, d, W, C, 1.0, Z, C);
}

/* f(theta) and its gradient g. */
static double eval_fg(Prob *p, const double *th, double *g) {
    const int n = p->n, d = p->d, C = p->C;
    logits(p->X, n, d, C, th, p->Z);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        double *z = p->Z + (size_t)i * C;
        double mx = z[0];
        for (int c = 1; c < C; c++) if (z[c] > mx) mx = z[c];
        double s = 0, zy = z[p->y[i]];
        for (int c = 0; c < C; c++) s += (z[c] = exp(z[c] - mx));
        p->rowloss[i] = log(s) + mx - zy;
        for (int c = 0; c < C; c++) z[c] = z[c] / s / n; /* (softmax - onehot) / n */
        z[p->y[i]] -= 1.0 / n;
    }
    double f = 0;
    for (int i = 0; i < n; i++) f += p->rowloss[i];
    f /= n;
    const double *W = th;
    double *gW = g, *gb = g + (size_t)d * C;
    memcpy(gW, W, sizeof(double) * (size_t)d * C);
    double w2 = 0;
    for (size_t t = 0; t < (size_t)d * C; t++) w2 += W[t] * W[t];
    f += 0.5 * p->l2 * w2;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, C, n, 1.0, p->X, d, p->Z, C, p->l2, gW, C);
    for (int c = 0; c < C; c++) gb[c] = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) gb[c] += p->Z[(size_t)i * C + c];
    return f;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Two-loop recursion: dir = -H g with the stored pairs (newest at head-1); H0 = (s.y / y.y) I from the newest
 * pair. Without pairs: dir = -g. */
static void lbfgs_direction(const double *g, const double *S, const double *Y, const double *rho, int npair, int head,
                            size_t P, double *dir) {
    double alpha[LBFGS_M];
    for (size_t t = 0; t < P; t++) dir[t] = -g[t];
    for (int k = 0; k < npair; k++) {
        int s = (head - 1 - k + LBFGS_M) % LBFGS_M;
        alpha[s] = rho[s] * dot(S + s * P, dir, P);
        for (size_t t = 0; t < P; t++) dir[t] -= alpha[s] * Y[s * P + t];
    }
    if (npair) {
        int s = (head - 1 + LBFGS_M) % LBFGS_M;
        double gam = dot(S + s * P, Y + s * P, P) / dot(Y + s * P, Y + s * P, P);
        for (size_t t = 0; t < P; t++) dir[t] *= gam;
    }
    for (int k = npair - 1; k >= 0; k--) {
        int s = (head - 1 - k + LBFGS_M) % LBFGS_M;
        double beta = rho[s] * dot(Y + s * P, dir, P);
        for (size_t t = 0; t < P; t++) dir[t] += (alpha[s] - beta) * S[s * P + t];
    }
}

/* Stops early (deterministically) when the gradient is ~0, when an accepted step lowers f by less than
 * 1e-12 relative (the objective is then flat to double resolution: further "progress" would be rounding
 * noise), when no decrease is found even along -g, or after 2*iters + 10 evaluations of f (a bound on the
 * time: a step normally costs one evaluation, so this never binds on a well-behaved fit). */
static void lbfgs(Prob *p, double *th, int iters) {
    const size_t P = (size_t)p->d * p->C + p->C;
    double *g = xcalloc(P, sizeof(double)), *gn = xcalloc(P, sizeof(double)), *dir = xcalloc(P, sizeof(double));
    double *xn = xcalloc(P, sizeof(double)), *sv = xcalloc(P, sizeof(double)), *yv = xcalloc(P, sizeof(double));
    double *S = xcalloc(P * LBFGS_M, sizeof(double)), *Y = xcalloc(P * LBFGS_M, sizeof(double));
    double rho[LBFGS_M];
    int npair = 0, head = 0; /* pairs in a ring; head = next slot */
    double f = eval_fg(p, th, g);
    long evals = 1, max_evals = 2L * iters + 10;
    for (int it = 0; it < iters && evals < max_evals; it++) {
        double gmax = 0;
        for (size_t t = 0; t < P; t++) if (fabs(g[t]) > gmax) gmax = fabs(g[t]);
        if (!(gmax > 1e-10)) break; /* converged (or non-finite: stop where we are) */
        double fn = f, a = 0;
        int ok = 0;
        for (int attempt = 0; attempt < 2 && !ok; attempt++) {
            if (attempt) npair = 0; /* second attempt: steepest descent with fresh memory */
            lbfgs_direction(g, S, Y, rho, npair, head, P, dir);
            double gd = dot(g, dir, P);
            if (!(gd < 0)) continue;
            if (npair) a = 1.0;
            else { /* first step (or restart): length <= 1 */
                double gn2 = sqrt(dot(g, g, P));
                a = gn2 > 1.0 ? 1.0 / gn2 : 1.0;
            }
            for (int ls = 0; ls < 30 && evals < max_evals; ls++, a *= 0.5) { /* Armijo backtracking */
                for (size_t t = 0; t < P; t++) xn[t] = th[t] + a * dir[t];
                fn = eval_fg(p, xn, gn);
                evals++;
                if (fn <= f + 1e-4 * a * gd) { ok = 1; break; }
            }
        }
        if (!ok) break;
        for (size_t t = 0; t < P; t++) { sv[t] = xn[t] - th[t]; yv[t] = gn[t] - g[t]; }
        double sy = dot(sv, yv, P), yy = dot(yv, yv, P);
        if (sy > 1e-12 * yy && sy > 0) { /* keep the pair only with safely positive curvature */
            memcpy(S + head * P, sv, sizeof(double) * P);
            memcpy(Y + head * P, yv, sizeof(double) * P);
            rho[head] = 1.0 / sy;
            head = (head + 1) % LBFGS_M;
            if (npair < LBFGS_M) npair++;
        }
        double fo = f;
        memcpy(th, xn, sizeof(double) * P);
        memcpy(g, gn, sizeof(double) * P);
        f = fn;
        double scale = fabs(fo) > fabs(f) ? fabs(fo) : fabs(f);
        if (fo - f <= 1e-12 * (scale > 1 ? scale : 1)) break;
    }
    free(g); free(gn); free(dir); free(xn); free(sv); free(yv); free(S); free(Y);
}

/* Standardised double copy of the rows with a valid label; returns their count. */
static int standardise(const float *X, const int32_t *y, int N, int d, int C, const double *mean, const double *scale,
                       double **Xs, int **ys) {
    int n = 0;
    for (int i = 0; i < N; i++) if (y[i] >= 0 && y[i] < C) n++;
    *Xs = xmalloc(sizeof(double) * ((size_t)n * d + 1));
    *ys = xmalloc(sizeof(int) * ((size_t)n + 1));
    int r = 0;
    for (int i = 0; i < N; i++) {
        if (y[i] < 0 || y[i] >= C) continue;
        double *o = *Xs + (size_t)r * d;
        const float *x = X + (size_t)i * d;
        for (int t = 0; t < d; t++) o[t] = ((double)x[t] - mean[t]) * scale[t];
        (*ys)[r++] = y[i];
    }
    return n;
}

static double accuracy(const double *X, const int *y, int n, int d, int C, const double *th) {
    double *Z = xmalloc(sizeof(double) * (size_t)n * C);
    logits(X, n, d, C, th, Z);
    int hit = 0;
    for (int i = 0; i < n; i++) {
        const double *z = Z + (size_t)i * C;
        int best = 0;
        for (int c = 1; c < C; c++) if (z[c] > z[best]) best = c; /* lowest class on ties */
        hit += best == y[i];
    }
    free(Z);
    return (double)hit / n;
}

int linear_probe(const float *Xtr, const int32_t *ytr, int Ntr, const float *Xte, const int32_t *yte, int Nte, int d,
                 int n_classes, double l2, int iters, double *acc_test, double *acc_train) {
    const int C = n_classes;
    if (d < 1 || C < 2) return v3_error("linear_probe: need d >= 1 and >= 2 classes (got d=%d, %d classes)", d, C);
    if (Ntr < 1 || Nte < 1) return v3_error("linear_probe: empty train or test set (%d, %d)", Ntr, Nte);
    if (!(l2 >= 0) || iters < 0) return v3_error("linear_probe: invalid l2 %g or iters %d", l2, iters);
    /* Train statistics over the labelled training rows, in double (two passes). */
    double *mean = xcalloc((size_t)d, sizeof(double)), *scale = xcalloc((size_t)d, sizeof(double));
    int n = 0;
    for (int i = 0; i < Ntr; i++) {
        if (ytr[i] < 0 || ytr[i] >= C) continue;
        n++;
        for (int t = 0; t < d; t++) mean[t] += Xtr[(size_t)i * d + t];
    }
    if (n == 0) {
        free(mean); free(scale);
        return v3_error("linear_probe: no training sample has a label in [0,%d)", C);
    }
    for (int t = 0; t < d; t++) mean[t] /= n;
    for (int i = 0; i < Ntr; i++) {
        if (ytr[i] < 0 || ytr[i] >= C) continue;
        for (int t = 0; t < d; t++) {
            double v = Xtr[(size_t)i * d + t] - mean[t];
            scale[t] += v * v;
        }
    }
    for (int t = 0; t < d; t++) {
        double sd = sqrt(scale[t] / n); /* population std, as a StandardScaler */
        /* Constant column: its std is 0 up to the rounding of the mean (n*eps relative), so it is zeroed rather
         * than blown up into +-1 noise or NaN. */
        scale[t] = (sd > (double)n * DBL_EPSILON * fabs(mean[t]) && sd > 0) ? 1.0 / sd : 0.0;
    }
    double *X, *Xt;
    int *y, *yt;
    standardise(Xtr, ytr, Ntr, d, C, mean, scale, &X, &y);
    int nt = standardise(Xte, yte, Nte, d, C, mean, scale, &Xt, &yt);
    free(mean);
    free(scale);
    if (nt == 0) {
        free(X); free(y); free(Xt); free(yt);
        return v3_error("linear_probe: no test sample has a label in [0,%d)", C);
    }
    const size_t P = (size_t)d * C + C;
    double *th = xcalloc(P, sizeof(double));
    Prob p = {n, d, C, X, y, l2, xmalloc(sizeof(double) * (size_t)n * C), xmalloc(sizeof(double) * (size_t)n)};
    lbfgs(&p, th, iters);
    *acc_test = accuracy(Xt, yt, nt, d, C, th);
    if (acc_train) *acc_train = accuracy(X, y, n, d, C, th);
    free(p.Z); free(p.rowloss); free(th); free(X); free(y); free(Xt); free(yt);
    return 0;
}
