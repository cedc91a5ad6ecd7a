/* `v3 bench step`: the training step's speed on a backend, as the training loop runs it (forward, backward,
 * gradient check, AdamW) on a fixed random batch of the config's shape: median and minimum s/step, fragments/s,
 * GFLOP/s from the model's counted FLOPs (model_step_flops), peak RSS, and the machine's SGEMM ceiling measured in
 * the same run. make bench-cpu puts it beside PyTorch on the same model (bench/torch_step.py). */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "cli.h"
#include "common.h"
#include "config.h"
#include "model.h"
#include "ops.h"
#include "progress.h"
#include "rng.h"
#include "step.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f) {
    fprintf(f, "usage: v3 bench step --config FILE [--set KEY=VALUE ...] [--device cpu|ref|cuda|auto] [--steps 10]\n"
               "                     [--warmup 2] [--threads T] [--math fp32|tf32|bf16] [--json FILE]\n"
               "  one training step as `v3 train` runs it, on a fixed random batch of batch_size x n_fragments;\n"
               "  --threads: OpenMP threads (default: OMP_NUM_THREADS or all cores)\n");
}

int cmd_bench_step(int argc, char **argv) {
    const char *cfg_path = NULL, *device = "cpu", *json = NULL, *math_s = "fp32", *sets[64];
    int n_sets = 0, steps = 10, warmup = 2, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (i + 1 >= argc) { fprintf(stderr, "v3 bench step: option '%s' needs a value\n", a); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--config")) cfg_path = v;
        else if (!strcmp(a, "--set") && n_sets < 64) sets[n_sets++] = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--math")) math_s = v;
        else if (!strcmp(a, "--json")) json = v;
        else { fprintf(stderr, "v3 bench step: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    if (!cfg_path || steps < 1 || warmup < 1 || threads < 0) {
        fprintf(stderr, "v3 bench step: need --config FILE, --steps >= 1, --warmup >= 1 (k-means runs in the first step)\n");
        return 2;
    }
    if (threads) omp_set_num_threads(threads);
    threads = omp_get_max_threads();
    cpu_gemm_init(); /* GEMM threads follow the OpenMP pool */
    Config c;
    config_defaults(&c);
    V3Math math;
    if (config_load(cfg_path, &c)) return cli_fail();
    for (int i = 0; i < n_sets; i++)
        if (config_set(&c, sets[i])) return cli_fail();
    if (config_validate(&c) || v3_math_parse(math_s, &math)) return cli_fail();
    const Backend *be = backend_select(device, math);
    if (!be) return cli_fail();
    Model *m = model_build(&c, 0);
    if (!m) return cli_fail();
    int B = c.batch_size, n = c.n_fragments, N = B * n;
    size_t frag = (size_t)m->arch.C * m->arch.H * m->arch.W;
    Step *s = step_create(m, be, N, math);
    if (!s) { model_free(m); return cli_fail(); }
    float *x = falloc(frag * N);
    Rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < frag * N; i++) x[i] = rng_uniform_range(&r, -1.0f, 1.0f);
    double *t = xmalloc(sizeof(double) * (size_t)steps), total = 0;
    int rc = 0;
    for (int k = 0; k < warmup + steps && !rc; k++) {
        LossTerms L;
        double t0 = now_seconds();
        rc = step_forward(s, x, 0, B, 1, VQ_TRAIN, &L);
        if (!rc) {
            step_backward(s);
            if (!step_grads_finite(s)) rc = v3_error("step %d: non-finite gradient", k + 1);
            else step_adamw(s, 1e-4f);
            if (be->sync()) rc = -1;
        }
        if (k >= warmup) total += t[k - warmup] = now_seconds() - t0;
        progress_update(k + 1 == warmup + steps, "v3 bench step: %d/%d steps (%d warm-up)", k + 1, warmup + steps,
                        warmup);
    }
    progress_break();
    if (rc) { free(t); ffree(x); step_free(s); model_free(m); return cli_fail(); }
    /* a run that slows down as it goes (denormals, memory growth) shows as last > first */
    int w = steps >= 20 ? 10 : 1;
    double *ends = xmalloc(sizeof(double) * 2 * (size_t)w);
    memcpy(ends, t, sizeof(double) * w);
    memcpy(ends + w, t + steps - w, sizeof(double) * w);
    qsort(ends, (size_t)w, sizeof *ends, cmp_double);
    qsort(ends + w, (size_t)w, sizeof *ends, cmp_double);
    double first = ends[w / 2], last = ends[w + w / 2];
    free(ends);
    qsort(t, (size_t)steps, sizeof *t, cmp_double);
    double med = t[steps / 2], mn = t[0], gf = model_step_flops(m, N) / 1e9;
    double ceil = be->host_state ? cpu_sgemm_ceiling(threads, 2048) : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = ru.ru_maxrss / 1024.0;
    printf("config %s  device %s  threads %d  batch %d x %d fragments  params %zu\n", c.path, be->name, threads, B, n,
           m->n_params);
    printf("%-12s %-12s %-12s %-12s %-12s %-10s %-12s\n", "median s", "min s", "frag/s", "GFLOP/step", "GFLOP/s",
           "%SGEMM", "peak RSS MB");
    char pct[32] = "-";
    if (ceil > 0) snprintf(pct, sizeof pct, "%.1f%%", 100 * gf / med / ceil);
    printf("%-12.4f %-12.4f %-12.0f %-12.2f %-12.1f %-10s %-12.0f\n", med, mn, N / med, gf, gf / med, pct, rss);
    if (steps >= 20) printf("first 10 steps %.4f s/step (median), last 10 %.4f\n", first, last);
    if (ceil > 0) printf("SGEMM ceiling: %.1f GFLOP/s (2048^3 on %d OpenBLAS threads, measured in this run)\n", ceil,
                         threads);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) { v3_error("%s: cannot write", json); rc = -1; }
        else {
            fprintf(f, "{\"impl\":\"v3\",\"config\":\"%s\",\"device\":\"%s\",\"threads\":%d,\"batch\":%d,"
                       "\"fragments_per_step\":%d,\"params\":%zu,\"steps\":%d,\"median_s\":%.6f,\"min_s\":%.6f,"
                       "\"mean_s\":%.6f,\"frag_per_s\":%.3f,\"gflop_per_step\":%.4f,\"gflops\":%.3f,"
                       "\"sgemm_gflops\":%.3f,\"peak_rss_mb\":%.1f,\"first_median_s\":%.6f,"
                       "\"last_median_s\":%.6f}\n",
                    c.path, be->name, threads, B, N, m->n_params, steps, med, mn, total / steps, N / med, gf,
                    gf / med, ceil, rss, first, last);
            fclose(f);
        }
    }
    free(t);
    ffree(x);
    step_free(s);
    model_free(m);
    return rc ? cli_fail() : 0;
}
