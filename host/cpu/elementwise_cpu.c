/* The cpu backend's small whole-tensor ops: the reference's arithmetic, spread over the OpenMP pool (the reference
 * runs these on one core) and vectorised.
 *   mse_fwd: fixed chunks of the vector, each summed in double in 8 lanes, then the chunks in order: the same
 *            bits on any thread count; ~1e-16 relative from the reference's one sequential sum.
 *   count_nonfinite: integer counts (exact) from the exponent bits, 16 lanes at a time;
 *   axpy_diff, add_inplace: element by element, the reference's operations: the same bits.
 * AdamW stays the reference's: already parallel, and bound by memory (five float arrays a parameter). */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));

/* elements per task for the element-by-element loops; below two of them the loop stays on one thread */
#define GRAIN 16384

V3_CLONES static double sqdiff_sum(const float *a, const float *b, size_t n) {
    v8d acc = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f fa, fb;
        memcpy(&fa, a + i, sizeof fa);
        memcpy(&fb, b + i, sizeof fb);
        v8d d = __builtin_convertvector(fa, v8d) - __builtin_convertvector(fb, v8d);
        acc += d * d;
    }
    double s = 0;
    for (; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + s;
}

#define MSE_CHUNKS 64
void cpu_mse_fwd(size_t n, const float *a, const float *b, double *out) {
    double part[MSE_CHUNKS];
#pragma omp parallel for schedule(static) if (n >= 2 * GRAIN)
    for (int c = 0; c < MSE_CHUNKS; c++) {
        size_t i0 = n * c / MSE_CHUNKS, i1 = n * (c + 1) / MSE_CHUNKS;
        part[c] = sqdiff_sum(a + i0, b + i0, i1 - i0);
    }
    double s = 0;
    for (int c = 0; c < MSE_CHUNKS; c++) s += part[c];
    *out = s / (double)n;
}

/* values whose exponent bits are all ones (Inf, NaN), 16 lanes at a time */
typedef int v16i __attribute__((vector_size(64)));
V3_CLONES static unsigned long long nonfinite_run(const float *x, size_t n) {
    v16i acc = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16i b;
        memcpy(&b, x + i, sizeof b);
        acc -= (b & 0x7f800000) == 0x7f800000; /* a true lane is -1 */
    }
    unsigned long long c = 0;
    for (int l = 0; l < 16; l++) c += (unsigned)acc[l];
    for (; i < n; i++) c += !isfinite(x[i]);
    return c;
}

void cpu_count_nonfinite(size_t n, const float *x, unsigned long long *count) {
    size_t nb = (n + GRAIN - 1) / GRAIN;
    unsigned long long c = 0;
#pragma omp parallel for schedule(static) reduction(+ : c) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * GRAIN;
        c += nonfinite_run(x + i0, n - i0 < GRAIN ? n - i0 : GRAIN);
    }
    *count = c;
}

void cpu_axpy_diff(size_t n, double k, const float *a, const float *b, float *g) {
#pragma omp parallel for schedule(static) if (n >= 2 * GRAIN)
    for (size_t i = 0; i < n; i++) g[i] += (float)(k * ((double)a[i] - (b ? b[i] : 0.0f)));
}

/* y += x, 16 lanes (the reference's loop is scalar: the compiler cannot rule out overlap) */
V3_CLONES static void add_run(size_t n, float *y, const float *x) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 a, b;
        memcpy(&a, y + i, sizeof a);
        memcpy(&b, x + i, sizeof b);
        a += b;
        memcpy(y + i, &a, sizeof a);
    }
    for (; i < n; i++) y[i] += x[i];
}

void cpu_add_inplace(size_t n, float *y, const float *x) {
    size_t nb = (n + GRAIN - 1) / GRAIN;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * GRAIN;
        add_run(n - i0 < GRAIN ? n - i0 : GRAIN, y + i0, x + i0);
    }
}
