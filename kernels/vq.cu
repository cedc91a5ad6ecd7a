/* Vector quantiser on the device: the twin of host/model/vq.c (include/vq.h). API in include/cuda_backend.h.
 *
 * ---- Production search (cuda_vq_search, "fused": small codebooks, limits below) ----
 * ONE launch of smallk_kernel<G, MODE_FUSED>, 256 threads (8 warps) a block. Block b owns the contiguous rows
 * [b*R, b*R + R) with R = 8*ceil(N / 2112), so there are at most 264 blocks and the partition depends on N only
 * (N = 384: R = 8, 48 blocks). Each block
 *   1. stages the whole codebook (K*d floats) in shared memory and zeroes its per-code sums (K*d doubles) and
 *      counts (K ints) in shared memory;
 *   2. processes its rows in rounds of 8, one row per warp: the warp copies x_i to shared memory, every lane
 *      takes the d-slice t = lane, lane+32, ... and accumulates the squared differences (x_t - e_t)^2 for a group
 *      of G codes (G = next power of two of min(K, 32)) in float registers; a transposing warp reduction
 *      (log2(G) halving shuffle steps, then plain xor steps) leaves code k0 + (lane >> (5-log2 G)) on each lane;
 *      a running (distance, index) per lane over the groups, then a butterfly argmin over the warp with the
 *      order (d, k) lexicographic: lowest index on exact ties. The warp writes ind_i, q_i = embed[ind_i] (copied
 *      from shared memory, so bit-equal to the codebook) and the row's commitment ||q_i - x_i||^2 in double
 *      (difference form, fixed xor-butterfly order);
 *   3. after each round (__syncthreads), thread t of the block adds the round's 8 rows, in row order, to the
 *      per-code sums of its columns t, t+256, ... (double, shared memory); thread 0 adds the 8 row commitments
 *      in row order to the block's sum and counts the codes;
 *   4. writes its counts pcnt[b][K], its per-code sums psum[b][k][d] for the codes it saw (count > 0) and its
 *      commitment partial pcommit[b]; the last block to finish (integer atomic ticket + __threadfence) sums
 *      the <= 264 partials in a fixed order (32 lanes x fixed strides, then a fixed butterfly) into
 *      *commit_sum and resets the ticket.
 * Shared memory: 12*K*d + 32*d + 4*K bytes dynamic + 2.2 KB static: 90,160 + 2,224 bytes at d = 512, K = 12
 * (opt-in above 48 KB: cudaFuncSetAttribute at create, limit = the device's opt-in maximum minus the static part;
 * 227 KB on H100: K <= 34 at d = 512, K <= 72 at d = 256, K <= 295 at d = 64).
 * Larger codebooks (cuda_vq_search "general" path, several launches):
 *   - codebook fits in shared memory (4*K*d + 32*d bytes): smallk_kernel<G, MODE_SEARCH> (ind, q, commit;
 *     difference form as above), else norms_kernel + tiled_argmin_kernel (VQS_TILED below) then
 *     gather_commit_kernel (q, commit, same last-block pattern);
 *   - statistics by a stable sort: CUB DeviceRadixSort of (ind, row) pairs (stable, deterministic), segment
 *     offsets from the sorted keys, fixed 256-position chunks summed in sorted (= row) order by one block each,
 *     and a fix-up that adds the chunk partials of the codes that span chunk boundaries in chunk order. The
 *     result is one "partial" (nb = 1): pcnt[0][k], psum[0][k][t].
 * cuda_vq_ema: ema_counts_kernel (1 block: counts = fixed-order sum of the block counts, cluster_size update,
 * total = sequential double sum over k as the CPU does, Laplace-smoothed n_k) + ema_embed_kernel (one thread
 * per (k, t): fixed-order sum of the block partials, embed_avg and embed updates). Arithmetic mirrors
 * vq_ema_update exactly with explicitly rounded operations (__fmul_rn, __fadd_rn, __ddiv_rn, ...; no FMA
 * contraction): float lerps, double total and n_k, embed = (float)(embed_avg / n_k) in double. The per-code
 * sums are the CPU's row-order double sums re-associated only at block/chunk boundaries (a double sum of a few
 * hundred floats is usually exact anyway), so the EMA outputs agree with the CPU to within 1 ulp of float and
 * are mostly bit-identical; counts, cluster_size and the dead-code decision are bit-identical.
 * Launches per call: search 1 (fused) | 1 + 4 + CUB's sort (shared-memory codebook) | 2 + 1 + 3 + CUB's sort
 * (tiled); EMA 2; revive ceil(ndead / 256); argmin: naive 1, smallk 1, tiled 2, gemm 1 + 2 per 32M-float chunk.
 * cuda_vq_revive: one block per dead code (dead/rows passed by value as kernel parameters, <= 256 pairs a launch,
 * so nothing is copied and the host arrays may be freed at once): embed_k = x_row, embed_avg_k = T * embed_k
 * (float), cluster_size_k = T.
 *
 * ---- Search variants (cuda_vq_argmin: ind only) ----
 * VQS_NAIVE  one thread per row, codebook from global memory, difference form in double with the CPU's exact
 *            operation sequence (__dsub_rn/__dmul_rn/__dadd_rn): bit-identical distances, identical indices.
 * VQS_SMALLK smallk_kernel<G, MODE_ARGMIN>: the fused kernel's search alone, grid-stride over rows.
 * VQS_TILED  "flash argmin" for large K: block = 128 rows, loops over 128-codeword tiles and over d in chunks of
 *            8 (double-buffered shared tiles, global loads for the next chunk in flight during the current one),
 *            256 threads each computing an 8x8 register tile of x.c (SIMT FMA), then score = ||c||^2 - 2 x.c
 *            (norms by norms_kernel, double sums rounded to float), a per-thread argmin, a 16-lane shuffle argmin
 *            and a running (score, index) per row in registers. No N x K buffer, no atomics.
 * VQS_GEMM   baseline: cuda_sgemm (cuBLAS, forced to FP32 math for the call) writes -2 x.c^T for a chunk of rows
 *            into an [rows, K] workspace buffer (<= 32M floats), then gemm_argmin_kernel (one warp per row) adds
 *            ||c||^2 and takes the argmin.
 *
 * ---- Accuracy and ties ----
 * All variants take the lexicographic minimum of (score, index): lowest index on exact ties, as vq_assign;
 * NaN scores are never selected and a row whose scores are all +Inf/NaN gets index 0 (vq_assign's behaviour).
 * Duplicate codewords always get bit-identical scores (every code goes through the same operation sequence), so
 * they tie exactly and the lowest index wins, and a row equal to a codeword has distance exactly 0 there.
 * SMALLK (and the fused search): float difference form; each distance has a relative error below about
 * (d/32 + 7) * 2^-24 (1.4e-6 at d = 512), so the chosen code satisfies d_i <= d_min (1 + 3e-6), well inside the
 * tie-aware acceptance d_i <= d_min (1 + 1e-5) + 1e-6 for d <= 2048. The commitment is a double sum of the
 * exact float differences (relative error ~1e-16 per term). NAIVE: exact CPU distances. TILED and GEMM: the
 * expanded form in float; its absolute error is ~1e-7 (||x||^2 + ||c||^2) sqrt(d)-ish, fine for well-separated
 * data but not for codes whose distances differ by less than that (use the difference-form paths for those).
 *
 * Determinism: no floating-point atomics anywhere; every partition depends on N, K, d only; all reductions run in
 * fixed orders; the same inputs give bit-identical ind, q, commit_sum and EMA state on every run.
 * Memory: everything is allocated in cuda_vq_create (sized for N_max rows) and freed in cuda_vq_destroy; every
 * launch and copy runs on v3cu_stream(). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cub/device/device_radix_sort.cuh>

#include "cuda_backend.h"
#include "cuda_check.h"
extern "C" {
#include "common.h"
}

#define VQ_WARPS 8
#define VQ_THREADS (VQ_WARPS * 32)
#define VQ_MAX_BLOCKS 264       /* cap on the row-partitioned kernels' grid (a function of N only) */
#define VQ_FULL 0xffffffffu
#define VQ_EPS 1e-5             /* Laplace smoothing, as host/model/vq.c */
#define VQ_SORT_CHUNK 256       /* sorted positions per block in the general statistics path */
#define VQ_GEMM_BUF_FLOATS ((size_t)32 << 20) /* VQS_GEMM score buffer: at most 32M floats (128 MB) */
#define VQ_REVIVE_BATCH 256     /* (dead, row) pairs per revive launch, passed as a kernel parameter */

enum { MODE_ARGMIN = 0, MODE_SEARCH = 1, MODE_FUSED = 2 };

/* Rows per block of the row-partitioned kernels: a multiple of 8 with at most VQ_MAX_BLOCKS blocks. */
static int rows_per_block(int N) {
    int per = VQ_WARPS * VQ_MAX_BLOCKS;
    int rpw = (N + per - 1) / per;
    if (rpw < 1) rpw = 1;
    return VQ_WARPS * rpw;
}
static int row_blocks(int N) {
    int R = rows_per_block(N);
    return (N + R - 1) / R;
}

static __host__ __device__ inline size_t align16(size_t b) { return (b + 15) & ~(size_t)15; }

/* Dynamic shared memory layout of smallk_kernel: [sums: K*d doubles (FUSED)] [codebook: K*d floats]
 * [x rows: 8*d floats] [counts: K ints (FUSED)], each part 16-byte aligned. Returns the total bytes. */
struct SmemLayout { size_t emb, x, cnt, total; };
static __host__ __device__ inline SmemLayout smem_layout(int K, int d, int mode) {
    SmemLayout L;
    size_t kd = (size_t)K * d;
    size_t off = mode == MODE_FUSED ? align16(kd * sizeof(double)) : 0;
    L.emb = off;
    off = align16(off + kd * sizeof(float));
    L.x = off;
    off = align16(off + (size_t)VQ_WARPS * d * sizeof(float));
    L.cnt = off;
    if (mode == MODE_FUSED) off = align16(off + (size_t)K * sizeof(int));
    L.total = off;
    return L;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Warp helpers                                                                                               */

/* (v, i) precedes (bv, bi): smaller score, or the same score and a lower index. NaN never precedes anything. */
static __device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return v < bv || (v == bv && i < bi);
}

/* Butterfly argmin over the warp: every lane ends with the lexicographic minimum. */
static __device__ __forceinline__ void warp_argmin(float &bv, int &bi) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
        float ov = __shfl_xor_sync(VQ_FULL, bv, m);
        int oi = __shfl_xor_sync(VQ_FULL, bi, m);
        if (better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

/* Xor-butterfly sum: every lane ends with the same bits (a + b == b + a at every step). */
static __device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(VQ_FULL, v, m);
    return v;
}

template <int G> struct Log2 { static constexpr int v = 1 + Log2<G / 2>::v; };
template <> struct Log2<1> { static constexpr int v = 0; };

/* One halving step of the transposing reduction: n values per lane, partner lane^m. The upper lane keeps the
 * upper half of the codes and receives the partner's copy of them; afterwards v[0 .. n/2) hold the kept codes. */
template <int n, int m> struct Halve {
    static __device__ __forceinline__ void run(float *v, int lane) {
        const bool upper = (lane & m) != 0;
#pragma unroll
        for (int i = 0; i < n / 2; i++) {
            float send = upper ? v[i] : v[i + n / 2];
            float keep = upper ? v[i + n / 2] : v[i];
            v[i] = keep + __shfl_xor_sync(VQ_FULL, send, m);
        }
        Halve<n / 2, m / 2>::run(v, lane);
    }
};
template <int m> struct Halve<1, m> {
    static __device__ __forceinline__ void run(float *, int) {}
};

/* Sum of G per-lane partials over the warp for G codes at once: lane l ends with the total of code
 * l >> (5 - log2 G). Every code's total is the same tree over the 32 lane partials (pairs by lane bit 4, then
 * 3, ...), so equal inputs give bit-equal totals whatever the code's position. */
template <int G> static __device__ __forceinline__ float transpose_reduce(float (&v)[G], int lane) {
    Halve<G, 16>::run(v, lane);
    float s = v[0];
#pragma unroll
    for (int m = 16 >> Log2<G>::v; m > 0; m >>= 1) s += __shfl_xor_sync(VQ_FULL, s, m);
    return s;
}

/* Nearest code of the row staged at xw (shared memory) against the codebook in shared memory; the whole warp
 * calls it and every lane gets the index. */
template <int G>
static __device__ __forceinline__ int search_row(const float *__restrict__ s_emb, const float *__restrict__ xw,
                                                 int K, int d, int lane) {
    constexpr int LG = Log2<G>::v;
    float bv = INFINITY;
    int bi = 0;
    for (int k0 = 0; k0 < K; k0 += G) {
        float acc[G];
        int base[G];
#pragma unroll
        for (int c = 0; c < G; c++) {
            acc[c] = 0.0f;
            base[c] = min(k0 + c, K - 1) * d; /* codes past K re-read the last one; their results are dropped */
        }
        for (int t = lane; t < d; t += 32) {
            float xv = xw[t];
#pragma unroll
            for (int c = 0; c < G; c++) {
                float df = xv - s_emb[base[c] + t];
                acc[c] = fmaf(df, df, acc[c]);
            }
        }
        float v = transpose_reduce<G>(acc, lane);
        int k = k0 + (lane >> (5 - LG));
        if (k < K && better(v, k, bv, bi)) {
            bv = v;
            bi = k;
        }
    }
    warp_argmin(bv, bi);
    return bi;
}

/* Last-block-done reduction of the per-block commitment partials. Called by every thread of every block with
 * the block's sum in thread 0. The last block to take a ticket sums pcommit[0 .. gridDim.x) in a fixed order. */
static __device__ void finish_commit(double block_sum, double *pcommit, unsigned *counter, double *commit_sum) {
    __shared__ int s_last;
    __shared__ double s_part[VQ_MAX_BLOCKS];
    if (threadIdx.x == 0) {
        pcommit[blockIdx.x] = block_sum;
        __threadfence(); /* the partial is visible device-wide before the ticket */
        unsigned prev = atomicAdd(counter, 1u);
        s_last = prev == gridDim.x - 1;
    }
    __syncthreads();
    if (!s_last) return; /* block-uniform */
    __threadfence();
    for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x) s_part[b] = __ldcg(&pcommit[b]);
    __syncthreads();
    if (threadIdx.x < 32) {
        double s = 0.0;
        for (unsigned b = threadIdx.x; b < gridDim.x; b += 32) s += s_part[b];
        s = warp_sum_d(s);
        if (threadIdx.x == 0) {
            *commit_sum = s;
            *counter = 0; /* ready for the next launch (stream order) */
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Small-codebook kernel: ARGMIN (ind), SEARCH (+ q, commitment), FUSED (+ per-block code statistics).        */

struct SmallkArgs {
    int N, K, d, R; /* R: rows per block (SEARCH, FUSED) */
    int vec;        /* codebook copy as float4 */
    const float *x, *embed;
    int *ind;
    float *q;
    double *pcommit, *commit_sum;
    unsigned *counter;
    int *pcnt;    /* [gridDim.x][K] */
    double *psum; /* [gridDim.x][K][d] */
};

/* ARGMIN: grid-stride over rows, one warp per row. */
template <int G>
static __device__ __forceinline__ void smallk_argmin_rows(const SmallkArgs &a, const float *s_emb, float *xw,
                                                          int lane, int w) {
    const int d = a.d;
    for (int row = blockIdx.x * VQ_WARPS + w; row < a.N; row += gridDim.x * VQ_WARPS) { /* warp-uniform */
        const float *xr = a.x + (size_t)row * d;
        for (int t = lane; t < d; t += 32) xw[t] = xr[t];
        __syncwarp();
        const int best = search_row<G>(s_emb, xw, a.K, d, lane);
        if (lane == 0) a.ind[row] = best;
        __syncwarp(); /* xw is rewritten by the next row */
    }
}

/* SEARCH / FUSED: this block's rows [r0, r1) in rounds of 8 (one per warp), in row order. */
template <int G, bool FUSED>
static __device__ __forceinline__ void smallk_search_rows(const SmallkArgs &a, const float *s_emb, float *s_x,
                                                          double *s_sum, int *s_cnt) {
    __shared__ int s_ind[VQ_WARPS];
    __shared__ double s_rc[VQ_WARPS];
    const int K = a.K, d = a.d;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    float *xw = s_x + (size_t)w * d;
    const int r0 = blockIdx.x * a.R;
    const int r1 = min(a.N, r0 + a.R);
    double bsum = 0.0; /* thread 0: the block's commitment, rows in order */
    for (int base = r0; base < r0 + a.R; base += VQ_WARPS) { /* same trip count in every thread */
        const int row = base + w;
        if (row < r1) { /* warp-uniform */
            const float *xr = a.x + (size_t)row * d;
            for (int t = lane; t < d; t += 32) xw[t] = xr[t];
            __syncwarp();
            const int best = search_row<G>(s_emb, xw, K, d, lane);
            const float *e = s_emb + (size_t)best * d;
            float *qr = a.q + (size_t)row * d;
            double c = 0.0;
            for (int t = lane; t < d; t += 32) {
                const float ev = e[t];
                qr[t] = ev;
                const double df = (double)ev - (double)xw[t];
                c += df * df;
            }
            c = warp_sum_d(c);
            if (lane == 0) {
                a.ind[row] = best;
                s_ind[w] = best;
                s_rc[w] = c;
            }
        } else if (lane == 0) {
            s_ind[w] = -1;
            s_rc[w] = 0.0;
        }
        __syncthreads();
        if (FUSED) { /* thread tid owns columns tid, tid + 256, ...: no two threads touch one sum */
            for (int t = tid; t < d; t += VQ_THREADS)
                for (int j = 0; j < VQ_WARPS; j++) {
                    const int k = s_ind[j];
                    if (k >= 0) s_sum[(size_t)k * d + t] += (double)s_x[(size_t)j * d + t];
                }
        }
        if (tid == 0)
            for (int j = 0; j < VQ_WARPS; j++) {
                const int k = s_ind[j];
                if (k < 0) continue;
                bsum += s_rc[j];
                if (FUSED) s_cnt[k]++;
            }
        __syncthreads(); /* s_x, s_ind, s_rc are rewritten by the next round */
    }
    if (FUSED) {
        const size_t b = blockIdx.x, kd = (size_t)K * d;
        for (int k = tid; k < K; k += VQ_THREADS) a.pcnt[b * K + k] = s_cnt[k];
        for (size_t i = tid; i < kd; i += VQ_THREADS)
            if (s_cnt[i / d] > 0) a.psum[b * kd + i] = s_sum[i]; /* codes absent here: never read (pcnt = 0) */
    }
    finish_commit(bsum, a.pcommit, a.counter, a.commit_sum);
}

template <int G, int MODE> __global__ void __launch_bounds__(VQ_THREADS) smallk_kernel(SmallkArgs a) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int K = a.K, d = a.d;
    const int tid = threadIdx.x;
    const size_t kd = (size_t)K * d;
    const SmemLayout L = smem_layout(K, d, MODE);
    double *s_sum = (double *)smem_raw; /* FUSED only */
    float *s_emb = (float *)(smem_raw + L.emb);
    float *s_x = (float *)(smem_raw + L.x);
    int *s_cnt = (int *)(smem_raw + L.cnt); /* FUSED only */

    if (a.vec) {
        const float4 *src = (const float4 *)a.embed;
        float4 *dst = (float4 *)s_emb;
        for (size_t i = tid; i < kd / 4; i += VQ_THREADS) dst[i] = src[i];
    } else {
        for (size_t i = tid; i < kd; i += VQ_THREADS) s_emb[i] = a.embed[i];
    }
    if constexpr (MODE == MODE_FUSED) {
        for (size_t i = tid; i < kd; i += VQ_THREADS) s_sum[i] = 0.0;
        for (int k = tid; k < K; k += VQ_THREADS) s_cnt[k] = 0;
    }
    __syncthreads();
    if constexpr (MODE == MODE_ARGMIN) smallk_argmin_rows<G>(a, s_emb, s_x + (size_t)(tid >> 5) * d, tid & 31, tid >> 5);
    else smallk_search_rows<G, MODE == MODE_FUSED>(a, s_emb, s_x, s_sum, s_cnt);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* General-path helpers: codebook norms, q + commitment gather, naive search, GEMM-buffer argmin.             */

/* cnorm[k] = ||e_k||^2, double sum in a fixed order rounded to float. One warp per code. */
__global__ void __launch_bounds__(VQ_THREADS) norms_kernel(int K, int d, const float *__restrict__ embed,
                                                           float *__restrict__ cnorm) {
    const int lane = threadIdx.x & 31;
    const int k = blockIdx.x * VQ_WARPS + (threadIdx.x >> 5);
    if (k >= K) return; /* warp-uniform */
    const float *e = embed + (size_t)k * d;
    double s = 0.0;
    for (int t = lane; t < d; t += 32) s += (double)e[t] * (double)e[t];
    s = warp_sum_d(s);
    if (lane == 0) cnorm[k] = (float)s;
}

/* q = embed[ind], commitment sum ||q - x||^2 (double, difference form). Block b owns rows [b*R, b*R + R); warp w
 * takes rows r0 + w, r0 + w + 8, ... in order; the block adds its 8 warp sums in order; last block finishes. */
__global__ void __launch_bounds__(VQ_THREADS)
    gather_commit_kernel(int N, int d, int R, const float *__restrict__ x, const float *__restrict__ embed,
                         const int *__restrict__ ind, float *__restrict__ q, double *pcommit, unsigned *counter,
                         double *commit_sum) {
    __shared__ double s_w[VQ_WARPS];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int r0 = blockIdx.x * R, r1 = min(N, r0 + R);
    double wsum = 0.0;
    for (int row = r0 + w; row < r1; row += VQ_WARPS) {
        const int k = ind[row];
        const float *e = embed + (size_t)k * d, *xr = x + (size_t)row * d;
        float *qr = q + (size_t)row * d;
        double c = 0.0;
        for (int t = lane; t < d; t += 32) {
            float ev = e[t];
            qr[t] = ev;
            double df = (double)ev - (double)xr[t];
            c += df * df;
        }
        wsum += warp_sum_d(c);
    }
    if (lane == 0) s_w[w] = wsum;
    __syncthreads();
    double bsum = 0.0;
    if (threadIdx.x == 0)
        for (int j = 0; j < VQ_WARPS; j++) bsum += s_w[j];
    finish_commit(bsum, pcommit, counter, commit_sum);
}

/* One thread per row; the CPU's exact operation sequence (vq_assign), so distances are bit-identical. */
__global__ void naive_kernel(int N, int K, int d, const float *__restrict__ x, const float *__restrict__ embed,
                             int *__restrict__ ind) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    const float *xi = x + (size_t)i * d;
    double best = INFINITY;
    int bi = 0;
    for (int k = 0; k < K; k++) {
        const float *e = embed + (size_t)k * d;
        double s = 0.0;
        for (int t = 0; t < d; t++) {
            double v = __dsub_rn((double)xi[t], (double)e[t]);
            s = __dadd_rn(s, __dmul_rn(v, v));
        }
        if (s < best) {
            best = s;
            bi = k;
        }
    }
    ind[i] = bi;
}

/* ind[r] = argmin_k (buf[r][k] + cnorm[k]) for r < rows; one warp per row. */
__global__ void __launch_bounds__(VQ_THREADS) gemm_argmin_kernel(int rows, int K, const float *__restrict__ buf,
                                                                 const float *__restrict__ cnorm,
                                                                 int *__restrict__ ind) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * VQ_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return; /* warp-uniform */
    const float *b = buf + (size_t)r * K;
    float bv = INFINITY;
    int bi = 0;
    for (int k = lane; k < K; k += 32) {
        float s = b[k] + cnorm[k];
        if (better(s, k, bv, bi)) {
            bv = s;
            bi = k;
        }
    }
    warp_argmin(bv, bi);
    if (lane == 0) ind[r] = bi;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* VQS_TILED: register-tiled SIMT x.c with a running argmin.                                                  */

#define TL_BM 128 /* rows per block */
#define TL_BN 128 /* codes per tile */
#define TL_BK 8   /* d per chunk */
#define TL_LD 132 /* padded row of a transposed shared tile (floats; 16-byte multiple, conflict-free stores) */

/* Thread (ty, tx) = (tid / 16, tid % 16) owns rows {ty*4 + i, 64 + ty*4 + i} and codes {tx*4 + j, 64 + tx*4 + j}
 * (i, j < 4) of the 128 x 128 tile. Loads: thread tid fetches 4 consecutive d-values of row (and code) tid / 2 at
 * column (tid % 2) * 4 of the chunk, and stores them transposed (As[k][row], Bs[k][code]). */
template <bool VEC>
__global__ void __launch_bounds__(256, 2)
    tiled_argmin_kernel(int N, int K, int d, const float *__restrict__ x, const float *__restrict__ embed,
                        const float *__restrict__ cnorm, int *__restrict__ ind) {
    __shared__ __align__(16) float As[2][TL_BK][TL_LD];
    __shared__ __align__(16) float Bs[2][TL_BK][TL_LD];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int row0 = blockIdx.x * TL_BM;
    const int nkc = (d + TL_BK - 1) / TL_BK, nct = (K + TL_BN - 1) / TL_BN;
    const int total = nkc * nct;
    const int lr = tid >> 1, lc = (tid & 1) * 4;
    const int arow = row0 + lr;
    const bool arow_ok = arow < N;
    const float *xrow = x + (size_t)(arow_ok ? arow : 0) * d;
    float ra[4], rb[4];

    auto load = [&](int it) {
        const int ct = it / nkc, kc = it - ct * nkc;
        const int col = kc * TL_BK + lc;
        const int code = ct * TL_BN + lr;
        const bool code_ok = code < K;
        const float *erow = embed + (size_t)(code_ok ? code : 0) * d;
        if (VEC) { /* d % 4 == 0 and 16-byte aligned bases: a 4-column group is all in or all out */
            float4 va = make_float4(0.f, 0.f, 0.f, 0.f), vb = va;
            if (col < d) {
                if (arow_ok) va = *(const float4 *)(xrow + col);
                if (code_ok) vb = *(const float4 *)(erow + col);
            }
            ra[0] = va.x, ra[1] = va.y, ra[2] = va.z, ra[3] = va.w;
            rb[0] = vb.x, rb[1] = vb.y, rb[2] = vb.z, rb[3] = vb.w;
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                ra[j] = (arow_ok && col + j < d) ? xrow[col + j] : 0.0f;
                rb[j] = (code_ok && col + j < d) ? erow[col + j] : 0.0f;
            }
        }
    };
    auto store = [&](int s) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            As[s][lc + j][lr] = ra[j];
            Bs[s][lc + j][lr] = rb[j];
        }
    };

    /* Running (score, index) of the block's rows; entry r is only ever touched by the tx == 0 thread owning r. */
    __shared__ float s_best_v[TL_BM];
    __shared__ int s_best_i[TL_BM];
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;
    if (tx == 0)
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int r = i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4);
            s_best_v[r] = INFINITY;
            s_best_i[r] = 0;
        }

    load(0);
    store(0);
    __syncthreads();
    for (int it = 0; it < total; it++) {
        const int s = it & 1;
        if (it + 1 < total) load(it + 1); /* in flight during the FMAs below */
#pragma unroll
        for (int kk = 0; kk < TL_BK; kk++) {
            const float4 a0 = *(const float4 *)&As[s][kk][ty * 4];
            const float4 a1 = *(const float4 *)&As[s][kk][64 + ty * 4];
            const float4 b0 = *(const float4 *)&Bs[s][kk][tx * 4];
            const float4 b1 = *(const float4 *)&Bs[s][kk][64 + tx * 4];
            const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float bw[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) acc[i][j] = fmaf(av[i], bw[j], acc[i][j]);
        }
        /* Stage s^1 was last read in iteration it-1, which every thread finished before the previous barrier. */
        if (it + 1 < total) store(s ^ 1);
        __syncthreads();

        const int ct = it / nkc;
        if (it - ct * nkc == nkc - 1) { /* the code tile is complete: fold it into the running argmin */
            const int cb = ct * TL_BN;
            float cn[8];
            int ci[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                ci[j] = cb + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4)); /* increasing in j */
                cn[j] = ci[j] < K ? cnorm[ci[j]] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float bv = INFINITY;
                int bi = 0;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    float sc = fmaf(-2.0f, acc[i][j], cn[j]);
                    if (ci[j] < K && better(sc, ci[j], bv, bi)) {
                        bv = sc;
                        bi = ci[j];
                    }
                    acc[i][j] = 0.0f;
                }
#pragma unroll
                for (int m = 8; m > 0; m >>= 1) { /* the 16 lanes sharing these rows (same ty) */
                    float ov = __shfl_xor_sync(VQ_FULL, bv, m);
                    int oi = __shfl_xor_sync(VQ_FULL, bi, m);
                    if (better(ov, oi, bv, bi)) {
                        bv = ov;
                        bi = oi;
                    }
                }
                if (tx == 0) {
                    const int r = i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4);
                    if (better(bv, bi, s_best_v[r], s_best_i[r])) {
                        s_best_v[r] = bv;
                        s_best_i[r] = bi;
                    }
                }
            }
        }
    }
    if (tx == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int r = i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4);
            if (row0 + r < N) ind[row0 + r] = s_best_i[r];
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------- */
/* General-path statistics: stable sort of (ind, row), then per-code sums in row order.                       */

__global__ void iota_kernel(int n, int *__restrict__ v) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)n; i += (size_t)gridDim.x * blockDim.x)
        v[i] = (int)i;
}

/* off[k] = first sorted position with key >= k, for k = 0..K (off[K] = N). Keys are sorted, in [0, K). */
__global__ void seg_offsets_kernel(int N, int K, const int *__restrict__ key, int *__restrict__ off) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x) {
        const int p = (int)i;
        const int cur = key[p], prev = p ? key[p - 1] : -1;
        for (int k = prev + 1; k <= cur; k++) off[k] = p;
        if (p == N - 1)
            for (int k = cur + 1; k <= K; k++) off[k] = N;
    }
}

/* Block c sums the sorted positions [c*P, c*P + P) code by code, in order: codes wholly inside go straight to
 * sums[k]; the chunk's first code goes to pfirst[c], its last code (if different) to plast[c]. */
__global__ void sorted_chunk_sum_kernel(int N, int d, const int *__restrict__ key, const int *__restrict__ rows,
                                        const float *__restrict__ x, double *__restrict__ sums,
                                        double *__restrict__ pfirst, double *__restrict__ plast) {
    __shared__ int s_key[VQ_SORT_CHUNK], s_row[VQ_SORT_CHUNK];
    const int c = blockIdx.x, p0 = c * VQ_SORT_CHUNK;
    const int n = min(VQ_SORT_CHUNK, N - p0);
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        s_key[j] = key[p0 + j];
        s_row[j] = rows[p0 + j];
    }
    __syncthreads();
    const int kf = s_key[0], kl = s_key[n - 1];
    for (int t = threadIdx.x; t < d; t += blockDim.x) {
        double acc = 0.0;
        int cur = kf;
        for (int j = 0; j <= n; j++) {
            const int k = j < n ? s_key[j] : -1; /* -1: flush the last run */
            if (k != cur) {
                if (cur == kf) pfirst[(size_t)c * d + t] = acc;
                else if (cur == kl) plast[(size_t)c * d + t] = acc;
                else sums[(size_t)cur * d + t] = acc;
                if (j == n) break;
                acc = 0.0;
                cur = k;
            }
            acc += (double)x[(size_t)s_row[j] * d + t];
        }
    }
}

/* One thread per (k, t): codes whose run touches a chunk's first or last position add their chunk partials in
 * chunk order; empty codes get 0; counts go to pcnt[k]. Codes wholly inside one chunk (neither its first nor its
 * last code) were written by sorted_chunk_sum_kernel. */
__global__ void sorted_fixup_kernel(int N, int K, int d, const int *__restrict__ key, const int *__restrict__ off,
                                    const double *__restrict__ pfirst, const double *__restrict__ plast,
                                    double *__restrict__ sums, int *__restrict__ pcnt) {
    const size_t total = (size_t)K * d;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int k = (int)(i / d), t = (int)(i % d);
        const int o = off[k], cnt = off[k + 1] - o;
        if (t == 0) pcnt[k] = cnt;
        if (cnt == 0) {
            sums[i] = 0.0;
            continue;
        }
        const int c0 = o / VQ_SORT_CHUNK, c1 = (o + cnt - 1) / VQ_SORT_CHUNK;
        const int kf0 = key[c0 * VQ_SORT_CHUNK], kl0 = key[min(N, (c0 + 1) * VQ_SORT_CHUNK) - 1];
        if (c0 == c1 && k != kf0 && k != kl0) continue;
        double s = 0.0;
        for (int cc = c0; cc <= c1; cc++)
            s += key[cc * VQ_SORT_CHUNK] == k ? pfirst[(size_t)cc * d + t] : plast[(size_t)cc * d + t];
        sums[i] = s;
    }
}

/* ---------------------------------------------------------------------------------------------------------- */
/* EMA and dead-code revival                                                                                  */

/* One block. cnt[k] = sum over the search's blocks of pcnt[b][k]; cluster_size_k = lam cs_k + (1-lam) cnt_k
 * (float); total = sum_k cs_k in k order (double); nk[k] = (cs_k + eps) / (total + K eps) * total (double). */
__global__ void __launch_bounds__(VQ_THREADS)
    ema_counts_kernel(int K, int nb, const int *__restrict__ pcnt, float lam, float *__restrict__ cluster_size,
                      int *__restrict__ cnt, double *__restrict__ nk) {
    extern __shared__ float s_cs[];
    __shared__ double s_total;
    const float oml = __fsub_rn(1.0f, lam);
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        int c = 0;
#pragma unroll 8
        for (int b = 0; b < nb; b++) c += pcnt[(size_t)b * K + k];
        cnt[k] = c;
        float cs = __fadd_rn(__fmul_rn(lam, cluster_size[k]), __fmul_rn(oml, (float)c));
        cluster_size[k] = cs;
        s_cs[k] = cs;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0.0;
        for (int k = 0; k < K; k++) tot = __dadd_rn(tot, (double)s_cs[k]);
        s_total = tot;
    }
    __syncthreads();
    const double total = s_total;
    const double den = __dadd_rn(total, __dmul_rn((double)K, VQ_EPS));
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        nk[k] = __dmul_rn(__ddiv_rn(__dadd_rn((double)s_cs[k], VQ_EPS), den), total);
}

/* One thread per (k, t): sum_t = the search's block partials in block order (double); embed_avg = lam ea +
 * (1-lam) (float)sum (float); embed = (float)(embed_avg / nk) (double division). */
__global__ void ema_embed_kernel(int K, int d, int nb, const int *__restrict__ pcnt, const double *__restrict__ psum,
                                 const int *__restrict__ cnt, const double *__restrict__ nk, float lam,
                                 float *__restrict__ embed, float *__restrict__ embed_avg) {
    const size_t kd = (size_t)K * d;
    const float oml = __fsub_rn(1.0f, lam);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < kd; i += (size_t)gridDim.x * blockDim.x) {
        const int k = (int)(i / d);
        double s = 0.0;
        if (cnt[k] > 0) {
            /* Unconditional loads (a slot whose count is 0 holds a stale but initialised value, then ignored), so
             * that the unrolled loads are in flight together; the sum itself runs in block order. */
#pragma unroll 8
            for (int b = 0; b < nb; b++) {
                const int pc = pcnt[(size_t)b * K + k];
                const double v = psum[(size_t)b * kd + i];
                s = pc > 0 ? __dadd_rn(s, v) : s;
            }
        }
        const float ea = __fadd_rn(__fmul_rn(lam, embed_avg[i]), __fmul_rn(oml, __double2float_rn(s)));
        embed_avg[i] = ea;
        embed[i] = __double2float_rn(__ddiv_rn((double)ea, nk[k]));
    }
}

struct ReviveBatch {
    int n;
    int dead[VQ_REVIVE_BATCH], rows[VQ_REVIVE_BATCH];
};

/* Block i: code b.dead[i] takes row b.rows[i] of x; embed_avg = T * embed; cluster_size = T. */
__global__ void revive_kernel(ReviveBatch b, int d, const float *__restrict__ x, float thr,
                              float *__restrict__ embed, float *__restrict__ embed_avg,
                              float *__restrict__ cluster_size) {
    const int i = blockIdx.x;
    if (i >= b.n) return;
    const size_t k = (size_t)b.dead[i], r = (size_t)b.rows[i];
    for (int t = threadIdx.x; t < d; t += blockDim.x) {
        const float e = x[r * d + t];
        embed[k * d + t] = e;
        embed_avg[k * d + t] = __fmul_rn(thr, e);
    }
    if (threadIdx.x == 0) cluster_size[k] = thr;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Host side                                                                                                  */

struct CudaVq {
    int K, d, N_max;
    int num_sms;
    size_t smem_per_sm;
    size_t smem_limit[3];  /* dynamic shared memory available to smallk_kernel per mode */
    int G;                 /* code group of smallk_kernel */
    int fused_ok, smallk_ok;
    int nb_cap;            /* most blocks of a row-partitioned kernel for N <= N_max (<= VQ_MAX_BLOCKS) */
    int last_nb;           /* partial slots written by the last search; -1 before the first */
    double *pcommit;       /* [VQ_MAX_BLOCKS] */
    unsigned *counter;     /* last-block ticket */
    int *pcnt;             /* [max(nb_cap, 1) * K] (fused) or [K] */
    double *psum;          /* [max(nb_cap, 1) * K * d] (fused) or [K * d] */
    int *cnt;              /* [K] */
    double *nk;            /* [K] */
    float *cnorm;          /* [K] */
    float *gbuf;           /* [gemm_rows * K] */
    int gemm_rows;
    /* general-path statistics */
    unsigned *keys_sorted; /* [N_max] */
    int *rows_sorted;      /* [N_max] */
    int *iota;             /* [N_max] */
    int *off;              /* [K + 1] */
    double *pfirst, *plast;/* [chunks(N_max) * d] */
    void *cub_tmp;
    size_t cub_bytes;
    int sort_bits;
};

static int pick_group(int K) {
    int G = 1;
    while (G < K && G < 32) G *= 2;
    return G;
}

template <int MODE> static void smallk_set_attr(size_t optin, size_t *limit) {
    /* The same static shared memory in every G; record the smallest dynamic budget over the instantiations. */
#define VQ_ATTR(GG)                                                                                             \
    do {                                                                                                        \
        cudaFuncAttributes fa;                                                                                  \
        CUDA_CHECK(cudaFuncGetAttributes(&fa, smallk_kernel<GG, MODE>));                                        \
        size_t dyn = optin > fa.sharedSizeBytes ? optin - fa.sharedSizeBytes : 0;                               \
        CUDA_CHECK(cudaFuncSetAttribute(smallk_kernel<GG, MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize,   \
                                        (int)dyn));                                                             \
        if (dyn < *limit) *limit = dyn;                                                                         \
    } while (0)
    VQ_ATTR(1);
    VQ_ATTR(2);
    VQ_ATTR(4);
    VQ_ATTR(8);
    VQ_ATTR(16);
    VQ_ATTR(32);
#undef VQ_ATTR
}

template <int MODE> static void launch_smallk(int G, unsigned grid, size_t smem, const SmallkArgs &a) {
    cudaStream_t st = v3cu_stream();
    switch (G) {
    case 1: smallk_kernel<1, MODE><<<grid, VQ_THREADS, smem, st>>>(a); break;
    case 2: smallk_kernel<2, MODE><<<grid, VQ_THREADS, smem, st>>>(a); break;
    case 4: smallk_kernel<4, MODE><<<grid, VQ_THREADS, smem, st>>>(a); break;
    case 8: smallk_kernel<8, MODE><<<grid, VQ_THREADS, smem, st>>>(a); break;
    case 16: smallk_kernel<16, MODE><<<grid, VQ_THREADS, smem, st>>>(a); break;
    case 32: smallk_kernel<32, MODE><<<grid, VQ_THREADS, smem, st>>>(a); break;
    default: V3_FATAL("vq: bad code group %d", G);
    }
    CUDA_CHECK_LAUNCH();
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static SmallkArgs smallk_args(const CudaVq *w, int N, const float *x, const float *embed, int *ind) {
    SmallkArgs a;
    memset(&a, 0, sizeof a);
    a.N = N;
    a.K = w->K;
    a.d = w->d;
    a.R = rows_per_block(N);
    a.vec = ((size_t)w->K * w->d) % 4 == 0 && aligned16(embed);
    a.x = x;
    a.embed = embed;
    a.ind = ind;
    a.pcommit = w->pcommit;
    a.counter = w->counter;
    return a;
}

static int chunks_of(int N) { return (N + VQ_SORT_CHUNK - 1) / VQ_SORT_CHUNK; }

extern "C" void *cuda_vq_create(int K, int d, int N_max) {
    if (K < 1 || d < 1 || N_max < 0) {
        v3_error("cuda_vq_create: bad shape K = %d, d = %d, N_max = %d", K, d, N_max);
        return NULL;
    }
    if ((size_t)K * d > ((size_t)1 << 30) || N_max > (1 << 30)) {
        v3_error("cuda_vq_create: shape too large (K = %d, d = %d, N_max = %d)", K, d, N_max);
        return NULL;
    }
    int dev = 0, optin = 0, sms = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    if ((size_t)K * sizeof(float) > (size_t)optin) {
        v3_error("cuda_vq_create: K = %d codes exceed the EMA kernel's shared memory (%d bytes)", K, optin);
        return NULL;
    }

    CudaVq *w = (CudaVq *)xcalloc(1, sizeof *w);
    w->K = K;
    w->d = d;
    w->N_max = N_max;
    w->num_sms = sms > 0 ? sms : 1;
    w->smem_per_sm = (size_t)per_sm;
    w->last_nb = -1;
    w->G = pick_group(K);
    for (int m = 0; m < 3; m++) w->smem_limit[m] = (size_t)optin;
    smallk_set_attr<MODE_ARGMIN>((size_t)optin, &w->smem_limit[MODE_ARGMIN]);
    smallk_set_attr<MODE_SEARCH>((size_t)optin, &w->smem_limit[MODE_SEARCH]);
    smallk_set_attr<MODE_FUSED>((size_t)optin, &w->smem_limit[MODE_FUSED]);
    if ((size_t)K * sizeof(float) > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(ema_counts_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)(K * sizeof(float))));
    w->fused_ok = smem_layout(K, d, MODE_FUSED).total <= w->smem_limit[MODE_FUSED];
    w->smallk_ok = smem_layout(K, d, MODE_SEARCH).total <= w->smem_limit[MODE_SEARCH];
    /* Largest grid of any N <= N_max (row_blocks is not monotone in N: it is at most min(264, ceil(N / 8))). */
    w->nb_cap = (N_max + VQ_WARPS - 1) / VQ_WARPS;
    if (w->nb_cap > VQ_MAX_BLOCKS) w->nb_cap = VQ_MAX_BLOCKS;
    if (w->nb_cap < 1) w->nb_cap = 1;

    const size_t kd = (size_t)K * d;
    const size_t slots = w->fused_ok ? (size_t)w->nb_cap : 1;
    w->pcommit = (double *)cuda_alloc(VQ_MAX_BLOCKS * sizeof(double));
    w->counter = (unsigned *)cuda_alloc(sizeof(unsigned));
    w->pcnt = (int *)cuda_alloc(slots * K * sizeof(int));
    w->psum = (double *)cuda_alloc(slots * kd * sizeof(double));
    w->cnt = (int *)cuda_alloc((size_t)K * sizeof(int));
    w->nk = (double *)cuda_alloc((size_t)K * sizeof(double));
    w->cnorm = (float *)cuda_alloc((size_t)K * sizeof(float));
    size_t gr = VQ_GEMM_BUF_FLOATS / (size_t)K;
    if (gr < 1) gr = 1;
    if (gr > (size_t)(N_max > 0 ? N_max : 1)) gr = (size_t)(N_max > 0 ? N_max : 1);
    w->gemm_rows = (int)gr;
    w->gbuf = (float *)cuda_alloc(gr * K * sizeof(float));

    const size_t nmax = (size_t)(N_max > 0 ? N_max : 1);
    w->keys_sorted = (unsigned *)cuda_alloc(nmax * sizeof(unsigned));
    w->rows_sorted = (int *)cuda_alloc(nmax * sizeof(int));
    w->iota = (int *)cuda_alloc(nmax * sizeof(int));
    w->off = (int *)cuda_alloc(((size_t)K + 1) * sizeof(int));
    const size_t nch = (size_t)chunks_of((int)nmax);
    w->pfirst = (double *)cuda_alloc(nch * d * sizeof(double));
    w->plast = (double *)cuda_alloc(nch * d * sizeof(double));
    w->sort_bits = 1;
    while (w->sort_bits < 31 && (1u << w->sort_bits) < (unsigned)K) w->sort_bits++;
    w->cub_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs((void *)NULL, w->cub_bytes, (const unsigned *)NULL,
                                               (unsigned *)NULL, (const int *)NULL, (int *)NULL, (int)nmax, 0,
                                               w->sort_bits, v3cu_stream()));
    w->cub_tmp = cuda_alloc(w->cub_bytes);

    cudaStream_t st = v3cu_stream();
    CUDA_CHECK(cudaMemsetAsync(w->counter, 0, sizeof(unsigned), st));
    /* every partial slot initialised once: the EMA reads slots of absent codes (and ignores them) */
    CUDA_CHECK(cudaMemsetAsync(w->psum, 0, slots * kd * sizeof(double), st));
    CUDA_CHECK(cudaMemsetAsync(w->pcnt, 0, slots * K * sizeof(int), st));
    iota_kernel<<<v3cu_grid(nmax), V3CU_BLOCK, 0, st>>>((int)nmax, w->iota);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaStreamSynchronize(st));
    return w;
}

extern "C" void cuda_vq_destroy(void *w_) {
    CudaVq *w = (CudaVq *)w_;
    if (!w) return;
    CUDA_CHECK(cudaStreamSynchronize(v3cu_stream()));
    cuda_free(w->pcommit);
    cuda_free(w->counter);
    cuda_free(w->pcnt);
    cuda_free(w->psum);
    cuda_free(w->cnt);
    cuda_free(w->nk);
    cuda_free(w->cnorm);
    cuda_free(w->gbuf);
    cuda_free(w->keys_sorted);
    cuda_free(w->rows_sorted);
    cuda_free(w->iota);
    cuda_free(w->off);
    cuda_free(w->pfirst);
    cuda_free(w->plast);
    cuda_free(w->cub_tmp);
    free(w);
}

/* ---- search building blocks ---- */

static void run_norms(const CudaVq *w, const float *embed) {
    norms_kernel<<<(w->K + VQ_WARPS - 1) / VQ_WARPS, VQ_THREADS, 0, v3cu_stream()>>>(w->K, w->d, embed, w->cnorm);
    CUDA_CHECK_LAUNCH();
}

static void run_tiled(const CudaVq *w, int N, const float *x, const float *embed, int *ind) {
    run_norms(w, embed);
    const unsigned grid = (unsigned)((N + TL_BM - 1) / TL_BM);
    const bool vec = w->d % 4 == 0 && aligned16(x) && aligned16(embed);
    if (vec) tiled_argmin_kernel<true><<<grid, 256, 0, v3cu_stream()>>>(N, w->K, w->d, x, embed, w->cnorm, ind);
    else tiled_argmin_kernel<false><<<grid, 256, 0, v3cu_stream()>>>(N, w->K, w->d, x, embed, w->cnorm, ind);
    CUDA_CHECK_LAUNCH();
}

static void run_naive(const CudaVq *w, int N, const float *x, const float *embed, int *ind) {
    naive_kernel<<<(N + 127) / 128, 128, 0, v3cu_stream()>>>(N, w->K, w->d, x, embed, ind);
    CUDA_CHECK_LAUNCH();
}

static int run_gemm(CudaVq *w, int N, const float *x, const float *embed, int *ind) {
    if (cuda_libs_load()) return -1;
    run_norms(w, embed);
    const V3Math old = cuda_get_math();
    cuda_set_math(V3_MATH_FP32);
    for (int r0 = 0; r0 < N; r0 += w->gemm_rows) {
        const int m = N - r0 < w->gemm_rows ? N - r0 : w->gemm_rows;
        cuda_sgemm(0, 1, m, w->K, w->d, -2.0f, x + (size_t)r0 * w->d, w->d, embed, w->d, 0.0f, w->gbuf, w->K);
        gemm_argmin_kernel<<<(m + VQ_WARPS - 1) / VQ_WARPS, VQ_THREADS, 0, v3cu_stream()>>>(m, w->K, w->gbuf,
                                                                                          w->cnorm, ind + r0);
        CUDA_CHECK_LAUNCH();
    }
    cuda_set_math(old);
    return 0;
}

/* Per-code counts and row sums of (x, ind) into slot 0 (pcnt[k], psum[k][t]) by the stable-sort path. */
static void sort_stats(CudaVq *w, int N, const float *x, const int *ind) {
    cudaStream_t st = v3cu_stream();
    const int K = w->K, d = w->d;
    size_t need = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs((void *)NULL, need, (const unsigned *)ind, w->keys_sorted,
                                               (const int *)w->iota, w->rows_sorted, N, 0, w->sort_bits, st));
    if (need > w->cub_bytes)
        V3_FATAL("cuda_vq_search: radix sort needs %zu bytes of temporary storage, %zu reserved", need, w->cub_bytes);
    size_t bytes = w->cub_bytes;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(w->cub_tmp, bytes, (const unsigned *)ind, w->keys_sorted,
                                               (const int *)w->iota, w->rows_sorted, N, 0, w->sort_bits, st));
    const int *keys = (const int *)w->keys_sorted;
    seg_offsets_kernel<<<v3cu_grid((size_t)N), V3CU_BLOCK, 0, st>>>(N, K, keys, w->off);
    CUDA_CHECK_LAUNCH();
    const int bs = d >= 256 ? 256 : (d + 31) / 32 * 32;
    sorted_chunk_sum_kernel<<<chunks_of(N), bs, 0, st>>>(N, d, keys, w->rows_sorted, x, w->psum, w->pfirst,
                                                         w->plast);
    CUDA_CHECK_LAUNCH();
    sorted_fixup_kernel<<<v3cu_grid((size_t)K * d), V3CU_BLOCK, 0, st>>>(N, K, d, keys, w->off, w->pfirst, w->plast,
                                                                        w->psum, w->pcnt);
    CUDA_CHECK_LAUNCH();
}

/* ---- API ---- */

extern "C" void cuda_vq_search(void *w_, int N, const float *x, const float *embed, int *ind, float *q,
                               double *commit_sum) {
    CudaVq *w = (CudaVq *)w_;
    if (!w) V3_FATAL("cuda_vq_search: NULL workspace");
    if (N < 0 || N > w->N_max) V3_FATAL("cuda_vq_search: N = %d outside [0, N_max = %d]", N, w->N_max);
    cudaStream_t st = v3cu_stream();
    const int K = w->K, d = w->d;
    if (N == 0) {
        CUDA_CHECK(cudaMemsetAsync(commit_sum, 0, sizeof(double), st));
        CUDA_CHECK(cudaMemsetAsync(w->pcnt, 0, (size_t)K * sizeof(int), st));
        w->last_nb = 1;
        return;
    }
    SmallkArgs a = smallk_args(w, N, x, embed, ind);
    a.q = q;
    a.commit_sum = commit_sum;
    const int nb = row_blocks(N);
    if (w->fused_ok) {
        a.pcnt = w->pcnt;
        a.psum = w->psum;
        launch_smallk<MODE_FUSED>(w->G, (unsigned)nb, smem_layout(K, d, MODE_FUSED).total, a);
        w->last_nb = nb;
        return;
    }
    if (w->smallk_ok) {
        launch_smallk<MODE_SEARCH>(w->G, (unsigned)nb, smem_layout(K, d, MODE_SEARCH).total, a);
    } else {
        run_tiled(w, N, x, embed, ind);
        gather_commit_kernel<<<nb, VQ_THREADS, 0, st>>>(N, d, rows_per_block(N), x, embed, ind, q, w->pcommit,
                                                        w->counter, commit_sum);
        CUDA_CHECK_LAUNCH();
    }
    sort_stats(w, N, x, ind);
    w->last_nb = 1;
}

extern "C" void cuda_vq_ema(void *w_, float decay, float *embed, float *embed_avg, float *cluster_size) {
    CudaVq *w = (CudaVq *)w_;
    if (!w) V3_FATAL("cuda_vq_ema: NULL workspace");
    if (w->last_nb < 1) V3_FATAL("cuda_vq_ema: no cuda_vq_search has run on this workspace");
    cudaStream_t st = v3cu_stream();
    const int K = w->K, d = w->d;
    ema_counts_kernel<<<1, VQ_THREADS, (size_t)K * sizeof(float), st>>>(K, w->last_nb, w->pcnt, decay, cluster_size,
                                                                       w->cnt, w->nk);
    CUDA_CHECK_LAUNCH();
    ema_embed_kernel<<<v3cu_grid((size_t)K * d), V3CU_BLOCK, 0, st>>>(K, d, w->last_nb, w->pcnt, w->psum, w->cnt,
                                                                     w->nk, decay, embed, embed_avg);
    CUDA_CHECK_LAUNCH();
}

extern "C" void cuda_vq_revive(void *w_, int ndead, const int *dead, const int *rows, const float *x,
                               float threshold, float *embed, float *embed_avg, float *cluster_size) {
    CudaVq *w = (CudaVq *)w_;
    if (!w) V3_FATAL("cuda_vq_revive: NULL workspace");
    if (ndead <= 0) return;
    const int K = w->K, d = w->d;
    if (ndead > K) V3_FATAL("cuda_vq_revive: %d dead codes of K = %d", ndead, K);
    unsigned char *seen = (unsigned char *)xcalloc((size_t)K, 1);
    for (int i = 0; i < ndead; i++) {
        if (dead[i] < 0 || dead[i] >= K || seen[dead[i]])
            V3_FATAL("cuda_vq_revive: dead[%d] = %d is out of range [0, %d) or repeated", i, dead[i], K);
        seen[dead[i]] = 1;
        if (rows[i] < 0 || rows[i] >= w->N_max)
            V3_FATAL("cuda_vq_revive: rows[%d] = %d is out of range [0, N_max = %d)", i, rows[i], w->N_max);
    }
    free(seen);
    const int bs = d >= 256 ? 256 : (d + 31) / 32 * 32;
    for (int i0 = 0; i0 < ndead; i0 += VQ_REVIVE_BATCH) {
        ReviveBatch b;
        memset(&b, 0, sizeof b);
        b.n = ndead - i0 < VQ_REVIVE_BATCH ? ndead - i0 : VQ_REVIVE_BATCH;
        memcpy(b.dead, dead + i0, sizeof(int) * (size_t)b.n);
        memcpy(b.rows, rows + i0, sizeof(int) * (size_t)b.n);
        revive_kernel<<<b.n, bs, 0, v3cu_stream()>>>(b, d, x, threshold, embed, embed_avg, cluster_size);
        CUDA_CHECK_LAUNCH();
    }
}

extern "C" const char *cuda_vq_variant_name(int v) {
    switch (v) {
    case VQS_NAIVE: return "naive";
    case VQS_SMALLK: return "smallk";
    case VQS_TILED: return "tiled";
    case VQS_GEMM: return "gemm";
    default: return "unknown";
    }
}

extern "C" int cuda_vq_argmin(CudaVq *w, int variant, int N, const float *x, const float *embed, int *ind) {
    if (!w) return v3_error("cuda_vq_argmin: NULL workspace");
    if (N < 0) return v3_error("cuda_vq_argmin: N = %d", N);
    const int K = w->K, d = w->d;
    switch (variant) {
    case VQS_NAIVE:
        if (N) run_naive(w, N, x, embed, ind);
        return 0;
    case VQS_SMALLK: {
        const size_t smem = smem_layout(K, d, MODE_ARGMIN).total;
        if (smem > w->smem_limit[MODE_ARGMIN])
            return v3_error("vq smallk: the codebook (K = %d, d = %d) needs %zu bytes of shared memory, the device "
                            "allows %zu", K, d, smem, w->smem_limit[MODE_ARGMIN]);
        if (!N) return 0;
        size_t bps = w->smem_per_sm / (smem + 1024);
        if (bps < 1) bps = 1;
        if (bps > 2048 / VQ_THREADS) bps = 2048 / VQ_THREADS;
        size_t grid = (size_t)w->num_sms * bps, need = ((size_t)N + VQ_WARPS - 1) / VQ_WARPS;
        if (grid > need) grid = need;
        SmallkArgs a = smallk_args(w, N, x, embed, ind);
        launch_smallk<MODE_ARGMIN>(w->G, (unsigned)grid, smem, a);
        return 0;
    }
    case VQS_TILED:
        if (N) run_tiled(w, N, x, embed, ind);
        return 0;
    case VQS_GEMM:
        if (!N) return 0;
        return run_gemm(w, N, x, embed, ind);
    default: return v3_error("cuda_vq_argmin: unknown variant %d", variant);
    }
}
