/* GELU forward and backward on the cpu backend: the reference's double-precision formula (exact erf), vectorised.
 *
 * The reference calls libm's scalar erf and exp in double for every element (a third of the width-16 step). Here
 * the same quantities are computed in double, 8 lanes at a time, from our own approximations (fitted with mpmath,
 * NOTES "GELU"), accurate to ~1e-11 relative, far below float32's 6e-8: the float results equal the reference's
 * except where the exact value lies within ~1e-11 of a rounding boundary (then one ulp apart).
 *   t = |x| / sqrt(2), e = exp(-t^2) = exp(-x^2 / 2) (both passes need it: the pdf, and erfc's factor);
 *   t <= 0.75:   erf(t)  = t * A(t^2)                   A of degree 7, 5e-13 relative;
 *   0.75 < t <= 10.5: erfc(t) = e * B(1 / (1 + t / 2)) B of degree 13, 2e-12 relative;
 *   t > 10.5:    erfc(t) = 0 (below 1e-49: x * erfc underflows float32).
 * cdf = (1 + erf(x / sqrt 2)) / 2 from whichever applies, without the reference's cancellation for negative x.
 * Plain C on GNU vectors with no FMA contraction (C11): every ISA clone gives the same bits, every element goes
 * through the same code (tails are padded to a whole vector), so results depend on nothing but x. */
#include <string.h>

#include "cpu_internal.h"

typedef double v8d __attribute__((vector_size(64)));
typedef long long v8l __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
#define GL 8

/* Helpers take and return vectors by value but are always inlined: no call, so no ABI to warn about. */
#define AINL static inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* m ? a : b per lane (m from a comparison: all ones or zero) */
#define SEL(m, a, b) ((v8d)(((v8l)(a) & (m)) | ((v8l)(b) & ~(m))))

/* exp(y) for y in [-700, 0]: y = k ln2 + r, |r| <= ln2/2, Taylor of degree 11 (r^12/12! < 3e-15) times 2^k */
AINL v8d vexp(const v8d *yp) {
    v8d y = *yp;
    const double shift = 0x1.8p52; /* adding it rounds y/ln2 to an integer held in the low mantissa bits */
    v8d kd = y * 0x1.71547652b82fep+0 + shift;
    v8l k = (v8l)kd - (long long)0x4338000000000000LL; /* the bits of shift */
    kd = kd - shift;
    v8d r = y - kd * 0x1.62e42fee00000p-1 - kd * 0x1.a39ef35793c76p-33; /* ln2 in two parts: the first product exact */
    v8d p = r * (1.0 / 39916800) + 1.0 / 3628800;
    p = p * r + 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    return p * (v8d)((k + 1023) << 52);
}

/* cdf = Phi(x) and e = exp(-x^2/2) of 8 values */
AINL void phi(const v8d *xp, v8d *cdf, v8d *e) {
    v8d x = *xp;
    v8d ax = (v8d)((v8l)x & 0x7fffffffffffffffLL);
    v8d t = ax * 0.70710678118654752440;
    v8d tc = SEL(t > 26.0, (v8d){} + 26.0, t); /* keeps exp's 2^k normal; NaN stays NaN */
    v8d mt2 = -(tc * tc);
    *e = vexp(&mt2);
    v8d s = tc * tc;
    v8d a = s * -0x1.88ee389e2b310p-17 + 0x1.ee0929f408717p-14;
    a = a * s - 0x1.bf847a1103fb1p-11;
    a = a * s + 0x1.5656736122f0bp-8;
    a = a * s - 0x1.b82cb46b68cabp-6;
    a = a * s + 0x1.ce2f20dce9e90p-4;
    a = a * s - 0x1.812746af138bbp-2;
    a = a * s + 0x1.20dd7504298a1p+0;
    v8d erf_small = tc * a;
    v8d u = 1.0 / (tc * 0.5 + 1.0);
    v8d b = u * -0x1.f16cc65159f06p-5 + 0x1.5a954b39d8a15p-2;
    b = b * u - 0x1.90cf06d9c50eep-1;
    b = b * u + 0x1.d76b891154163p-1;
    b = b * u - 0x1.0c24c45335ccdp-1;
    b = b * u + 0x1.02b601fac701fp-3;
    b = b * u - 0x1.488ef434011dep-4;
    b = b * u - 0x1.c4a03360c72c9p-7;
    b = b * u + 0x1.7041b232e2f2dp-4;
    b = b * u + 0x1.6584409971098p-3;
    b = b * u + 0x1.fa1f1b96fa847p-3;
    b = b * u + 0x1.20d53bd2bd9b0p-2;
    b = b * u + 0x1.20ddf4c0b902cp-2;
    b = b * u - 0x1.b4b245114d1a5p-25;
    v8d erfc_big = SEL(t > 10.5, (v8d){}, *e * b);
    v8l small = t <= 0.75, neg = x < 0.0;
    v8d hi = SEL(small, 0.5 + 0.5 * erf_small, 1.0 - 0.5 * erfc_big); /* Phi(|x|) */
    v8d lo = SEL(small, 0.5 - 0.5 * erf_small, 0.5 * erfc_big);       /* Phi(-|x|) */
    *cdf = SEL(neg, lo, hi);
}

AINL v8d load8(const float *p) {
    v8f f;
    memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, v8d);
}
AINL void store8(float *p, const v8d *v) {
    v8f f = __builtin_convertvector(*v, v8f);
    memcpy(p, &f, sizeof f);
}

/* y = gelu(x) for n values; the tail through a padded vector */
V3_CLONES static void fwd_run(size_t n, const float *x, float *y) {
    size_t i = 0;
    for (; i + GL <= n; i += GL) {
        v8d v = load8(x + i), cdf, e;
        phi(&v, &cdf, &e);
        v8d o = v * cdf;
        store8(y + i, &o);
    }
    if (i < n) {
        float xb[GL] = {0}, yb[GL];
        memcpy(xb, x + i, sizeof(float) * (n - i));
        v8d v = load8(xb), cdf, e;
        phi(&v, &cdf, &e);
        v8d o = v * cdf;
        store8(yb, &o);
        memcpy(y + i, yb, sizeof(float) * (n - i));
    }
}

/* dx = dy * gelu'(x) for n values (dx may alias dy) */
V3_CLONES static void bwd_run(size_t n, const float *x, const float *dy, float *dx) {
    size_t i = 0;
    for (; i + GL <= n; i += GL) {
        v8d v = load8(x + i), cdf, e;
        phi(&v, &cdf, &e);
        v8d o = load8(dy + i) * (cdf + v * (e * 0.39894228040143267794));
        store8(dx + i, &o);
    }
    if (i < n) {
        float xb[GL] = {0}, db[GL] = {0}, ob[GL];
        memcpy(xb, x + i, sizeof(float) * (n - i));
        memcpy(db, dy + i, sizeof(float) * (n - i));
        v8d v = load8(xb), cdf, e;
        phi(&v, &cdf, &e);
        v8d o = load8(db) * (cdf + v * (e * 0.39894228040143267794));
        store8(ob, &o);
        memcpy(dx + i, ob, sizeof(float) * (n - i));
    }
}

/* Elements per task: large enough that the OpenMP fork is noise, small enough that both threads get work. */
#define CHUNK 8192

void cpu_gelu_fwd(size_t n, const float *x, float *y) {
    size_t nb = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        fwd_run(m, x + i0, y + i0);
    }
}

void cpu_gelu_bwd(size_t n, const float *x, const float *dy, float *dx) {
    size_t nb = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        bwd_run(m, x + i0, dy + i0, dx + i0);
    }
}

void cpu_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy) {
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > CHUNK)
    for (int r = 0; r < rows; r++) fwd_run((size_t)cols, x + (size_t)r * ldx, y + (size_t)r * ldy);
}

void cpu_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd) {
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > CHUNK)
    for (int r = 0; r < rows; r++)
        bwd_run((size_t)cols, x + (size_t)r * ldx, dy + (size_t)r * lddy, dx + (size_t)r * ldd);
}
