/* The vector quantiser on the device (kernels/vq.cu) against the CPU reference (host/model/vq.c).
 * Every test starts with REQUIRE_GPU() (SKIP without a device). Inputs are fresh random tensors with exact ties
 * built in: codeword K-1 duplicates codeword 0 and codeword K/2 duplicates codeword 1 (K >= 4), row 0 equals
 * codeword K-1 (so the CPU answer is 0) and every 7th row from row 3 equals some codeword.
 *   - indices: tie-aware against vq_assign (index g accepted when d(x, c_g) <= d_min (1 + 1e-5) + 1e-6, distances
 *     in double on the host); a later duplicate of the CPU's codeword, or any other index on a row that equals a
 *     codeword, fails. Exact mismatches within the tolerance are counted and printed. Large shapes are checked
 *     on a sample of rows (always including the tie rows);
 *   - q: bitwise equal to embed[ind] on every row; commitment sum: relative 1e-6 against the host's double sum
 *     with the GPU's indices, 1e-5 against vq_forward's with the CPU's;
 *   - EMA (cuda_vq_ema) against vq_ema_update (threshold 0) on the GPU's indices: cluster_size, embed_avg and
 *     embed within 1e-6 relative (plus 1e-6 absolute for cancellation near 0);
 *   - dead codes: cuda_vq_revive against a direct host computation (bitwise), and the whole threshold > 0 step
 *     (EMA, dead set from the counts, rows drawn by vq_sample_rows from a copy of the CPU's RNG, revive) against
 *     vq_ema_update with its own RNG;
 *   - outputs poisoned before every run (NaN floats, 0xFF indices and commitment);
 *   - determinism: search and EMA repeated from the same inputs give identical bits.
 * Shapes cover the three search paths of cuda_vq_search (fused small codebook; shared-memory codebook + sorted
 * statistics; tiled large codebook + sorted statistics), ragged N (0, 1, 31, 1000), d = 30/33/64/100/256/512,
 * K = 1 .. 4096, and every cuda_vq_argmin variant. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "gpu_test.h"
#include "rng.h"
#include "testing.h"
#include "vq.h"

#define IND_RTOL 1e-5
#define IND_ATOL 1e-6
#define EMA_RTOL 1e-6
#define EMA_ATOL 1e-6
#define COMMIT_RTOL 1e-6
#define DECAY 0.98f

/* ---- inputs and host-side checks ---- */

static int is_tie_row(int i) { return i == 0 || i % 7 == 3; }

static void make_inputs(int N, int d, int K, unsigned long long seed, float **xo, float **eo) {
    /* one spare float so that N = 0 still gives a buffer to copy */
    float *x = hrand((size_t)N * d + 1, seed, -1.0f, 1.0f), *e = hrand((size_t)K * d, seed + 1, -1.0f, 1.0f);
    if (K >= 4) {
        memcpy(e + (size_t)(K - 1) * d, e, sizeof(float) * d);
        memcpy(e + (size_t)(K / 2) * d, e + d, sizeof(float) * d);
    }
    for (int i = 0; i < N; i++) {
        if (!is_tie_row(i)) continue;
        int k = i == 0 ? K - 1 : (int)(((long long)i * 5 + 1) % K);
        memcpy(x + (size_t)i * d, e + (size_t)k * d, sizeof(float) * d);
    }
    *xo = x;
    *eo = e;
}

static double dist2(const float *a, const float *b, int d) {
    double s = 0;
    for (int t = 0; t < d; t++) {
        double v = (double)a[t] - b[t];
        s += v * v;
    }
    return s;
}

/* Rows to check against the CPU: all when the CPU search is cheap, else ~4096 spread rows plus the tie rows. */
static int *pick_rows(int N, int K, int d, int *nr) {
    int *r = xmalloc(sizeof(int) * (size_t)(N > 0 ? N : 1));
    int n = 0;
    if ((double)N * K * d <= 3e8) {
        for (int i = 0; i < N; i++) r[n++] = i;
    } else {
        int step = N / 4096 > 1 ? N / 4096 : 1;
        for (int i = 0; i < N; i++)
            if (i % step == 0 || is_tie_row(i) || i == N - 1) r[n++] = i;
    }
    *nr = n;
    return r;
}

/* Tie-aware comparison of ind with vq_assign on the listed rows. 1 when every row passes. */
static int check_ind(const char *what, int d, int K, const float *x, const float *e, const int *ind, const int *rows,
                     int nr) {
    float *xs = falloc((size_t)nr * d + 1);
    int *cpu = xmalloc(sizeof(int) * (size_t)(nr > 0 ? nr : 1));
    for (int j = 0; j < nr; j++) memcpy(xs + (size_t)j * d, x + (size_t)rows[j] * d, sizeof(float) * d);
    vq_assign(e, K, d, nr, xs, cpu);
    int ok = 1, mism = 0;
    for (int j = 0; j < nr && ok; j++) {
        int i = rows[j], g = ind[i], c = cpu[j];
        if (g < 0 || g >= K) {
            fprintf(stderr, "    %s: row %d: index %d outside [0, %d)\n", what, i, g, K);
            ok = 0;
            break;
        }
        if (g == c) continue;
        mism++;
        const float *xi = x + (size_t)i * d;
        double dmin = dist2(xi, e + (size_t)c * d, d), dg = dist2(xi, e + (size_t)g * d, d);
        if (dg > dmin * (1 + IND_RTOL) + IND_ATOL) {
            fprintf(stderr, "    %s: row %d: gpu index %d (d = %.9g), cpu %d (d = %.9g): outside the tie tolerance\n",
                    what, i, g, dg, c, dmin);
            ok = 0;
        } else if (!memcmp(e + (size_t)g * d, e + (size_t)c * d, sizeof(float) * d)) {
            fprintf(stderr, "    %s: row %d: gpu index %d is a duplicate of the cpu's %d: exact ties must give the "
                    "lowest index\n", what, i, g, c);
            ok = 0;
        } else if (is_tie_row(i)) {
            fprintf(stderr, "    %s: row %d equals a codeword: gpu %d, cpu %d\n", what, i, g, c);
            ok = 0;
        }
    }
    if (ok && mism)
        printf("    %s: %d of %d checked rows differ from the CPU index within the tie tolerance\n", what, mism, nr);
    ffree(xs);
    free(cpu);
    return ok;
}

static int *dint_poison(size_t n) {
    int *p = cuda_alloc(sizeof(int) * (n ? n : 1));
    if (cuda_memset(p, 0xFF, sizeof(int) * (n ? n : 1))) V3_FATAL("%s", v3_last_error());
    return p;
}

static double *ddouble_poison(void) {
    double *p = cuda_alloc(sizeof(double));
    if (cuda_memset(p, 0xFF, sizeof(double))) V3_FATAL("%s", v3_last_error());
    return p;
}

static int dget_double(double *h, const double *d) {
    memset(h, 0xFF, sizeof *h);
    if (cuda_sync() || cuda_d2h(h, d, sizeof *h)) {
        fprintf(stderr, "    %s\n", v3_last_error());
        return 0;
    }
    return 1;
}

/* ---- cuda_vq_search + cuda_vq_ema against the CPU, on an existing workspace ---- */

typedef struct {
    int *ind;
    float *q, *embed, *embed_avg, *cs;
    double commit;
} SearchOut;

/* One search and one EMA on fresh device copies of (x, e, ea, cs); results copied back into o (host buffers). */
static int run_search_ema(CudaVq *w, int N, int d, int K, const float *x, const float *e, const float *ea,
                          const float *cs, SearchOut *o) {
    size_t nd = (size_t)N * d, kd = (size_t)K * d;
    float *dx = dput(x, nd + 1), *de = dput(e, kd), *dea = dput(ea, kd), *dcs = dput(cs, K), *dq = dnan(nd + 1);
    int *dind = dint_poison((size_t)N);
    double *dc = ddouble_poison();
    cuda_vq_search(w, N, dx, de, dind, dq, dc);
    int ok = dget_int(o->ind, dind, (size_t)N) && dget(o->q, dq, nd) && dget_double(&o->commit, dc);
    cuda_vq_ema(w, DECAY, de, dea, dcs);
    ok = ok && dget(o->embed, de, kd) && dget(o->embed_avg, dea, kd) && dget(o->cs, dcs, K);
    cuda_free(dx), cuda_free(de), cuda_free(dea), cuda_free(dcs), cuda_free(dq), cuda_free(dind), cuda_free(dc);
    return ok;
}

static void out_alloc(SearchOut *o, int N, int d, int K) {
    o->ind = xmalloc(sizeof(int) * (size_t)(N > 0 ? N : 1));
    o->q = falloc((size_t)N * d + 1);
    o->embed = falloc((size_t)K * d);
    o->embed_avg = falloc((size_t)K * d);
    o->cs = falloc((size_t)K);
}

static void out_free(SearchOut *o) {
    free(o->ind);
    ffree(o->q), ffree(o->embed), ffree(o->embed_avg), ffree(o->cs);
}

static int search_case(CudaVq *w, int N, int d, int K, unsigned long long seed) {
    char what[96];
    snprintf(what, sizeof what, "search N=%d d=%d K=%d", N, d, K);
    float *x, *e;
    make_inputs(N, d, K, seed, &x, &e);
    float *ea = hrand((size_t)K * d, seed + 2, -2.0f, 2.0f), *cs = hrand((size_t)K, seed + 3, 0.5f, 4.0f);
    size_t nd = (size_t)N * d, kd = (size_t)K * d;
    SearchOut a, b;
    out_alloc(&a, N, d, K);
    out_alloc(&b, N, d, K);
    CHECK(run_search_ema(w, N, d, K, x, e, ea, cs, &a), "%s: device run failed", what);

    /* indices */
    int nr;
    int *rows = pick_rows(N, K, d, &nr);
    CHECK(check_ind(what, d, K, x, e, a.ind, rows, nr), "%s: indices", what);
    free(rows);
    /* q = embed[ind] exactly; commitment against the host's double sum with the same indices */
    double host_commit = 0;
    for (int i = 0; i < N; i++) {
        const float *ei = e + (size_t)a.ind[i] * d;
        CHECK(!memcmp(a.q + (size_t)i * d, ei, sizeof(float) * d), "%s: q row %d is not embed[%d]", what, i, a.ind[i]);
        host_commit += dist2(ei, x + (size_t)i * d, d);
    }
    CHECK(isfinite(a.commit) && fabs(a.commit - host_commit) <= COMMIT_RTOL * fabs(host_commit),
          "%s: commit sum gpu %.17g, host %.17g", what, a.commit, host_commit);
    if (N > 0) { /* against vq_forward (CPU indices, mean): the loss the CPU model reports */
        VQ v;
        vq_init(&v, K, d, DECAY, 0, 0);
        memcpy(v.embed, e, sizeof(float) * kd);
        v.initted = 1.0f;
        float *qc = falloc(nd);
        int *ic = xmalloc(sizeof(int) * (size_t)N);
        double mean = vq_forward(&v, N, x, qc, ic, VQ_FROZEN, NULL);
        double got = a.commit / ((double)N * d);
        CHECK(fabs(got - mean) <= 1e-5 * fabs(mean) + 1e-12, "%s: commitment gpu %.17g, vq_forward %.17g", what, got,
              mean);
        ffree(qc);
        free(ic);
        vq_free(&v);
    } else {
        CHECK(a.commit == 0.0, "%s: commit sum of no rows = %g", what, a.commit);
    }

    /* EMA against vq_ema_update (threshold 0) on the GPU's indices */
    VQ v;
    vq_init(&v, K, d, DECAY, 0, 0);
    memcpy(v.embed, e, sizeof(float) * kd);
    memcpy(v.embed_avg, ea, sizeof(float) * kd);
    memcpy(v.cluster_size, cs, sizeof(float) * K);
    vq_ema_update(&v, N, x, a.ind, NULL);
    CHECK(close_enough("cluster_size", a.cs, v.cluster_size, K, EMA_ATOL, EMA_RTOL), "%s: EMA cluster_size", what);
    CHECK(close_enough("embed_avg", a.embed_avg, v.embed_avg, kd, EMA_ATOL, EMA_RTOL), "%s: EMA embed_avg", what);
    CHECK(close_enough("embed", a.embed, v.embed, kd, EMA_ATOL, EMA_RTOL), "%s: EMA embed", what);
    size_t same = 0;
    for (size_t i = 0; i < kd; i++) same += !memcmp(&a.embed[i], &v.embed[i], sizeof(float));
    if (same != kd) printf("    %s: EMA embed bit-identical to the CPU in %zu of %zu values\n", what, same, kd);
    vq_free(&v);

    /* determinism: the same inputs again */
    CHECK(run_search_ema(w, N, d, K, x, e, ea, cs, &b), "%s: second device run failed", what);
    CHECK(!memcmp(a.ind, b.ind, sizeof(int) * (size_t)N), "%s: ind differs between two runs", what);
    CHECK(!memcmp(a.q, b.q, sizeof(float) * nd), "%s: q differs between two runs", what);
    CHECK(!memcmp(&a.commit, &b.commit, sizeof(double)), "%s: commit %.17g then %.17g", what, a.commit, b.commit);
    CHECK(!memcmp(a.cs, b.cs, sizeof(float) * K) && !memcmp(a.embed_avg, b.embed_avg, sizeof(float) * kd) &&
              !memcmp(a.embed, b.embed, sizeof(float) * kd),
          "%s: EMA state differs between two runs", what);
    out_free(&a);
    out_free(&b);
    ffree(x), ffree(e), ffree(ea), ffree(cs);
    return 0;
}

typedef struct { int N, d, K; } Shape;

/* Fused path (small codebooks, the production sizes), the shared-memory codebook + sorted-statistics path
 * (K = 500 at d = 64: 128 KB), and the tiled path (codebook beyond shared memory). */
static const Shape k_search[] = {
    {384, 512, 12}, {384, 256, 10}, {384, 64, 12}, {1, 64, 12}, {31, 64, 1}, {1000, 64, 7}, {1000, 33, 5},
    {5000, 64, 12}, {2, 512, 12}, {65536, 256, 40}, {2000, 64, 500}, {1000, 33, 1500}, {4096, 64, 4096},
    {3000, 100, 700}, {777, 30, 2000}, {20000, 64, 1024},
};

TEST(gpu_vs_cpu_vq_search_ema) {
    REQUIRE_GPU();
    for (size_t s = 0; s < sizeof k_search / sizeof k_search[0]; s++) {
        const Shape *sh = &k_search[s];
        CudaVq *w = cuda_vq_create(sh->K, sh->d, sh->N);
        CHECK(w, "cuda_vq_create(K=%d, d=%d, N_max=%d): %s", sh->K, sh->d, sh->N, v3_last_error());
        int rc = search_case(w, sh->N, sh->d, sh->K, 1000 + 10 * s);
        cuda_vq_destroy(w);
        if (rc) return rc;
    }
    return 0;
}

/* One workspace, batches of different sizes in turn (N <= N_max; nothing from a bigger batch may leak into the
 * statistics of a smaller one), including an empty batch. N_max = 2113 with N = 2112: the smaller batch has the
 * larger grid (8 rows a block, 264 blocks, against 16 rows a block, 133 blocks). */
TEST(gpu_vq_workspace_reuse_ragged_batches) {
    REQUIRE_GPU();
    static const struct { int d, K, N_max, n; int Ns[6]; } cfg[] = {
        {64, 12, 1000, 6, {1000, 31, 1, 0, 999, 1000}},
        {512, 700, 1000, 6, {1000, 31, 1, 0, 999, 1000}},
        {64, 12, 2113, 3, {2113, 2112, 2113}},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        CudaVq *w = cuda_vq_create(cfg[c].K, cfg[c].d, cfg[c].N_max);
        CHECK(w, "cuda_vq_create: %s", v3_last_error());
        for (int i = 0; i < cfg[c].n; i++) {
            int rc = search_case(w, cfg[c].Ns[i], cfg[c].d, cfg[c].K, 2000 + 10 * (unsigned long long)i + c);
            if (rc) {
                cuda_vq_destroy(w);
                return rc;
            }
        }
        cuda_vq_destroy(w);
    }
    return 0;
}

/* ---- search variants ---- */

static const Shape k_argmin[] = {
    {384, 512, 12}, {384, 256, 10}, {1, 64, 1}, {31, 64, 5}, {1000, 64, 12}, {1000, 33, 37}, {3, 7, 100},
    {777, 30, 2000}, {4096, 64, 4096}, {65536, 64, 512}, {65536, 256, 1024},
};

TEST(gpu_vs_cpu_vq_argmin_variants) {
    REQUIRE_GPU();
    int have_blas = cuda_libs_load() == 0;
    if (!have_blas) printf("    gemm variant skipped: %s\n", v3_last_error());
    for (size_t s = 0; s < sizeof k_argmin / sizeof k_argmin[0]; s++) {
        const Shape *sh = &k_argmin[s];
        int N = sh->N, d = sh->d, K = sh->K;
        float *x, *e;
        make_inputs(N, d, K, 3000 + 10 * s, &x, &e);
        float *dx = dput(x, (size_t)N * d), *de = dput(e, (size_t)K * d);
        int *ind = xmalloc(sizeof(int) * (size_t)N), *again = xmalloc(sizeof(int) * (size_t)N);
        int nr;
        int *rows = pick_rows(N, K, d, &nr);
        CudaVq *w = cuda_vq_create(K, d, N);
        CHECK(w, "cuda_vq_create: %s", v3_last_error());
        for (int v = 0; v < VQS_N_VARIANTS; v++) {
            if (v == VQS_GEMM && !have_blas) continue;
            if (v == VQS_NAIVE && (double)N * K * d > 2e10) continue;
            char what[96];
            snprintf(what, sizeof what, "%s N=%d d=%d K=%d", cuda_vq_variant_name(v), N, d, K);
            int *dind = dint_poison((size_t)N);
            if (cuda_vq_argmin(w, v, N, dx, de, dind)) {
                /* only the shared-memory variant may decline, and only when the codebook does not fit */
                CHECK(v == VQS_SMALLK && (size_t)K * d * 4 > 96 * 1024, "%s: declined: %s", what, v3_last_error());
                printf("    %s: declined (%s)\n", what, v3_last_error());
                cuda_free(dind);
                continue;
            }
            CHECK(dget_int(ind, dind, (size_t)N), "%s: device run failed", what);
            CHECK(check_ind(what, d, K, x, e, ind, rows, nr), "%s: indices", what);
            if (cuda_memset(dind, 0xFF, sizeof(int) * (size_t)N)) V3_FATAL("%s", v3_last_error());
            CHECK(cuda_vq_argmin(w, v, N, dx, de, dind) == 0, "%s: second run: %s", what, v3_last_error());
            CHECK(dget_int(again, dind, (size_t)N), "%s: device run failed", what);
            CHECK(!memcmp(ind, again, sizeof(int) * (size_t)N), "%s: two runs differ", what);
            cuda_free(dind);
        }
        cuda_vq_destroy(w);
        free(rows);
        free(ind), free(again);
        cuda_free(dx), cuda_free(de);
        ffree(x), ffree(e);
    }
    return 0;
}

/* The naive variant repeats vq_assign's arithmetic exactly: identical indices on every row, ties or not. */
TEST(gpu_vq_naive_matches_cpu_exactly) {
    REQUIRE_GPU();
    int N = 2000, d = 48, K = 64;
    float *x, *e;
    make_inputs(N, d, K, 4242, &x, &e);
    int *cpu = xmalloc(sizeof(int) * N), *got = xmalloc(sizeof(int) * N);
    vq_assign(e, K, d, N, x, cpu);
    float *dx = dput(x, (size_t)N * d), *de = dput(e, (size_t)K * d);
    int *dind = dint_poison((size_t)N);
    CudaVq *w = cuda_vq_create(K, d, N);
    CHECK(w, "cuda_vq_create: %s", v3_last_error());
    CHECK(cuda_vq_argmin(w, VQS_NAIVE, N, dx, de, dind) == 0, "%s", v3_last_error());
    CHECK(dget_int(got, dind, (size_t)N), "device run failed");
    for (int i = 0; i < N; i++) CHECK(got[i] == cpu[i], "row %d: naive %d, vq_assign %d", i, got[i], cpu[i]);
    cuda_vq_destroy(w);
    cuda_free(dx), cuda_free(de), cuda_free(dind);
    ffree(x), ffree(e);
    free(cpu), free(got);
    return 0;
}

/* Bad requests are refused with a message, not run. */
TEST(gpu_vq_argmin_rejects_bad_requests) {
    REQUIRE_GPU();
    CudaVq *w = cuda_vq_create(4, 8, 16);
    CHECK(w, "cuda_vq_create: %s", v3_last_error());
    CHECK(cuda_vq_argmin(w, VQS_N_VARIANTS, 4, NULL, NULL, NULL) == -1, "unknown variant accepted");
    CHECK(strstr(v3_last_error(), "variant") != NULL, "message: %s", v3_last_error());
    CHECK(cuda_vq_argmin(w, VQS_TILED, 0, NULL, NULL, NULL) == 0, "N = 0 must be a no-op");
    cuda_vq_destroy(w);
    CHECK(cuda_vq_create(0, 8, 16) == NULL, "K = 0 accepted");
    for (int v = 0; v < VQS_N_VARIANTS; v++) CHECK(strcmp(cuda_vq_variant_name(v), "unknown"), "variant %d unnamed", v);
    return 0;
}

/* ---- dead codes ---- */

/* cuda_vq_revive against a direct host computation, bitwise; more than one launch batch (300 > 256 pairs). */
TEST(gpu_vs_host_vq_revive) {
    REQUIRE_GPU();
    const int K = 600, d = 40, N = 500, ndead = 300;
    float thr = 16.0f;
    float *x = hrand((size_t)N * d, 77, -3, 3), *e = hrand((size_t)K * d, 78, -1, 1), *ea = hrand((size_t)K * d, 79, -5, 5),
          *cs = hrand(K, 80, 0, 30);
    int *dead = xmalloc(sizeof(int) * ndead), *rows = xmalloc(sizeof(int) * ndead);
    Rng r;
    rng_seed(&r, 81);
    int *perm = xmalloc(sizeof(int) * K);
    rng_permutation(&r, K, perm);
    for (int i = 0; i < ndead; i++) {
        dead[i] = perm[i];
        rows[i] = (int)rng_below(&r, N); /* with repeats */
    }
    float *de = dput(e, (size_t)K * d), *dea = dput(ea, (size_t)K * d), *dcs = dput(cs, K), *dx = dput(x, (size_t)N * d);
    CudaVq *w = cuda_vq_create(K, d, N);
    CHECK(w, "cuda_vq_create: %s", v3_last_error());
    cuda_vq_revive(w, ndead, dead, rows, dx, thr, de, dea, dcs);
    free(dead); /* the device copies were taken at the call: the host arrays may go at once */
    dead = NULL;
    rng_seed(&r, 81);
    rng_permutation(&r, K, perm);
    for (int i = 0; i < ndead; i++) {
        int k = perm[i], row = rows[i];
        memcpy(e + (size_t)k * d, x + (size_t)row * d, sizeof(float) * d);
        cs[k] = thr;
        for (int t = 0; t < d; t++) ea[(size_t)k * d + t] = thr * e[(size_t)k * d + t];
    }
    float *ge = falloc((size_t)K * d), *gea = falloc((size_t)K * d), *gcs = falloc(K);
    CHECK(dget(ge, de, (size_t)K * d) && dget(gea, dea, (size_t)K * d) && dget(gcs, dcs, K), "device run failed");
    CHECK(!memcmp(ge, e, sizeof(float) * (size_t)K * d), "embed differs from the host revival");
    CHECK(!memcmp(gea, ea, sizeof(float) * (size_t)K * d), "embed_avg differs from the host revival");
    CHECK(!memcmp(gcs, cs, sizeof(float) * K), "cluster_size differs from the host revival");
    cuda_vq_destroy(w);
    cuda_free(de), cuda_free(dea), cuda_free(dcs), cuda_free(dx);
    ffree(x), ffree(e), ffree(ea), ffree(cs), ffree(ge), ffree(gea), ffree(gcs);
    free(rows), free(perm);
    return 0;
}

/* The whole threshold > 0 update as the GPU model runs it (search, EMA, dead set from the counts, rows drawn
 * with the model's RNG, revive) against vq_ema_update with the same RNG state. */
static int dead_code_case(int N, int d, int K, float thr, unsigned long long seed) {
    float *x, *e;
    make_inputs(N, d, K, seed, &x, &e);
    float *ea = hrand((size_t)K * d, seed + 2, -2.0f, 2.0f), *cs = hrand((size_t)K, seed + 3, 0.0f, 2.0f * thr);
    size_t kd = (size_t)K * d;
    float *dx = dput(x, (size_t)N * d), *de = dput(e, kd), *dea = dput(ea, kd), *dcs = dput(cs, K), *dq = dnan((size_t)N * d);
    int *dind = dint_poison((size_t)N);
    double *dc = ddouble_poison();
    CudaVq *w = cuda_vq_create(K, d, N);
    CHECK(w, "cuda_vq_create: %s", v3_last_error());
    Rng rng_cpu, rng_gpu;
    rng_seed(&rng_cpu, seed + 4);
    rng_gpu = rng_cpu;
    cuda_vq_search(w, N, dx, de, dind, dq, dc);
    int *ind = xmalloc(sizeof(int) * (size_t)N);
    CHECK(dget_int(ind, dind, (size_t)N), "device run failed");
    cuda_vq_ema(w, DECAY, de, dea, dcs);
    float *gcs = falloc(K);
    CHECK(dget(gcs, dcs, K), "device run failed");
    int ndead = 0, *dead = xmalloc(sizeof(int) * K), *rows = xmalloc(sizeof(int) * K);
    for (int k = 0; k < K; k++)
        if (gcs[k] < thr) dead[ndead++] = k;
    if (ndead) {
        vq_sample_rows(N, ndead, rows, &rng_gpu);
        cuda_vq_revive(w, ndead, dead, rows, dx, thr, de, dea, dcs);
    }
    VQ v;
    vq_init(&v, K, d, DECAY, thr, 0);
    memcpy(v.embed, e, sizeof(float) * kd);
    memcpy(v.embed_avg, ea, sizeof(float) * kd);
    memcpy(v.cluster_size, cs, sizeof(float) * K);
    vq_ema_update(&v, N, x, ind, &rng_cpu);
    float *ge = falloc(kd), *gea = falloc(kd);
    CHECK(dget(ge, de, kd) && dget(gea, dea, kd) && dget(gcs, dcs, K), "device run failed");
    CHECK(ndead > 0 && ndead < K, "N=%d K=%d: %d dead codes: the case should have some dead and some live", N, K, ndead);
    CHECK(close_enough("cluster_size", gcs, v.cluster_size, K, EMA_ATOL, EMA_RTOL), "N=%d d=%d K=%d: cluster_size", N, d, K);
    CHECK(close_enough("embed_avg", gea, v.embed_avg, kd, EMA_ATOL, EMA_RTOL), "N=%d d=%d K=%d: embed_avg", N, d, K);
    CHECK(close_enough("embed", ge, v.embed, kd, EMA_ATOL, EMA_RTOL), "N=%d d=%d K=%d: embed", N, d, K);
    for (int i = 0; i < ndead; i++)
        CHECK(!memcmp(ge + (size_t)dead[i] * d, v.embed + (size_t)dead[i] * d, sizeof(float) * d),
              "revived code %d differs from the CPU's", dead[i]);
    vq_free(&v);
    cuda_vq_destroy(w);
    cuda_free(dx), cuda_free(de), cuda_free(dea), cuda_free(dcs), cuda_free(dq), cuda_free(dind), cuda_free(dc);
    ffree(x), ffree(e), ffree(ea), ffree(cs), ffree(gcs), ffree(ge), ffree(gea);
    free(ind), free(dead), free(rows);
    return 0;
}

TEST(gpu_vs_cpu_vq_dead_codes) {
    REQUIRE_GPU();
    /* the authors' threshold 16 at batch 384; few rows per code (N < K draws rows with replacement) */
    if (dead_code_case(384, 512, 12, 16.0f, 5000)) return 1;
    if (dead_code_case(384, 64, 40, 16.0f, 5010)) return 1;
    if (dead_code_case(20, 64, 64, 8.0f, 5020)) return 1;
    return 0;
}
