/* CPU timings of the evaluation pieces (`v3 eval`): retrieval P/R, a linear probe fit, t-SNE and Griffin-Lim, on
 * seeded synthetic inputs of the sizes a PhoneNums/InsNotes evaluation sees. Wall-clock median and minimum over
 * `--runs` runs (default 5), a table on stdout and JSON lines in bench_eval.json. No GPU needed.
 * usage: bench/bench_eval [--runs N] [--out FILE.json] */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* M_PI */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common.h"
#include "eval_metrics.h"
#include "griffinlim.h"
#include "griffinlim_internal.h"
#include "ops.h"
#include "rng.h"
#include "tsne.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Clustered points: label = i % C, each class a Gaussian blob around its own centre (noise sd 1, centres sd 2). */
static void blobs(float *X, int32_t *y, int N, int d, int C, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *cent = xmalloc(sizeof(float) * C * d);
    for (int i = 0; i < C * d; i++) cent[i] = (float)(2 * rng_normal(&r));
    for (int i = 0; i < N; i++) {
        y[i] = i % C;
        for (int k = 0; k < d; k++) X[(size_t)i * d + k] = cent[y[i] * d + k] + (float)rng_normal(&r);
    }
    free(cent);
}

typedef struct { const char *name, *shape; int which; } Case;

int main(int argc, char **argv) {
    int runs = 5;
    const char *out = "bench_eval.json";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else { fprintf(stderr, "usage: bench/bench_eval [--runs N] [--out FILE.json]\n"); return 2; }
    }
    if (runs < 1) runs = 1;
    cpu_gemm_init();
    int N1 = 1500, d1 = 512, N2 = 8000, N3 = 2000, d3 = 32, F = 32;
    float *X1 = falloc((size_t)N1 * d1), *X2 = falloc((size_t)N2 * d1), *X2t = falloc((size_t)1000 * d1);
    float *X3 = falloc((size_t)N3 * d3), *Y3 = falloc((size_t)N3 * 2), *mag = falloc((size_t)F * GL_BINS),
          *wav = falloc((size_t)GL_HOP * (F - 1));
    int32_t *y1 = xmalloc(sizeof(int32_t) * N1), *y2 = xmalloc(sizeof(int32_t) * N2), *y2t = xmalloc(sizeof(int32_t) * 1000),
            *y3 = xmalloc(sizeof(int32_t) * N3);
    blobs(X1, y1, N1, d1, 10, 1);
    blobs(X2, y2, N2, d1, 10, 2);
    blobs(X2t, y2t, 1000, d1, 10, 2); /* same centres as the training blobs: the seed draws them first */
    blobs(X3, y3, N3, d3, 10, 3);
    /* magnitudes of a real signal (a decaying note: 5 harmonics of 262 Hz at 16 kHz), so convergence means something */
    {
        int L = GL_HOP * (F - 1);
        float *sig = falloc((size_t)L), *spec = falloc((size_t)F * GL_BINS * 2);
        for (int i = 0; i < L; i++) {
            double v = 0;
            for (int h = 1; h <= 5; h++) v += sin(2 * M_PI * 261.63 * h * i / 16000.0) / h;
            sig[i] = (float)(0.3 * v * exp(-2.0 * i / L));
        }
        gl_stft(sig, F, spec);
        for (size_t k = 0; k < (size_t)F * GL_BINS; k++) mag[k] = hypotf(spec[2 * k], spec[2 * k + 1]);
        ffree(sig);
        ffree(spec);
    }
    Case cases[] = {{"retrieval_pr", "N 1500, d 512, 10 labels", 0}, {"linear_probe", "train 8000, d 512, 10 classes, 300 it", 1},
                    {"tsne_2d", "N 2000, d 32, 1000 it", 2}, {"griffinlim_cpu", "32 frames, 32 it", 3}};
    double *t = xmalloc(sizeof(double) * runs);
    char note[96];
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        note[0] = 0;
        for (int r = 0; r < runs; r++) {
            double t0 = now_seconds();
            if (cases[c].which == 0) {
                PrResult p;
                if (retrieval_pr(X1, N1, d1, y1, PR_UPSTREAM, &p)) { fprintf(stderr, "%s\n", v3_last_error()); return 1; }
                snprintf(note, sizeof note, "AUC %.4f", p.auc);
            } else if (cases[c].which == 1) {
                double acc;
                if (linear_probe(X2, y2, N2, X2t, y2t, 1000, d1, 10, 1e-4, 300, &acc, NULL)) { fprintf(stderr, "%s\n", v3_last_error()); return 1; }
                snprintf(note, sizeof note, "test accuracy %.4f", acc);
            } else if (cases[c].which == 2) {
                TsneOpts o;
                tsne_defaults(&o);
                if (tsne_2d(X3, N3, d3, &o, Y3, NULL, NULL)) { fprintf(stderr, "%s\n", v3_last_error()); return 1; }
            } else {
                if (griffinlim_cpu(mag, F, 32, 1, wav)) { fprintf(stderr, "%s\n", v3_last_error()); return 1; }
                snprintf(note, sizeof note, "spectral convergence %.4f", gl_spectral_convergence(mag, F, wav));
            }
            t[r] = (now_seconds() - t0) * 1e3;
        }
        qsort(t, (size_t)runs, sizeof *t, cmp_d);
        BenchRow row;
        memset(&row, 0, sizeof row);
        snprintf(row.kernel, sizeof row.kernel, "eval");
        snprintf(row.variant, sizeof row.variant, "%s", cases[c].name);
        snprintf(row.shape, sizeof row.shape, "%s", cases[c].shape);
        snprintf(row.note, sizeof row.note, "%s", note);
        row.t.median_ms = t[runs / 2];
        row.t.min_ms = t[0];
        row.t.reps = 1;
        row.t.batches = runs;
        row.valid = 1;
        bench_add(&row);
    }
    char dev[96];
    snprintf(dev, sizeof dev, "CPU, %d OpenMP threads", omp_get_max_threads());
    int rc = bench_finish(out, dev);
    ffree(X1); ffree(X2); ffree(X2t); ffree(X3); ffree(Y3); ffree(mag); ffree(wav);
    free(y1); free(y2); free(y2t); free(y3); free(t);
    return rc ? 1 : 0;
}
