/* Retrieval precision/recall over Euclidean nearest neighbours (spec v3.md §6), in the authors' two variants.
 * Distances are computed directly in difference form (not |x|^2 + |y|^2 - 2xy): the query's distance to
 * itself and to exact duplicates is then exactly 0 and bit-identical across duplicates, so the "ties broken by
 * the lower index" rule is exact. Queries are processed in blocks (a block of query rows stays in cache while
 * all N rows stream past), OpenMP over blocks; memory is O(block * N) per thread, never N x N.
 * Determinism: each query's hit counts are independent of threads; the averages are summed afterwards in query
 * order in double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval_metrics.h"

enum { QBLOCK = 16 };

/* Squared distance: 8 float lanes (vectorisable without -ffast-math, ~d/8 terms each), lanes summed in double. */
static double sqdist(const float *restrict a, const float *restrict b, int d) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int t = 0;
    for (; t + 8 <= d; t += 8)
        for (int u = 0; u < 8; u++) {
            float df = a[t + u] - b[t + u];
            acc[u] += df * df;
        }
    double s = 0;
    for (; t < d; t++) {
        double df = (double)a[t] - (double)b[t];
        s += df * df;
    }
    for (int u = 0; u < 8; u++) s += acc[u];
    return s;
}

/* A ranked neighbour; order is (distance, index), so keys are unique. */
typedef struct { double d; int32_t j; } Nb;
static inline int nb_less(Nb a, Nb b) { return a.d < b.d || (a.d == b.d && a.j < b.j); }

/* Partial quicksort: afterwards a[0..k) holds the k smallest keys in ascending order (the rest unordered).
 * Median-of-three Hoare partitions; keys are unique, so both sides of a split are non-empty. Recursion goes
 * into the smaller side only (depth O(log n)). */
static void partial_sort(Nb *a, int n, int k) {
    if (k <= 0) return;
    while (n > 16) {
        Nb x = a[0], y = a[n / 2], z = a[n - 1], piv;
        if (nb_less(x, y)) piv = nb_less(y, z) ? y : (nb_less(x, z) ? z : x);
        else piv = nb_less(x, z) ? x : (nb_less(y, z) ? z : y);
        int i = -1, j = n;
        for (;;) {
            do i++; while (nb_less(a[i], piv));
            do j--; while (nb_less(piv, a[j]));
            if (i >= j) break;
            Nb t = a[i]; a[i] = a[j]; a[j] = t;
        }
        int p = j + 1; /* [0,p) <= piv <= [p,n) */
        if (k <= p) { n = p; continue; }             /* the right side is not needed */
        if (p < n - p) { partial_sort(a, p, p); a += p; n -= p; k -= p; }
        else { partial_sort(a + p, n - p, k - p); n = p; k = p; }
    }
    for (int i = 1; i < n; i++) { /* insertion sort of the small remainder */
        Nb v = a[i];
        int j = i - 1;
        while (j >= 0 && nb_less(v, a[j])) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The k list of each variant (see the header). Returns n_k. */
static int build_k_list(const int32_t *label, int N, PrVariant variant, int *k) {
    int n = 0;
    if (variant == PR_PAPER_ERA) {
        static const int ks[] = {1, 2, 5, 10, 20, 50, 75, 100, 200, 300, 400, 500, 750, 1000, 1500, 2000, 2500, 3000};
        for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) k[n++] = ks[t];
        return n; /* k > N is kept: its top-k is all N fragments, P still divides by k */
    }
    /* M = largest class size - 1 over the labelled fragments. */
    int32_t *ls = xmalloc(sizeof(int32_t) * (size_t)N);
    int m = 0;
    for (int i = 0; i < N; i++) if (label[i] >= 0) ls[m++] = label[i];
    qsort(ls, (size_t)m, sizeof(int32_t), cmp_int);
    int maxc = 0;
    for (int i = 0; i < m;) {
        int j = i;
        while (j < m && ls[j] == ls[i]) j++;
        if (j - i > maxc) maxc = j - i;
        i = j;
    }
    free(ls);
    int M = maxc - 1;
    static const int base[] = {1, 2, 5, 10, 20, 50, 100, 200, 500};
    static const double fr[] = {.001, .002, .005, .01, .02, .05, .075, .1, .2, .3, .4, .5, .75, 1};
    int raw[32], nr = 0;
    for (size_t t = 0; t < sizeof base / sizeof base[0]; t++) raw[nr++] = base[t];
    for (size_t t = 0; t < sizeof fr / sizeof fr[0]; t++)
        raw[nr++] = (int)nearbyint(fr[t] * M); /* round half to even, as Python's round() */
    for (int t = 0; t < nr; t++) {
        if (raw[t] > N - 1) raw[t] = N - 1;
        if (raw[t] < 1) raw[t] = 1;
    }
    qsort(raw, (size_t)nr, sizeof(int), cmp_int);
    for (int t = 0; t < nr; t++)
        if (n == 0 || raw[t] != k[n - 1]) k[n++] = raw[t];
    return n;
}

int retrieval_pr(const float *emb, int N, int d, const int32_t *label, PrVariant variant, PrResult *out) {
    memset(out, 0, sizeof *out);
    if (N < 2) return v3_error("retrieval_pr: need at least 2 fragments (got %d)", N);
    if (d < 1) return v3_error("retrieval_pr: embedding width %d", d);
    if (variant != PR_UPSTREAM && variant != PR_PAPER_ERA) return v3_error("retrieval_pr: unknown variant %d", variant);
    int nk = build_k_list(label, N, variant, out->k);
    out->n_k = nk;
    const int self_ranked = variant == PR_PAPER_ERA;
    const int m = self_ranked ? N : N - 1; /* ranked candidates per query */
    int kmax = 0;
    for (int t = 0; t < nk; t++) if (out->k[t] > kmax) kmax = out->k[t];
    if (kmax > m) kmax = m;

    /* Queries: labelled fragments. Positives of a query = labelled fragments with its label, minus itself
     * (counted by binary search in a sorted copy of the labels). */
    int *qidx = xmalloc(sizeof(int) * (size_t)N);
    int nq = 0;
    for (int i = 0; i < N; i++) if (label[i] >= 0) qidx[nq++] = i;
    int *npos = xmalloc(sizeof(int) * (size_t)(nq ? nq : 1));
    {
        int32_t *ls = xmalloc(sizeof(int32_t) * (size_t)(nq ? nq : 1));
        for (int q = 0; q < nq; q++) ls[q] = label[qidx[q]];
        qsort(ls, (size_t)nq, sizeof(int32_t), cmp_int);
        int any = 0;
        for (int q = 0; q < nq; q++) {
            int32_t l = label[qidx[q]];
            int lo = 0, hi = nq; /* first >= l */
            while (lo < hi) { int mid = (lo + hi) / 2; if (ls[mid] < l) lo = mid + 1; else hi = mid; }
            int lo2 = lo, hi2 = nq; /* first > l */
            while (lo2 < hi2) { int mid = (lo2 + hi2) / 2; if (ls[mid] <= l) lo2 = mid + 1; else hi2 = mid; }
            npos[q] = lo2 - lo - 1;
            if (npos[q] > 0) any = 1;
        }
        free(ls);
        if (!any) {
            free(qidx); free(npos);
            return v3_error("retrieval_pr: no query has a positive (%d labelled fragments, no label occurs twice)", nq);
        }
    }

    int *hits = xcalloc((size_t)nq * nk, sizeof(int)); /* hits[q][t] = positives among the top k[t] */
    const int nblocks = (nq + QBLOCK - 1) / QBLOCK;
#pragma omp parallel
    {
        double *dist = xmalloc(sizeof(double) * (size_t)QBLOCK * N);
        Nb *buf = xmalloc(sizeof(Nb) * (size_t)N);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < nblocks; b++) {
            int q0 = b * QBLOCK, q1 = q0 + QBLOCK < nq ? q0 + QBLOCK : nq;
            for (int j = 0; j < N; j++) {
                const float *xj = emb + (size_t)j * d;
                for (int q = q0; q < q1; q++)
                    dist[(size_t)(q - q0) * N + j] = sqdist(emb + (size_t)qidx[q] * d, xj, d);
            }
            for (int q = q0; q < q1; q++) {
                const int i = qidx[q];
                const int32_t li = label[i];
                const double *dq = dist + (size_t)(q - q0) * N;
                int c = 0;
                for (int j = 0; j < N; j++)
                    if (self_ranked || j != i) buf[c++] = (Nb){dq[j], j};
                partial_sort(buf, c, kmax);
                int *h = hits + (size_t)q * nk, t = 0, cum = 0;
                for (int r = 0; r < kmax && t < nk; r++) {
                    int j = buf[r].j;
                    if (j != i && label[j] == li) cum++;
                    while (t < nk && (out->k[t] < m ? out->k[t] : m) == r + 1) h[t++] = cum;
                }
                while (t < nk) h[t++] = cum; /* unreachable unless kmax clipped; kept for safety */
            }
        }
        free(dist);
        free(buf);
    }

    double sp[PR_MAX_K] = {0}, sr[PR_MAX_K] = {0}, sf[PR_MAX_K] = {0};
    for (int q = 0; q < nq; q++) {
        double np = npos[q] > 0 ? npos[q] : 1; /* clamp: a query without positives scores 0 recall */
        for (int t = 0; t < nk; t++) {
            double h = hits[(size_t)q * nk + t];
            double P = h / out->k[t], R = h / np;
            sp[t] += P;
            sr[t] += R;
            sf[t] += 2 * P * R / (P + R + 1e-8);
        }
    }
    out->n_queries = nq;
    for (int t = 0; t < nk; t++) {
        out->P[t] = sp[t] / nq;
        out->R[t] = sr[t] / nq;
        out->F1[t] = sf[t] / nq;
    }
    out->auc = 0;
    for (int t = 1; t < nk; t++) out->auc += (out->R[t] - out->R[t - 1]) * out->P[t];
    out->f1_min = out->f1_max = out->F1[0];
    for (int t = 1; t < nk; t++) {
        if (out->F1[t] < out->f1_min) out->f1_min = out->F1[t];
        if (out->F1[t] > out->f1_max) out->f1_max = out->F1[t];
    }
    free(hits);
    free(qidx);
    free(npos);
    return 0;
}
