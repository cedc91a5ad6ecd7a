/* Exact t-SNE into 2-D (van der Maaten & Hinton 2008), written from the paper's description:
 *   p_{j|i} ∝ exp(-beta_i |x_i - x_j|^2), beta_i by bisection so that the row's perplexity 2^H matches;
 *   P = (P_cond + P_cond^T) / 2N;  q_ij = w_ij / Z with w_ij = 1 / (1 + |y_i - y_j|^2), Z = sum_{k != l} w_kl;
 *   dC/dy_i = 4 sum_j (p_ij - q_ij) w_ij (y_i - y_j) = 4 (A_i - R_i / Z),
 *     A_i = sum_j p_ij w_ij (y_i - y_j)  (attraction),  R_i = sum_j w_ij^2 (y_i - y_j)  (repulsion),
 * so one O(N) sweep per row gives A_i, R_i and row i's share of Z.
 *
 * Determinism: every OpenMP loop only partitions rows; each row is summed by one thread in a fixed order (the
 * `omp simd` reductions have a width fixed at compile time) and row results are combined serially in row order.
 * The output therefore does not depend on the number of threads.
 *
 * Memory: P is stored dense as N*N floats (100 MB at N = 5000); distances are recomputed per row (O(N) each). */
#include "tsne.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

void tsne_defaults(TsneOpts *o) {
    o->perplexity = 30;
    o->iters = 1000;
    o->seed = 0;
}

/* Squared distances from row i to every row, in double (d is small; exact and order-fixed). */
static void row_sqdist(const float *X, int N, int d, int i, double *D) {
    const float *xi = X + (size_t)i * d;
    for (int j = 0; j < N; j++) {
        const float *xj = X + (size_t)j * d;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < d; k++) {
            double t = (double)xi[k] - xj[k];
            s += t * t;
        }
        D[j] = s;
    }
}

/* Conditional probabilities p_{j|i} for one row, written to Prow (float). Bisection on beta until the entropy
 * (natural log) is within 1e-5 of log(perplexity). Distances are shifted by the row minimum so that the nearest
 * neighbour always has weight 1 (no underflow of the normaliser, whatever the data's scale). */
static void calibrate_row(const double *D, int N, int i, double perplexity, double *w, float *Prow) {
    double dmin = INFINITY, dsum = 0;
    for (int j = 0; j < N; j++)
        if (j != i) {
            if (D[j] < dmin) dmin = D[j];
            dsum += D[j];
        }
    double mean = dsum / (N - 1) - dmin;
    /* scale-free start: beta ~ 1 / typical distance, so rescaling X rescales beta and nothing else */
    double beta = mean > 0 ? 1.0 / mean : 1.0, lo = 0, hi = INFINITY, target = log(perplexity), S = 0;
    for (int step = 0; step < 200; step++) {
        double wd = 0;
        S = 0;
        for (int j = 0; j < N; j++) {
            double e = j == i ? 0 : exp(-beta * (D[j] - dmin));
            w[j] = e;
            S += e;
            wd += e * (D[j] - dmin);
        }
        double H = log(S) + beta * wd / S;
        if (fabs(H - target) < 1e-5) break;
        if (H > target) { /* too flat: sharpen */
            lo = beta;
            beta = isinf(hi) ? beta * 2 : 0.5 * (beta + hi);
        } else {
            hi = beta;
            beta = 0.5 * (beta + lo);
        }
    }
    for (int j = 0; j < N; j++) Prow[j] = (float)(w[j] / S);
}

/* Eigen-decomposition of a symmetric 2x2 [[a, b], [b, c]]: eigenvalues l1 >= l2 and the unit eigenvector of l1. */
static void sym2_eig(double a, double b, double c, double *l1, double *l2, double v1[2]) {
    double m = 0.5 * (a + c), r = sqrt(0.25 * (a - c) * (a - c) + b * b);
    *l1 = m + r;
    *l2 = m - r;
    if (fabs(b) > 1e-300) {
        v1[0] = *l1 - c;
        v1[1] = b;
    } else if (a >= c) {
        v1[0] = 1;
        v1[1] = 0;
    } else {
        v1[0] = 0;
        v1[1] = 1;
    }
    double n = hypot(v1[0], v1[1]);
    v1[0] /= n;
    v1[1] /= n;
}

/* Initial map: projection on the top-2 principal components (subspace iteration on the d x d covariance, then a
 * 2x2 Rayleigh-Ritz step to order and orient them), scaled so that the first coordinate has std 1e-4, plus a
 * little seeded noise (std 1e-6) so duplicate points do not share a gradient forever. Y0/Y1 are [N] each. */
static void pca_init(const float *X, int N, int d, uint64_t seed, double *Y0, double *Y1) {
    double *mu = xcalloc((size_t)d, sizeof(double));
    for (int i = 0; i < N; i++)
        for (int k = 0; k < d; k++) mu[k] += X[(size_t)i * d + k];
    for (int k = 0; k < d; k++) mu[k] /= N;
    /* covariance (unnormalised: the scale does not matter for the eigenvectors), one row of C per thread */
    double *C = xcalloc((size_t)d * d, sizeof(double));
#pragma omp parallel for schedule(dynamic, 4)
    for (int a = 0; a < d; a++)
        for (int b = a; b < d; b++) {
            double s = 0;
            for (int i = 0; i < N; i++)
                s += ((double)X[(size_t)i * d + a] - mu[a]) * ((double)X[(size_t)i * d + b] - mu[b]);
            C[(size_t)a * d + b] = s;
        }
    for (int a = 0; a < d; a++)
        for (int b = 0; b < a; b++) C[(size_t)a * d + b] = C[(size_t)b * d + a];

    Rng r;
    rng_seed(&r, seed ^ 0x54534e45ull /* "TSNE": a stream of its own */);
    double *V = xmalloc(sizeof(double) * 2 * d), *W = xmalloc(sizeof(double) * 2 * d); /* columns v0, v1 */
    for (int k = 0; k < 2 * d; k++) V[k] = rng_normal(&r);
    for (int it = 0; it < 1000 && d > 1; it++) {
        for (int c = 0; c < 2; c++)
            for (int a = 0; a < d; a++) {
                double s = 0;
                for (int b = 0; b < d; b++) s += C[(size_t)a * d + b] * V[c * d + b];
                W[c * d + a] = s;
            }
        /* Gram-Schmidt: W0 normalised, W1 orthogonal to it */
        double n0 = 0, dot = 0, n1 = 0;
        for (int a = 0; a < d; a++) n0 += W[a] * W[a];
        n0 = sqrt(n0);
        if (!(n0 > 1e-300)) break; /* zero covariance: keep the random directions */
        for (int a = 0; a < d; a++) W[a] /= n0;
        for (int a = 0; a < d; a++) dot += W[a] * W[d + a];
        for (int a = 0; a < d; a++) W[d + a] -= dot * W[a];
        for (int a = 0; a < d; a++) n1 += W[d + a] * W[d + a];
        n1 = sqrt(n1);
        if (!(n1 > 1e-300)) { /* rank 1: any unit vector orthogonal to W0 will do */
            for (int a = 0; a < d; a++) W[d + a] = (a == 0) - W[0] * W[a];
            n1 = 0;
            for (int a = 0; a < d; a++) n1 += W[d + a] * W[d + a];
            n1 = sqrt(n1);
            if (!(n1 > 1e-300)) {
                for (int a = 0; a < d; a++) W[d + a] = (a == 1) - W[1] * W[a];
                n1 = 0;
                for (int a = 0; a < d; a++) n1 += W[d + a] * W[d + a];
                n1 = sqrt(n1);
            }
        }
        for (int a = 0; a < d; a++) W[d + a] /= n1;
        double change = 0;
        for (int k = 0; k < 2 * d; k++) change = fmax(change, fabs(W[k] - V[k]));
        memcpy(V, W, sizeof(double) * 2 * d);
        if (change < 1e-12) break;
    }
    if (d == 1) { /* one input dimension: the data direction and a zero second coordinate */
        V[0] = 1;
        V[1] = 0;
    }
    /* Rayleigh-Ritz in span(V): rotate so that column 0 carries the larger variance */
    if (d > 1) {
        double h[3] = {0, 0, 0}; /* V^T C V: (0,0), (0,1), (1,1) */
        for (int a = 0; a < d; a++) {
            double c0 = 0, c1 = 0;
            for (int b = 0; b < d; b++) {
                c0 += C[(size_t)a * d + b] * V[b];
                c1 += C[(size_t)a * d + b] * V[d + b];
            }
            h[0] += V[a] * c0;
            h[1] += V[a] * c1;
            h[2] += V[d + a] * c1;
        }
        double l1, l2, e[2];
        sym2_eig(h[0], h[1], h[2], &l1, &l2, e);
        for (int a = 0; a < d; a++) {
            double p0 = e[0] * V[a] + e[1] * V[d + a], p1 = -e[1] * V[a] + e[0] * V[d + a];
            W[a] = p0;
            W[d + a] = p1;
        }
        /* fixed orientation: the entry of largest magnitude of each component is positive */
        for (int c = 0; c < 2; c++) {
            int am = 0;
            for (int a = 1; a < d; a++)
                if (fabs(W[c * d + a]) > fabs(W[c * d + am])) am = a;
            if (W[c * d + am] < 0)
                for (int a = 0; a < d; a++) W[c * d + a] = -W[c * d + a];
        }
        memcpy(V, W, sizeof(double) * 2 * d);
    }
    double s0 = 0, m0 = 0;
    for (int i = 0; i < N; i++) {
        double p0 = 0, p1 = 0;
        for (int a = 0; a < d; a++) {
            double x = (double)X[(size_t)i * d + a] - mu[a];
            p0 += x * V[a];
            if (d > 1) p1 += x * V[d + a];
        }
        Y0[i] = p0;
        Y1[i] = p1;
        m0 += p0;
    }
    m0 /= N;
    for (int i = 0; i < N; i++) s0 += (Y0[i] - m0) * (Y0[i] - m0);
    s0 = sqrt(s0 / N);
    double scale = s0 > 0 ? 1e-4 / s0 : 0; /* all points equal: the noise alone spreads them */
    for (int i = 0; i < N; i++) {
        Y0[i] = Y0[i] * scale + 1e-6 * rng_normal(&r);
        Y1[i] = Y1[i] * scale + 1e-6 * rng_normal(&r);
    }
    free(mu);
    free(C);
    free(V);
    free(W);
}

/* One gradient sweep: per row the attraction (scaled by `exag`) and repulsion sums and the row's share of Z;
 * returns Z and fills G0/G1 with dC/dy. */
static double gradient(const float *P, int N, double exag, const double *Y0, const double *Y1, double *rowz,
                       double *A0, double *A1, double *R0, double *R1, double *G0, double *G1) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *Pi = P + (size_t)i * N;
        double yi0 = Y0[i], yi1 = Y1[i], a0 = 0, a1 = 0, r0 = 0, r1 = 0, z = 0;
#pragma omp simd reduction(+ : a0, a1, r0, r1, z)
        for (int j = 0; j < N; j++) {
            double d0 = yi0 - Y0[j], d1 = yi1 - Y1[j];
            double w = 1.0 / (1.0 + d0 * d0 + d1 * d1);
            double pw = (double)Pi[j] * w, ww = w * w;
            a0 += pw * d0;
            a1 += pw * d1;
            r0 += ww * d0;
            r1 += ww * d1;
            z += w;
        }
        A0[i] = a0;
        A1[i] = a1;
        R0[i] = r0;
        R1[i] = r1;
        rowz[i] = z - 1.0; /* the j == i term (w = 1) is not part of Z */
    }
    double Z = 0;
    for (int i = 0; i < N; i++) Z += rowz[i];
    for (int i = 0; i < N; i++) {
        G0[i] = 4.0 * (exag * A0[i] - R0[i] / Z);
        G1[i] = 4.0 * (exag * A1[i] - R1[i] / Z);
    }
    return Z;
}

/* KL(P || Q) = sum P log P + log Z * sum P + sum_ij p_ij log(1 + |y_i - y_j|^2), given Z and the constants. */
static double kl_divergence(const float *P, int N, const double *Y0, const double *Y1, double Z, double plogp,
                            double psum, double *rowz) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *Pi = P + (size_t)i * N;
        double s = 0;
        for (int j = 0; j < N; j++)
            if (Pi[j] > 0) {
                double d0 = Y0[i] - Y0[j], d1 = Y1[i] - Y1[j];
                s += Pi[j] * log1p(d0 * d0 + d1 * d1);
            }
        rowz[i] = s;
    }
    double kl = plogp + log(Z) * psum;
    for (int i = 0; i < N; i++) kl += rowz[i];
    return kl;
}

/* One coordinate's update: the gain grows while the previous step points against the gradient (still going
 * downhill the same way) and shrinks otherwise (the gradient flipped: we overshot), floored at 0.01. */
static void step_coords(int N, double mom, double lr, const double *G, double *U, double *g, double *Y) {
    for (int i = 0; i < N; i++) {
        g[i] = U[i] * G[i] < 0 ? g[i] + 0.2 : g[i] * 0.8;
        if (g[i] < 0.01) g[i] = 0.01;
        U[i] = mom * U[i] - lr * g[i] * G[i];
        Y[i] += U[i];
    }
}

int tsne_2d(const float *X, int N, int d, const TsneOpts *o, float *Y,
            void (*progress)(int it, int iters, double kl, void *ctx), void *ctx) {
    TsneOpts def;
    if (!o) {
        tsne_defaults(&def);
        o = &def;
    }
    if (!X || !Y) return v3_error("tsne: NULL input or output");
    if (N < 4) return v3_error("tsne: needs at least 4 points (got %d)", N);
    if (d < 1) return v3_error("tsne: input dimension must be >= 1 (got %d)", d);
    if (!(o->perplexity > 0) || !(o->perplexity < N))
        return v3_error("tsne: perplexity must be in (0, N) = (0, %d) (got %g)", N, o->perplexity);
    if (o->iters < 0) return v3_error("tsne: iters must be >= 0 (got %d)", o->iters);
    if ((size_t)N > (size_t)46340) return v3_error("tsne: N = %d is too large for exact t-SNE", N);
    for (size_t k = 0; k < (size_t)N * d; k++)
        if (!isfinite(X[k])) return v3_error("tsne: input has a non-finite value at row %zu, column %zu",
                                             k / (size_t)d, k % (size_t)d);

    /* 1. conditional P rows, then symmetrise in place: pair (i, j) with i < j is owned by row i */
    float *P = falloc((size_t)N * N);
#pragma omp parallel
    {
        double *D = xmalloc(sizeof(double) * N), *w = xmalloc(sizeof(double) * N);
#pragma omp for schedule(dynamic, 16)
        for (int i = 0; i < N; i++) {
            row_sqdist(X, N, d, i, D);
            calibrate_row(D, N, i, o->perplexity, w, P + (size_t)i * N);
        }
        free(D);
        free(w);
    }
    const double inv2n = 1.0 / (2.0 * N);
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            float s = (float)(((double)P[(size_t)i * N + j] + P[(size_t)j * N + i]) * inv2n);
            P[(size_t)i * N + j] = P[(size_t)j * N + i] = s;
        }

    double *buf = xcalloc((size_t)N * 13, sizeof(double));
    double *Y0 = buf, *Y1 = buf + N, *G0 = buf + 2 * (size_t)N, *G1 = buf + 3 * (size_t)N, *U0 = buf + 4 * (size_t)N,
           *U1 = buf + 5 * (size_t)N, *g0 = buf + 6 * (size_t)N, *g1 = buf + 7 * (size_t)N, *rowz = buf + 8 * (size_t)N,
           *A0 = buf + 9 * (size_t)N, *A1 = buf + 10 * (size_t)N, *R0 = buf + 11 * (size_t)N,
           *R1 = buf + 12 * (size_t)N;
    double plogp = 0, psum = 0;
    if (progress) { /* constants of the KL, only needed for reporting */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < N; i++) {
            double s = 0, t = 0;
            for (int j = 0; j < N; j++) {
                double p = P[(size_t)i * N + j];
                if (p > 0) s += p * log(p);
                t += p;
            }
            rowz[i] = s;
            A0[i] = t;
        }
        for (int i = 0; i < N; i++) {
            plogp += rowz[i];
            psum += A0[i];
        }
    }

    /* 2. initial map and gradient descent with momentum and per-coordinate gains (Jacobs 1988, as in the paper's
     * implementation notes); early exaggeration 12 with momentum 0.5 for 250 iterations, then momentum 0.8,
     * restarting the update and gains at the switch. */
    pca_init(X, N, d, o->seed, Y0, Y1);
    const int explore = 250;
    const double lr = fmax(N / 12.0 / 4.0, 50.0);
    for (int it = 0; it < o->iters; it++) {
        int early = it < explore;
        if (it == 0 || it == explore)
            for (int i = 0; i < N; i++) {
                U0[i] = U1[i] = 0;
                g0[i] = g1[i] = 1;
            }
        double mom = early ? 0.5 : 0.8, exag = early ? 12.0 : 1.0;
        double Z = gradient(P, N, exag, Y0, Y1, rowz, A0, A1, R0, R1, G0, G1);
        if (progress && ((it + 1) % 50 == 0 || it + 1 == o->iters))
            progress(it + 1, o->iters, kl_divergence(P, N, Y0, Y1, Z, plogp, psum, rowz), ctx);
        step_coords(N, mom, lr, G0, U0, g0, Y0);
        step_coords(N, mom, lr, G1, U1, g1, Y1);
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        Y[2 * i] = (float)Y0[i];
        Y[2 * i + 1] = (float)Y1[i];
        if (!isfinite(Y[2 * i]) || !isfinite(Y[2 * i + 1])) bad = 1;
    }
    ffree(P);
    free(buf);
    if (bad) return v3_error("tsne: the optimisation diverged (non-finite coordinates)");
    return 0;
}
