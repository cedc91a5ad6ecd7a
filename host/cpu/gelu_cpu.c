/* GELU forward and backward on the cpu backend, in float32, 16 lanes at a time.
 *
 * The reference evaluates 0.5 x (1 + erf(x / sqrt 2)) and its derivative with libm's scalar erf and exp in double
 * (a third of the width-16 step). Here, with s = |x|, phi = exp(-s^2/2) / sqrt(2 pi) and the Mills ratio
 * M(s) = Phi(-s) / phi(s) (NOTES "GELU on the cpu backend"):
 *   Phi(x)        = phi M(s)            for x < 0,   1 - phi M(s)           for x >= 0;
 *   gelu'(x)      = phi D(s)            for x < 0,   1 - phi D(s)           for x >= 0,
 *   where D(s) = M(s) - s = (s - s0) Q(s) and s0 = 0.7517915... is D's root (gelu' = 0 at x = -s0).
 * Writing D as (s - s0) Q keeps gelu' accurate relative to itself next to its zero, where Phi(x) + x phi(x), the
 * reference's form, cancels (float32 could not follow the reference there). M(s) (1 + s/2) and Q(s) are degree-11
 * polynomials in v = A / (1 + s/2) + B in [-1, 1] (fitted with mpmath; 3e-8 and 1e-8 relative with float32
 * coefficients); exp(-s^2/2) takes s^2 exactly (s split in 12-bit halves), so its error does not grow with s^2.
 * Every result is within a few float32 ulps of the exact function (tests/test_cpu_ops.c sweeps [-40, 40]);
 * s is clamped at 14.9, past which Phi(-s) underflows float32.
 * Plain C on GNU vectors with no FMA contraction (C11): every ISA clone gives the same bits; every element goes
 * through the same code (tails are padded to a whole vector), so results depend on nothing but x. */
#include <string.h>

#include "cpu_internal.h"

typedef float v16 __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
#define GL 16

/* Helpers take and return vectors by value but are always inlined: no call, so no ABI to warn about. */
#define AINL static inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* m ? a : b per lane (m from a comparison: all ones or zero) */
#define SEL(m, a, b) ((v16)(((v16i)(a) & (m)) | ((v16i)(b) & ~(m))))

/* phi(s) = exp(-s^2 / 2) / sqrt(2 pi) for 0 <= s <= 14.9 */
AINL void vphi(const v16 *sp, v16 *out) {
    v16 s = *sp;
    v16 sh = (v16)((v16i)s & (int)0xfffff000), sl = s - sh; /* s = sh + sl, 12 + 12 bits */
    v16 yh = (sh * sh) * -0.5f, yl = (sh * sl + (sl * sl) * 0.5f) * -1.0f; /* -s^2/2 = yh + yl, yh exact */
    const float shift = 0x1.8p23f; /* adding it rounds to an integer held in the low mantissa bits */
    v16 kf = yh * 0x1.715476p+0f + shift;
    v16i k = (v16i)kf - (int)0x4b400000; /* the bits of shift */
    kf = kf - shift;
    v16 r = (yh - kf * 0x1.62e4p-1f) - kf * 0x1.7f7d1cp-20f + yl; /* ln2 in two parts: kf * hi is exact */
    v16 p = r * (1.0f / 5040) + (1.0f / 720);
    p = p * r + (1.0f / 120);
    p = p * r + (1.0f / 24);
    p = p * r + (1.0f / 6);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    v16i k1 = k >> 1, k2 = k - k1; /* 2^k in two normal factors: k reaches -159 */
    *out = ((p * 0x1.988454p-2f) * (v16)((k1 + 127) << 23)) * (v16)((k2 + 127) << 23);
}

/* s = min(|x|, 14.9) (NaN stays NaN), v = the polynomials' variable, neg = x < 0 */
AINL void prep(const v16 *xp, v16 *s, v16 *v, v16 *u, v16i *neg) {
    v16 x = *xp;
    v16 a = (v16)((v16i)x & 0x7fffffff);
    *s = SEL(a > 14.9f, (v16){} + 14.9f, a);
    *u = 1.0f / (*s * 0.5f + 1.0f);
    *v = *u * 0x1.225cc8p+1f - 0x1.44b98ep+0f;
    *neg = x < 0.0f;
}

/* Phi(x) */
AINL v16 vcdf(const v16 *xp) {
    v16 s, v, u, e;
    v16i neg;
    prep(xp, &s, &v, &u, &neg);
    vphi(&s, &e);
    v16 m = v * 0x1.63e0e4p-16f + -0x1.79e54cp-16f;
    m = m * v + -0x1.bd8d72p-14f;
    m = m * v + 0x1.286cc2p-12f;
    m = m * v + -0x1.071f2ap-14f;
    m = m * v + -0x1.67661ap-10f;
    m = m * v + 0x1.c53b88p-9f;
    m = m * v + 0x1.308cb4p-9f;
    m = m * v + -0x1.fb9264p-6f;
    m = m * v + 0x1.f9403ap-7f;
    m = m * v + 0x1.7cf56cp-2f;
    m = m * v + 0x1.c8de7p-1f;
    v16 pm = e * (m * u); /* phi M = Phi(-s) */
    return SEL(neg, pm, 1.0f - pm);
}

/* gelu'(x) */
AINL v16 vdgelu(const v16 *xp) {
    v16 s, v, u, e;
    v16i neg;
    prep(xp, &s, &v, &u, &neg);
    vphi(&s, &e);
    v16 q = v * -0x1.894fcap-19f + 0x1.40637cp-17f;
    q = q * v + 0x1.52f148p-20f;
    q = q * v + -0x1.14761p-14f;
    q = q * v + 0x1.4272aep-13f;
    q = q * v + 0x1.2f4c0ap-14f;
    q = q * v + -0x1.6ef8bep-10f;
    q = q * v + 0x1.5449f2p-9f;
    q = q * v + 0x1.585e3ap-7f;
    q = q * v + -0x1.b96928p-5f;
    q = q * v + -0x1.4640a6p-2f;
    q = q * v + -0x1.4e75fcp+0f;
    v16 pd = e * (((s - 0x1.80ead2p-1f) + 0x1.a03fd4p-27f) * q); /* phi D, s - s0 in two parts */
    return SEL(neg, pd, 1.0f - pd);
}

/* y = gelu(x) for n <= BLOCK values (y may alias x): Phi(x) into a buffer first, then the products (measured:
 * storing inside the long Phi computation ran at half the speed of these two passes) */
#define BLOCK 1024
V3_CLONES static void fwd_run(size_t n, const float *x, float *y) {
    v16 g[BLOCK / GL];
    size_t nv = n / GL;
    for (size_t b = 0; b < nv; b++) {
        v16 v;
        memcpy(&v, x + b * GL, sizeof v);
        g[b] = vcdf(&v);
    }
    if (n % GL) {
        v16 v = {0};
        memcpy(&v, x + nv * GL, sizeof(float) * (n % GL));
        g[nv] = vcdf(&v);
    }
    for (size_t b = 0; b < nv; b++) {
        v16 v;
        memcpy(&v, x + b * GL, sizeof v);
        v *= g[b];
        memcpy(y + b * GL, &v, sizeof v);
    }
    const float *gf = (const float *)g;
    for (size_t i = nv * GL; i < n; i++) y[i] = x[i] * gf[i];
}

static void fwd_rows(size_t n, const float *x, float *y) {
    for (size_t i = 0; i < n; i += BLOCK) fwd_run(n - i < BLOCK ? n - i : BLOCK, x + i, y + i);
}

/* dx = dy * gelu'(x) for n <= BLOCK values (dx may alias dy), the same way (the step calls it in place) */
V3_CLONES static void bwd_run(size_t n, const float *x, const float *dy, float *dx) {
    v16 g[BLOCK / GL];
    size_t nv = n / GL;
    for (size_t b = 0; b < nv; b++) {
        v16 v;
        memcpy(&v, x + b * GL, sizeof v);
        g[b] = vdgelu(&v);
    }
    if (n % GL) {
        v16 v = {0};
        memcpy(&v, x + nv * GL, sizeof(float) * (n % GL));
        g[nv] = vdgelu(&v);
    }
    for (size_t b = 0; b < nv; b++) {
        v16 d;
        memcpy(&d, dy + b * GL, sizeof d);
        d *= g[b];
        memcpy(dx + b * GL, &d, sizeof d);
    }
    const float *gf = (const float *)g;
    for (size_t i = nv * GL; i < n; i++) dx[i] = dy[i] * gf[i];
}

static void bwd_rows(size_t n, const float *x, const float *dy, float *dx) {
    for (size_t i = 0; i < n; i += BLOCK)
        bwd_run(n - i < BLOCK ? n - i : BLOCK, x + i, dy + i, dx + i);
}

/* Elements per task: large enough that the OpenMP fork is noise, small enough that both threads get work. */
#define CHUNK 8192

void cpu_gelu_fwd(size_t n, const float *x, float *y) {
    size_t nb = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        fwd_rows(m, x + i0, y + i0);
    }
}

void cpu_gelu_bwd(size_t n, const float *x, const float *dy, float *dx) {
    size_t nb = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        bwd_rows(m, x + i0, dy + i0, dx + i0);
    }
}

void cpu_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy) {
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > CHUNK)
    for (int r = 0; r < rows; r++) fwd_rows((size_t)cols, x + (size_t)r * ldx, y + (size_t)r * ldy);
}

void cpu_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd) {
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > CHUNK)
    for (int r = 0; r < rows; r++)
        bwd_rows((size_t)cols, x + (size_t)r * ldx, dy + (size_t)r * lddy, dx + (size_t)r * ldd);
}
