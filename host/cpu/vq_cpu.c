/* Vector quantiser search on the cpu backend: float32 scores in GEMM form, then the reference's exact double
 * distances only where float32 cannot tell codes apart, so the chosen codes are always the reference's.
 *
 * The reference computes all K distances sum (x - e)^2 in double, one scalar chain per code (661 us at N 320,
 * d 512, K 10). Here, per row: s_k = |e_k|^2 - 2 x.e_k in float32 (16-lane dot products against up to 8 codes
 * held in registers; |x|^2 is the same for every k and dropped). The rounding error of every s_k is at most
 * E = (d + 8) u (|x| + max_k |e_k|)^2, u = 2^-24 (dot-product error bound; the lanes only shorten the sums), so
 * the reference's argmin lies among the codes with s_k <= min s + 2E (its own double error is ~1e-13 of that):
 * |x| is bounded by |e_b| + |x - e_b| for the float32 winner b, whose distance the commitment term needs anyway;
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
        _Pragma("GCC unroll 8") for (int j = 0; j < G; j++) acc[j] = (v16){0};                                  \
        int t = 0;                                                                                              \
        for (; t + VL <= d; t += VL) {                                                                          \
            v16 xv;                                                                                             \
            memcpy(&xv, x + t, sizeof xv);                                                                      \
            _Pragma("GCC unroll 8") for (int j = 0; j < G; j++) {                                               \
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
DOTS(1) /* the codes' norms */

/* the same for two rows at once (each code vector loaded once for both): oa[j] = xa . e_j, ob[j] = xb . e_j, each
 * summed exactly as dots_G sums it */
#define DOTS2(G)                                                                                                \
    V3_CLONES static void dots2_##G(const float *xa, const float *xb, const float *e, int d, float *oa,        \
                                    float *ob) {                                                                \
        v16 aa[G], ab[G];                                                                                       \
        _Pragma("GCC unroll 8") for (int j = 0; j < G; j++) aa[j] = ab[j] = (v16){0};                          \
        int t = 0;                                                                                              \
        for (; t + VL <= d; t += VL) {                                                                          \
            v16 va, vb;                                                                                         \
            memcpy(&va, xa + t, sizeof va);                                                                     \
            memcpy(&vb, xb + t, sizeof vb);                                                                     \
            _Pragma("GCC unroll 8") for (int j = 0; j < G; j++) {                                               \
                v16 ev;                                                                                         \
                memcpy(&ev, e + (size_t)j * d + t, sizeof ev);                                                  \
                aa[j] += va * ev;                                                                               \
                ab[j] += vb * ev;                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        for (int j = 0; j < G; j++) {                                                                           \
            float sa = hsum16(&aa[j]), sb = hsum16(&ab[j]);                                                     \
            for (int u = t; u < d; u++) sa += xa[u] * e[(size_t)j * d + u], sb += xb[u] * e[(size_t)j * d + u]; \
            oa[j] = sa, ob[j] = sb;                                                                             \
        }                                                                                                       \
    }
DOTS2(1)
DOTS2(2)
DOTS2(3)
DOTS2(4)
DOTS2(5)
DOTS2(6)
DOTS2(7)
DOTS2(8)
typedef void (*Dots2Fn)(const float *, const float *, const float *, int, float *, float *);
static const Dots2Fn dots2_fn[9] = {NULL, dots2_1, dots2_2, dots2_3, dots2_4, dots2_5, dots2_6, dots2_7, dots2_8};

/* sum (e - x)^2, the commitment term of one row: differences in float32 (each within 2^-24 of exact), squared and
 * summed in double. Every term is positive, so the sum is within 2^-23 relative of the exact one (the reference's,
 * in double, is within 1e-16). */
V3_CLONES static double sqdist8(const float *x, const float *e, int d) {
    v8d acc = {0}, acc2 = {0};
    int t = 0;
    for (; t + VL <= d; t += VL) {
        v16 a, b;
        memcpy(&a, e + t, sizeof a);
        memcpy(&b, x + t, sizeof b);
        a -= b;
        v8f lo, hi;
        memcpy(&lo, &a, sizeof lo);
        memcpy(&hi, (float *)&a + 8, sizeof hi);
        v8d dl = __builtin_convertvector(lo, v8d), dh = __builtin_convertvector(hi, v8d);
        acc += dl * dl;
        acc2 += dh * dh;
    }
    acc += acc2;
    double s = 0;
    for (; t < d; t++) s += (double)(e[t] - x[t]) * (double)(e[t] - x[t]);
    return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + s;
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
        dots_1(embed + (size_t)k * d, embed + (size_t)k * d, d, &w->en[k]);
        emax = fmax(emax, sqrt((double)w->en[k]) * (1 + 1e-3)); /* covers en's own rounding */
    }
    int groups = (K + 7) / 8, G = groups ? (K + groups - 1) / groups : 1; /* K = 10: two groups of 5 */
    double ecoef = 4.0 * (d + 8) * 0x1p-24;
#pragma omp parallel for schedule(static) if ((size_t)N * K * d >= 100000)
    for (int i0 = 0; i0 < N; i0 += 2) {
        float sc[2][8];
        float s_stack[2][64], *sp[2];
        for (int r = 0; r < 2; r++) sp[r] = K <= 64 ? s_stack[r] : xmalloc(sizeof(float) * K);
        int two = i0 + 1 < N;
        const float *xa = x + (size_t)i0 * d, *xb = two ? xa + d : xa;
        for (int k0 = 0; k0 < K; k0 += G) {
            int g = K - k0 < G ? K - k0 : G;
            dots2_fn[g](xa, xb, embed + (size_t)k0 * d, d, sc[0], sc[1]);
            for (int r = 0; r < 2; r++)
                for (int j = 0; j < g; j++) sp[r][k0 + j] = w->en[k0 + j] - 2.0f * sc[r][j];
        }
        for (int r = 0; r < 1 + two; r++) {
            int i = i0 + r;
            const float *xi = x + (size_t)i * d;
            float *s = sp[r];
            float best = INFINITY;
            int bi = 0;
            for (int k = 0; k < K; k++)
                if (s[k] < best) best = s[k], bi = k;
            /* the row's commitment term for that code, and from it |x| <= |e_bi| + |x - e_bi| for the margin */
            double part = sqdist8(xi, embed + (size_t)bi * d, d);
            double rad = sqrt(part) + 2 * emax, margin = ecoef * rad * rad;
            int cands = 0;
            if (isfinite(best) && isfinite(margin)) {
                for (int k = 0; k < K; k++) cands += s[k] <= best + margin;
            } else {
                cands = K + 1; /* decide by the reference's loop over every code */
            }
            if (cands > 1) {
                double bd = INFINITY;
                int b0 = bi;
                bi = 0;
                for (int k = 0; k < K; k++) {
                    if (cands <= K && !(s[k] <= best + margin)) continue;
                    double dk = vq_distance(xi, embed + (size_t)k * d, d);
                    if (dk < bd) bd = dk, bi = k;
                }
                if (bi != b0) part = sqdist8(xi, embed + (size_t)bi * d, d);
            }
            ind[i] = bi;
            memcpy(q + (size_t)i * d, embed + (size_t)bi * d, sizeof(float) * d);
            w->part[i] = part;
        }
        for (int r = 0; r < 2; r++)
            if (sp[r] != s_stack[r]) free(sp[r]);
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
