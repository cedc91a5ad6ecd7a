/* V3 statistics on the device: the forward and backward of v3_loss (host/model/v3loss.c, spec v3.md §3).
 *
 * Quantities. Three row tensors X_0 = zc, X_1 = q [N, dc] and X_2 = zs [N, ds], N = B*n, sample b = rows
 * b*n .. b*n+n-1. "Within" terms: for every (tensor k, sample b) the mpd over the sample's n rows. "Between"
 * terms, one per mean SET s: group means of `per` consecutive rows, then the mpd over the G group means:
 *   s=0: zc, G=nB groups of nn rows    s=1: q, same grouping      (S_c)
 *   s=2: zs, G=B groups of n rows      (S_s)
 *   s=3: zs, G=nB groups of nn rows    (S_s^ss, only with supersample_content)
 * (without supersampling nn = n and nB = B).
 *
 * Launches (all on v3cu_stream(); K1 512 threads a block, the others 256; no allocation after create):
 *   forward  K1 v3s_sample_kernel   blocks [0, 3B): one per (tensor, sample): every pair (i<j) by one warp
 *                                   (lanes stride the columns, double accumulation, butterfly warp sum), the
 *                                   inverse distance cached for the backward (0 where the distance is 0), the
 *                                   sample's mpd; blocks [3B, ..): one thread per group-mean element of every
 *                                   set, summing its `per` rows in row order in double, as the CPU does.
 *            K2 v3s_between_kernel  one block per (set, tile of `tile` consecutive groups): distances from each
 *                                   tile group to all G means (warp per pair), the ordered-pair row sums, then
 *                                   U[g] = sum_{h, D>0} (M_g - M_h) / D_gh (thread per column, h ascending): the
 *                                   unscaled group-mean gradient direction the backward needs. The rows of
 *                                   distances live in dynamic shared memory (tile*Gmax doubles, <= 40 KB) or,
 *                                   when that does not fit, in a global buffer reserved at create.
 *            K3 v3s_reduce_kernel   one block: fixed-order tree sums of the per-sample mpds and the row sums;
 *                                   Fc, Sc, Fs, Ss, Ss_ss, the four hinges, weighted (= the 10 stats) and the
 *                                   backward coefficients (v3_hinge, v3_coef: include/v3_coef.h, the
 *                                   host's own definitions), in v3_loss's operation order. With
 *                                   loss_config.per_sample_hinges (v3_hinges_ps, v3_coef_ps) the hinges come
 *                                   from the per-sample mpds and the within-sample factors are per sample
 *                                   (coefb), a loop over B in sample order.
 *   backward K4 v3s_backward_kernel grid (B, {content, style}, column chunks): thread per (sample, column),
 *                                   rows of the sample in turn: sum_j k/D_ij (x_i - x_j) over the sample (zc
 *                                   then q for content) from the cached inverse distances, plus the group terms
 *                                   coef*U[group]/per, accumulated in double in v3_loss's order, then
 *                                   g[r,t] += (float)acc: exactly one read-modify-write per gradient element.
 *
 * The forward already computes U (the group-mean gradient directions, independent of the hinge coefficients)
 * so that the backward is a single elementwise-style launch; a forward-only (evaluation) call pays for it.
 * The K2 tile (1, 2 or 4 groups a block) is chosen at create from the SM count; it changes only which warp
 * computes a distance, never any summation order, so results do not depend on it (the tests check this).
 *
 * Determinism: no atomics at all. Every sum has an order fixed by the shapes and the (constant) block size:
 * lane-strided partials + xor-butterfly warp sums (commutative pairwise adds: every lane gets the same bits),
 * per-warp partials added in warp order, shared-memory trees of fixed shape, and sequential loops. No value
 * depends on scheduling, so the same inputs give bit-identical stats and gradients on every run.
 * Zero distances (duplicate rows, e.g. equal codewords; equal group means) contribute 0 to the gradient, as in
 * v3_loss (`dist > 0`). Distances are always taken in difference form, never as |a|^2 - 2ab + |b|^2. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_check.h"
#include "v3_coef.h"
extern "C" {
#include "common.h"
}

#define V3S_THREADS 256               /* K2, K3, K4 */
#define V3S_WARPS (V3S_THREADS / 32)
#define V3S_K1_THREADS 512            /* K1: more warps for the few pairs of a small sample */
#define V3S_K1_WARPS (V3S_K1_THREADS / 32)
#define V3S_TILE_MAX 4                /* groups per K2 block; must be <= V3S_WARPS */
#define V3S_SMEM_MAX (40 * 1024)      /* K2 dynamic shared memory used before falling back to global rows */
#define V3S_NOUT 16                   /* the output block: 10 stats, 5 backward coefficients, 1 spare */
#define V3S_SETS 4

/* Output block layout: [0..9] as cuda_v3_stats documents, then the backward coefficients. */
enum { O_FC = 0, O_SC, O_FS, O_SS, O_SSS, O_CONTENT, O_STYLE, O_SAMPLE, O_FRAGMENT, O_WEIGHTED,
       C_FC = 10, /* per-pair factor of the within-sample zc/q terms: 0.5*dFc/B * 2/(n(n-1)) */
       C_SC,      /* per-pair factor of the content group means:       0.5*dSc * 2/(nB(nB-1)) */
       C_FS,      /* within-sample zs:                                 dFs/B * 2/(n(n-1)) */
       C_SS,      /* zs sample means:                                  dSs * 2/(B(B-1)) */
       C_SSS };   /* zs supersample means:                             dSs_ss * 2/(nB(nB-1)) */

typedef struct {
    const float *X;     /* source rows [G*per, d] */
    double *M, *U;      /* group means, gradient directions [G, d] */
    double *part;       /* [G]: sum over h of D(g, h) */
    int G, per, d;
    int blk0;           /* first K2 block of this set */
} V3Set;

typedef struct {
    const float *X[3];  /* zc, q, zs */
    int d[3];           /* dc, dc, ds */
    int B, n, P, nn, nsets, tile, ss, Gmax;
    int within_blocks;  /* 3B */
    double *invw;       /* [3][B][P]: 1/D for pair p of sample b of tensor k, 0 where D == 0 */
    double *mpdw;       /* [3][B]: within-sample mpd */
    double *out;        /* [V3S_NOUT] */
    double *coefb;      /* [2][B]: per-sample hinges only: the per-pair factors of sample b's within-sample zc/q
                           terms (0.5*dFc_b[b] * 2/(n(n-1))) and zs terms (dFs_b[b] * 2/(n(n-1))) */
    double *rowbuf;     /* NULL: K2 distance rows in shared memory; else [k2 blocks][tile*Gmax] */
    V3Set set[V3S_SETS];
    V3LossCfg cfg;      /* weights, relativity, eps (for v3_hinge and v3_coef in K3) */
} V3Args;

struct CudaV3 {
    V3LossCfg cfg;
    int B, n, dc, ds, nn, nB;
    V3Args a;                 /* everything but the input pointers, filled at create */
    double *ws;               /* the one device allocation */
    size_t smem;              /* K2 dynamic shared bytes */
    unsigned k1_blocks, k2_blocks, bwd_chunks;
};

/* Test/benchmark knobs (not in the public header; declared by tests/gpu/test_gpu_v3loss.c and
 * bench/bench_v3loss.c): force the K2 rows into global memory, force the K2 tile (1..4; 0 = automatic).
 * They apply to objects created afterwards. */
static int g_force_global_rows = 0, g_force_tile = 0;
extern "C" void cuda_v3_debug_options(int force_global_rows, int tile) {
    g_force_global_rows = force_global_rows;
    g_force_tile = tile;
}

/* ---- device helpers ---- */

/* xor butterfly: every lane ends with the same bits (each step adds the same two values in either order). */
__device__ __forceinline__ double v3s_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Index of the pair (i, j), i < j, among the n(n-1)/2 pairs in row-major order (0,1), (0,2), .., (1,2), .. */
__device__ __forceinline__ int v3s_pair_index(int i, int j, int n) { return i * (2 * n - i - 1) / 2 + (j - i - 1); }

/* ---- K1: within-sample distances and mpds; group means ---- */

__global__ void __launch_bounds__(V3S_K1_THREADS) v3s_sample_kernel(V3Args a) {
    __shared__ double wpart[V3S_K1_WARPS];
    if ((int)blockIdx.x < a.within_blocks) { /* block-uniform branch: the __syncthreads below is safe */
        const int k = (int)blockIdx.x / a.B, b = (int)blockIdx.x % a.B;
        const int n = a.n, d = a.d[k], P = a.P;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        const float *X = a.X[k] + (size_t)b * n * d;
        double *inv = a.invw + ((size_t)k * a.B + b) * P;
        double wsum = 0.0; /* identical in every lane of the warp */
        for (int p = warp; p < P; p += V3S_K1_WARPS) { /* warp-uniform loop: all lanes reach the shuffles */
            int i = 0, rem = p;
            while (rem >= n - 1 - i) {
                rem -= n - 1 - i;
                i++;
            }
            const int j = i + 1 + rem;
            const float *xi = X + (size_t)i * d, *xj = X + (size_t)j * d;
            double s = 0.0;
#pragma unroll 4
            for (int t = lane; t < d; t += 32) {
                double v = (double)xi[t] - (double)xj[t];
                s += v * v;
            }
            s = v3s_warp_sum(s);
            const double dist = sqrt(s);
            if (lane == 0) inv[p] = dist > 0.0 ? 1.0 / dist : 0.0;
            wsum += dist;
        }
        if (lane == 0) wpart[warp] = wsum;
        __syncthreads();
        if (threadIdx.x == 0) {
            double sum = 0.0;
            for (int w = 0; w < V3S_K1_WARPS; w++) sum += wpart[w];
            a.mpdw[(size_t)k * a.B + b] = 2.0 * sum / ((double)n * (n - 1));
        }
        return;
    }
    /* Group means: one thread per element (set s, group g, column t); no __syncthreads on this path. */
    size_t e = (size_t)(blockIdx.x - a.within_blocks) * V3S_K1_THREADS + threadIdx.x;
    int s = 0;
    while (s < a.nsets && e >= (size_t)a.set[s].G * a.set[s].d) {
        e -= (size_t)a.set[s].G * a.set[s].d;
        s++;
    }
    if (s >= a.nsets) return; /* tail of the last block */
    const int d = a.set[s].d, per = a.set[s].per;
    const size_t g = e / (size_t)d, t = e % (size_t)d;
    const float *src = a.set[s].X + g * per * d + t;
    double m = 0.0;
    for (int k = 0; k < per; k++) m += (double)src[(size_t)k * d];
    a.set[s].M[e] = m / per; /* e = g*d + t */
}

/* ---- K2: distances between group means, row sums, gradient directions ---- */

__global__ void __launch_bounds__(V3S_THREADS) v3s_between_kernel(V3Args a) {
    extern __shared__ double smem[];
    int s = 0;
    while (s + 1 < a.nsets && (int)blockIdx.x >= a.set[s + 1].blk0) s++;
    const double *M = a.set[s].M;
    double *U = a.set[s].U, *part = a.set[s].part;
    const int G = a.set[s].G, d = a.set[s].d, tile = a.tile;
    const int g0 = ((int)blockIdx.x - a.set[s].blk0) * tile;
    const int ng = min(tile, G - g0); /* >= 1: the set has ceil(G/tile) blocks */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    /* row[gi*G + h] = D(g0+gi, h), later 1/D (0 where D == 0) */
    double *row = a.rowbuf ? a.rowbuf + (size_t)blockIdx.x * tile * a.Gmax : smem;

    /* 1. Distances, warp per pair (gi, h); consecutive warps share h, so M_h is read once into L1. */
    for (int q = warp; q < ng * G; q += V3S_WARPS) { /* warp-uniform */
        const int gi = q % ng, h = q / ng, g = g0 + gi;
        double dist = 0.0;
        if (h != g) {
            const double *mg = M + (size_t)g * d, *mh = M + (size_t)h * d;
            double acc = 0.0;
#pragma unroll 4
            for (int t = lane; t < d; t += 32) {
                double v = mg[t] - mh[t];
                acc += v * v;
            }
            dist = sqrt(v3s_warp_sum(acc));
        }
        if (lane == 0) row[(size_t)gi * G + h] = dist;
    }
    __syncthreads();
    /* 2. Ordered-pair row sums, warp gi sums row gi (ng <= V3S_TILE_MAX <= V3S_WARPS). */
    if (warp < ng) {
        double acc = 0.0;
        for (int h = lane; h < G; h += 32) acc += row[(size_t)warp * G + h];
        acc = v3s_warp_sum(acc);
        if (lane == 0) part[g0 + warp] = acc;
    }
    __syncthreads();
    /* 3. Invert in place (after every reader of the distances has passed the barrier above). */
    for (int x = threadIdx.x; x < ng * G; x += V3S_THREADS) {
        const double v = row[x];
        row[x] = v > 0.0 ? 1.0 / v : 0.0;
    }
    __syncthreads();
    /* 4. U[g, t] = sum over h ascending of (M_g[t] - M_h[t]) / D(g, h), skipping zero distances. */
    for (int t = threadIdx.x; t < d; t += V3S_THREADS) {
        double mg[V3S_TILE_MAX], u[V3S_TILE_MAX];
#pragma unroll
        for (int gi = 0; gi < V3S_TILE_MAX; gi++) {
            mg[gi] = gi < ng ? M[(size_t)(g0 + gi) * d + t] : 0.0;
            u[gi] = 0.0;
        }
#pragma unroll 2
        for (int h = 0; h < G; h++) {
            const double mh = M[(size_t)h * d + t];
#pragma unroll
            for (int gi = 0; gi < V3S_TILE_MAX; gi++) {
                if (gi < ng) {
                    const double iv = row[(size_t)gi * G + h];
                    if (iv != 0.0) u[gi] += (mg[gi] - mh) * iv;
                }
            }
        }
#pragma unroll
        for (int gi = 0; gi < V3S_TILE_MAX; gi++)
            if (gi < ng) U[(size_t)(g0 + gi) * d + t] = u[gi];
    }
}

/* ---- K3: statistics, hinges, backward coefficients (one block) ---- */

__global__ void __launch_bounds__(V3S_THREADS) v3s_reduce_kernel(V3Args a) {
    __shared__ double red[3 + V3S_SETS][V3S_THREADS];
    const int tid = threadIdx.x;
    for (int x = 0; x < 3 + V3S_SETS; x++) {
        double acc = 0.0;
        if (x < 3) {
            for (int b = tid; b < a.B; b += V3S_THREADS) acc += a.mpdw[(size_t)x * a.B + b];
        } else if (x - 3 < a.nsets) {
            const double *part = a.set[x - 3].part;
            for (int g = tid; g < a.set[x - 3].G; g += V3S_THREADS) acc += part[g];
        }
        red[x][tid] = acc;
    }
    __syncthreads();
    for (int st = V3S_THREADS / 2; st > 0; st >>= 1) {
        if (tid < st)
            for (int x = 0; x < 3 + V3S_SETS; x++) red[x][tid] += red[x][tid + st];
        __syncthreads();
    }
    if (tid != 0) return;

    const int B = a.B, n = a.n, nB = a.set[0].G;
    double samp[V3S_SETS];
    for (int x = 0; x < V3S_SETS; x++) {
        const double G = x < a.nsets ? (double)a.set[x].G : 2.0;
        samp[x] = red[3 + x][0] / (G * (G - 1)); /* ordered pairs: = 2 sum_{i<j} / (G(G-1)) */
    }
    const double Fc = 0.5 * (red[0][0] / B) + 0.5 * (red[1][0] / B); /* 0.5*x is exact: no contraction issue */
    const double Sc = 0.5 * samp[0] + 0.5 * samp[1];
    const double Fs = red[2][0] / B, Ss = samp[2];
    const double Ss_ss = a.ss ? samp[3] : Ss;
    const V3LossCfg cfg_local = a.cfg, *cfg = &cfg_local; /* a local copy: nothing below can alias it */
    const int ps = cfg->per_sample != 0;
    const double *mzc = a.mpdw, *mq = a.mpdw + B, *mzs = a.mpdw + 2 * (size_t)B;
    double h[4];
    if (ps) v3_hinges_ps(cfg, B, mzc, mq, mzs, Sc, Ss, Ss_ss, h);
    else v3_hinges(cfg, Fc, Sc, Fs, Ss, Ss_ss, h, NULL);
    const double content = h[0], style = h[1], sample = h[2], fragment = h[3];
    /* Explicit rounding (no FMA contraction), as the host computes it. */
    const double weighted =
        __dadd_rn(__dadd_rn(__dadd_rn(__dmul_rn(cfg->w_content, content), __dmul_rn(cfg->w_style, style)),
                            __dmul_rn(cfg->w_sample, sample)),
                  __dmul_rn(cfg->w_fragment, fragment));
    double *o = a.out;
    o[O_FC] = Fc;
    o[O_SC] = Sc;
    o[O_FS] = Fs;
    o[O_SS] = Ss;
    o[O_SSS] = Ss_ss;
    o[O_CONTENT] = content;
    o[O_STYLE] = style;
    o[O_SAMPLE] = sample;
    o[O_FRAGMENT] = fragment;
    o[O_WEIGHTED] = weighted;

    /* the host's coefficients, bit for bit */
    const V3Coef c = ps ? v3_coef_ps(cfg, B, mzc, mq, mzs, Sc, Ss, Ss_ss, a.coefb, a.coefb + B)
                        : v3_coef(cfg, Fc, Sc, Fs, Ss, Ss_ss);
    const double nn1 = (double)n * (n - 1);
    if (ps) /* dL/dF_c[b], dL/dF_s[b] -> per-pair factors, as the cpu backend forms them */
        for (int b = 0; b < B; b++) {
            a.coefb[b] = (0.5 * a.coefb[b]) * (2.0 / nn1);
            a.coefb[B + b] = a.coefb[B + b] * (2.0 / nn1);
        }
    o[C_FC] = ((0.5 * c.dFc) / B) * 2.0 / nn1;
    o[C_SC] = (0.5 * c.dSc) * 2.0 / ((double)nB * (nB - 1));
    o[C_FS] = (c.dFs / B) * 2.0 / nn1;
    o[C_SS] = c.dSs * 2.0 / ((double)B * (B - 1));
    o[C_SSS] = c.dSs_ss * 2.0 / ((double)nB * (nB - 1));
    o[V3S_NOUT - 1] = 0.0;
}

/* ---- K4: backward ---- */

__global__ void __launch_bounds__(V3S_THREADS) v3s_backward_kernel(V3Args a, float *gzc, float *gzs) {
    const int b = blockIdx.x, style = blockIdx.y;
    float *gout = style ? gzs : gzc;
    if (!gout) return;
    const int d = a.d[style ? 2 : 0];
    const int t = (int)blockIdx.z * V3S_THREADS + threadIdx.x;
    if (t >= d) return; /* no barriers in this kernel */
    const int n = a.n, P = a.P, nn = a.nn;
    const double *c = a.out;
    const double kf = a.cfg.per_sample ? a.coefb[(style ? a.B : 0) + b] : style ? c[C_FS] : c[C_FC];
    const int k0 = style ? 2 : 0, k1 = style ? 2 : 1;
    for (int i = 0; i < n; i++) {
        const size_t r = (size_t)b * n + i;
        double acc = 0.0;
        /* Within-sample terms, tensor by tensor (zc then q for content), j ascending: v3_loss's order. */
        for (int k = k0; k <= k1; k++) {
            const float *X = a.X[k] + (size_t)b * n * d + t; /* column t of sample b */
            const double *inv = a.invw + ((size_t)k * a.B + b) * P;
            const double xi = (double)X[(size_t)i * d];
#pragma unroll 4
            for (int j = 0; j < n; j++) {
                if (j == i) continue;
                const double iv = inv[j > i ? v3s_pair_index(i, j, n) : v3s_pair_index(j, i, n)];
                if (iv == 0.0) continue; /* zero distance: zero subgradient */
                acc += (kf * iv) * (xi - (double)X[(size_t)j * d]);
            }
        }
        /* Group-mean terms: each row gets 1/per of its group's mean gradient. */
        if (!style) {
            const size_t g = r / nn;
            acc += c[C_SC] * a.set[0].U[g * d + t] / nn;
            acc += c[C_SC] * a.set[1].U[g * d + t] / nn;
        } else {
            acc += c[C_SS] * a.set[2].U[(size_t)b * d + t] / n;
            if (a.ss) acc += c[C_SSS] * a.set[3].U[(r / nn) * d + t] / nn;
        }
        gout[r * d + t] += (float)acc;
    }
}

/* ---- host API ---- */

static size_t v3s_round(size_t n) { return (n + 31) & ~(size_t)31; } /* 256-byte aligned sub-arrays */

extern "C" void *cuda_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds) {
    if (!cfg) {
        v3_error("cuda_v3_create: no loss configuration");
        return NULL;
    }
    if (B < 2 || n < 2 || dc < 1 || ds < 1) {
        v3_error("cuda_v3_create: need B >= 2, n >= 2, dc >= 1, ds >= 1 (got B=%d, n=%d, dc=%d, ds=%d)", B, n, dc, ds);
        return NULL;
    }
    if (cfg->content_energy) { /* not written for the device yet: refused, never silently replaced */
        v3_error("cuda_v3_create: loss_config.content_spread 'energy' is implemented on the cpu backend only "
                 "(use --device cpu, or content_spread 'means')");
        return NULL;
    }
    /* int limits of the index arithmetic: N = B*n, the pair count, the grids. */
    if ((long long)B * n > INT_MAX / 4 || n > 4096 || dc > (1 << 24) || ds > (1 << 24)) {
        v3_error("cuda_v3_create: sizes too large (B=%d, n=%d, dc=%d, ds=%d)", B, n, dc, ds);
        return NULL;
    }
    const int N = B * n, ss = cfg->supersample_content != 0;
    const int nn = ss ? v3_supersample_n(N) : n, nB = N / nn;
    if (nB < 2) { /* cannot happen for N >= 4, kept as a guard */
        v3_error("cuda_v3_create: the content grouping has %d group(s); need >= 2", nB);
        return NULL;
    }
    CudaV3 *w = (CudaV3 *)xcalloc(1, sizeof *w);
    w->cfg = *cfg;
    w->B = B, w->n = n, w->dc = dc, w->ds = ds, w->nn = nn, w->nB = nB;
    V3Args *a = &w->a;
    a->d[0] = dc, a->d[1] = dc, a->d[2] = ds;
    a->B = B, a->n = n, a->P = n * (n - 1) / 2, a->nn = nn, a->ss = ss;
    a->nsets = ss ? 4 : 3;
    a->within_blocks = 3 * B;
    a->cfg = *cfg;
    const int setG[V3S_SETS] = {nB, nB, B, nB}, setPer[V3S_SETS] = {nn, nn, n, nn}, setD[V3S_SETS] = {dc, dc, ds, ds};
    int Gmax = 0;
    size_t mean_elems = 0;
    for (int s = 0; s < a->nsets; s++) {
        a->set[s].G = setG[s], a->set[s].per = setPer[s], a->set[s].d = setD[s];
        Gmax = setG[s] > Gmax ? setG[s] : Gmax;
        mean_elems += (size_t)setG[s] * setD[s];
    }
    a->Gmax = Gmax;
    const size_t k1 = 3 * (size_t)B + (mean_elems + V3S_K1_THREADS - 1) / V3S_K1_THREADS;
    if (k1 > (size_t)INT_MAX) {
        free(w);
        v3_error("cuda_v3_create: sizes too large (B=%d, n=%d, dc=%d, ds=%d)", B, n, dc, ds);
        return NULL;
    }

    /* K2 tile: the largest of 1, 2, 4 that still gives >= 2 blocks per SM (bigger tiles read each mean row
     * once per tile instead of once per group; smaller ones spread small problems over more SMs). */
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    int tile = 1;
    if (g_force_tile >= 1 && g_force_tile <= V3S_TILE_MAX) tile = g_force_tile;
    else
        for (int t = 2; t <= V3S_TILE_MAX; t *= 2) {
            long blocks = 0;
            for (int s = 0; s < a->nsets; s++) blocks += (setG[s] + t - 1) / t;
            if (blocks >= 2L * sms && (size_t)t * Gmax * sizeof(double) <= V3S_SMEM_MAX) tile = t;
        }
    a->tile = tile;
    int k2 = 0;
    for (int s = 0; s < a->nsets; s++) {
        a->set[s].blk0 = k2;
        k2 += (setG[s] + tile - 1) / tile;
    }
    w->k2_blocks = (unsigned)k2;
    const size_t row_bytes = (size_t)tile * Gmax * sizeof(double);
    const int global_rows = g_force_global_rows || row_bytes > V3S_SMEM_MAX;
    w->smem = global_rows ? 0 : row_bytes;

    /* Workspace, in doubles. */
    size_t off = 0;
    const size_t o_out = off;
    off += v3s_round(V3S_NOUT);
    const size_t o_coefb = off;
    off += v3s_round((size_t)2 * B);
    const size_t o_mpdw = off;
    off += v3s_round((size_t)3 * B);
    const size_t o_invw = off;
    off += v3s_round((size_t)3 * B * a->P);
    size_t o_M[V3S_SETS], o_U[V3S_SETS], o_part[V3S_SETS];
    for (int s = 0; s < a->nsets; s++) {
        o_M[s] = off;
        off += v3s_round((size_t)setG[s] * setD[s]);
        o_U[s] = off;
        off += v3s_round((size_t)setG[s] * setD[s]);
        o_part[s] = off;
        off += v3s_round((size_t)setG[s]);
    }
    const size_t o_rows = off;
    if (global_rows) off += (size_t)k2 * tile * Gmax;
    w->ws = (double *)cuda_alloc(off * sizeof(double));
    a->out = w->ws + o_out;
    a->mpdw = w->ws + o_mpdw;
    a->coefb = w->ws + o_coefb;
    a->invw = w->ws + o_invw;
    for (int s = 0; s < a->nsets; s++) {
        a->set[s].M = w->ws + o_M[s];
        a->set[s].U = w->ws + o_U[s];
        a->set[s].part = w->ws + o_part[s];
    }
    a->rowbuf = global_rows ? w->ws + o_rows : NULL;
    /* Statistics read before the first forward are NaN, not stale memory. */
    CUDA_CHECK(cudaMemsetAsync(a->out, 0xFF, V3S_NOUT * sizeof(double), v3cu_stream()));

    w->k1_blocks = (unsigned)k1;
    const int dmax = dc > ds ? dc : ds;
    w->bwd_chunks = (unsigned)((dmax + V3S_THREADS - 1) / V3S_THREADS);
    return w;
}

extern "C" void cuda_v3_destroy(void *w_) {
    CudaV3 *w = (CudaV3 *)w_;
    if (!w) return;
    cuda_free(w->ws);
    free(w);
}

static V3Args v3s_args(const CudaV3 *w, const float *zc, const float *q, const float *zs) {
    V3Args a = w->a;
    a.X[0] = zc, a.X[1] = q, a.X[2] = zs;
    a.set[0].X = zc, a.set[1].X = q, a.set[2].X = zs;
    if (a.nsets > 3) a.set[3].X = zs;
    return a;
}

extern "C" void cuda_v3_forward(void *w_, const float *zc, const float *q, const float *zs) {
    CudaV3 *w = (CudaV3 *)w_;
    const V3Args a = v3s_args(w, zc, q, zs);
    cudaStream_t st = v3cu_stream();
    v3s_sample_kernel<<<w->k1_blocks, V3S_K1_THREADS, 0, st>>>(a);
    CUDA_CHECK_LAUNCH();
    v3s_between_kernel<<<w->k2_blocks, V3S_THREADS, w->smem, st>>>(a);
    CUDA_CHECK_LAUNCH();
    v3s_reduce_kernel<<<1, V3S_THREADS, 0, st>>>(a);
    CUDA_CHECK_LAUNCH();
}

extern "C" void cuda_v3_backward(void *w_, const float *zc, const float *q, const float *zs, float *gzc,
                                 float *gzs) {
    CudaV3 *w = (CudaV3 *)w_;
    if (!gzc && !gzs) return;
    const V3Args a = v3s_args(w, zc, q, zs);
    const dim3 grid((unsigned)w->B, 2, w->bwd_chunks);
    v3s_backward_kernel<<<grid, V3S_THREADS, 0, v3cu_stream()>>>(a, gzc, gzs);
    CUDA_CHECK_LAUNCH();
}

extern "C" const double *cuda_v3_stats(const void *w) { return ((const CudaV3 *)w)->a.out; }
