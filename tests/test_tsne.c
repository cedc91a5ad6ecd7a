/* t-SNE: well-separated clusters stay apart in the map, the result is reproducible, bad arguments are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"
#include "testing.h"
#include "tsne.h"

/* k Gaussian clusters of n points each in dim dimensions: centres at distance ~10 apart, unit spread. */
static void make_clusters(int k, int n, int dim, uint64_t seed, float *X, int *label) {
    Rng r;
    rng_seed(&r, seed);
    float *c = xmalloc(sizeof(float) * k * dim);
    for (int a = 0; a < k * dim; a++) c[a] = (float)(5.0 * rng_normal(&r));
    for (int i = 0; i < k * n; i++) {
        label[i] = i % k; /* interleaved, so the row order carries no cluster information */
        for (int a = 0; a < dim; a++) X[(size_t)i * dim + a] = c[label[i] * dim + a] + (float)rng_normal(&r);
    }
    free(c);
}

static int kl_calls;
static double kl_last;
static void on_progress(int it, int iters, double kl, void *ctx) {
    kl_calls++;
    kl_last = kl;
}

TEST(tsne_separates_gaussian_clusters) {
    enum { K = 4, PER = 50, N = K * PER, D = 20 };
    float *X = xmalloc(sizeof(float) * N * D), *Y = xmalloc(sizeof(float) * N * 2);
    int lab[N];
    make_clusters(K, PER, D, 11, X, lab);
    TsneOpts o;
    tsne_defaults(&o);
    CHECK(o.perplexity == 30 && o.iters == 1000, "defaults %g %d", o.perplexity, o.iters);
    o.seed = 3;
    kl_calls = 0;
    CHECK(!tsne_2d(X, N, D, &o, Y, on_progress, NULL), "tsne: %s", v3_last_error());
    CHECK(kl_calls == 20, "progress called %d times, want 20 (every 50 of 1000)", kl_calls);
    CHECK(isfinite(kl_last) && kl_last > 0 && kl_last < 2, "final KL %g", kl_last);
    for (int i = 0; i < 2 * N; i++) CHECK(isfinite(Y[i]), "Y[%d] = %g", i, Y[i]);
    /* every point's nearest neighbour in the map belongs to its cluster */
    int same = 0;
    double win = 0, btw = 0;
    long nwin = 0, nbtw = 0;
    for (int i = 0; i < N; i++) {
        double best = INFINITY;
        int bj = -1;
        for (int j = 0; j < N; j++) {
            if (j == i) continue;
            double dx = Y[2 * i] - Y[2 * j], dy = Y[2 * i + 1] - Y[2 * j + 1], dd = sqrt(dx * dx + dy * dy);
            if (dd < best) { best = dd; bj = j; }
            if (lab[i] == lab[j]) { win += dd; nwin++; }
            else { btw += dd; nbtw++; }
        }
        same += lab[bj] == lab[i];
    }
    double ratio = (btw / nbtw) / (win / nwin);
    fprintf(stderr, "    nearest neighbour in cluster: %d/%d, between/within mean distance %.2f, KL %.4f\n", same, N,
            ratio, kl_last);
    CHECK(same >= N * 98 / 100, "only %d/%d nearest neighbours in the same cluster", same, N);
    CHECK(ratio > 3, "between/within mean distance ratio %.2f", ratio);
    free(X);
    free(Y);
    return 0;
}

TEST(tsne_is_deterministic_for_a_seed) {
    enum { K = 3, PER = 30, N = K * PER, D = 8 };
    float *X = xmalloc(sizeof(float) * N * D), *Y1 = xmalloc(sizeof(float) * N * 2), *Y2 = xmalloc(sizeof(float) * N * 2);
    int lab[N];
    make_clusters(K, PER, D, 5, X, lab);
    TsneOpts o;
    tsne_defaults(&o);
    o.perplexity = 10;
    o.iters = 300;
    o.seed = 9;
    CHECK(!tsne_2d(X, N, D, &o, Y1, NULL, NULL), "tsne: %s", v3_last_error());
    CHECK(!tsne_2d(X, N, D, &o, Y2, NULL, NULL), "tsne: %s", v3_last_error());
    CHECK(!memcmp(Y1, Y2, sizeof(float) * N * 2), "two runs with the same seed differ");
    /* the seed only adds tiny tie-breaking noise, but it must reach the output */
    o.seed = 10;
    CHECK(!tsne_2d(X, N, D, &o, Y2, NULL, NULL), "tsne: %s", v3_last_error());
    CHECK(memcmp(Y1, Y2, sizeof(float) * N * 2), "a different seed gave the identical map");
    free(X);
    free(Y1);
    free(Y2);
    return 0;
}

TEST(tsne_handles_duplicates_and_tiny_inputs) {
    /* all points identical (no spread at all) and N = 4 at the smallest legal perplexity range: finite output */
    enum { N = 4, D = 3 };
    float X[N * D], Y[N * 2];
    for (int i = 0; i < N * D; i++) X[i] = 1.5f;
    TsneOpts o;
    tsne_defaults(&o);
    o.perplexity = 2;
    o.iters = 200;
    CHECK(!tsne_2d(X, N, D, &o, Y, NULL, NULL), "tsne: %s", v3_last_error());
    for (int i = 0; i < N * 2; i++) CHECK(isfinite(Y[i]), "Y[%d] = %g", i, Y[i]);
    /* one input dimension */
    float X1[8] = {0, 1, 2, 3, 10, 11, 12, 13}, Y1[16];
    o.perplexity = 3;
    CHECK(!tsne_2d(X1, 8, 1, &o, Y1, NULL, NULL), "tsne d=1: %s", v3_last_error());
    for (int i = 0; i < 16; i++) CHECK(isfinite(Y1[i]), "Y1[%d] = %g", i, Y1[i]);
    return 0;
}

TEST(tsne_rejects_bad_arguments) {
    float X[10 * 2] = {0}, Y[10 * 2];
    TsneOpts o;
    tsne_defaults(&o);
    o.perplexity = 2;
    CHECK(tsne_2d(X, 3, 2, &o, Y, NULL, NULL) == -1, "N = 3 accepted");
    CHECK(strstr(v3_last_error(), "at least 4"), "error: %s", v3_last_error());
    o.perplexity = 10;
    CHECK(tsne_2d(X, 10, 2, &o, Y, NULL, NULL) == -1, "perplexity = N accepted");
    CHECK(strstr(v3_last_error(), "perplexity"), "error: %s", v3_last_error());
    o.perplexity = 0;
    CHECK(tsne_2d(X, 10, 2, &o, Y, NULL, NULL) == -1, "perplexity 0 accepted");
    o.perplexity = 3;
    X[7] = NAN;
    CHECK(tsne_2d(X, 10, 2, &o, Y, NULL, NULL) == -1, "NaN input accepted");
    CHECK(strstr(v3_last_error(), "row 3"), "error: %s", v3_last_error());
    return 0;
}
