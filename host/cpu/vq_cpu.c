/* Vector quantiser search on the cpu backend: float32 scores in GEMM form, then the reference's exact double
 * distances only where float32 cannot tell codes apart, so the chosen codes are always the reference's.
 *
 * The reference computes all K distances sum (x - e)^2 in double, one scalar chain per code (661 us at N 320,
 * d 512, K 10). Here, per row: s_k = |e_k|^2 - 2 x.e_k in float32 (16-lane dot products against up to 8 codes
 * held in registers; |x|^2 is the same for every k and dropped). The rounding error of every s_k is at most
 * E = (d + 8) u (|x| + max_k |e_k|)^2, u = 2^-24 (dot-product error bound; the lanes only shorten the sums), so
 * the reference's argmin lies among the codes with s_k <= min s + 2E (its own double error is ~1e-13 of that):
 * the row's code is taken directly when that set has one member (the usual case), and otherwise decided by the
 * reference's double distances over the set, in index order with its strict "<", which keeps its lowest-index rule.
 * Rows with non-finite scores go through the reference's loop over all codes. The bound uses 4E for margin. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_internal.h"
#include "vq.h"

typedef float v16 __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
#define VL 16

typedef struct {
    int K, d, N_max, N;
    const float *x; /* the last search's batch and codes, for vq_ema */
    const int *ind;
    float *en;    /* [K] |e_k|^2 in float32 (the scores' term) */
    double *part; /* [N_max] per-row commitment sums */
} CpuVq;

/* the 16 lanes as a tree (depth 4, not a 16-long chain) */
static inline __attribute__((always_inline)) float hsum16(const v16 *a) {
    const float *v = (const float *)a;
    float h[8];
    for (int l = 0; l < 8; l++) h[l] = v[l] + v[l + 8];
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

/* out[j] = x . e_j for the G codes at e + j*d, 16 lanes then the lanes in a fixed order, then the tail */
#define DOTS(G)                                                                                                 \
    V3_CLONES static void dots_##G(const float *x, const float *e, int d, float *out) {                        \
        v16 acc[G];                                                                                             \
        for (int j = 0; j < G; j++) acc[j] = (v16){0};                                                          \
        int t = 0;                                                                                              \
        for (; t + VL <= d; t += VL) {                                                                          \
            v16 xv;                                                                                             \
            memcpy(&xv, x + t, sizeof xv);                                                                      \
            for (int j = 0; j < G; j++) {                                                                       \
                v16 ev;                                                                                         \
                memcpy(&ev, e + (size_t)j * d + t, sizeof ev);                                                  \
                acc[j] += xv * ev;                                                                              \
            }                                                                                                   \
        }                                                                                                       \
        for (int j = 0; j < G; j++) {                                                                           \
            float s = hsum16(&acc[j]);                                                                          \
            for (int u = t; u < d; u++) s += x[u] * e[(size_t)j * d + u];                                       \
            out[j] = s;                                                                                         \
        }                                                                                                       \
    }
DOTS(1)
DOTS(2)
DOTS(3)
DOTS(4)
DOTS(5)
DOTS(6)
DOTS(7)
DOTS(8)
typedef void (*DotsFn)(const float *, const float *, int, float *);
static const DotsFn dots_fn[9] = {NULL, dots_1, dots_2, dots_3, dots_4, dots_5, dots_6, dots_7, dots_8};

/* sum (e - x)^2 in double, 8 lanes (the commitment term of one row) */
V3_CLONES static double sqdist8(const float *x, const float *e, int d) {
    v8d acc = {0};
    int t = 0;
    for (; t + 8 <= d; t += 8) {
        v8f a, b;
        memcpy(&a, e + t, sizeof a);
        memcpy(&b, x + t, sizeof b);
        v8d v = __builtin_convertvector(a, v8d) - __builtin_convertvector(b, v8d);
        acc += v * v;
    }
    double s = 0;
    for (; t < d; t++) s += ((double)e[t] - x[t]) * ((double)e[t] - x[t]);
    return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + s;
}

/* the reference's distance, operation for operation (vq_assign) */
static double ref_dist(const float *x, const float *e, int d) {
    double s = 0;
    for (int t = 0; t < d; t++) {
        double v = (double)x[t] - e[t];
        s += v * v;
    }
    return s;
}

void *cpu_vq_create(int K, int d, int N_max) {
    CpuVq *w = xcalloc(1, sizeof *w);
    w->K = K, w->d = d, w->N_max = N_max;
    w->en = xmalloc(sizeof(float) * (K > 0 ? K : 1));
    w->part = xmalloc(sizeof(double) * (N_max > 0 ? N_max : 1));
    return w;
}

void cpu_vq_destroy(void *p) {
    CpuVq *w = p;
    if (!w) return;
    free(w->en), free(w->part), free(w);
}

void cpu_vq_search(void *p, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum) {
    CpuVq *w = p;
    int K = w->K, d = w->d;
    if (N > w->N_max) V3_FATAL("cpu_vq_search: N = %d rows exceed the workspace's %d", N, w->N_max);
    double emax = 0;
    for (int k = 0; k < K; k++) {
        dots_fn[1](embed + (size_t)k * d, embed + (size_t)k * d, d, &w->en[k]);
        emax = fmax(emax, sqrt((double)w->en[k]) * (1 + 1e-3)); /* covers en's own rounding */
    }
    int groups = (K + 7) / 8, G = groups ? (K + groups - 1) / groups : 1; /* K = 10: two groups of 5 */
    double ecoef = 4.0 * (d + 8) * 0x1p-24;
#pragma omp parallel for schedule(static) if ((size_t)N * K * d >= 100000)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * d;
        float sc[8], xn;
        float s_stack[64], *s = K <= 64 ? s_stack : xmalloc(sizeof(float) * K);
        dots_fn[1](xi, xi, d, &xn);
        for (int k0 = 0; k0 < K; k0 += G) {
            int g = K - k0 < G ? K - k0 : G;
            dots_fn[g](xi, embed + (size_t)k0 * d, d, sc);
            for (int j = 0; j < g; j++) s[k0 + j] = w->en[k0 + j] - 2.0f * sc[j];
        }
        float best = INFINITY;
        int bi = 0;
        for (int k = 0; k < K; k++)
            if (s[k] < best) best = s[k], bi = k;
        double r = sqrt((double)xn) * (1 + 1e-3) + emax, margin = ecoef * r * r;
        int cands = 0;
        if (isfinite(best) && isfinite(margin)) {
            for (int k = 0; k < K; k++) cands += s[k] <= best + margin;
        } else {
            cands = K + 1; /* decide by the reference's loop over every code */
        }
        if (cands > 1) {
            double bd = INFINITY;
            bi = 0;
            for (int k = 0; k < K; k++) {
                if (cands <= K && !(s[k] <= best + margin)) continue;
                double dk = ref_dist(xi, embed + (size_t)k * d, d);
                if (dk < bd) bd = dk, bi = k;
            }
        }
        ind[i] = bi;
        memcpy(q + (size_t)i * d, embed + (size_t)bi * d, sizeof(float) * d);
        w->part[i] = sqdist8(xi, embed + (size_t)bi * d, d);
        if (s != s_stack) free(s);
    }
    double tot = 0;
    for (int i = 0; i < N; i++) tot += w->part[i];
    *commit_sum = tot;
    w->N = N, w->x = x, w->ind = ind;
}

void cpu_vq_ema(void *p, float decay, float *embed, float *embed_avg, float *cluster_size) {
    CpuVq *w = p;
    VQ v;
    memset(&v, 0, sizeof v);
    v.K = w->K, v.d = w->d, v.decay = decay;
    v.embed = embed, v.embed_avg = embed_avg, v.cluster_size = cluster_size;
    vq_ema_update(&v, w->N, w->x, w->ind, NULL);
}

void cpu_vq_revive(void *p, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                   float *embed, float *embed_avg, float *cluster_size) {
    CpuVq *w = p;
    vq_revive_codes(w->d, ndead, dead, rows, x, threshold, embed, embed_avg, cluster_size);
}
