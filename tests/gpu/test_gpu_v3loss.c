/* V3 statistics on the device (kernels/v3loss.cu) against the CPU reference v3_loss (host/model/v3loss.c).
 * Every test starts with REQUIRE_GPU() (SKIP without a device). Each case draws fresh random zc, q, zs and:
 *  - checks the statistics block is NaN before the first forward (nothing stale is ever read as a result);
 *  - compares the 10 device statistics with v3_loss: relative 1e-9 (atol 1e-12). Both sides are double sums of
 *    the same terms; only the summation order differs, so agreement is ~1e-13. Hinge activity must agree;
 *  - compares the gradients ADDED to non-zero starting values (random, of the gradient's own magnitude, so the
 *    addition does not hide errors): relative 1e-5, atol 1e-6 x gbound, where gbound bounds any element of the
 *    gradient (sum of the |coefficients| of its unit-vector terms, from v3_loss's backward scalars): gradients
 *    that cancel to ~0 are rounding noise of that size on both sides (float rounding of the final add is
 *    <= ~5e-7 x gbound); guard zones around the gradient buffers must be untouched; and the pure gradient
 *    (starting from zero) the same way;
 *  - runs forward + backward twice: stats and gradients must be bit-identical (determinism).
 * Inputs include duplicated q rows (a few codewords: exact zero distances), zc rows equal to q rows, identical
 * whole groups (equal group means: zero between-group distances), both supersample settings, the authors'
 * sizes, odd sizes, n = 64, d = 1 and d = 1024, up to 1024 groups; relativity values making every hinge
 * inactive, every hinge active, and mixes; every K2 tile (1..4) with the distance rows in shared and in global
 * memory (all must agree bit for bit). NaN never passes (max_scaled_err, explicit isfinite checks). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "gpu_test.h"
#include "testing.h"
#include "v3_coef.h"
#include "v3loss.h"


#define STAT_RTOL 1e-9
#define STAT_ATOL 1e-12
#define GRAD_RTOL 1e-5
#define GRAD_ATOL_REL 1e-6 /* times the bound on any |gradient| element of the tensor (grad_bounds) */
#define GUARD 64
#define SENTINEL 12345.0f

static const char *k_stat_names[V3_STATS_DOUBLES] = {"Fc",      "Sc",    "Fs",     "Ss",       "Ss_ss",
                                                     "content", "style", "sample", "fragment", "weighted"};

typedef struct {
    int B, n, dc, ds, ss;
    double r;
    int dup;            /* q rows from a few codewords, every third zc row = its q row, a zs duplicate */
    int tie;            /* whole groups identical (equal sample means and equal supersample means) */
    int force_global;   /* K2 rows in global memory */
    int tile;           /* K2 tile, 0 = automatic */
    int ps;             /* loss_config.per_sample_hinges */
    int log;            /* loss_config.hinge: log */
} Case;

/* What one case produced on the device (for the cross-configuration bit comparisons). */
typedef struct {
    double stats[V3_STATS_DOUBLES];
    float *gc, *gs;
} Result;

static void ref_pack(const V3Stats *st, double *v) {
    double t[V3_STATS_DOUBLES] = {st->Fc,      st->Sc,    st->Fs,     st->Ss,       st->Ss_ss,
                                  st->content, st->style, st->sample, st->fragment, st->weighted};
    memcpy(v, t, sizeof t);
}

static V3LossCfg make_cfg(const Case *c) {
    V3LossCfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.w_content = 1.0, cfg.w_style = 0.7, cfg.w_sample = 1.3, cfg.w_fragment = 0.9;
    cfg.relativity = c->r;
    cfg.eps = 1e-5;
    cfg.supersample_content = c->ss;
    cfg.per_sample = c->ps;
    cfg.log_hinge = c->log;
    return cfg;
}

static long gcd_l(long a, long b) { return b ? gcd_l(b, a % b) : a; }

/* Bounds on |gzc| and |gzs| elements: every unit vector's components are <= 1, so each element is at most the
 * sum of the |coefficients| of its terms (v3_loss's backward scalars; each row has n-1 partners in its sample
 * and G-1 between-group partners shared 1/per). */
/* mpd over the n rows of sample b of X [B*n, d], in double (the per-sample hinges' bounds need each sample's) */
static double sample_mpd(const float *X, int b, int n, int d) {
    double s = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double acc = 0;
            for (int t = 0; t < d; t++) {
                double v = (double)X[((size_t)b * n + i) * d + t] - X[((size_t)b * n + j) * d + t];
                acc += v * v;
            }
            s += sqrt(acc);
        }
    return 2.0 * s / ((double)n * (n - 1));
}

static void grad_bounds(const V3LossCfg *cfg, const V3Stats *st, int B, int n, int dc, int ds, const float *zc,
                        const float *q, const float *zs, double *bc, double *bs) {
    double nB = st->nB, nn = st->nn;
    if (cfg->per_sample) { /* the largest per-sample within-sample coefficient (1/B included) */
        double *m = xmalloc(sizeof(double) * 5 * B);
        for (int b = 0; b < B; b++)
            m[b] = sample_mpd(zc, b, n, dc), m[B + b] = sample_mpd(q, b, n, dc), m[2 * B + b] = sample_mpd(zs, b, n, ds);
        const V3Coef c = v3_coef_ps(cfg, B, m, m + B, m + 2 * B, st->Sc, st->Ss, st->Ss_ss, m + 3 * B, m + 4 * B);
        double fc = 0, fs = 0;
        for (int b = 0; b < B; b++) fc = fmax(fc, fabs(m[3 * B + b])), fs = fmax(fs, fabs(m[4 * B + b]));
        *bc = 2 * fc / n + 2 * fabs(c.dSc) / (nB * nn);
        *bs = 2 * fs / n + 2 * fabs(c.dSs) / ((double)B * n) +
              (cfg->supersample_content ? 2 * fabs(c.dSs_ss) / (nB * nn) : 0.0);
        free(m);
        return;
    }
    const V3Coef c = v3_coef(cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss);
    *bc = 2 * fabs(c.dFc) / ((double)B * n) + 2 * fabs(c.dSc) / (nB * nn);
    *bs = 2 * fabs(c.dFs) / ((double)B * n) + 2 * fabs(c.dSs) / ((double)B * n) +
          (cfg->supersample_content ? 2 * fabs(c.dSs_ss) / (nB * nn) : 0.0);
}

/* Fresh inputs for a case (caller frees). */
static void make_inputs(const Case *c, unsigned long long seed, float **pzc, float **pq, float **pzs) {
    int N = c->B * c->n, dc = c->dc, ds = c->ds;
    size_t nc = (size_t)N * dc, ns = (size_t)N * ds;
    float *zc = hrand(nc, seed, -1.0f, 1.0f), *zs = hrand(ns, seed + 1, -1.0f, 1.0f);
    float *q = hrand(nc, seed + 2, -0.1f, 0.1f);
    if (c->dup) {
        enum { K = 5 };
        float *cb = hrand((size_t)K * dc, seed + 3, -1.0f, 1.0f);
        for (int r = 0; r < N; r++) {
            memcpy(q + (size_t)r * dc, cb + (size_t)((r * 7 + r / 3) % K) * dc, sizeof(float) * dc);
            if (r % 3 == 0) memcpy(zc + (size_t)r * dc, q + (size_t)r * dc, sizeof(float) * dc);
        }
        memcpy(zs + ds, zs, sizeof(float) * ds); /* rows 0 and 1 of sample 0 equal */
        ffree(cb);
    } else {
        for (size_t i = 0; i < nc; i++) q[i] += zc[i]; /* q near zc */
    }
    if (c->tie) {
        /* Rows [L, 2L) = rows [0, L) with L a multiple of both n and the supersample group size: samples
         * b and b + L/n are identical, and so are content groups g and g + L/nn. */
        int nn = c->ss ? v3_supersample_n(N) : c->n;
        long L = (long)c->n / gcd_l(c->n, nn) * nn;
        if (2 * L <= N) {
            memcpy(zc + (size_t)L * dc, zc, sizeof(float) * (size_t)L * dc);
            memcpy(q + (size_t)L * dc, q, sizeof(float) * (size_t)L * dc);
            memcpy(zs + (size_t)L * ds, zs, sizeof(float) * (size_t)L * ds);
        }
    }
    *pzc = zc, *pq = q, *pzs = zs;
}

static float maxabs(const float *x, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* A device buffer [GUARD sentinels | init (n) | GUARD sentinels]. */
static void put_guarded(float *d, const float *init, size_t n) {
    float *h = falloc(n + 2 * GUARD);
    for (size_t i = 0; i < GUARD; i++) h[i] = h[GUARD + n + i] = SENTINEL;
    if (init) memcpy(h + GUARD, init, n * sizeof(float));
    if (cuda_h2d(d, h, (n + 2 * GUARD) * sizeof(float))) V3_FATAL("%s", v3_last_error());
    ffree(h);
}

/* Reads a guarded buffer: the n payload floats into out; 1 if the guards are intact. */
static int get_guarded(float *out, const float *d, size_t n, const char *what) {
    float *h = falloc(n + 2 * GUARD);
    int ok = dget(h, d, n + 2 * GUARD);
    for (size_t i = 0; ok && i < GUARD; i++)
        if (h[i] != SENTINEL || h[GUARD + n + i] != SENTINEL) {
            fprintf(stderr, "    %s: guard zone overwritten\n", what);
            ok = 0;
        }
    memcpy(out, h + GUARD, n * sizeof(float));
    ffree(h);
    return ok;
}

static int read_stats(const CudaV3 *w, double *v) {
    for (int i = 0; i < V3_STATS_DOUBLES; i++) v[i] = 0.0;
    if (cuda_sync() || cuda_d2h(v, cuda_v3_stats(w), V3_STATS_DOUBLES * sizeof(double))) {
        fprintf(stderr, "    %s\n", v3_last_error());
        return 0;
    }
    return 1;
}

static int stats_close(const double *got, const double *ref) {
    int ok = 1;
    for (int i = 0; i < V3_STATS_DOUBLES; i++) {
        double err = fabs(got[i] - ref[i]), tol = STAT_ATOL + STAT_RTOL * fabs(ref[i]);
        if (!isfinite(got[i]) || !isfinite(ref[i]) || !(err <= tol)) {
            fprintf(stderr, "    stat %s: gpu %.17g, cpu %.17g (err %.3g, tol %.3g)\n", k_stat_names[i], got[i],
                    ref[i], err, tol);
            ok = 0;
        }
    }
    for (int i = 5; i <= 8; i++) /* hinge activity */
        if ((got[i] > 0) != (ref[i] > 0)) {
            fprintf(stderr, "    hinge %s: activity differs (gpu %.17g, cpu %.17g)\n", k_stat_names[i], got[i], ref[i]);
            ok = 0;
        }
    return ok;
}

/* Runs one case; fills ref_out (the CPU stats) and res (device results; caller frees) when not NULL. */
static int run_case(const Case *c, unsigned long long seed, double *ref_out, Result *res) {
    const int B = c->B, n = c->n, dc = c->dc, ds = c->ds, N = B * n;
    const size_t nc = (size_t)N * dc, ns = (size_t)N * ds;
    V3LossCfg cfg = make_cfg(c);
    float *zc, *q, *zs;
    make_inputs(c, seed, &zc, &q, &zs);

    /* CPU: pure gradient (from zero), then added to non-zero starting values of the same magnitude. */
    V3Stats st;
    float *g0c = falloc(nc), *g0s = falloc(ns);
    v3_loss(&cfg, B, n, dc, ds, zc, q, zs, &st, g0c, g0s);
    double ref[V3_STATS_DOUBLES];
    ref_pack(&st, ref);
    if (ref_out) memcpy(ref_out, ref, sizeof ref);
    double bound_c, bound_s;
    grad_bounds(&cfg, &st, B, n, dc, ds, zc, q, zs, &bound_c, &bound_s);
    if (maxabs(g0c, nc) > bound_c * (1 + 1e-6) || maxabs(g0s, ns) > bound_s * (1 + 1e-6)) { /* float rounding */
        fprintf(stderr, "    test bug: a CPU gradient exceeds its bound (%g > %g or %g > %g)\n", maxabs(g0c, nc),
                bound_c, maxabs(g0s, ns), bound_s);
        return 0;
    }
    const float scale_c = (float)bound_c, scale_s = (float)bound_s;
    float *initc = hrand(nc, seed + 10, -1.0f, 1.0f), *inits = hrand(ns, seed + 11, -1.0f, 1.0f);
    for (size_t i = 0; i < nc; i++) initc[i] *= scale_c > 0 ? scale_c : 1.0f;
    for (size_t i = 0; i < ns; i++) inits[i] *= scale_s > 0 ? scale_s : 1.0f;
    float *refc = hcopy(initc, nc), *refs = hcopy(inits, ns);
    V3Stats st2;
    v3_loss(&cfg, B, n, dc, ds, zc, q, zs, &st2, refc, refs);
    const double atol_c = GRAD_ATOL_REL * (scale_c > 0 ? scale_c : 1.0f);
    const double atol_s = GRAD_ATOL_REL * (scale_s > 0 ? scale_s : 1.0f);

    /* Device. */
    cuda_v3_debug_options(c->force_global, c->tile);
    CudaV3 *w = cuda_v3_create(&cfg, B, n, dc, ds);
    cuda_v3_debug_options(0, 0);
    if (!w) {
        fprintf(stderr, "    cuda_v3_create failed: %s\n", v3_last_error());
        return 0;
    }
    float *dzc = dput(zc, nc), *dq = dput(q, nc), *dzs = dput(zs, ns);
    float *dgc = cuda_alloc((nc + 2 * GUARD) * sizeof(float));
    float *dgs = cuda_alloc((ns + 2 * GUARD) * sizeof(float));
    float *gotc = falloc(nc), *gots = falloc(ns), *gotc2 = falloc(nc), *gots2 = falloc(ns);
    double s1[V3_STATS_DOUBLES], s2[V3_STATS_DOUBLES];
    int ok = 1;

    /* Before any forward the statistics block is NaN. */
    ok = ok && read_stats(w, s1);
    for (int i = 0; ok && i < V3_STATS_DOUBLES; i++)
        if (!isnan(s1[i])) {
            fprintf(stderr, "    stat %s before the first forward: %g, expected NaN\n", k_stat_names[i], s1[i]);
            ok = 0;
        }

    /* Run 1: forward, stats, backward ADDING to the starting values. */
    put_guarded(dgc, initc, nc);
    put_guarded(dgs, inits, ns);
    cuda_v3_forward(w, dzc, dq, dzs);
    ok = ok && read_stats(w, s1) && stats_close(s1, ref);
    cuda_v3_backward(w, dzc, dq, dzs, dgc + GUARD, dgs + GUARD);
    ok = ok && get_guarded(gotc, dgc, nc, "gzc") && get_guarded(gots, dgs, ns, "gzs");
    ok = ok && close_enough("gzc (added)", gotc, refc, nc, atol_c, GRAD_RTOL) &&
         close_enough("gzs (added)", gots, refs, ns, atol_s, GRAD_RTOL);
    if (ok && scale_c == 0 && memcmp(gotc, initc, nc * sizeof(float))) {
        fprintf(stderr, "    gzc changed although every hinge acting on it is inactive\n");
        ok = 0;
    }
    if (ok && scale_s == 0 && memcmp(gots, inits, ns * sizeof(float))) {
        fprintf(stderr, "    gzs changed although every hinge acting on it is inactive\n");
        ok = 0;
    }

    /* Run 2: the same again must give the same bits. */
    if (ok) {
        put_guarded(dgc, initc, nc);
        put_guarded(dgs, inits, ns);
        cuda_v3_forward(w, dzc, dq, dzs);
        ok = read_stats(w, s2);
        cuda_v3_backward(w, dzc, dq, dzs, dgc + GUARD, dgs + GUARD);
        ok = ok && get_guarded(gotc2, dgc, nc, "gzc") && get_guarded(gots2, dgs, ns, "gzs");
        if (ok && (memcmp(s1, s2, sizeof s1) || memcmp(gotc, gotc2, nc * sizeof(float)) ||
                   memcmp(gots, gots2, ns * sizeof(float)))) {
            fprintf(stderr, "    not deterministic: a second forward + backward gave different bits\n");
            ok = 0;
        }
    }

    /* Run 3: the pure gradient (starting from zero), backward only (the forward state is still valid). */
    if (ok) {
        put_guarded(dgc, NULL, nc); /* falloc'd payload: zeros */
        put_guarded(dgs, NULL, ns);
        cuda_v3_backward(w, dzc, dq, dzs, dgc + GUARD, dgs + GUARD);
        ok = get_guarded(gotc2, dgc, nc, "gzc") && get_guarded(gots2, dgs, ns, "gzs") &&
             close_enough("gzc (from zero)", gotc2, g0c, nc, atol_c, GRAD_RTOL) &&
             close_enough("gzs (from zero)", gots2, g0s, ns, atol_s, GRAD_RTOL);
    }

    if (res) {
        memcpy(res->stats, s1, sizeof s1);
        res->gc = gotc, res->gs = gots;
    } else {
        ffree(gotc), ffree(gots);
    }
    cuda_v3_destroy(w);
    cuda_free(dzc), cuda_free(dq), cuda_free(dzs), cuda_free(dgc), cuda_free(dgs);
    ffree(gotc2), ffree(gots2);
    ffree(zc), ffree(q), ffree(zs), ffree(g0c), ffree(g0s), ffree(initc), ffree(inits), ffree(refc), ffree(refs);
    return ok;
}

#define CASE_MSG(c) \
    "B=%d n=%d dc=%d ds=%d ss=%d r=%g dup=%d tie=%d global=%d tile=%d ps=%d log=%d", (c)->B, (c)->n, (c)->dc, \
        (c)->ds, (c)->ss, (c)->r, (c)->dup, (c)->tie, (c)->force_global, (c)->tile, (c)->ps, (c)->log

/* ---- tests ---- */

TEST(gpu_v3loss_small_and_odd) {
    REQUIRE_GPU();
    static const int shapes[][4] = {{2, 2, 1, 1},   {2, 3, 1, 2},   {3, 2, 2, 1},    {3, 5, 7, 33},
                                    {5, 3, 33, 31}, {4, 7, 64, 65}, {7, 9, 255, 257}, {11, 13, 31, 1}};
    unsigned long long seed = 1000;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int ss = 0; ss <= 1; ss++)
            for (int dup = 0; dup <= 1; dup++) {
                Case c = {shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], ss, 15.0, dup, dup, 0, 0};
                CHECK(run_case(&c, seed += 100, NULL, NULL), CASE_MSG(&c));
            }
    return 0;
}

TEST(gpu_v3loss_authors_sizes) {
    REQUIRE_GPU();
    /* insnotes B=32 n=12 d=512 (N=384; supersample: 24 groups of 16), phonenums B=32 n=10 d=256 (N=320:
     * 20 x 16), and 6 x 16 = 96 rows (supersample 12 groups of 8: groups straddle samples). */
    static const int shapes[][4] = {{32, 12, 512, 512}, {32, 10, 256, 256}, {6, 16, 512, 512}, {32, 2, 512, 512}};
    unsigned long long seed = 2000;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int ss = 0; ss <= 1; ss++)
            for (int dup = 0; dup <= 1; dup++) {
                Case c = {shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], ss, ss ? 5.0 : 15.0, dup, dup, 0, 0};
                CHECK(run_case(&c, seed += 100, NULL, NULL), CASE_MSG(&c));
            }
    return 0;
}

TEST(gpu_v3loss_large) {
    REQUIRE_GPU();
    /* B=256 n=16 d=512 (benchmark size); 1024 and 1023 groups with tiny d (many K2 blocks, ragged tiles);
     * n=64 with d=1024/1000 (2016 pairs a sample, the widest rows). */
    static const int shapes[][5] = {
        {256, 16, 512, 512, 1}, {1024, 2, 3, 5, 1}, {1023, 3, 17, 9, 1}, {8, 64, 1024, 1000, 1},
    };
    unsigned long long seed = 3000;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int ss = 0; ss <= shapes[i][4]; ss++) {
            Case c = {shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], ss, 15.0, 1, 1, 0, 0};
            CHECK(run_case(&c, seed += 100, NULL, NULL), CASE_MSG(&c));
        }
    return 0;
}

/* Relativity below every ratio (all hinges inactive: zero gradient, starting values untouched), above every
 * ratio (all active), between consecutive ratios (1, 2, 3 active), plus r = 1e-3 and 1e6. */
TEST(gpu_v3loss_hinges) {
    REQUIRE_GPU();
    static const int shapes[][4] = {{8, 5, 24, 20}, {32, 12, 64, 48}};
    unsigned long long seed = 4000;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ss = 0; ss <= 1; ss++) {
            Case c = {shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3], ss, 15.0, 0, 0, 0, 0};
            /* The ratios at these inputs (v3_loss with r = 15 gives the statistics). */
            V3LossCfg cfg = make_cfg(&c);
            float *zc, *q, *zs;
            unsigned long long s0 = seed += 100;
            make_inputs(&c, s0, &zc, &q, &zs);
            V3Stats st;
            v3_loss(&cfg, c.B, c.n, c.dc, c.ds, zc, q, zs, &st, NULL, NULL);
            ffree(zc), ffree(q), ffree(zs);
            double t[4] = {st.Fc / (st.Sc + cfg.eps), st.Ss / (st.Fs + cfg.eps), st.Ss_ss / (st.Sc + cfg.eps),
                           st.Fc / (st.Fs + cfg.eps)};
            for (int i = 0; i < 4; i++) /* sort */
                for (int j = i + 1; j < 4; j++)
                    if (t[j] < t[i]) { double x = t[i]; t[i] = t[j]; t[j] = x; }
            double rs[8];
            int expect[8], nr = 0;
            rs[nr] = 1e-3, expect[nr++] = 0;
            rs[nr] = 1e6, expect[nr++] = 4;
            rs[nr] = 0.5 * t[0], expect[nr++] = 0;
            rs[nr] = 2.0 * t[3], expect[nr++] = 4;
            for (int i = 0; i < 3; i++) /* between ratios i and i+1: the i+1 smallest are active */
                if (t[i + 1] - t[i] > 1e-6 * t[i + 1]) rs[nr] = 0.5 * (t[i] + t[i + 1]), expect[nr++] = i + 1;
            for (int k = 0; k < nr; k++) {
                c.r = rs[k];
                double ref[V3_STATS_DOUBLES];
                CHECK(run_case(&c, s0, ref, NULL), CASE_MSG(&c));
                int active = (ref[5] > 0) + (ref[6] > 0) + (ref[7] > 0) + (ref[8] > 0);
                CHECK(active == expect[k], "r=%g: %d hinges active, expected %d", c.r, active, expect[k]);
            }
        }
    return 0;
}

/* Every K2 tile, rows in shared and in global memory: all match the CPU and each other bit for bit (the
 * tile only changes which warp computes a distance, never the order of any sum). */
TEST(gpu_v3loss_tiles_and_global_rows) {
    REQUIRE_GPU();
    static const int shapes[][4] = {{40, 6, 70, 50}, {9, 7, 300, 33}};
    unsigned long long seed = 5000;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ss = 0; ss <= 1; ss++) {
            Case c = {shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3], ss, 15.0, 1, 1, 0, 1};
            unsigned long long s0 = seed += 100;
            Result first;
            CHECK(run_case(&c, s0, NULL, &first), CASE_MSG(&c));
            size_t nc = (size_t)c.B * c.n * c.dc, ns = (size_t)c.B * c.n * c.ds;
            for (int glob = 0; glob <= 1; glob++)
                for (int tile = 1; tile <= 4; tile++) {
                    if (!glob && tile == 1) continue;
                    c.force_global = glob, c.tile = tile;
                    Result other;
                    CHECK(run_case(&c, s0, NULL, &other), CASE_MSG(&c));
                    int same = !memcmp(first.stats, other.stats, sizeof first.stats) &&
                               !memcmp(first.gc, other.gc, nc * sizeof(float)) &&
                               !memcmp(first.gs, other.gs, ns * sizeof(float));
                    ffree(other.gc), ffree(other.gs);
                    CHECK(same, "tile %d, global rows %d: results differ in bits from tile 1 in shared memory", tile,
                          glob);
                }
            ffree(first.gc), ffree(first.gs);
        }
    return 0;
}

/* One case with an option of ours on (*flag = 1), then the same inputs with it off: both against v3_loss (run_case).
 * Returns 0 if either run fails, else 1, and adds to *differ whether any of the four hinges changed (a case set
 * whose hinges never change does not test the flag). */
static int run_on_off(Case *c, int *flag, unsigned long long seed, int *differ) {
    double on[V3_STATS_DOUBLES], off[V3_STATS_DOUBLES];
    *flag = 1;
    if (!run_case(c, seed, on, NULL)) return 0;
    *flag = 0;
    if (!run_case(c, seed, off, NULL)) return 0;
    *flag = 1;
    *differ += on[5] != off[5] || on[6] != off[6] || on[7] != off[7] || on[8] != off[8];
    return 1;
}

/* loss_config.per_sample_hinges: per-sample hinges and within-sample factors (K3's coefb) against v3_loss, at
 * relativities that leave some samples' hinges active and others not (the per-sample ratios spread around the
 * mean ratio), at odd and the authors' sizes, both supersample settings, with ties; and the two forms must
 * differ (the case can fail if the device ignored the flag). */
TEST(gpu_v3loss_per_sample_hinges) {
    REQUIRE_GPU();
    static const int shapes[][4] = {{2, 3, 1, 2}, {5, 3, 33, 31}, {7, 9, 255, 257}, {32, 10, 256, 256}, {32, 12, 64, 48}};
    static const double rs[] = {0.9, 1.5, 2.5, 15.0};
    unsigned long long seed = 7000;
    int differ = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int ss = 0; ss <= 1; ss++)
            for (int dup = 0; dup <= 1; dup++)
                for (size_t k = 0; k < sizeof rs / sizeof rs[0]; k++) {
                    Case c = {shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], ss, rs[k], dup, dup, 0, 0, 1};
                    CHECK(run_on_off(&c, &c.ps, seed += 100, &differ), CASE_MSG(&c));
                }
    CHECK(differ > 0, "the per-sample and the mean-form hinges never differed: the inputs do not test the flag");
    return 0;
}

/* loss_config.hinge: log, in the mean and the per-sample forms, against v3_loss at relativities that put ratios
 * below 1, on the log piece and past r; the log and linear forms must differ (else the device ignored the flag). */
TEST(gpu_v3loss_log_hinge) {
    REQUIRE_GPU();
    static const int shapes[][4] = {{2, 3, 1, 2}, {5, 3, 33, 31}, {32, 10, 256, 256}, {32, 12, 64, 48}};
    static const double rs[] = {1.5, 2.5, 15.0};
    unsigned long long seed = 9000;
    int differ = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int ps = 0; ps <= 1; ps++)
            for (int dup = 0; dup <= 1; dup++)
                for (size_t k = 0; k < sizeof rs / sizeof rs[0]; k++) {
                    Case c = {shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], 0, rs[k], dup, dup, 0, 0, ps, 1};
                    CHECK(run_on_off(&c, &c.log, seed += 100, &differ), CASE_MSG(&c));
                }
    CHECK(differ > 0, "the log and the linear hinges never differed: the inputs do not test the flag");
    return 0;
}

/* One object reused on different inputs (no state leaks between forwards); NULL gradient pointers. */
TEST(gpu_v3loss_reuse_and_null_grads) {
    REQUIRE_GPU();
    Case c = {12, 7, 40, 24, 1, 15.0, 1, 1, 0, 0};
    const int B = c.B, n = c.n, dc = c.dc, ds = c.ds;
    const size_t nc = (size_t)B * n * dc, ns = (size_t)B * n * ds;
    V3LossCfg cfg = make_cfg(&c);
    float *a_zc, *a_q, *a_zs, *b_zc, *b_q, *b_zs;
    make_inputs(&c, 6001, &a_zc, &a_q, &a_zs);
    c.dup = c.tie = 0;
    make_inputs(&c, 6002, &b_zc, &b_q, &b_zs);
    V3Stats st;
    float *rc = falloc(nc), *rs = falloc(ns);
    v3_loss(&cfg, B, n, dc, ds, b_zc, b_q, b_zs, &st, rc, rs);
    double ref[V3_STATS_DOUBLES], got[V3_STATS_DOUBLES];
    ref_pack(&st, ref);
    double bound_c, bound_s;
    grad_bounds(&cfg, &st, B, n, dc, ds, b_zc, b_q, b_zs, &bound_c, &bound_s);
    const double atol_c = GRAD_ATOL_REL * bound_c, atol_s = GRAD_ATOL_REL * bound_s;

    CudaV3 *w = cuda_v3_create(&cfg, B, n, dc, ds);
    CHECK(w, "cuda_v3_create: %s", v3_last_error());
    float *dazc = dput(a_zc, nc), *daq = dput(a_q, nc), *dazs = dput(a_zs, ns);
    float *dbzc = dput(b_zc, nc), *dbq = dput(b_q, nc), *dbzs = dput(b_zs, ns);
    float *zeroc = falloc(nc), *zeros = falloc(ns), *gc = falloc(nc), *gs = falloc(ns);
    float *dgc = dput(zeroc, nc), *dgs = dput(zeros, ns);
    cuda_v3_forward(w, dazc, daq, dazs);
    cuda_v3_backward(w, dazc, daq, dazs, dgc, dgs);
    cuda_v3_forward(w, dbzc, dbq, dbzs); /* input b replaces everything input a left behind */
    int ok = read_stats(w, got) && stats_close(got, ref);
    /* gzs NULL: only gzc changes; then gzc NULL: only gzs. */
    if (ok && (cuda_h2d(dgc, zeroc, nc * sizeof(float)) || cuda_h2d(dgs, zeros, ns * sizeof(float)))) ok = 0;
    cuda_v3_backward(w, dbzc, dbq, dbzs, dgc, NULL);
    ok = ok && dget(gc, dgc, nc) && dget(gs, dgs, ns) && close_enough("gzc (gzs NULL)", gc, rc, nc, atol_c, GRAD_RTOL);
    if (ok && memcmp(gs, zeros, ns * sizeof(float))) {
        fprintf(stderr, "    gzs changed by a backward with gzs = NULL\n");
        ok = 0;
    }
    if (ok && cuda_h2d(dgc, zeroc, nc * sizeof(float))) ok = 0;
    cuda_v3_backward(w, dbzc, dbq, dbzs, NULL, dgs);
    ok = ok && dget(gc, dgc, nc) && dget(gs, dgs, ns) && close_enough("gzs (gzc NULL)", gs, rs, ns, atol_s, GRAD_RTOL);
    if (ok && memcmp(gc, zeroc, nc * sizeof(float))) {
        fprintf(stderr, "    gzc changed by a backward with gzc = NULL\n");
        ok = 0;
    }
    cuda_v3_backward(w, dbzc, dbq, dbzs, NULL, NULL); /* a no-op */
    ok = ok && cuda_sync() == 0;
    /* v3_stats_unpack: the documented layout. */
    V3Stats un;
    int nn = v3_supersample_n(B * n);
    v3_stats_unpack(got, B * n / nn, nn, &un);
    ok = ok && un.Fc == got[0] && un.Ss_ss == got[4] && un.weighted == got[9] && un.nB == st.nB && un.nn == st.nn;
    cuda_v3_destroy(w);
    cuda_free(dazc), cuda_free(daq), cuda_free(dazs), cuda_free(dbzc), cuda_free(dbq), cuda_free(dbzs);
    cuda_free(dgc), cuda_free(dgs);
    ffree(a_zc), ffree(a_q), ffree(a_zs), ffree(b_zc), ffree(b_q), ffree(b_zs);
    ffree(rc), ffree(rs), ffree(zeroc), ffree(zeros), ffree(gc), ffree(gs);
    CHECK(ok, "reuse / NULL gradients");
    return 0;
}

TEST(gpu_v3loss_create_errors) {
    REQUIRE_GPU();
    V3LossCfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.relativity = 15, cfg.eps = 1e-5;
    static const int bad[][4] = {{1, 12, 8, 8}, {32, 1, 8, 8}, {32, 12, 0, 8}, {32, 12, 8, 0}, {0, 0, 0, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v3_clear_error();
        CudaV3 *w = cuda_v3_create(&cfg, bad[i][0], bad[i][1], bad[i][2], bad[i][3]);
        CHECK(!w && v3_last_error()[0], "B=%d n=%d dc=%d ds=%d accepted", bad[i][0], bad[i][1], bad[i][2], bad[i][3]);
        cuda_v3_destroy(w); /* NULL: no-op */
    }
    CHECK(!cuda_v3_create(NULL, 4, 4, 4, 4), "NULL configuration accepted");
    v3_clear_error();
    cfg.content_energy = 1; /* loss_config.content_spread energy: cpu only, refused with a message */
    CHECK(!cuda_v3_create(&cfg, 4, 4, 4, 4) && strstr(v3_last_error(), "content_spread"),
          "content_spread energy accepted on the device: '%s'", v3_last_error());
    return 0;
}
