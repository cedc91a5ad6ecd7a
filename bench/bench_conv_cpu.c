/* The cpu backend's convolutions layer by layer, its implementations side by side (issue 17).
 *   make bench && OMP_NUM_THREADS=2 ./bench/bench_conv_cpu [--configs insnotes,phonenums,sprites,svhn]
 *        [--set KEY=VALUE] [--samples S] [--variants rule,small,blocked,plain,ref] [--seconds T] [--json FILE]
 * Rows: every distinct convolution layer (geometry, transposed or not, input size) of the four architectures
 * (configs/<name>.yaml through model_build; --configs takes any names there, phonenums-cpu for instance) at a batch of S samples x n_fragments (default S = 2: the reference
 * im2col at the authors' widths takes seconds a call), forward (with bias) and backward (dx, dw, db), for each
 * variant, forced through V3_CPU_CONV when its plan is made:
 *   rule     what the cpu backend runs (conv_cpu.c's fixed rule on the geometry; "fwd / bwd" where the two
 *            directions run different implementations);
 *   small    the direct few-channel kernels (conv_small.c; strides 1-4 only);
 *   blocked  oneDNN with the blocked layouts it picks; plain: oneDNN on plain NCHW layouts;
 *   ref      the reference im2col + OpenBLAS.
 * The "impl" column names what the plan really runs (oneDNN's implementation name, for instance). Each variant's
 * forward output, dx, dw and db are checked against ref's with the conv tolerance of tests/backend_cases.c (1e-5 relative
 * plus 1e-6 sqrt(K) of the output's largest value); a wrong result prints INVALID and no time. Times: wall clock
 * per call, median and minimum over at least 3 calls or T seconds (default 0.3) after one warm-up call; GFLOP/s at
 * 2 per multiply-add of the direct algorithm (backward: dx and dw). The exit status is 1 if a row is INVALID. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common.h"
#include "config.h"
#include "cpu_backend.h"
#include "model.h"
#include "ops.h"
#include "rng.h"

static BenchConvLayer g_conv[BENCH_MAX_CONV];
static int g_nconv;

static float *random_floats(size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform_range(&r, -1.0f, 1.0f);
    return p;
}

/* worst |got - ref| / (1e-5 |ref| + (1e-6 sqrt(K)) max|ref|); NaN gives INFINITY */
static double worst_err(const float *got, const float *ref, size_t n, double K) {
    double mx = 0, w = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (1e-5 * fabs(ref[i]) + 1e-6 * sqrt(K) * mx + 1e-30);
        if (!(e <= w)) w = isnan(e) ? INFINITY : e;
    }
    return w;
}

typedef struct {
    const ConvGeom *g;
    int T, N, H, W, Ho, Wo;
    size_t nx, ny, nw;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
} Layer;

static void dims(Layer *L, const BenchConvLayer *c) {
    const ConvGeom *g = &c->g;
    L->g = g, L->T = c->transposed, L->N = c->N, L->H = c->H, L->W = c->W;
    L->Ho = L->T ? c->H + g->kh - 1 - 2 * g->ph : conv_out_size(c->H, g->kh, g->sh, g->ph);
    L->Wo = L->T ? c->W + g->kw - 1 - 2 * g->pw : conv_out_size(c->W, g->kw, g->sw, g->pw);
    L->nx = (size_t)c->N * g->cin * c->H * c->W;
    L->ny = (size_t)c->N * g->cout * L->Ho * L->Wo;
    L->nw = (size_t)g->cin * g->cout * g->kh * g->kw;
}

/* median and min ms of calls of fwd (which = 0) or bwd (1) on plan p */
static void time_calls(void *p, const Layer *L, int which, double seconds, double *med, double *mn) {
    double t[4096];
    int n = 0;
    double start = omp_get_wtime();
    do {
        double t0 = omp_get_wtime();
        if (which == 0) cpu_conv_fwd(p, L->x, L->w, L->b, L->y);
        else cpu_conv_bwd(p, L->x, L->w, L->dy, L->dx, L->dw, L->db);
        t[n++] = (omp_get_wtime() - t0) * 1e3;
    } while (n < 3 || (omp_get_wtime() - start < seconds && n < 4096));
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double s = t[j];
            t[j] = t[j - 1], t[j - 1] = s;
        }
    *med = t[n / 2], *mn = t[0];
}

static int bench_layer(const BenchConvLayer *c, const char *variants, double seconds, FILE *json) {
    Layer L;
    dims(&L, c);
    const ConvGeom *g = L.g;
    L.x = random_floats(L.nx, 1), L.w = random_floats(L.nw, 2), L.b = random_floats(g->cout, 3);
    L.dy = random_floats(L.ny, 4);
    L.y = falloc(L.ny), L.dx = falloc(L.nx), L.dw = falloc(L.nw), L.db = falloc(g->cout);
    /* the reference results */
    void *rp = ref_conv_plan(g, L.T, L.N, L.H, L.W, V3_MATH_FP32);
    if (!rp) V3_FATAL("%s", v3_last_error());
    float *ry = falloc(L.ny), *rdx = falloc(L.nx), *rdw = falloc(L.nw), *rdb = falloc(g->cout); /* zeroed */
    ref_conv_fwd(rp, L.x, L.w, L.b, ry);
    ref_conv_bwd(rp, L.x, L.w, L.dy, rdx, rdw, rdb);
    ref_conv_destroy(rp);
    double fl = 2.0 * g->cin * g->cout * g->kh * g->kw * (double)c->N * (L.T ? (double)c->H * c->W : (double)L.Ho * L.Wo);
    double Kf = (double)(L.T ? g->cout : g->cin) * g->kh * g->kw, Kb = (double)(L.T ? g->cin : g->cout) * g->kh * g->kw;
    char layer[96];
    snprintf(layer, sizeof layer, "%s%d->%d %dx%d s%d [%d,%d,%d,%d] x%d", L.T ? "T " : "", g->cin, g->cout, g->kh, g->kw,
             g->sh, c->N, g->cin, c->H, c->W, c->uses);
    const char *names[] = {"rule", "small", "blocked", "plain", "ref"};
    int bad = 0;
    for (int v = 0; v < 5; v++) {
        if (!bench_list_has(variants, names[v])) continue;
        if (v == 0) unsetenv("V3_CPU_CONV");
        else setenv("V3_CPU_CONV", names[v], 1);
        void *p = cpu_conv_plan(g, L.T, L.N, L.H, L.W, V3_MATH_FP32);
        unsetenv("V3_CPU_CONV");
        if (!p) V3_FATAL("%s", v3_last_error());
        char implbuf[96];
        const char *impl = cpu_conv_impl(p, 0), *implb = cpu_conv_impl(p, 1);
        if (strcmp(impl, implb)) { /* the rule may run the two directions on different implementations */
            snprintf(implbuf, sizeof implbuf, "%.20s / %.20s", impl, implb);
            impl = implbuf;
        }
        /* a forced variant the layer cannot take falls back to another: report it once, under the rule */
        int runs_other = (v == 1 && strcmp(impl, "direct (few channels)")) ||
                         ((v == 2 || v == 3) && (!strcmp(impl, "direct (few channels)") || strstr(impl, "reference")));
        if (runs_other) {
            cpu_conv_destroy(p);
            continue;
        }
        for (size_t i = 0; i < L.ny; i++) L.y[i] = NAN;
        for (size_t i = 0; i < L.nx; i++) L.dx[i] = NAN;
        memset(L.dw, 0, sizeof(float) * L.nw), memset(L.db, 0, sizeof(float) * g->cout);
        cpu_conv_fwd(p, L.x, L.w, L.b, L.y);
        cpu_conv_bwd(p, L.x, L.w, L.dy, L.dx, L.dw, L.db);
        double Kw = (double)c->N * (L.T ? (double)c->H * c->W : (double)L.Ho * L.Wo); /* dw, db: sums over N pixels */
        double ef = worst_err(L.y, ry, L.ny, Kf), eb = worst_err(L.dx, rdx, L.nx, Kb);
        eb = fmax(eb, fmax(worst_err(L.dw, rdw, L.nw, Kw), worst_err(L.db, rdb, g->cout, Kw)));
        printf("%-9s %-44s %-8s %-30.30s", c->model, layer, names[v], impl);
        if (!(ef <= 1 && eb <= 1)) {
            printf(" INVALID (y %.3g, dx/dw/db %.3g of the bound)\n", ef, eb);
            bad = 1;
            cpu_conv_destroy(p);
            continue;
        }
        double fm, fmin, bm, bmin;
        time_calls(p, &L, 0, seconds, &fm, &fmin);
        time_calls(p, &L, 1, seconds, &bm, &bmin);
        printf(" %9.3f %9.3f %8.1f %9.3f %9.3f %8.1f\n", fm, fmin, fl / fm / 1e6, bm, bmin, 2 * fl / bm / 1e6);
        if (json)
            fprintf(json,
                    "{\"model\": \"%s\", \"layer\": \"%s\", \"variant\": \"%s\", \"impl\": \"%s\", \"fwd_median_ms\": %.6g, "
                    "\"fwd_min_ms\": %.6g, \"bwd_median_ms\": %.6g, \"bwd_min_ms\": %.6g, \"fwd_gflops\": %.6g, "
                    "\"bwd_gflops\": %.6g, \"threads\": %d}\n",
                    c->model, layer, names[v], impl, fm, fmin, bm, bmin, fl / fm / 1e6, 2 * fl / bm / 1e6,
                    omp_get_max_threads());
        cpu_conv_destroy(p);
    }
    ffree((float *)L.x), ffree((float *)L.w), ffree((float *)L.b), ffree((float *)L.dy);
    ffree(L.y), ffree(L.dx), ffree(L.dw), ffree(L.db), ffree(ry), ffree(rdx), ffree(rdw), ffree(rdb);
    return bad;
}

int main(int argc, char **argv) {
    const char *configs = "insnotes,phonenums,sprites,svhn", *variants = "rule,small,blocked,plain,ref", *json_path = NULL;
    const char *set = NULL;
    int samples = 2;
    double seconds = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--configs") && i + 1 < argc) configs = argv[++i];
        else if (!strcmp(argv[i], "--variants") && i + 1 < argc) variants = argv[++i];
        else if (!strcmp(argv[i], "--samples") && i + 1 < argc) samples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) set = argv[++i];
        else {
            fprintf(stderr, "usage: bench_conv_cpu [--configs a,b] [--set KEY=VALUE] [--samples S] "
                            "[--variants rule,small,blocked,plain,ref] [--seconds T] [--json FILE]\n");
            return 2;
        }
    }
    if (samples < 1 || seconds < 0) {
        fprintf(stderr, "bench_conv_cpu: --samples expects at least 1, --seconds a time >= 0\n");
        return 2;
    }
    cpu_gemm_init();
    printf("bench_conv_cpu: %d OpenMP threads, convolutions: %s, denormals: %s\n", omp_get_max_threads(),
           cpu_conv_library(), cpu_denormals_init());
    /* each name of --configs: configs/<name>.yaml */
    char list[512];
    snprintf(list, sizeof list, "%s", configs);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        char path[600];
        snprintf(path, sizeof path, "configs/%s.yaml", name);
        Config c;
        config_defaults(&c);
        if (config_load(path, &c) || (set && config_set(&c, set))) {
            fprintf(stderr, "bench_conv_cpu: %s\n", v3_last_error());
            return 1;
        }
        Model *m = model_build(&c, 1);
        if (!m) {
            fprintf(stderr, "bench_conv_cpu: %s\n", v3_last_error());
            return 1;
        }
        bench_model_convs(name, m, samples * c.n_fragments, g_conv, &g_nconv);
        model_free(m);
    }
    FILE *json = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !json) {
        fprintf(stderr, "bench_conv_cpu: %s: cannot write\n", json_path);
        return 1;
    }
    printf("%d distinct convolution layers; times per call in ms (median, min), GFLOP/s from the median\n", g_nconv);
    printf("%-9s %-44s %-8s %-30s %9s %9s %8s %9s %9s %8s\n", "model", "layer [N,C,H,W] x uses", "variant", "impl",
           "fwd med", "fwd min", "GFLOP/s", "bwd med", "bwd min", "GFLOP/s");
    int bad = 0;
    for (int i = 0; i < g_nconv; i++) bad |= bench_layer(&g_conv[i], variants, seconds, json);
    if (json) fclose(json);
    return bad;
}
