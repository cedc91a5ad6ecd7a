/* `v3 bench loader`: how many batches per second each dataset's loading path delivers, synchronously (one
 * loader_produce call, the work the loader thread does per step) and through the loader thread itself, on the
 * CPU and, for InsNotes when a GPU is usable, on the GPU path of training (audio uploaded, features made in the
 * device batch buffer). Prints a table and writes JSON. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "cuda_backend.h"
#include "datasource.h"
#include "loader.h"

typedef struct {
    char data[512], path[16];
    double med_ms, min_ms, thread_bps;
    int B, n_frag;
} Row;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One row: the synchronous cost of a batch (loader_produce: what the loader thread does per step) and the rate
 * through the thread. gpu: a loader with device buffers; InsNotes then uploads audio and makes its features on
 * the device (cuda_stft_features), as in training. */
static int bench_one(const char *dir, int B, int frags, int iters, int gpu, Row *row) {
    DataSource ds;
    if (datasource_open(dir, "train", frags, &ds)) return -1;
    ds.use_gpu = gpu;
    int n = B < (int)ds.n_samples ? B : (int)ds.n_samples;
    int spe = (int)(ds.n_samples / n);
    LoaderOpts lo = {&ds, n, spe > 0 ? spe : 1, 7, gpu};
    Loader *l = loader_create(&lo);
    double *t = xmalloc(sizeof(double) * iters);
    int rc = l ? 0 : -1;
    for (int i = -1; i < iters && !rc; i++) { /* i = -1: warm-up (plans, first touches) */
        double t0 = now_seconds();
        rc = loader_produce(l, (uint64_t)(i + 1)) ? 0 : -1;
        if (i >= 0) t[i] = (now_seconds() - t0) * 1e3;
    }
    if (!rc) {
        qsort(t, iters, sizeof(double), cmp_d);
        row->med_ms = t[iters / 2];
        row->min_ms = t[0];
        /* the loader thread, with a consumer that takes batches as fast as they come */
        if (loader_start(l, 0, (uint64_t)iters)) rc = -1;
        double t0 = now_seconds();
        for (int i = 0; i < iters && !rc; i++)
            if (!loader_next(l)) rc = -1;
        row->thread_bps = iters / (now_seconds() - t0);
    }
    loader_free(l);
    snprintf(row->data, sizeof row->data, "%s", dir);
    snprintf(row->path, sizeof row->path, "%s", gpu ? "gpu" : "cpu");
    row->B = n;
    row->n_frag = (int)ds.n_frag;
    int is_insnotes = !strcmp(ds.kind, "insnotes");
    free(t);
    datasource_close(&ds);
    return rc ? -1 : is_insnotes;
}

int cmd_bench_step(int argc, char **argv); /* host/cli/bench_step_cli.c */

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "step")) return cmd_bench_step(argc - 1, argv + 1);
    const char *dirs[16], *json = "bench/loader.json", *device = "auto";
    int nd = 0, B = 32, frags = 0, iters = 20;
    int help = argc >= 2 && (!strcmp(argv[argc - 1], "--help") || !strcmp(argv[argc - 1], "-h"));
    if (argc < 2 || strcmp(argv[1], "loader") || help) {
        fprintf(help ? stdout : stderr, "usage: v3 bench step --config FILE [options] (v3 bench step --help)\n"
                        "       v3 bench loader --data DIR [--data DIR ...] [--batch 32] [--frags N] [--batches 20] "
                        "[--device auto|cpu|cuda] [--json bench/loader.json]\n"
                        "(kernel benchmarks are separate programs: make bench, then ./bench/bench_vq etc.)\n");
        return help ? 0 : 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) { fprintf(stderr, "v3 bench: option '%s' needs a value\n", a); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--data") && nd < 16) dirs[nd++] = v;
        else if (!strcmp(a, "--batch")) B = atoi(v);
        else if (!strcmp(a, "--frags")) frags = atoi(v);
        else if (!strcmp(a, "--batches")) iters = atoi(v);
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--device")) device = v;
        else { fprintf(stderr, "v3 bench: unknown option '%s'\n", a); return 2; }
    }
    if (!nd || B < 2 || iters < 1) {
        fprintf(stderr, "v3 bench loader: need --data DIR, --batch >= 2 and --batches >= 1\n");
        return 2;
    }
    char desc[256];
    int gpu = 0;
    if (strcmp(device, "cpu") && cuda_probe(desc, sizeof desc) > 0) {
        if (cuda_init(0)) return cli_fail();
        gpu = 1;
    } else if (!strcmp(device, "cuda")) {
        fprintf(stderr, "v3: error: --device cuda: %s\n", desc);
        return 1;
    }
    Row rows[64];
    int nr = 0;
    for (int d = 0; d < nd; d++) {
        int k = bench_one(dirs[d], B, frags, iters, 0, &rows[nr]);
        if (k < 0) return cli_fail();
        nr++;
        if (k == 1 && gpu) { /* InsNotes: the STFT on the GPU as well */
            if (bench_one(dirs[d], B, frags, iters, 1, &rows[nr]) < 0) return cli_fail();
            nr++;
        }
    }
    printf("%-32s %-4s %5s %5s %12s %12s %14s %16s\n", "dataset (train split)", "path", "B", "frags", "median ms",
           "min ms", "batches/s sync", "batches/s thread");
    for (int i = 0; i < nr; i++)
        printf("%-32.32s %-4s %5d %5d %12.2f %12.2f %14.1f %16.1f\n", rows[i].data, rows[i].path, rows[i].B,
               rows[i].n_frag, rows[i].med_ms, rows[i].min_ms, 1e3 / rows[i].med_ms, rows[i].thread_bps);
    FILE *f = fopen(json, "w");
    if (!f) { fprintf(stderr, "v3: error: %s: cannot write\n", json); return 1; }
    fprintf(f, "{\"bench\":\"loader\",\"rows\":[");
    for (int i = 0; i < nr; i++)
        fprintf(f, "%s{\"data\":\"%s\",\"path\":\"%s\",\"B\":%d,\"n_frag\":%d,\"median_ms\":%.4f,\"min_ms\":%.4f,"
                   "\"batches_per_s_sync\":%.3f,\"batches_per_s_thread\":%.3f}",
                i ? "," : "", rows[i].data, rows[i].path, rows[i].B, rows[i].n_frag, rows[i].med_ms, rows[i].min_ms,
                1e3 / rows[i].med_ms, rows[i].thread_bps);
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", json);
    return 0;
}
