/* V3 statistics on the GPU (kernels/v3loss.cu): forward + backward of the four mean-pairwise-distance terms,
 * their hinges and the gradients into zc/zs, at the PyTorch anchors' shapes (../shared/anchors: autograd
 * 3.19 ms at B=32 n=12 d=512, 7.00 ms at B=256 n=16 d=512, 50.3 ms at B=1024 n=32 d=256), plus the
 * phonenums size (B=32 n=10 d=256) and the supersample variant at the authors' size.
 *   make bench && ./bench/bench_v3loss [OUT.json]        (default bench/v3loss.json)
 * Variants per shape, side by side:
 *   fwd+bwd          the production path: cuda_v3_forward + cuda_v3_backward (4 launches, no sync)
 *   fwd+bwd+readback the same plus cuda_sync and the 80-byte copy of the statistics (what a step pays when
 *                    it reads the loss; here it includes the host round trip)
 *   forward          cuda_v3_forward alone (3 launches)
 *   backward         cuda_v3_backward alone (1 launch; it adds into the gradient buffers every call)
 *   fwd+bwd tile=T   the production path with the between-group kernel forced to tile T (1, 2, 4 groups a
 *                    block; the automatic choice, from the SM count, is one of them: compare with fwd+bwd)
 *   fwd+bwd global rows  automatic tile, distance rows forced into global memory (the fallback path).
 *                    These rows are for tuning the automatic choice; all give bit-identical results.
 * Validation: before and after timing, the statistics and the gradients (from zero) are compared with the
 * CPU v3_loss on the same random inputs (r = 1e6: every hinge active; some q rows duplicated), stats relative
 * 1e-9, gradients 1e-5 relative + 1e-6 x a bound on any gradient element; a row is marked validated only if
 * both checks pass.
 * Bytes: compulsory DRAM traffic (forward reads zc, q, zs; backward reads them again and reads + writes gzc,
 * gzs). FLOPs: 3 per (pair, column) for the distances (difference, square, add; pairs counted once), and 3 per
 * (ordered pair, column) in each gradient pass, all double precision; group means not counted. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common.h"
#include "cuda_backend.h"
#include "rng.h"
#include "v3_coef.h"
#include "v3loss.h"


typedef struct {
    CudaV3 *w;
    const float *zc, *q, *zs;
    float *gzc, *gzs;
    double *stats_host;
} Ctx;

static void run_fwd_bwd(void *p) {
    Ctx *c = p;
    cuda_v3_forward(c->w, c->zc, c->q, c->zs);
    cuda_v3_backward(c->w, c->zc, c->q, c->zs, c->gzc, c->gzs);
}
static void run_fwd_bwd_read(void *p) {
    Ctx *c = p;
    run_fwd_bwd(p);
    if (cuda_sync() || cuda_d2h(c->stats_host, cuda_v3_stats(c->w), V3_STATS_DOUBLES * sizeof(double)))
        V3_FATAL("%s", v3_last_error());
}
static void run_fwd(void *p) {
    Ctx *c = p;
    cuda_v3_forward(c->w, c->zc, c->q, c->zs);
}
static void run_bwd(void *p) {
    Ctx *c = p;
    cuda_v3_backward(c->w, c->zc, c->q, c->zs, c->gzc, c->gzs);
}

/* max over i of |a-b| / (atol + 1e-5 |b|); NaN/Inf give +INFINITY. */
static double scaled_err(const float *a, const float *b, size_t n, double atol) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double e = fabs((double)a[i] - b[i]) / (atol + 1e-5 * fabs(b[i]));
        w = e > w ? e : w;
    }
    return w;
}

static float *dput_bench(const float *h, size_t n) {
    float *d = cuda_alloc(n * sizeof(float));
    if (cuda_h2d(d, h, n * sizeof(float))) V3_FATAL("%s", v3_last_error());
    return d;
}

/* Bounds on |gzc| and |gzs| elements (sum of the |coefficients| of the unit-vector terms, from v3_loss's
 * backward scalars): the absolute tolerance scales with these, not with the possibly cancelling results. */
static void grad_bounds(const V3LossCfg *cfg, const V3Stats *st, int B, int n, double *bc, double *bs) {
    const V3Coef c = v3_coef(cfg, st->Fc, st->Sc, st->Fs, st->Ss, st->Ss_ss);
    double nB = st->nB, nn = st->nn;
    *bc = 2 * fabs(c.dFc) / ((double)B * n) + 2 * fabs(c.dSc) / (nB * nn);
    *bs = 2 * fabs(c.dFs) / ((double)B * n) + 2 * fabs(c.dSs) / ((double)B * n) +
          (cfg->supersample_content ? 2 * fabs(c.dSs_ss) / (nB * nn) : 0.0);
}

typedef struct {
    int B, n, dc, ds, ss;
    const char *label;
} Shape;

typedef struct {
    const Shape *s;
    V3LossCfg cfg;
    size_t nc, ns;
    double ref[V3_STATS_DOUBLES];
    float *gc, *gs; /* CPU gradients from zero */
    double bound_c, bound_s;
} Ref;

/* Forward + backward from zero gradients on the device, compared with the CPU. 1 if it matches. */
static int validate(const Ref *r, Ctx *c) {
    if (cuda_memset(c->gzc, 0, r->nc * sizeof(float)) || cuda_memset(c->gzs, 0, r->ns * sizeof(float)))
        V3_FATAL("%s", v3_last_error());
    run_fwd_bwd(c);
    double st[V3_STATS_DOUBLES];
    float *gc = falloc(r->nc), *gs = falloc(r->ns);
    int ok = !cuda_sync() && !cuda_d2h(st, cuda_v3_stats(c->w), sizeof st) &&
             !cuda_d2h(gc, c->gzc, r->nc * sizeof(float)) && !cuda_d2h(gs, c->gzs, r->ns * sizeof(float));
    for (int i = 0; ok && i < V3_STATS_DOUBLES; i++)
        if (!(fabs(st[i] - r->ref[i]) <= 1e-12 + 1e-9 * fabs(r->ref[i]))) {
            fprintf(stderr, "bench_v3loss: stat %d: gpu %.17g, cpu %.17g\n", i, st[i], r->ref[i]);
            ok = 0;
        }
    double ac = 1e-6 * r->bound_c, as = 1e-6 * r->bound_s;
    if (ok && scaled_err(gc, r->gc, r->nc, ac > 0 ? ac : 1e-30) > 1.0) ok = 0;
    if (ok && scaled_err(gs, r->gs, r->ns, as > 0 ? as : 1e-30) > 1.0) ok = 0;
    if (!ok)
        fprintf(stderr, "bench_v3loss: validation failed at B=%d n=%d dc=%d ds=%d ss=%d\n", r->s->B, r->s->n,
                r->s->dc, r->s->ds, r->s->ss);
    ffree(gc), ffree(gs);
    return ok;
}

/* Times fn with enough calls per batch for ~20 ms batches, validating before and after. */
static void measure(const Ref *r, Ctx *c, const char *variant, bench_fn fn, double bytes, double flops,
                    const char *note) {
    int pre = validate(r, c);
    BenchTime probe = bench_time(fn, c, 2, 1, 3);
    int reps = probe.min_ms > 0 ? (int)(20.0 / probe.min_ms) : 500;
    reps = reps < 1 ? 1 : reps > 500 ? 500 : reps;
    BenchRow row;
    memset(&row, 0, sizeof row);
    snprintf(row.kernel, sizeof row.kernel, "v3loss");
    snprintf(row.variant, sizeof row.variant, "%s", variant);
    snprintf(row.shape, sizeof row.shape, "B=%d n=%d dc=%d ds=%d%s", r->s->B, r->s->n, r->s->dc, r->s->ds,
             r->s->ss ? " ss" : "");
    snprintf(row.note, sizeof row.note, "%s", note);
    row.t = bench_time(fn, c, 3, reps, 15);
    row.bytes = bytes;
    row.flops = flops;
    int post = validate(r, c);
    row.valid = pre && post;
    bench_add(&row);
    printf("  %-18s %-36s median %.4f ms%s\n", variant, row.shape, row.t.median_ms, row.valid ? "" : "  [NOT VALIDATED]");
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : "bench/v3loss.json";
    char desc[256];
    bench_init_device(desc, sizeof desc);
    static const Shape shapes[] = {
        {32, 12, 512, 512, 0, "insnotes (anchor 3.19 ms)"},
        {32, 12, 512, 512, 1, "insnotes, supersample"},
        {32, 10, 256, 256, 0, "phonenums"},
        {256, 16, 512, 512, 0, "anchor 7.00 ms"},
        {1024, 32, 256, 256, 0, "anchor 50.3 ms"},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const Shape *s = &shapes[si];
        const int N = s->B * s->n;
        Ref r;
        memset(&r, 0, sizeof r);
        r.s = s;
        r.nc = (size_t)N * s->dc, r.ns = (size_t)N * s->ds;
        r.cfg.w_content = r.cfg.w_style = r.cfg.w_sample = r.cfg.w_fragment = 1.0;
        r.cfg.relativity = 1e6; /* every hinge active: every gradient term is exercised */
        r.cfg.eps = 1e-5;
        r.cfg.supersample_content = s->ss;
        float *zc = falloc(r.nc), *q = falloc(r.nc), *zs = falloc(r.ns);
        Rng rng;
        rng_seed(&rng, 7 + si);
        for (size_t i = 0; i < r.nc; i++) zc[i] = rng_uniform_range(&rng, -1.0f, 1.0f);
        for (size_t i = 0; i < r.nc; i++) q[i] = zc[i] + rng_uniform_range(&rng, -0.1f, 0.1f);
        for (size_t i = 0; i < r.ns; i++) zs[i] = rng_uniform_range(&rng, -1.0f, 1.0f);
        for (int i = 0; i + 1 < N; i += 3) /* duplicated codewords: exact zero distances */
            memcpy(q + (size_t)(i + 1) * s->dc, q + (size_t)i * s->dc, sizeof(float) * s->dc);
        printf("%s: CPU reference...\n", s->label);
        fflush(stdout);
        V3Stats st;
        r.gc = falloc(r.nc), r.gs = falloc(r.ns);
        v3_loss(&r.cfg, s->B, s->n, s->dc, s->ds, zc, q, zs, &st, r.gc, r.gs);
        double v[V3_STATS_DOUBLES] = {st.Fc,      st.Sc,    st.Fs,     st.Ss,       st.Ss_ss,
                                      st.content, st.style, st.sample, st.fragment, st.weighted};
        memcpy(r.ref, v, sizeof v);
        grad_bounds(&r.cfg, &st, s->B, s->n, &r.bound_c, &r.bound_s);

        Ctx c;
        memset(&c, 0, sizeof c);
        c.zc = dput_bench(zc, r.nc), c.q = dput_bench(q, r.nc), c.zs = dput_bench(zs, r.ns);
        c.gzc = cuda_alloc(r.nc * sizeof(float));
        c.gzs = cuda_alloc(r.ns * sizeof(float));
        double st_host[V3_STATS_DOUBLES];
        c.stats_host = st_host;

        /* Work and traffic per call. */
        const int P = s->n * (s->n - 1) / 2, nn = s->ss ? v3_supersample_n(N) : s->n, nB = N / nn;
        const double Wp = (double)s->B * P * (2.0 * s->dc + s->ds);
        double Bp = (double)nB * (nB - 1) / 2 * 2.0 * s->dc + (double)s->B * (s->B - 1) / 2 * s->ds;
        if (s->ss) Bp += (double)nB * (nB - 1) / 2 * s->ds;
        const double in_bytes = 4.0 * N * (2.0 * s->dc + s->ds), g_bytes = 4.0 * N * (s->dc + s->ds);
        const double f_fwd = 3 * Wp + 3 * Bp + 6 * Bp, f_bwd = 6 * Wp;
        const double b_fwd = in_bytes, b_bwd = in_bytes + 2 * g_bytes;
        char note[96];
        snprintf(note, sizeof note, "%s", s->label);

        c.w = cuda_v3_create(&r.cfg, s->B, s->n, s->dc, s->ds);
        if (!c.w) V3_FATAL("%s", v3_last_error());
        measure(&r, &c, "fwd+bwd", run_fwd_bwd, b_fwd + b_bwd, f_fwd + f_bwd, note);
        measure(&r, &c, "fwd+bwd+readback", run_fwd_bwd_read, b_fwd + b_bwd, f_fwd + f_bwd, "includes sync + copy");
        measure(&r, &c, "forward", run_fwd, b_fwd, f_fwd, "");
        /* backward-only: measure() validates first, which runs a forward; the timed calls reuse its state */
        measure(&r, &c, "backward", run_bwd, b_bwd, f_bwd, "");
        cuda_v3_destroy(c.w);
        static const int tiles[] = {1, 2, 4, 0};
        for (int ti = 0; ti < 4; ti++) {
            char var[48];
            if (tiles[ti]) snprintf(var, sizeof var, "fwd+bwd tile=%d", tiles[ti]);
            else snprintf(var, sizeof var, "fwd+bwd global rows");
            cuda_v3_debug_options(tiles[ti] == 0, tiles[ti]);
            c.w = cuda_v3_create(&r.cfg, s->B, s->n, s->dc, s->ds);
            cuda_v3_debug_options(0, 0);
            if (!c.w) V3_FATAL("%s", v3_last_error());
            measure(&r, &c, var, run_fwd_bwd, b_fwd + b_bwd, f_fwd + f_bwd, "tuning");
            cuda_v3_destroy(c.w);
        }
        cuda_free((void *)c.zc), cuda_free((void *)c.q), cuda_free((void *)c.zs);
        cuda_free(c.gzc), cuda_free(c.gzs);
        ffree(zc), ffree(q), ffree(zs), ffree(r.gc), ffree(r.gs);
    }
    return bench_finish(out, desc) ? 1 : 0;
}
