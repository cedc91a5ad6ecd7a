/* EMA vector quantiser, CPU reference (behaviour of vector-quantize-pytorch 1.18.0 as used by V3). */
#include "vq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define VQ_EPS 1e-5

void vq_init(VQ *vq, int K, int d, float decay, float threshold, int kmeans_iters) {
    memset(vq, 0, sizeof *vq);
    vq->K = K;
    vq->d = d;
    vq->decay = decay;
    vq->threshold = threshold;
    vq->kmeans_iters = kmeans_iters;
    vq->embed = falloc((size_t)K * d);
    vq->embed_avg = falloc((size_t)K * d);
    vq->cluster_size = falloc((size_t)K);
    for (int k = 0; k < K; k++) vq->cluster_size[k] = 1.0f; /* library init: ones */
}

void vq_free(VQ *vq) {
    ffree(vq->embed);
    ffree(vq->embed_avg);
    ffree(vq->cluster_size);
    memset(vq, 0, sizeof *vq);
}

double vq_distance(const float *x, const float *e, int d) {
    double s = 0;
    for (int t = 0; t < d; t++) {
        double v = (double)x[t] - e[t];
        s += v * v;
    }
    return s;
}

void vq_assign(const float *embed, int K, int d, int N, const float *x, int *ind) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * d;
        double best = INFINITY;
        int bi = 0;
        for (int k = 0; k < K; k++) {
            double s = vq_distance(xi, embed + (size_t)k * d, d);
            if (s < best) { best = s; bi = k; }
        }
        ind[i] = bi;
    }
}

/* Per-code counts and sums of the rows assigned to each code (double accumulation). */
static void code_stats(int K, int d, int N, const float *x, const int *ind, double *cnt, double *sum) {
    memset(cnt, 0, sizeof(double) * K);
    memset(sum, 0, sizeof(double) * K * d);
    for (int i = 0; i < N; i++) {
        cnt[ind[i]] += 1;
        double *s = sum + (size_t)ind[i] * d;
        for (int t = 0; t < d; t++) s[t] += x[(size_t)i * d + t];
    }
}

/* K distinct random row indices when N >= K (randperm prefix), else K draws with replacement. */
void vq_sample_rows(int N, int K, int *rows, Rng *rng) {
    if (N >= K) {
        int *perm = xmalloc(sizeof(int) * N);
        rng_permutation(rng, N, perm);
        memcpy(rows, perm, sizeof(int) * K);
        free(perm);
    } else {
        for (int k = 0; k < K; k++) rows[k] = (int)rng_below(rng, (uint32_t)N);
    }
}

void vq_revive_rows(int N, int ndead, const int *dead, const int *ind, int K, int largest, int *rows, Rng *rng) {
    if (!largest) {
        vq_sample_rows(N, ndead, rows, rng);
        return;
    }
    int *cnt = xcalloc((size_t)K, sizeof(int)), *used = xcalloc((size_t)N, sizeof(int));
    for (int i = 0; i < N; i++) cnt[ind[i]]++;
    for (int i = 0; i < ndead; i++) cnt[dead[i]] = 0; /* a dead code is not split */
    for (int i = 0; i < ndead; i++) {
        int best = -1;
        for (int k = 0; k < K; k++)
            if (cnt[k] > 0 && (best < 0 || cnt[k] > cnt[best])) best = k;
        int avail = 0;
        if (best >= 0)
            for (int r = 0; r < N; r++) avail += ind[r] == best && !used[r];
        int pick = -1;
        if (avail > 0) { /* the j-th unused row of that atom, in row order */
            int j = (int)rng_below(rng, (uint32_t)avail);
            for (int r = 0; r < N && pick < 0; r++)
                if (ind[r] == best && !used[r] && j-- == 0) pick = r;
            cnt[best] /= 2;
        } else { /* no live atom has a row left: any unused row, else any row */
            int free_rows = 0;
            for (int r = 0; r < N; r++) free_rows += !used[r];
            if (free_rows > 0) {
                int j = (int)rng_below(rng, (uint32_t)free_rows);
                for (int r = 0; r < N && pick < 0; r++)
                    if (!used[r] && j-- == 0) pick = r;
            } else {
                pick = (int)rng_below(rng, (uint32_t)N);
            }
        }
        used[pick] = 1;
        rows[i] = pick;
    }
    free(cnt);
    free(used);
}

void vq_kmeans_init(VQ *vq, int N, const float *x, Rng *rng) {
    int K = vq->K, d = vq->d;
    int *rows = xmalloc(sizeof(int) * K), *ind = xmalloc(sizeof(int) * N);
    double *cnt = xmalloc(sizeof(double) * K), *sum = xmalloc(sizeof(double) * K * d);
    vq_sample_rows(N, K, rows, rng);
    for (int k = 0; k < K; k++) memcpy(vq->embed + (size_t)k * d, x + (size_t)rows[k] * d, sizeof(float) * d);
    for (int it = 0; it < vq->kmeans_iters; it++) {
        vq_assign(vq->embed, K, d, N, x, ind);
        code_stats(K, d, N, x, ind, cnt, sum);
        for (int k = 0; k < K; k++)
            if (cnt[k] > 0) /* empty clusters keep their old mean */
                for (int t = 0; t < d; t++) vq->embed[(size_t)k * d + t] = (float)(sum[(size_t)k * d + t] / cnt[k]);
    }
    if (vq->kmeans_iters == 0) memset(cnt, 0, sizeof(double) * K);
    for (int k = 0; k < K; k++) {
        vq->cluster_size[k] = (float)cnt[k];
        for (int t = 0; t < d; t++) vq->embed_avg[(size_t)k * d + t] = vq->embed[(size_t)k * d + t] * (float)cnt[k];
    }
    vq->initted = 1.0f;
    free(rows);
    free(ind);
    free(cnt);
    free(sum);
}

void vq_revive_codes(int d, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                     float *embed, float *embed_avg, float *cluster_size) {
    for (int i = 0; i < ndead; i++) {
        int k = dead[i];
        memcpy(embed + (size_t)k * d, x + (size_t)rows[i] * d, sizeof(float) * d);
        cluster_size[k] = threshold;
        for (int t = 0; t < d; t++) embed_avg[(size_t)k * d + t] = threshold * embed[(size_t)k * d + t];
    }
}

void vq_ema_update(VQ *vq, int N, const float *x, const int *ind, Rng *rng) {
    int K = vq->K, d = vq->d;
    float lam = vq->decay;
    double *cnt = xmalloc(sizeof(double) * K), *sum = xmalloc(sizeof(double) * K * d);
    code_stats(K, d, N, x, ind, cnt, sum);
    double total = 0;
    for (int k = 0; k < K; k++) {
        vq->cluster_size[k] = lam * vq->cluster_size[k] + (1.0f - lam) * (float)cnt[k];
        for (int t = 0; t < d; t++) {
            float *ea = vq->embed_avg + (size_t)k * d + t;
            *ea = lam * *ea + (1.0f - lam) * (float)sum[(size_t)k * d + t];
        }
        total += vq->cluster_size[k];
    }
    for (int k = 0; k < K; k++) { /* Laplace smoothing of the counts */
        double nk = (vq->cluster_size[k] + VQ_EPS) / (total + K * VQ_EPS) * total;
        for (int t = 0; t < d; t++) vq->embed[(size_t)k * d + t] = (float)(vq->embed_avg[(size_t)k * d + t] / nk);
    }
    if (vq->threshold > 0) { /* dead codes: revive from random rows of this batch, reset their EMA state */
        int ndead = 0, *dead = xmalloc(sizeof(int) * K), *rows = xmalloc(sizeof(int) * K);
        for (int k = 0; k < K; k++)
            if (vq->cluster_size[k] < vq->threshold) dead[ndead++] = k;
        if (ndead) {
            vq_revive_rows(N, ndead, dead, ind, K, vq->revive_largest, rows, rng);
            vq_revive_codes(d, ndead, dead, rows, x, vq->threshold, vq->embed, vq->embed_avg, vq->cluster_size);
        }
        free(dead);
        free(rows);
    }
    free(cnt);
    free(sum);
}

double vq_forward(VQ *vq, int N, const float *x, float *q, int *ind, VqMode mode, Rng *rng) {
    int d = vq->d;
    if (vq->initted == 0.0f) vq_kmeans_init(vq, N, x, rng);
    vq_assign(vq->embed, vq->K, d, N, x, ind);
    double commit = 0;
    for (int i = 0; i < N; i++) {
        const float *e = vq->embed + (size_t)ind[i] * d;
        memcpy(q + (size_t)i * d, e, sizeof(float) * d);
        for (int t = 0; t < d; t++) {
            double v = (double)e[t] - x[(size_t)i * d + t];
            commit += v * v;
        }
    }
    if (mode == VQ_EVAL) return 0.0;
    if (mode == VQ_TRAIN) vq_ema_update(vq, N, x, ind, rng);
    return commit / ((double)N * d);
}

double vq_perplexity(const VQ *vq) {
    double tot = 0, h = 0;
    for (int k = 0; k < vq->K; k++) tot += vq->cluster_size[k];
    if (tot <= 0) return 0;
    for (int k = 0; k < vq->K; k++) {
        double p = vq->cluster_size[k] / tot;
        if (p > 0) h -= p * log(p);
    }
    return exp(h);
}
