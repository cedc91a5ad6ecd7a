/* Timing, table and JSON output for the benchmark programs (see bench_util.h). */
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "common.h"
#include "cuda_backend.h"
#include "model.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

BenchTime bench_time(bench_fn fn, void *ctx, int warmup, int reps, int batches) {
    BenchTime r = {0, 0, reps, batches};
    for (int i = 0; i < warmup; i++) fn(ctx);
    if (cuda_sync()) V3_FATAL("%s", v3_last_error());
    double *ms = xmalloc(sizeof(double) * (size_t)batches);
    CudaTimer *t = cuda_timer_create();
    for (int b = 0; b < batches; b++) {
        cuda_timer_start(t);
        for (int i = 0; i < reps; i++) fn(ctx);
        ms[b] = cuda_timer_stop_ms(t) / reps;
    }
    cuda_timer_destroy(t);
    qsort(ms, (size_t)batches, sizeof(double), cmp_double);
    r.min_ms = ms[0];
    r.median_ms = batches % 2 ? ms[batches / 2] : 0.5 * (ms[batches / 2 - 1] + ms[batches / 2]);
    free(ms);
    return r;
}

static BenchRow *g_rows;
static int g_n, g_cap;

void bench_add(const BenchRow *r) {
    if (g_n == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 64;
        g_rows = realloc(g_rows, sizeof(BenchRow) * (size_t)g_cap);
        if (!g_rows) V3_FATAL("out of memory");
    }
    g_rows[g_n++] = *r;
}

static void json_str(FILE *f, const char *key, const char *v) {
    fprintf(f, "\"%s\": \"", key);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

int bench_finish(const char *path, const char *device) {
    printf("\n%-14s %-22s %-34s %11s %11s %9s %9s  %s\n", "kernel", "variant", "shape", "median ms", "min ms",
           "GB/s", "TFLOP/s", "note");
    for (int i = 0; i < g_n; i++) {
        const BenchRow *r = &g_rows[i];
        double s = r->t.median_ms * 1e-3;
        printf("%-14s %-22s %-34s %11.4f %11.4f %9.1f %9.2f  %s%s\n", r->kernel, r->variant, r->shape, r->t.median_ms,
               r->t.min_ms, s > 0 ? r->bytes / s / 1e9 : 0, s > 0 ? r->flops / s / 1e12 : 0, r->note,
               r->valid ? "" : " [NOT VALIDATED]");
    }
    if (!path) return 0;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return v3_error("%s: cannot write: %s", tmp, strerror(errno));
    for (int i = 0; i < g_n; i++) {
        const BenchRow *r = &g_rows[i];
        double s = r->t.median_ms * 1e-3;
        fputc('{', f);
        json_str(f, "kernel", r->kernel);
        fputs(", ", f);
        json_str(f, "variant", r->variant);
        fputs(", ", f);
        json_str(f, "shape", r->shape);
        fputs(", ", f);
        json_str(f, "device", device);
        fprintf(f, ", \"median_ms\": %.6g, \"min_ms\": %.6g, \"reps\": %d, \"batches\": %d, \"gb_s\": %.6g, "
                   "\"tflop_s\": %.6g, \"validated\": %s, ",
                r->t.median_ms, r->t.min_ms, r->t.reps, r->t.batches, s > 0 ? r->bytes / s / 1e9 : 0,
                s > 0 ? r->flops / s / 1e12 : 0, r->valid ? "true" : "false");
        json_str(f, "note", r->note);
        fputs("}\n", f);
    }
    if (fclose(f)) return v3_error("%s: write failed", tmp);
    if (rename(tmp, path)) return v3_error("%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    printf("wrote %s (%d rows)\n", path, g_n);
    return 0;
}

void bench_init_device(char *desc, size_t n) {
    if (cuda_probe(desc, n) <= 0) {
        fprintf(stderr, "v3 bench: %s\n", desc);
        exit(2);
    }
    int dev = 0;
    const char *tag = strstr(desc, "[CUDA device ");
    if (tag) dev = atoi(tag + strlen("[CUDA device "));
    if (cuda_init(dev) || cuda_libs_load()) {
        fprintf(stderr, "v3 bench: %s\n", v3_last_error());
        exit(2);
    }
    printf("device: %s\n", desc);
}

int bench_list_has(const char *list, const char *item) {
    size_t n = strlen(item);
    for (const char *p = list; (p = strstr(p, item)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

static void add_conv(const char *model, const ConvL *c, int N, int H, int W, BenchConvLayer *L, int *n) {
    for (int i = 0; i < *n; i++) {
        BenchConvLayer *l = &L[i];
        if (!memcmp(&l->g, &c->g, sizeof l->g) && l->transposed == c->transposed && l->N == N && l->H == H &&
            l->W == W && !strcmp(l->model, model)) {
            l->uses++;
            return;
        }
    }
    if (*n == BENCH_MAX_CONV) V3_FATAL("too many conv layers");
    BenchConvLayer *l = &L[(*n)++];
    memset(l, 0, sizeof *l);
    snprintf(l->model, sizeof l->model, "%s", model);
    l->g = c->g;
    l->transposed = c->transposed;
    l->N = N, l->H = H, l->W = W, l->uses = 1;
}

static void add_stages(const char *model, const Stage *st, int ns, int N, BenchConvLayer *L, int *n) {
    for (int i = 0; i < ns; i++) {
        const Stage *s = &st[i];
        if (s->kind == ST_UPSAMPLE) continue;
        add_conv(model, &s->c0, N, s->H, s->W, L, n);
        if (s->kind != ST_BLOCK) continue;
        add_conv(model, &s->c1, N, s->Ho, s->Wo, L, n); /* conv_1 runs on conv_0's output */
        if (s->has_sc) add_conv(model, &s->sc, N, s->H, s->W, L, n);
    }
}

void bench_model_convs(const char *name, const Model *m, int N, BenchConvLayer *L, int *n) {
    add_stages(name, m->enc, m->n_enc, N, L, n);
    add_stages(name, m->dec, m->n_dec, N, L, n);
}
