/* Every compute op of the op list timed on each backend, on the cases of tests/backend_cases.c: the cases
 * test_backend_ops checks (llm.c dev/cuda style: one file of cases for the test and the benchmark, so what is timed
 * is what is checked, at the same small, odd and authors' shapes).
 *   make bench && OMP_NUM_THREADS=2 ./bench/bench_ops [OP ...] [--backends ref,cpu,emu,cuda] [--small]
 *                                                     [--seconds S] [--gemm N] [--json FILE]
 * OP ...: only those ops' cases (else the list in V3_BO_OPS=op,op; else every case). --backends: default ref,cpu,
 * and cuda when cuda_probe finds a GPU. --small: skip the authors' sizes.
 * Per case: the test's inputs (same seeds); per backend: bo_prepare once, one call validated against ref's result
 * with bo_compare and the test's tolerances (a wrong result is an INVALID row: no time), then R timed calls, each
 * bo_call followed by the backend's sync (wall clock, so a cuda row includes its launches and the sync), as many
 * as fit in S seconds (default 0.2), at least 3. Ops that accumulate (dw, optimiser state) keep accumulating over
 * the timed calls: the values drift, the work per call does not.
 * Columns: median and min ms per call, t/ref = median / ref's median on the same case, and for the GEMM ops
 * (conv_fwd, conv_bwd, linear_fwd, linear_bwd) GFLOP/s (2 per multiply-add of the direct algorithm; backward:
 * dw, plus dx where the case has one) and the fraction of the CPU SGEMM ceiling measured at the start of the run:
 * cpu_sgemm on N^3 (default 1024) with the thread settings the ops get (cpu_gemm_init, OMP_NUM_THREADS), the
 * larger of one call alone and one call per OpenMP thread at once (what an op that splits over threads can reach).
 * The exit status is 1 if any row is INVALID or FAILED. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/backend_cases.h"
#include "bench_util.h"
#include "common.h"
#include "cuda_backend.h"
#include "ops.h"
#include "platform_info.h"

#define MAX_REPS 100000
#define MAX_BACKENDS 4

typedef struct {
    double median_ms, min_ms;
    int reps;
} Timing;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One untimed call has been made (the validation, or a warm-up). Calls until secs have passed, at least 3 (and at
 * most MAX_REPS): a count fixed from the first call would trust one call, which on a loaded machine can be an
 * OpenMP wake-up 1000 times the op. */
static Timing time_calls(void (*fn)(void *), void *ctx, double secs) {
    int reps = 0, cap = 64;
    double *ms = xmalloc(sizeof(double) * (size_t)cap), start = now_seconds(), t = start;
    while ((reps < 3 || t - start < secs) && reps < MAX_REPS) {
        if (reps == cap) {
            cap *= 2;
            ms = realloc(ms, sizeof(double) * (size_t)cap);
            if (!ms) V3_FATAL("out of memory");
        }
        double t0 = t;
        fn(ctx);
        t = now_seconds();
        ms[reps++] = (t - t0) * 1e3;
    }
    qsort(ms, (size_t)reps, sizeof(double), cmp_double);
    Timing r = {reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]), ms[0], reps};
    free(ms);
    return r;
}

static void call_and_sync(void *ctx) {
    BoRun *r = ctx;
    bo_call(r);
    if (r->be->sync()) V3_FATAL("%s: sync: %s", r->be->name, v3_last_error());
}

/* ---- the SGEMM ceiling ---- */

typedef struct {
    int n, threads;
    float *a, *b, *c; /* per thread: n*n each */
} GemmCtx;

static void gemm_one(void *ctx) {
    GemmCtx *g = ctx;
    cpu_sgemm(0, 0, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n, 0.0f, g->c, g->n);
}

static void gemm_per_thread(void *ctx) {
    GemmCtx *g = ctx;
    size_t nn = (size_t)g->n * g->n;
#pragma omp parallel num_threads(g->threads)
    {
        size_t o = (size_t)omp_get_thread_num() * nn;
        cpu_sgemm(0, 0, g->n, g->n, g->n, 1.0f, g->a + o, g->n, g->b + o, g->n, 0.0f, g->c + o, g->n);
    }
}

/* GFLOP/s of the better way; prints both. */
static double sgemm_ceiling(int n, double secs) {
    GemmCtx g = {n, omp_get_max_threads(), NULL, NULL, NULL};
    size_t nn = (size_t)n * n * (size_t)g.threads;
    g.a = xmalloc(sizeof(float) * nn), g.b = xmalloc(sizeof(float) * nn), g.c = xmalloc(sizeof(float) * nn);
    for (size_t i = 0; i < nn; i++) g.a[i] = (float)(i % 13) * 0.1f - 0.6f, g.b[i] = (float)(i % 7) * 0.2f - 0.5f;
    double flop = 2.0 * n * n * n;
    gemm_one(&g);
    Timing one = time_calls(gemm_one, &g, secs);
    gemm_per_thread(&g);
    Timing all = time_calls(gemm_per_thread, &g, secs);
    double g1 = flop / one.median_ms / 1e6, ga = flop * g.threads / all.median_ms / 1e6;
    printf("SGEMM ceiling (cpu_sgemm %d^3, median): one call %.1f GFLOP/s, one call per OpenMP thread (%d) at once "
           "%.1f GFLOP/s in all\n", n, g1, g.threads, ga);
    free(g.a), free(g.b), free(g.c);
    return g1 > ga ? g1 : ga;
}

/* ---- FLOPs of the GEMM ops, from the case's scalars (see backend_cases.c: conv_cases, linear_cases) ---- */

static int has_buf(const BoCase *c, const char *name) {
    for (int k = 0; k < c->nb; k++)
        if (!strcmp(c->b[k].name, name)) return c->b[k].role != BO_NONE;
    return 0;
}

/* 0: not a GEMM op */
static double case_flops(const BoCase *c) {
    int bwd = !strcmp(c->op, "conv_bwd") || !strcmp(c->op, "linear_bwd");
    double passes = bwd ? 1 + has_buf(c, "dx") : 1, macs;
    if (!strncmp(c->op, "linear_", 7)) {
        macs = (double)c->i[0] * c->i[1] * c->i[2]; /* N, in, out */
    } else if (!strncmp(c->op, "conv_", 5) && c->setup) {
        const ConvGeom *g = &c->g;
        int N = c->i[0], H = c->i[1], W = c->i[2];
        double px = c->transposed ? (double)H * W /* per input pixel */
                                  : (double)conv_out_size(H, g->kh, g->sh, g->ph) * conv_out_size(W, g->kw, g->sw, g->pw);
        macs = (double)N * px * g->cin * g->cout * g->kh * g->kw;
    } else {
        return 0;
    }
    return 2 * macs * passes;
}

/* ---- rows ---- */

typedef struct {
    const BoCase *c;
    const char *backend;
    const char *status; /* NULL: valid and timed; else "INVALID" or "FAILED" */
    char msg[200];
    Timing t;
    double flops, ratio, gflops, frac; /* ratio, frac < 0: none */
} Row;

static void print_header(void) {
    printf("\n%-15s %-5s %11s %11s %6s %6s %8s %7s  %s\n", "op", "be", "median ms", "min ms", "reps", "t/ref",
           "GFLOP/s", "%SGEMM", "case");
}

static void print_row(const Row *r) {
    if (r->status) {
        printf("%-15s %-5s %-7s %s  [%s]\n", r->c->op, r->backend, r->status, r->msg, r->c->shape);
    } else {
        char ratio[16] = "", gf[16] = "", fr[16] = "";
        if (r->ratio >= 0) snprintf(ratio, sizeof ratio, "%.2f", r->ratio);
        if (r->flops > 0) snprintf(gf, sizeof gf, "%.2f", r->gflops);
        if (r->frac >= 0) snprintf(fr, sizeof fr, "%.1f%%", 100 * r->frac);
        printf("%-15s %-5s %11.5f %11.5f %6d %6s %8s %7s  %s\n", r->c->op, r->backend, r->t.median_ms, r->t.min_ms,
               r->t.reps, ratio, gf, fr, r->c->shape);
    }
    fflush(stdout);
}

static void json_text(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
    fputc('"', f);
}

/* One JSON object a line (as bench_util's files). */
static int write_json(const char *path, const Row *rows, int n, const char *platform, double ceiling) {
    FILE *f = fopen(path, "w");
    if (!f) return v3_error("%s: cannot write: %s", path, strerror(errno));
    for (int i = 0; i < n; i++) {
        const Row *r = &rows[i];
        fputs("{\"op\": ", f), json_text(f, r->c->op);
        fputs(", \"case\": ", f), json_text(f, r->c->shape);
        fputs(", \"backend\": ", f), json_text(f, r->backend);
        fputs(", \"platform\": ", f), json_text(f, platform);
        fprintf(f, ", \"valid\": %s", r->status ? "false" : "true");
        if (r->status) fputs(", \"error\": ", f), json_text(f, r->msg);
        else fprintf(f, ", \"median_ms\": %.6g, \"min_ms\": %.6g, \"reps\": %d", r->t.median_ms, r->t.min_ms, r->t.reps);
        if (!r->status && r->ratio >= 0) fprintf(f, ", \"t_over_ref\": %.6g", r->ratio);
        if (!r->status && r->flops > 0) fprintf(f, ", \"flops\": %.6g, \"gflop_s\": %.6g", r->flops, r->gflops);
        if (!r->status && r->frac >= 0) fprintf(f, ", \"sgemm_ceiling_gflop_s\": %.6g, \"of_ceiling\": %.4g", ceiling, r->frac);
        fputs("}\n", f);
    }
    if (fclose(f)) return v3_error("%s: write failed", path);
    printf("wrote %s (%d rows)\n", path, n);
    return 0;
}

/* ---- one case on one backend ---- */

static void run_row(Row *row, const Backend *be, const BoCase *c, const BoData *in, const BoData *ref, double secs) {
    BoRun run;
    BoData got;
    double worst = 0;
    if (bo_prepare(&run, be, c, in, row->msg, sizeof row->msg)) {
        row->status = "FAILED";
        return;
    }
    bo_call(&run);
    if (bo_download(&run, &got, row->msg, sizeof row->msg)) {
        row->status = "FAILED";
        bo_release(&run);
        return;
    }
    int ok = bo_compare(c, in, &got, ref, &worst, row->msg, sizeof row->msg);
    bo_data_free(c, &got);
    if (!ok) row->status = "INVALID";
    else row->t = time_calls(call_and_sync, &run, secs);
    bo_release(&run);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_ops [OP ...] [--backends ref,cpu,emu,cuda] [--small] [--seconds S] [--gemm N] "
                    "[--json FILE]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *backends = NULL, *json = NULL;
    double secs = 0.2;
    int small = 0, gemm_n = 1024;
    char ops[1024] = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backends") && i + 1 < argc) backends = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--gemm") && i + 1 < argc) gemm_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--small")) small = 1;
        else if (argv[i][0] == '-') return usage();
        else if (bo_op_index(argv[i]) < 0) {
            fprintf(stderr, "bench_ops: %s is not a compute op of include/op_list.h\n", argv[i]);
            return 2;
        } else if (strlen(ops) + strlen(argv[i]) + 2 < sizeof ops) {
            if (*ops) strcat(ops, ",");
            strcat(ops, argv[i]);
        }
    }
    if (!(secs > 0) || gemm_n < 1) return usage();
    const char *filter = *ops ? ops : getenv("V3_BO_OPS");
    if (filter && !*filter) filter = NULL;

    /* backends: ref first when listed (the other rows' t/ref needs its time) */
    char desc[256] = "";
    int gpus = cuda_probe(desc, sizeof desc);
    char deflt[32];
    snprintf(deflt, sizeof deflt, "ref,cpu%s", gpus > 0 ? ",cuda" : "");
    if (!backends) backends = deflt;
    const Backend *bes[MAX_BACKENDS];
    int nbes = 0;
    const char *known[MAX_BACKENDS] = {"ref", "cpu", "emu", "cuda"};
    for (int k = 0; k < MAX_BACKENDS; k++)
        if (bench_list_has(backends, known[k])) bes[nbes++] = backend_by_name(known[k]);
    int listed = 1; /* entries, each of which must be known */
    for (const char *p = backends; *p; p++) listed += *p == ',';
    if (!nbes || listed != nbes) {
        fprintf(stderr, "bench_ops: --backends expects a list of ref,cpu,emu,cuda\n");
        return 2;
    }
    cpu_gemm_init();
    if (bench_list_has(backends, "cuda")) {
        if (gpus <= 0) {
            fprintf(stderr, "bench_ops: cuda: %s\n", desc);
            return 2;
        }
        if (cuda_init(0) || cuda_libs_load()) {
            fprintf(stderr, "bench_ops: cuda: %s\n", v3_last_error());
            return 2;
        }
    }
    char platform[512];
    platform_describe(platform, sizeof platform);
    printf("platform: %s\n", platform);
    printf("cuda: %s\n", desc[0] ? desc : "none");
    double ceiling = sgemm_ceiling(gemm_n, secs);

    const BoCase *cs;
    int nc = bo_cases(&cs);
    if (nc < 0) {
        fprintf(stderr, "bench_ops: the cases could not be built: %s\n", v3_last_error());
        return 1;
    }
    Row *rows = NULL;
    int nrows = 0, bad = 0;
    print_header();
    for (int i = 0; i < nc; i++) {
        const BoCase *c = &cs[i];
        if ((filter && !bench_list_has(filter, c->op)) || (small && c->full)) continue;
        BoData in, ref;
        Row base = {.c = c, .ratio = -1, .frac = -1, .flops = case_flops(c)};
        /* the reference result, as in bo_check (its default seed: the test's inputs) */
        const char *stage = "inputs";
        BoRun rr;
        int rc = bo_inputs(c, 20240531ULL + (unsigned long long)i, &in, base.msg, sizeof base.msg);
        if (!rc) {
            stage = "reference";
            rc = bo_prepare(&rr, &backend_ref, c, &in, base.msg, sizeof base.msg);
            if (!rc) {
                bo_call(&rr);
                rc = bo_download(&rr, &ref, base.msg, sizeof base.msg);
                bo_release(&rr);
            }
            if (rc) bo_data_free(c, &in);
        }
        double ref_ms = -1;
        for (int b = 0; b < nbes; b++) {
            rows = realloc(rows, sizeof(Row) * (size_t)(nrows + 1));
            if (!rows) V3_FATAL("out of memory");
            Row *row = &rows[nrows++];
            *row = base;
            row->backend = bes[b]->name;
            if (rc) {
                row->status = "FAILED";
                snprintf(row->msg, sizeof row->msg, "%s: %.180s", stage, base.msg);
            } else {
                run_row(row, bes[b], c, &in, &ref, secs);
            }
            if (row->status) {
                bad++;
            } else {
                if (bes[b] == &backend_ref) ref_ms = row->t.median_ms;
                if (ref_ms > 0) row->ratio = row->t.median_ms / ref_ms;
                if (row->flops > 0) row->gflops = row->flops / row->t.median_ms / 1e6;
                if (row->flops > 0 && bes[b] != &backend_cuda) row->frac = row->gflops / ceiling; /* a CPU ceiling */
            }
            print_row(row);
        }
        if (!rc) bo_data_free(c, &in), bo_data_free(c, &ref);
    }
    if (!nrows) fprintf(stderr, "bench_ops: no case of %s\n", filter ? filter : "any op");
    if (bad) printf("%d row(s) INVALID or FAILED\n", bad);
    if (json && write_json(json, rows, nrows, platform, ceiling)) {
        fprintf(stderr, "bench_ops: %s\n", v3_last_error());
        return 1;
    }
    free(rows);
    return bad ? 1 : 0;
}
