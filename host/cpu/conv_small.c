/* Direct convolutions for layers with few channels (the width-16 model's 1-16 channel layers), where oneDNN's blocked
 * layouts pad every channel count to 16 (256x the work at 1 -> 1) and im2col + GEMM runs GEMMs with M of 1-8.
 *
 * One image at a time, in three moves:
 *   1. pad: the image's planes go into a zero-padded buffer; a stride s is removed by "space to depth" (the s*s
 *      phases of each padded plane become s*s planes of their own, and the kernel is split the same way), so every
 *      convolution below is a stride-1 convolution without padding on planes of width Wq;
 *   2. the core: the output is computed along the flattened plane, p = oh*Wq + ow, so the tap (i, j) is the constant
 *      offset i*Wq + j and the inner loop runs over 16 consecutive outputs for up to 8 output channels at once
 *      (16-float vectors, one weight broadcast per channel: the vectors stay in registers). Columns ow >= Wo of the
 *      flattened output are junk and are dropped;
 *   3. unpad: the valid columns go to the output (the data gradient: back through the space-to-depth).
 * The data gradient of a stride-1 convolution is a stride-1 convolution of dy with the flipped kernel, so the core has
 * two kernels: the forward one and the weight-gradient one.
 * Deterministic for any thread count and any vector width: each output is summed by one thread in a fixed order (the
 * vector lanes are separate outputs), and the weight gradient sums fixed chunks of the batch in chunk order and each
 * image's 16 lanes in lane order. C11 has no FMA contraction (-ffp-contract=off), so AVX-512, AVX2 and SSE builds of
 * these loops give the same bits. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_internal.h"

/* 16-float vectors as the GNU vector extension: one zmm on AVX-512, two ymm on AVX2 (never passed by value, so no
 * function's ABI depends on the clone's ISA). */
typedef float v16 __attribute__((vector_size(64)));
#define VL 16
/* unaligned loads and stores through pointers (no vector passed by value between functions) */
static inline void ldv(v16 *v, const float *p) { memcpy(v, p, sizeof *v); }
static inline void stv(float *p, const v16 *v) { memcpy(p, v, sizeof *v); }

/* Per-thread scratch slots, grown on demand (the step calls from one thread; the loops below use the OpenMP pool). */
#define MAX_THREADS 256
enum { T_IN, T_OUT, T_W, N_TSLOTS };
static float *g_tls[MAX_THREADS][N_TSLOTS];
static size_t g_tls_n[MAX_THREADS][N_TSLOTS];
static float *tls(int slot, size_t n) {
    int t = omp_get_thread_num();
    if (t >= MAX_THREADS) V3_FATAL("more than %d OpenMP threads", MAX_THREADS);
    if (g_tls_n[t][slot] < n) {
        ffree(g_tls[t][slot]);
        g_tls[t][slot] = falloc(n);
        g_tls_n[t][slot] = n;
    }
    return g_tls[t][slot];
}

/* The stride-1 problem a convolution becomes: C planes of Hq x Wq (padded, space-to-depth), kernel kq x lq,
 * outputs Ho x Wo; the flattened output has P = Ho*Wq positions, rounded up to whole vectors (Pv). */
typedef struct {
    int s, C, Hq, Wq, kq, lq, Ho, Wo, co;
    size_t plane, in_floats, Pv;
} Core;

static Core core_of(const SConv *c) {
    Core k;
    int s = c->sh; /* sh == sw (checked in sconv_ok) */
    k.s = s;
    k.kq = (c->kh + s - 1) / s;
    k.lq = (c->kw + s - 1) / s;
    k.Ho = c->Ho;
    k.Wo = c->Wo;
    k.Hq = c->Ho - 1 + k.kq;
    k.Wq = c->Wo - 1 + k.lq;
    k.C = c->ci * s * s;
    k.co = c->co;
    k.plane = (size_t)k.Hq * k.Wq;
    k.Pv = ((size_t)k.Ho * k.Wq + VL - 1) / VL * VL;
    /* reads run past a plane's end by up to Pv - P + (kq-1)*Wq + lq - 1 floats: slack after the last plane */
    k.in_floats = k.C * k.plane + k.Pv + (size_t)k.kq * k.Wq + k.lq + VL;
    return k;
}

int sconv_ok(const SConv *c) { return c->sh == c->sw && c->sh >= 1 && c->sh <= 4; }

/* xq [C][Hq][Wq] from one image x [ci][H][W]: padded by (ph, pw), then space to depth by s. Only the borders and
 * the slack are zeroed; the rows are copied whole (s = 1) or by phase. */
static void to_core_input(const SConv *c, const Core *k, const float *x, float *xq) {
    int s = k->s;
    if (s == 1) {
        size_t Wq = k->Wq;
        for (int ci = 0; ci < c->ci; ci++) {
            float *pl = xq + (size_t)ci * k->plane;
            memset(pl, 0, sizeof(float) * Wq * c->ph);
            int rows = c->H < k->Hq - c->ph ? c->H : k->Hq - c->ph, cols = c->W < k->Wq - c->pw ? c->W : k->Wq - c->pw;
            for (int h = 0; h < rows; h++) {
                float *r = pl + (size_t)(h + c->ph) * Wq;
                memset(r, 0, sizeof(float) * c->pw);
                memcpy(r + c->pw, x + ((size_t)ci * c->H + h) * c->W, sizeof(float) * cols);
                memset(r + c->pw + cols, 0, sizeof(float) * (Wq - c->pw - cols));
            }
            memset(pl + (size_t)(rows + c->ph) * Wq, 0, sizeof(float) * Wq * (k->Hq - rows - c->ph));
        }
        memset(xq + (size_t)k->C * k->plane, 0, sizeof(float) * (k->in_floats - (size_t)k->C * k->plane));
        return;
    }
    memset(xq, 0, sizeof(float) * k->in_floats);
    for (int ci = 0; ci < c->ci; ci++)
        for (int h = 0; h < c->H; h++) {
            int hp = h + c->ph, a = hp % s, hq = hp / s;
            if (hq >= k->Hq) break;
            const float *xr = x + ((size_t)ci * c->H + h) * c->W;
            for (int b = 0; b < s; b++) {
                /* the columns w with (w + pw) % s == b go to plane (a, b) at (w + pw) / s */
                int w0 = ((b - c->pw) % s + s) % s;
                float *dst = xq + (size_t)(ci * s * s + a * s + b) * k->plane + (size_t)hq * k->Wq;
                for (int w = w0; w < c->W; w += s) {
                    int wq = (w + c->pw) / s;
                    if (wq >= k->Wq) break;
                    dst[wq] = xr[w];
                }
            }
        }
}

/* The forward kernel for K output channels: out[k][p] = bias[k] + sum over c, i, j of w[k][c][i][j] xq[c][p + i*Wq +
 * j], for p < Pv. wp holds the block's weights packed as [c][i][j][K]. NP vectors of consecutive outputs are held
 * at once (NP x K accumulators in registers), so each broadcast weight serves NP vectors; the last < NP vectors
 * of a plane go one at a time. */
#define CORE_FWD(K, NP)                                                                                         \
    V3_CLONES static void core_fwd_##K(const Core *k, const float *xq, const float *wp, const float *bias,     \
                                       float *out, size_t ldo) {                                                \
        int taps = k->kq * k->lq;                                                                               \
        size_t p0 = 0;                                                                                          \
        for (; p0 + NP * VL <= k->Pv; p0 += NP * VL) {                                                          \
            v16 acc[NP][K];                                                                                     \
            _Pragma("GCC unroll 8") for (int v = 0; v < NP; v++)                                               \
                _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) acc[v][q] = (v16){0} + bias[q];            \
            for (int c = 0; c < k->C; c++) {                                                                    \
                const float *xc = xq + c * k->plane + p0;                                                       \
                const float *wc = wp + (size_t)c * taps * K;                                                    \
                for (int i = 0; i < k->kq; i++)                                                                 \
                    for (int j = 0; j < k->lq; j++) {                                                           \
                        v16 xv[NP];                                                                             \
                        _Pragma("GCC unroll 8") for (int v = 0; v < NP; v++)                                   \
                            ldv(&xv[v], xc + i * k->Wq + j + v * VL);                                           \
                        const float *wt = wc + (i * k->lq + j) * K;                                             \
                        _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) {                                  \
                            float wq = wt[q];                                                                   \
                            _Pragma("GCC unroll 8") for (int v = 0; v < NP; v++) acc[v][q] += wq * xv[v];      \
                        }                                                                                       \
                    }                                                                                           \
            }                                                                                                   \
            _Pragma("GCC unroll 8") for (int v = 0; v < NP; v++)                                               \
                _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) stv(out + q * ldo + p0 + v * VL, &acc[v][q]); \
        }                                                                                                       \
        for (; p0 < k->Pv; p0 += VL) {                                                                          \
            v16 acc[K];                                                                                         \
            _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) acc[q] = (v16){0} + bias[q];                   \
            for (int c = 0; c < k->C; c++) {                                                                    \
                const float *xc = xq + c * k->plane + p0;                                                       \
                const float *wc = wp + (size_t)c * taps * K;                                                    \
                for (int i = 0; i < k->kq; i++)                                                                 \
                    for (int j = 0; j < k->lq; j++) {                                                           \
                        v16 xv;                                                                                 \
                        ldv(&xv, xc + i * k->Wq + j);                                                           \
                        const float *wt = wc + (i * k->lq + j) * K;                                             \
                        _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) acc[q] += wt[q] * xv;              \
                    }                                                                                           \
            }                                                                                                   \
            _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) stv(out + q * ldo + p0, &acc[q]);              \
        }                                                                                                       \
    }
CORE_FWD(1, 4)
CORE_FWD(2, 4)
CORE_FWD(3, 4)
CORE_FWD(4, 4)
CORE_FWD(5, 3)
CORE_FWD(6, 3)
CORE_FWD(7, 3)
CORE_FWD(8, 3)
typedef void (*CoreFwd)(const Core *, const float *, const float *, const float *, float *, size_t);
static const CoreFwd core_fwd[9] = {NULL, core_fwd_1, core_fwd_2, core_fwd_3, core_fwd_4,
                                    core_fwd_5, core_fwd_6, core_fwd_7, core_fwd_8};

/* All output channels, in blocks of 8: out [co][Pv]. wpk holds the blocks' packed weights one after another. */
static void core_forward(const Core *k, const float *xq, const float *wpk, const float *bias, float *out) {
    size_t per = (size_t)k->C * k->kq * k->lq;
    for (int o0 = 0; o0 < k->co; o0 += 8) {
        int K = k->co - o0 < 8 ? k->co - o0 : 8;
        core_fwd[K](k, xq, wpk + per * o0, bias + o0, out + (size_t)o0 * k->Pv, k->Pv);
    }
}

/* The tap (i, j) of input channel ci in the space-to-depth kernel of one output channel, [C][kq][lq]. */
static inline size_t s2d_tap(const Core *k, int ci, int i, int j) {
    int s = k->s, C = ci * s * s + (i % s) * s + (j % s);
    return ((size_t)C * k->kq + i / s) * k->lq + j / s;
}

/* Packs w [co][ci][kh][kw] (the convolution's) into the core's blocks [co/8][C][kq][lq][8]; taps past the kernel
 * (space to depth rounds it up) are zero. */
static void pack_weights(const SConv *c, const Core *k, const float *w, float *wpk) {
    size_t per = (size_t)k->C * k->kq * k->lq;
    memset(wpk, 0, sizeof(float) * per * k->co);
    for (int o = 0; o < c->co; o++) {
        int o0 = o / 8 * 8, K = c->co - o0 < 8 ? c->co - o0 : 8, q = o - o0;
        float *blk = wpk + per * o0;
        for (int ci = 0; ci < c->ci; ci++)
            for (int i = 0; i < c->kh; i++)
                for (int j = 0; j < c->kw; j++)
                    blk[s2d_tap(k, ci, i, j) * K + q] = w[(((size_t)o * c->ci + ci) * c->kh + i) * c->kw + j];
    }
}

/* y [co][Ho][Wo] (+= nothing: overwritten) from the flattened out [co][Pv] */
static void from_core_output(const Core *k, const float *out, float *y) {
    for (int o = 0; o < k->co; o++)
        for (int oh = 0; oh < k->Ho; oh++)
            memcpy(y + ((size_t)o * k->Ho + oh) * k->Wo, out + (size_t)o * k->Pv + (size_t)oh * k->Wq,
                   sizeof(float) * k->Wo);
}

void sconv_fwd(const SConv *c, const float *x, const float *w, const float *b, float *y) {
    Core k = core_of(c);
    size_t xin = (size_t)c->ci * c->H * c->W, yout = (size_t)c->co * c->Ho * c->Wo;
    size_t nw = (size_t)k.C * k.kq * k.lq * k.co;
    float *wpk = falloc(nw);
    pack_weights(c, &k, w, wpk);
    float *bz = NULL;
    if (!b) b = bz = falloc(c->co); /* zeros */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < c->N; n++) {
        float *xq = tls(T_IN, k.in_floats), *out = tls(T_OUT, (size_t)k.co * k.Pv);
        to_core_input(c, &k, x + n * xin, xq);
        core_forward(&k, xq, wpk, b, out);
        from_core_output(&k, out, y + n * yout);
    }
    ffree(wpk);
    ffree(bz);
}

/* The data gradient. In core terms dxq[C][hq][wq] = sum over o, i, j of wq[o][C][i][j] dy[o][hq - i][wq - j]: a
 * stride-1 convolution of dy, padded by (kq-1, lq-1), with the flipped kernel and the channel roles swapped. It is
 * computed with the forward kernel on that convolution, then dx gathers it back through space to depth. */
void sconv_bwd_data(const SConv *c, const float *dy, const float *w, const float *b, float *dx) {
    Core k = core_of(c);
    /* the adjoint problem: input dy (co planes), kernel kq x lq, output Hq' x Wq' = (Ho + kq - 1) x (Wo + lq - 1) */
    SConv a = {c->N, c->co, c->Ho, c->Wo, k.C, k.Ho + k.kq - 1, k.Wo + k.lq - 1, k.kq, k.lq, 1, 1, k.kq - 1, k.lq - 1};
    Core ka = core_of(&a);
    /* adjoint weights: wa[C][o][kq-1-i][lq-1-j] = wq[o][C][i][j], wq the space-to-depth split of w */
    size_t per = (size_t)k.C * k.kq * k.lq, nq = per * k.co;
    float *wq = falloc(nq), *wa = falloc(nq), *wpk = falloc((size_t)ka.C * ka.kq * ka.lq * ka.co);
    float *zero = falloc(ka.co);
    int s = k.s;
    for (int o = 0; o < c->co; o++)
        for (int ci = 0; ci < c->ci; ci++)
            for (int i = 0; i < c->kh; i++)
                for (int j = 0; j < c->kw; j++)
                    wq[per * o + s2d_tap(&k, ci, i, j)] = w[(((size_t)o * c->ci + ci) * c->kh + i) * c->kw + j];
    for (int o = 0; o < k.co; o++)
        for (int C = 0; C < k.C; C++)
            for (int i = 0; i < k.kq; i++)
                for (int j = 0; j < k.lq; j++)
                    wa[(((size_t)C * k.co + o) * k.kq + (k.kq - 1 - i)) * k.lq + (k.lq - 1 - j)] =
                        wq[(((size_t)o * k.C + C) * k.kq + i) * k.lq + j];
    pack_weights(&a, &ka, wa, wpk);
    size_t xin = (size_t)c->ci * c->H * c->W, yout = (size_t)c->co * c->Ho * c->Wo;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < c->N; n++) {
        float *dyq = tls(T_IN, ka.in_floats), *out = tls(T_OUT, (size_t)ka.co * ka.Pv);
        to_core_input(&a, &ka, dy + n * yout, dyq);
        core_forward(&ka, dyq, wpk, zero, out);
        /* out [C][hq*Wqa + wq] (Wqa = ka.Wq) is dxq over hq < Ho + kq - 1, wq < Wo + lq - 1; dx[ci][h][w] is the
         * phase ((h+ph) % s, (w+pw) % s) of channel ci at ((h+ph)/s, (w+pw)/s), zero where that lies past dxq */
        float *d = dx + n * xin;
        if (s == 1) { /* no phases: row h of dx is row h + ph of dxq from column pw, zero past it */
            int rows = c->H < ka.Ho - c->ph ? c->H : ka.Ho - c->ph, cols = c->W < ka.Wo - c->pw ? c->W : ka.Wo - c->pw;
            if (rows < 0) rows = 0;
            if (cols < 0) cols = 0;
            for (int ci = 0; ci < c->ci; ci++) {
                float bias = b ? b[ci] : 0.0f;
                for (int h = 0; h < c->H; h++) {
                    float *dr = d + ((size_t)ci * c->H + h) * c->W;
                    const float *src = out + (size_t)ci * ka.Pv + (size_t)(h + c->ph) * ka.Wq + c->pw;
                    int m = h < rows ? cols : 0;
                    for (int x0 = 0; x0 < m; x0++) dr[x0] = src[x0] + bias;
                    for (int x0 = m; x0 < c->W; x0++) dr[x0] = 0.0f + bias;
                }
            }
            continue;
        }
        for (int ci = 0; ci < c->ci; ci++) {
            float bias = b ? b[ci] : 0.0f;
            for (int h = 0; h < c->H; h++) {
                int hp = h + c->ph, hq = hp / s;
                float *dr = d + ((size_t)ci * c->H + h) * c->W;
                for (int x0 = 0; x0 < c->W; x0++) {
                    int wp = x0 + c->pw, wq2 = wp / s;
                    float v = 0.0f;
                    if (hq < ka.Ho && wq2 < ka.Wo)
                        v = out[(size_t)(ci * s * s + (hp % s) * s + wp % s) * ka.Pv + (size_t)hq * ka.Wq + wq2];
                    dr[x0] = v + bias;
                }
            }
        }
    }
    ffree(wq), ffree(wa), ffree(wpk), ffree(zero);
}

/* The weight-gradient kernel for K output channels and JB taps of one kernel row: dwv[q][c][i][j0 + jj] (16 lane
 * partials) += sum over p < Pv of dyf[q][p] xq[c][p + i*Wq + j0 + jj], dyf the image's dy on the flattened plane with
 * zeros in the junk columns and past P. The JB shifted x vectors are loaded once per position and serve all K
 * channels; the lanes stay apart across the images of a chunk and are added once at its end (lanes_to_sum). */
#define CORE_BWDW(K, JB)                                                                                        \
    V3_CLONES static void core_bwdw_##K##_##JB(const Core *k, const float *xq, const float *dyf, size_t ldd,   \
                                               v16 *dwv, size_t ldw, int c, int i, int j0) {                    \
        v16 acc[JB][K];                                                                                         \
        _Pragma("GCC unroll 8") for (int jj = 0; jj < JB; jj++)                                                \
            _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) acc[jj][q] = (v16){0};                         \
        const float *xc = xq + c * k->plane + i * k->Wq + j0;                                                   \
        for (size_t p0 = 0; p0 < k->Pv; p0 += VL) {                                                             \
            v16 xv[JB], dv;                                                                                     \
            _Pragma("GCC unroll 8") for (int jj = 0; jj < JB; jj++) ldv(&xv[jj], xc + p0 + jj);                \
            _Pragma("GCC unroll 8") for (int q = 0; q < K; q++) {                                              \
                ldv(&dv, dyf + q * ldd + p0);                                                                   \
                _Pragma("GCC unroll 8") for (int jj = 0; jj < JB; jj++) acc[jj][q] += dv * xv[jj];             \
            }                                                                                                   \
        }                                                                                                       \
        size_t tap = ((size_t)c * k->kq + i) * k->lq + j0;                                                      \
        _Pragma("GCC unroll 8") for (int q = 0; q < K; q++)                                                    \
            _Pragma("GCC unroll 8") for (int jj = 0; jj < JB; jj++) dwv[q * ldw + tap + jj] += acc[jj][q];     \
    }
/* up to 5 taps a block for K <= 4, 3 for K > 4 (the accumulators, x vectors and dy vector fit in 32 registers) */
#define BWDW_K_SMALL(K) CORE_BWDW(K, 1) CORE_BWDW(K, 2) CORE_BWDW(K, 3) CORE_BWDW(K, 4) CORE_BWDW(K, 5)
#define BWDW_K_BIG(K) CORE_BWDW(K, 1) CORE_BWDW(K, 2) CORE_BWDW(K, 3)
BWDW_K_SMALL(1)
BWDW_K_SMALL(2)
BWDW_K_SMALL(3)
BWDW_K_SMALL(4)
BWDW_K_BIG(5)
BWDW_K_BIG(6)
BWDW_K_BIG(7)
BWDW_K_BIG(8)
typedef void (*CoreBwdw)(const Core *, const float *, const float *, size_t, v16 *, size_t, int, int, int);
#define JB_MAX 5
#define ROW_SMALL(K) {NULL, core_bwdw_##K##_1, core_bwdw_##K##_2, core_bwdw_##K##_3, core_bwdw_##K##_4, core_bwdw_##K##_5}
#define ROW_BIG(K) {NULL, core_bwdw_##K##_1, core_bwdw_##K##_2, core_bwdw_##K##_3, NULL, NULL}
static const CoreBwdw core_bwdw_fn[9][JB_MAX + 1] = {{NULL},      ROW_SMALL(1), ROW_SMALL(2), ROW_SMALL(3), ROW_SMALL(4),
                                                     ROW_BIG(5), ROW_BIG(6),   ROW_BIG(7),   ROW_BIG(8)};

/* every tap of K output channels, row by row in blocks of taps */
static void core_bwdw(int K, const Core *k, const float *xq, const float *dyf, size_t ldd, v16 *dwv, size_t ldw) {
    int jmax = K <= 4 ? 5 : 3;
    for (int c = 0; c < k->C; c++)
        for (int i = 0; i < k->kq; i++)
            for (int j0 = 0; j0 < k->lq; j0 += jmax) {
                int jb = k->lq - j0 < jmax ? k->lq - j0 : jmax;
                core_bwdw_fn[K][jb](k, xq, dyf, ldd, dwv, ldw, c, i, j0);
            }
}

/* the 16 lanes of each of n partials as one sum, a fixed tree */
static void lanes_to_sum(const v16 *v, size_t n, float *out) {
    for (size_t t = 0; t < n; t++) {
        const float *a = (const float *)&v[t];
        float h[8];
        for (int l = 0; l < 8; l++) h[l] = a[l] + a[l + 8];
        out[t] = ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
    }
}

/* The batch is cut into CHUNKS fixed chunks whatever the thread count; each chunk's gradient is summed in image
 * order, then the chunks in chunk order: the same bits on any number of threads. */
#define CHUNKS 16

void sconv_bwd_weights(const SConv *c, const float *x, const float *dy, float *dw) {
    Core k = core_of(c);
    size_t xin = (size_t)c->ci * c->H * c->W, yout = (size_t)c->co * c->Ho * c->Wo;
    size_t per = (size_t)k.C * k.kq * k.lq, nwq = per * k.co;
    int nch = c->N < CHUNKS ? c->N : CHUNKS;
    float *part = falloc(nwq * nch);
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < nch; ch++) {
        int n0 = (int)((long)c->N * ch / nch), n1 = (int)((long)c->N * (ch + 1) / nch);
        float *xq = tls(T_IN, k.in_floats), *dyf = tls(T_OUT, (size_t)k.co * k.Pv);
        v16 *dwv = (v16 *)tls(T_W, nwq * VL); /* falloc is 64-byte aligned */
        memset(dwv, 0, sizeof(v16) * nwq);
        memset(dyf, 0, sizeof(float) * k.co * k.Pv);
        for (int n = n0; n < n1; n++) {
            to_core_input(c, &k, x + n * xin, xq);
            const float *g = dy + n * yout;
            for (int o = 0; o < k.co; o++)
                for (int oh = 0; oh < k.Ho; oh++)
                    memcpy(dyf + (size_t)o * k.Pv + (size_t)oh * k.Wq, g + ((size_t)o * k.Ho + oh) * k.Wo,
                           sizeof(float) * k.Wo);
            for (int o0 = 0; o0 < k.co; o0 += 8) {
                int K = k.co - o0 < 8 ? k.co - o0 : 8;
                core_bwdw(K, &k, xq, dyf + (size_t)o0 * k.Pv, k.Pv, dwv + per * o0, per);
            }
        }
        lanes_to_sum(dwv, nwq, part + nwq * ch);
    }
    /* dw[o][ci][i][j] += sum over chunks of the space-to-depth gradient's matching tap */
    for (int o = 0; o < c->co; o++)
        for (int ci = 0; ci < c->ci; ci++)
            for (int i = 0; i < c->kh; i++)
                for (int j = 0; j < c->kw; j++) {
                    size_t iq = per * o + s2d_tap(&k, ci, i, j);
                    float sum = 0.0f;
                    for (int ch = 0; ch < nch; ch++) sum += part[nwq * ch + iq];
                    dw[(((size_t)o * c->ci + ci) * c->kh + i) * c->kw + j] += sum;
                }
    ffree(part);
}
