/* The cpu backend's own approximations checked against the exact functions over their whole range (the op-by-op
 * comparison with ref in test_backend_ops sees random inputs only). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "rng.h"
#include "testing.h"

/* GELU: a dense sweep over [-40, 40] and edge values, against Phi(x) = erfc(-x/sqrt2)/2 in double, which, unlike
 * ref's 1 + erf, keeps its relative accuracy for negative x. Bound: 2^-22 relative (2 float ulps: one for the
 * float rounding, one spare; the approximations are within 1e-11, the worst is printed), plus 1e-37 absolute where
 * the result underflows; gelu' also 1e-12 absolute, the tolerance row's 1e-12 of its O(1) scale: next to its zero
 * at -0.7517915, Phi + x phi cancels in double too (ref's form, which the cpu backend keeps). */
TEST(cpu_gelu_matches_the_exact_function_everywhere) {
    enum { NS = 400001 };
    size_t n = NS + 16;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n),
          *dx = malloc(sizeof(float) * n);
    for (int i = 0; i < NS; i++) x[i] = -40.0f + 80.0f * (float)i / (NS - 1);
    /* the approximation's edges (t = |x|/sqrt2 at 0.75, 10.5 and the clamp at 26), tiny, subnormal and signed
     * zeros, and next to gelu's turning point -0.7517915 (gelu' = 0) */
    const float edges[16] = {1.0606601f, -1.0606601f, 14.849242f, -14.849242f, 36.769550f, -36.76955f,
                             1e-30f,     -1e-30f,     1e-40f,     -1e-40f,     0.0f,       -0.0f,
                             -0.7517915f, -0.75179154f, -0.7517916f, -0.751791f};
    memcpy(x + NS, edges, sizeof edges);
    for (size_t i = 0; i < n; i++) dy[i] = 1.0f + (float)(i % 7) / 8;
    for (size_t i = 0; i < n; i++) y[i] = dx[i] = NAN; /* poisoned */
    backend_cpu.gelu_fwd(n, x, y);
    backend_cpu.gelu_bwd(n, x, dy, dx);
    double worst_f = 0, worst_b = 0;
    size_t at_f = 0, at_b = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i], cdf = 0.5 * erfc(-v * 0.70710678118654752440);
        double pdf = exp(-0.5 * v * v) * 0.39894228040143267794;
        double ef = v * cdf, eb = dy[i] * (cdf + v * pdf);
        double rf = fabs(y[i] - ef) / (1e-37 + 0x1p-22 * fabs(ef)), rb = fabs(dx[i] - eb) / (1e-12 + 0x1p-22 * fabs(eb));
        if (!(rf <= worst_f)) worst_f = rf, at_f = i; /* NaN lands here and fails below */
        if (!(rb <= worst_b)) worst_b = rb, at_b = i;
    }
    fprintf(stderr, "    worst: gelu_fwd %.3g, gelu_bwd %.3g of the bound\n", worst_f, worst_b);
    CHECK(worst_f <= 1, "gelu_fwd at x = %.9g: %.9g, exact %.9g (%.3g of the bound)", x[at_f], y[at_f],
          x[at_f] * 0.5 * erfc(-x[at_f] * 0.70710678118654752440), worst_f);
    CHECK(worst_b <= 1, "gelu_bwd at x = %.9g: %.9g (%.3g of the bound)", x[at_b], dx[at_b], worst_b);
    /* NaN propagates; infinities as the reference formula gives them */
    float s[4] = {NAN, INFINITY, -INFINITY, 3.0f}, o[4];
    backend_cpu.gelu_fwd(4, s, o);
    CHECK(isnan(o[0]) && o[1] == INFINITY && isnan(o[2]) && fabsf(o[3] - 2.99595f) < 1e-5f,
          "special values: gelu(nan, inf, -inf, 3) = %g %g %g %g", o[0], o[1], o[2], o[3]);
    free(x), free(y), free(dy), free(dx);
    return 0;
}

/* VQ search: rows placed at the midpoint of two codes, moved by 1e-8 to 1e-5 of the codes' distance toward one,
 * so float32 scores cannot order the two codes but the reference's double distances can: the cpu search must pick
 * the reference's code in every row (it re-decides such rows in double). The test shows it is hard: a plain float32
 * argmin of the same scores disagrees with the reference on some rows. */
TEST(cpu_vq_search_decides_near_ties_as_ref) {
    int K = 10, d = 512, N = 320;
    float *e = malloc(sizeof(float) * K * d), *x = malloc(sizeof(float) * N * d), *q = malloc(sizeof(float) * N * d);
    int *ic = malloc(sizeof(int) * N), *ir = malloc(sizeof(int) * N);
    Rng r;
    rng_seed(&r, 17);
    for (int i = 0; i < K * d; i++) e[i] = (float)rng_normal(&r);
    for (int i = 0; i < N; i++) {
        int a = i % K, b = (i / K + 1 + a) % K;
        double f = 0.5 + (i % 2 ? 1 : -1) * pow(10.0, -8 + 3 * rng_uniform(&r));
        for (int t = 0; t < d; t++) x[(size_t)i * d + t] = (float)((1 - f) * e[a * d + t] + f * e[b * d + t]);
    }
    void *wc = backend_cpu.vq_create(K, d, N), *wr = backend_ref.vq_create(K, d, N);
    double sc = NAN, sr = NAN;
    for (int i = 0; i < N; i++) ic[i] = ir[i] = -1;
    backend_cpu.vq_search(wc, N, x, e, ic, q, &sc);
    backend_ref.vq_search(wr, N, x, e, ir, q, &sr);
    int differ = 0, float_differs = 0;
    for (int i = 0; i < N; i++) {
        differ += ic[i] != ir[i];
        float best = INFINITY;
        int bi = 0;
        for (int k = 0; k < K; k++) {
            float en = 0, dot = 0;
            for (int t = 0; t < d; t++) en += e[k * d + t] * e[k * d + t], dot += x[(size_t)i * d + t] * e[k * d + t];
            float s = en - 2 * dot;
            if (s < best) best = s, bi = k;
        }
        float_differs += bi != ir[i];
    }
    backend_cpu.vq_destroy(wc), backend_ref.vq_destroy(wr);
    CHECK(differ == 0, "cpu vq_search picked another code than ref in %d of %d rows", differ, N);
    CHECK(fabs(sc - sr) <= 1e-6 * sr, "commit_sum %.17g vs ref %.17g", sc, sr);
    CHECK(float_differs > 0, "the rows are not hard: a float32 argmin agrees with ref everywhere");
    free(e), free(x), free(q), free(ic), free(ir);
    return 0;
}
