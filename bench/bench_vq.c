/* Vector quantiser kernels (kernels/vq.cu) side by side: every nearest-codeword search variant of cuda_vq_argmin
 * (naive, smallk, tiled, gemm), the production search cuda_vq_search (ind + q + commitment + EMA statistics; the
 * fused one-launch kernel when the codebook is small, else the general path) and the EMA update cuda_vq_ema, for
 * (N, d, K) = (384,512,12) (384,256,10) (65536,64,512) (65536,256,1024) (262144,512,4096) (1048576,64,1024).
 *   make bench && ./bench/bench_vq [OUT.json]          (default bench/vq.json; needs a CUDA device)
 *   ./bench/bench_vq OUT.json --shapes 0,1             (only the listed shape indices, 0-based)
 * Inputs: x and the codebook uniform in [-1, 1]. Timing (bench_util): warm L2, R back-to-back calls between CUDA
 * events per batch, median and minimum per call over the batches, R and the batch count chosen from a first
 * timed call (about 20 ms a batch). Each variant is validated against the CPU before and after timing: indices
 * tie-aware against vq_assign (index accepted when d(x, c_i) <= d_min (1 + 1e-5) + 1e-6, double distances on the
 * host) on all rows when N*K*d <= 1e9, else on 4096 spread rows; the search also checks q = embed[ind] bitwise on
 * those rows and the commitment sum (relative 1e-6 against the host's double sum over all rows with the GPU's
 * indices); the EMA is checked against vq_ema_update on the GPU's indices (relative 1e-6) from a reset state.
 * Bytes per call: argmin reads x and the codebook and writes ind (gemm adds the N x K buffer written and read
 * back); search adds writing q; EMA reads/writes the [K, d] state and reads the [K, d] double sums. FLOPs:
 * 2 N d K for the searches (the inner products), 8 K d for the EMA. Combinations a variant cannot do (smallk
 * when the codebook exceeds shared memory, naive beyond 2e10 multiply-adds) are listed as skipped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common.h"
#include "cuda_backend.h"
#include "vq.h"

typedef struct { int N, d, K; } Shape;
static const Shape k_shapes[] = {
    {384, 512, 12}, {384, 256, 10}, {65536, 64, 512}, {65536, 256, 1024}, {262144, 512, 4096}, {1048576, 64, 1024},
};
#define N_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

typedef struct {
    CudaVq *w;
    int variant, N;
    const float *x, *e;
    int *ind;
    float *q;
    double *commit;
    float *ee, *ea, *cs; /* EMA state (a separate copy of the codebook, so searches keep theirs) */
} Ctx;

static void run_argmin(void *p) {
    Ctx *c = p;
    if (cuda_vq_argmin(c->w, c->variant, c->N, c->x, c->e, c->ind)) V3_FATAL("%s", v3_last_error());
}
static void run_search(void *p) {
    Ctx *c = p;
    cuda_vq_search(c->w, c->N, c->x, c->e, c->ind, c->q, c->commit);
}
static void run_ema(void *p) {
    Ctx *c = p;
    cuda_vq_ema(c->w, 0.98f, c->ee, c->ea, c->cs);
}

/* ---- validation ---- */

typedef struct {
    int N, d, K;
    const float *x, *e; /* host */
    int *rows, nr;      /* rows checked */
    int *cpu;           /* vq_assign on those rows */
} Ref;

static double dist2(const float *a, const float *b, int d) {
    double s = 0;
    for (int t = 0; t < d; t++) {
        double v = (double)a[t] - b[t];
        s += v * v;
    }
    return s;
}

/* max over i of |a-b| / (atol + rtol |b|); non-finite values give +inf */
static double scaled_err(const float *a, const float *b, size_t n, double atol, double rtol) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double e = fabs((double)a[i] - b[i]) / (atol + rtol * fabs((double)b[i]));
        if (e > m) m = e;
    }
    return m;
}

/* 1 when every index of the host array is in [0, K) (needed before the host uses them as offsets). */
static int all_in_range(const int *ind, int N, int K) {
    for (int i = 0; i < N; i++)
        if (ind[i] < 0 || ind[i] >= K) {
            fprintf(stderr, "bench_vq: row %d: index %d outside [0, %d)\n", i, ind[i], K);
            return 0;
        }
    return 1;
}

static void ref_init(Ref *r, int N, int d, int K, const float *x, const float *e) {
    r->N = N, r->d = d, r->K = K, r->x = x, r->e = e;
    r->rows = xmalloc(sizeof(int) * (size_t)N);
    r->nr = 0;
    int step = (double)N * K * d <= 1e9 ? 1 : (N / 4096 > 1 ? N / 4096 : 1);
    for (int i = 0; i < N; i += step) r->rows[r->nr++] = i;
    float *xs = falloc((size_t)r->nr * d);
    for (int j = 0; j < r->nr; j++) memcpy(xs + (size_t)j * d, x + (size_t)r->rows[j] * d, sizeof(float) * d);
    r->cpu = xmalloc(sizeof(int) * (size_t)r->nr);
    double t0 = now_seconds();
    vq_assign(e, K, d, r->nr, xs, r->cpu);
    printf("  CPU reference: %d rows in %.1f s\n", r->nr, now_seconds() - t0);
    ffree(xs);
}

static void ref_free(Ref *r) {
    free(r->rows);
    free(r->cpu);
}

/* Tie-aware index check of the device array dind on the reference rows; note gets "idx ok (m differ)". */
static int check_ind(const Ref *r, const int *dind, int *hind, char *note, size_t nn) {
    if (cuda_sync() || cuda_d2h(hind, dind, sizeof(int) * (size_t)r->N)) V3_FATAL("%s", v3_last_error());
    int bad = 0, differ = 0;
    for (int j = 0; j < r->nr; j++) {
        int i = r->rows[j], g = hind[i], c = r->cpu[j];
        if (g == c) continue;
        differ++;
        if (g < 0 || g >= r->K) {
            bad++;
            continue;
        }
        const float *xi = r->x + (size_t)i * r->d;
        double dmin = dist2(xi, r->e + (size_t)c * r->d, r->d), dg = dist2(xi, r->e + (size_t)g * r->d, r->d);
        if (dg > dmin * (1 + 1e-5) + 1e-6) bad++;
    }
    snprintf(note, nn, "%s: %d/%d rows differ%s", bad ? "IDX FAIL" : "idx ok", differ, r->nr,
             bad ? " beyond the tie tolerance" : "");
    if (bad) fprintf(stderr, "bench_vq: %d rows outside the tie tolerance\n", bad);
    return !bad;
}

/* Search outputs: ind (tie-aware), q rows bitwise, commitment against the host sum with the GPU's indices. */
static int check_search(const Ref *r, const Ctx *c, int *hind, float *hrow, char *note, size_t nn) {
    int ok = check_ind(r, c->ind, hind, note, nn);
    const int d = r->d;
    if (!all_in_range(hind, r->N, r->K)) return 0;
    for (int j = 0; j < r->nr && ok; j++) {
        int i = r->rows[j];
        if (cuda_d2h(hrow, c->q + (size_t)i * d, sizeof(float) * d)) V3_FATAL("%s", v3_last_error());
        if (memcmp(hrow, r->e + (size_t)hind[i] * d, sizeof(float) * d)) {
            fprintf(stderr, "bench_vq: q row %d is not embed[%d]\n", i, hind[i]);
            ok = 0;
        }
    }
    double got = 0, want = 0;
    if (cuda_d2h(&got, c->commit, sizeof got)) V3_FATAL("%s", v3_last_error());
#pragma omp parallel for reduction(+ : want) schedule(static)
    for (int i = 0; i < r->N; i++) want += dist2(r->e + (size_t)hind[i] * d, r->x + (size_t)i * d, d);
    double rel = fabs(got - want) / (fabs(want) > 0 ? fabs(want) : 1);
    if (!(rel <= 1e-6)) {
        fprintf(stderr, "bench_vq: commitment %.17g, host %.17g\n", got, want);
        ok = 0;
    }
    size_t len = strlen(note);
    snprintf(note + len, nn - len, "; q %s; commit rel %.1e", ok ? "exact" : "BAD", rel);
    return ok;
}

/* EMA: reset the state, search + EMA once, compare with vq_ema_update on the GPU's indices. */
static int check_ema(const Ref *r, Ctx *c, const float *ea0, const float *cs0, int *hind, char *note, size_t nn) {
    const int K = r->K, d = r->d;
    const size_t kd = (size_t)K * d;
    if (cuda_h2d(c->ee, r->e, sizeof(float) * kd) || cuda_h2d(c->ea, ea0, sizeof(float) * kd) ||
        cuda_h2d(c->cs, cs0, sizeof(float) * K))
        V3_FATAL("%s", v3_last_error());
    run_search(c);
    run_ema(c);
    float *ge = falloc(kd), *gea = falloc(kd), *gcs = falloc(K);
    if (cuda_sync() || cuda_d2h(hind, c->ind, sizeof(int) * (size_t)r->N) || cuda_d2h(ge, c->ee, sizeof(float) * kd) ||
        cuda_d2h(gea, c->ea, sizeof(float) * kd) || cuda_d2h(gcs, c->cs, sizeof(float) * K))
        V3_FATAL("%s", v3_last_error());
    if (!all_in_range(hind, r->N, K)) {
        snprintf(note, nn, "EMA FAIL: search indices out of range");
        ffree(ge), ffree(gea), ffree(gcs);
        return 0;
    }
    VQ v;
    vq_init(&v, K, d, 0.98f, 0, 0);
    memcpy(v.embed, r->e, sizeof(float) * kd);
    memcpy(v.embed_avg, ea0, sizeof(float) * kd);
    memcpy(v.cluster_size, cs0, sizeof(float) * K);
    vq_ema_update(&v, r->N, r->x, hind, NULL);
    double e1 = scaled_err(gcs, v.cluster_size, K, 1e-6, 1e-6);
    double e2 = scaled_err(gea, v.embed_avg, kd, 1e-6, 1e-6);
    double e3 = scaled_err(ge, v.embed, kd, 1e-6, 1e-6);
    double worst = fmax(e1, fmax(e2, e3));
    size_t same = 0;
    for (size_t i = 0; i < kd; i++) same += !memcmp(&ge[i], &v.embed[i], sizeof(float));
    snprintf(note, nn, "%s: worst %.2f of tol (1e-6 rel); embed bit-equal %.1f%%", worst <= 1 ? "ema ok" : "EMA FAIL",
             worst, 100.0 * same / (double)kd);
    vq_free(&v);
    ffree(ge), ffree(gea), ffree(gcs);
    return worst <= 1;
}

/* ---- timing ---- */

static BenchTime time_it(bench_fn fn, void *ctx) {
    CudaTimer *t = cuda_timer_create();
    fn(ctx); /* warm-up (first-use costs) */
    cuda_timer_start(t);
    fn(ctx);
    double ms = cuda_timer_stop_ms(t);
    cuda_timer_destroy(t);
    int reps = ms > 0 ? (int)(20.0 / ms) : 1000;
    if (reps < 1) reps = 1;
    if (reps > 1000) reps = 1000;
    int batches = ms > 200 ? 3 : ms > 20 ? 7 : 21;
    return bench_time(fn, ctx, 2, reps, batches);
}

static void skipped(const char *kernel, const char *variant, const char *shape, const char *why) {
    BenchRow row;
    memset(&row, 0, sizeof row);
    snprintf(row.kernel, sizeof row.kernel, "%s", kernel);
    snprintf(row.variant, sizeof row.variant, "%s", variant);
    snprintf(row.shape, sizeof row.shape, "%s", shape);
    snprintf(row.note, sizeof row.note, "skipped: %s", why);
    bench_add(&row);
    printf("  %-8s %s: skipped (%s)\n", variant, shape, why);
}

static int wanted(const char *list, int i) {
    if (!list) return 1;
    char buf[16];
    snprintf(buf, sizeof buf, "%d", i);
    size_t n = strlen(buf);
    for (const char *p = list; (p = strstr(p, buf)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

int main(int argc, char **argv) {
    const char *out = "bench/vq.json", *shapes = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shapes") && i + 1 < argc) shapes = argv[++i];
        else if (argv[i][0] != '-') out = argv[i];
        else {
            fprintf(stderr, "bench_vq: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char desc[256];
    bench_init_device(desc, sizeof desc);
    cuda_set_math(V3_MATH_FP32);
    int all_ok = 1;
    for (int s = 0; s < N_SHAPES; s++) {
        if (!wanted(shapes, s)) continue;
        const int N = k_shapes[s].N, d = k_shapes[s].d, K = k_shapes[s].K;
        const size_t nd = (size_t)N * d, kd = (size_t)K * d;
        char shape[96];
        snprintf(shape, sizeof shape, "N=%d d=%d K=%d", N, d, K);
        printf("%s\n", shape);
        fflush(stdout);
        float *x = falloc(nd), *e = falloc(kd), *ea0 = falloc(kd), *cs0 = falloc(K);
        {
            Rng r;
            rng_seed(&r, 1234 + (uint64_t)s);
            for (size_t i = 0; i < nd; i++) x[i] = rng_uniform_range(&r, -1.0f, 1.0f);
            for (size_t i = 0; i < kd; i++) e[i] = rng_uniform_range(&r, -1.0f, 1.0f);
            for (size_t i = 0; i < kd; i++) ea0[i] = rng_uniform_range(&r, -2.0f, 2.0f);
            for (int k = 0; k < K; k++) cs0[k] = rng_uniform_range(&r, 0.5f, 4.0f);
        }
        Ref ref;
        ref_init(&ref, N, d, K, x, e);
        Ctx c;
        memset(&c, 0, sizeof c);
        c.N = N;
        c.w = cuda_vq_create(K, d, N);
        if (!c.w) V3_FATAL("cuda_vq_create: %s", v3_last_error());
        float *dx = cuda_alloc(sizeof(float) * nd), *de = cuda_alloc(sizeof(float) * kd);
        if (cuda_h2d(dx, x, sizeof(float) * nd) || cuda_h2d(de, e, sizeof(float) * kd)) V3_FATAL("%s", v3_last_error());
        c.x = dx;
        c.e = de;
        c.ind = cuda_alloc(sizeof(int) * (size_t)N);
        c.q = cuda_alloc(sizeof(float) * nd);
        c.commit = cuda_alloc(sizeof(double));
        c.ee = cuda_alloc(sizeof(float) * kd);
        c.ea = cuda_alloc(sizeof(float) * kd);
        c.cs = cuda_alloc(sizeof(float) * K);
        int *hind = xmalloc(sizeof(int) * (size_t)N);
        float *hrow = falloc((size_t)d);
        const double flops = 2.0 * N * d * K;
        const double in_bytes = 4.0 * nd + 4.0 * kd + 4.0 * N;

        for (int v = 0; v < VQS_N_VARIANTS; v++) {
            const char *vn = cuda_vq_variant_name(v);
            if (v == VQS_NAIVE && (double)N * d * K > 2e10) {
                skipped("vq_argmin", vn, shape, "naive beyond 2e10 multiply-adds (minutes)");
                continue;
            }
            c.variant = v;
            if (cuda_memset(c.ind, 0xFF, sizeof(int) * (size_t)N)) V3_FATAL("%s", v3_last_error());
            if (cuda_vq_argmin(c.w, v, N, dx, de, c.ind)) {
                skipped("vq_argmin", vn, shape, v3_last_error());
                continue;
            }
            BenchRow row;
            memset(&row, 0, sizeof row);
            snprintf(row.kernel, sizeof row.kernel, "vq_argmin");
            snprintf(row.variant, sizeof row.variant, "%s", vn);
            snprintf(row.shape, sizeof row.shape, "%s", shape);
            char note0[96];
            int ok = check_ind(&ref, c.ind, hind, note0, sizeof note0);
            row.t = time_it(run_argmin, &c);
            if (cuda_memset(c.ind, 0xFF, sizeof(int) * (size_t)N)) V3_FATAL("%s", v3_last_error());
            run_argmin(&c);
            ok = check_ind(&ref, c.ind, hind, row.note, sizeof row.note) && ok;
            row.valid = ok;
            row.flops = flops;
            row.bytes = in_bytes + (v == VQS_GEMM ? 8.0 * N * K : 0);
            bench_add(&row);
            printf("  %-8s %10.4f ms  %s\n", vn, row.t.median_ms, row.note);
            fflush(stdout);
            all_ok &= ok;
        }

        { /* production search: ind + q + commitment + statistics */
            BenchRow row;
            memset(&row, 0, sizeof row);
            snprintf(row.kernel, sizeof row.kernel, "vq_search");
            snprintf(row.variant, sizeof row.variant, "cuda_vq_search");
            snprintf(row.shape, sizeof row.shape, "%s", shape);
            if (cuda_memset(c.ind, 0xFF, sizeof(int) * (size_t)N) || cuda_memset(c.q, 0xFF, sizeof(float) * nd) ||
                cuda_memset(c.commit, 0xFF, sizeof(double)))
                V3_FATAL("%s", v3_last_error());
            run_search(&c);
            char note0[96];
            int ok = check_search(&ref, &c, hind, hrow, note0, sizeof note0);
            row.t = time_it(run_search, &c);
            if (cuda_memset(c.q, 0xFF, sizeof(float) * nd) || cuda_memset(c.commit, 0xFF, sizeof(double)))
                V3_FATAL("%s", v3_last_error());
            run_search(&c);
            ok = check_search(&ref, &c, hind, hrow, row.note, sizeof row.note) && ok;
            row.valid = ok;
            row.flops = flops;
            row.bytes = in_bytes + 4.0 * nd;
            bench_add(&row);
            printf("  %-8s %10.4f ms  %s\n", "search", row.t.median_ms, row.note);
            fflush(stdout);
            all_ok &= ok;
        }
        { /* EMA update from the last search's statistics */
            BenchRow row;
            memset(&row, 0, sizeof row);
            snprintf(row.kernel, sizeof row.kernel, "vq_ema");
            snprintf(row.variant, sizeof row.variant, "cuda_vq_ema");
            snprintf(row.shape, sizeof row.shape, "%s", shape);
            char note0[96];
            int ok = check_ema(&ref, &c, ea0, cs0, hind, note0, sizeof note0);
            row.t = time_it(run_ema, &c);
            ok = check_ema(&ref, &c, ea0, cs0, hind, row.note, sizeof row.note) && ok;
            row.valid = ok;
            row.flops = 8.0 * kd;
            row.bytes = 4.0 * 4 * kd + 8.0 * kd;
            bench_add(&row);
            printf("  %-8s %10.4f ms  %s\n", "ema", row.t.median_ms, row.note);
            fflush(stdout);
            all_ok &= ok;
        }
        cuda_vq_destroy(c.w);
        cuda_free(dx), cuda_free(de), cuda_free(c.ind), cuda_free(c.q), cuda_free(c.commit);
        cuda_free(c.ee), cuda_free(c.ea), cuda_free(c.cs);
        ref_free(&ref);
        free(hind);
        ffree(hrow), ffree(x), ffree(e), ffree(ea0), ffree(cs0);
    }
    int rc = bench_finish(out, desc) ? 1 : 0;
    if (!all_ok) fprintf(stderr, "bench_vq: some results failed validation (see the notes)\n");
    return rc ? rc : (all_ok ? 0 : 1);
}
