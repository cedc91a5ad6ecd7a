/* BatchNorm2d on the cpu backend: the reference's arithmetic (double statistics, float affine map) spread over
 * planes instead of channels, and vectorised.
 *
 * The reference runs one channel per thread with sequential double sums: the width-16 model's 1- and 3-channel
 * layers ran on one core, element by element. Here each (image, channel) plane is one task: its sums are taken in
 * 8 double lanes (then the lanes and the scalar tail in a fixed order) and stored; each channel then adds its
 * planes in image order. No step depends on the thread count, so the bits do not either. The statistics differ
 * from ref's only by the order of double additions (~1e-16 relative); y = x * a + b is then ref's float map with
 * the same a and b. The convolutions' bias gradient (per-channel sums of dy) is the same reduction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_internal.h"

typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));
#define BL 8

static inline __attribute__((always_inline)) void load8(v8d *v, const float *p) {
    v8f f;
    memcpy(&f, p, sizeof f);
    *v = __builtin_convertvector(f, v8d);
}
static inline __attribute__((always_inline)) double lanes(const v8d *v) {
    return (((*v)[0] + (*v)[1]) + ((*v)[2] + (*v)[3])) + (((*v)[4] + (*v)[5]) + ((*v)[6] + (*v)[7]));
}

/* sum of p[k] and, when mu is given, of (p[k] - mu)^2 */
V3_CLONES static double plane_sum(const float *p, int n) {
    v8d acc = {0};
    int k = 0;
    for (; k + BL <= n; k += BL) {
        v8d v;
        load8(&v, p + k);
        acc += v;
    }
    double t = 0;
    for (; k < n; k++) t += p[k];
    return lanes(&acc) + t;
}
V3_CLONES static double plane_sqdev(const float *p, int n, double mu) {
    v8d acc = {0};
    int k = 0;
    for (; k + BL <= n; k += BL) {
        v8d v;
        load8(&v, p + k);
        v -= mu;
        acc += v * v;
    }
    double t = 0;
    for (; k < n; k++) t += (p[k] - mu) * (p[k] - mu);
    return lanes(&acc) + t;
}
/* q = p * a + b in float (ref's map, the same bits; q may alias p) */
V3_CLONES static void plane_affine(const float *p, float *q, int n, float a, float b) {
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        v16 v;
        memcpy(&v, p + k, sizeof v);
        v = v * a + b;
        memcpy(q + k, &v, sizeof v);
    }
    for (; k < n; k++) q[k] = p[k] * a + b;
}
/* sum dy and sum dy * (x - mu) * is */
V3_CLONES static void plane_dsums(const float *p, const float *g, int n, double mu, double is, double *sdy,
                                  double *sdyx) {
    v8d a1 = {0}, a2 = {0};
    int k = 0;
    for (; k + BL <= n; k += BL) {
        v8d v, d;
        load8(&v, p + k);
        load8(&d, g + k);
        a1 += d;
        a2 += d * ((v - mu) * is);
    }
    double t1 = 0, t2 = 0;
    for (; k < n; k++) {
        t1 += g[k];
        t2 += g[k] * ((p[k] - mu) * is);
    }
    *sdy = lanes(&a1) + t1;
    *sdyx = lanes(&a2) + t2;
}
/* dx = k1 * (dy - mdy - (x - mu) * is * mdyx) in double, stored as float (dx may alias dy) */
V3_CLONES static void plane_dx(const float *p, const float *g, float *d, int n, double k1, double mdy, double mu,
                               double is, double mdyx) {
    int k = 0;
    for (; k + BL <= n; k += BL) {
        v8d v, w;
        load8(&v, p + k);
        load8(&w, g + k);
        v8f o = __builtin_convertvector(k1 * (w - mdy - (v - mu) * is * mdyx), v8f);
        memcpy(d + k, &o, sizeof o);
    }
    for (; k < n; k++) d[k] = (float)(k1 * (g[k] - mdy - (p[k] - mu) * is * mdyx));
}

/* below this many elements the OpenMP fork costs more than it saves */
#define PAR_MIN 32768

void cpu_bn2d_fwd_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                        float *mean, float *invstd, float *running_mean, float *running_var, float momentum,
                        float eps) {
    size_t P = (size_t)N * C;
    int par = P * HW >= PAR_MIN;
    double cnt = (double)N * HW, *part = xmalloc(sizeof(double) * P), *mu = xmalloc(sizeof(double) * 2 * C),
           *is = mu + C;
#pragma omp parallel for schedule(static) if (par)
    for (size_t q = 0; q < P; q++) part[q] = plane_sum(x + q * HW, HW);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += part[(size_t)n * C + c];
        mu[c] = s / cnt;
    }
#pragma omp parallel for schedule(static) if (par)
    for (size_t q = 0; q < P; q++) part[q] = plane_sqdev(x + q * HW, HW, mu[q % C]);
    float *a = xmalloc(sizeof(float) * 2 * C), *bb = a + C;
    for (int c = 0; c < C; c++) {
        double ss = 0;
        for (int n = 0; n < N; n++) ss += part[(size_t)n * C + c];
        double var = ss / cnt; /* biased: used to normalise */
        is[c] = 1.0 / sqrt(var + eps);
        mean[c] = (float)mu[c];
        invstd[c] = (float)is[c];
        a[c] = (float)(gamma[c] * is[c]);
        bb[c] = (float)(beta[c] - gamma[c] * is[c] * mu[c]);
        if (running_mean) {
            double unbiased = cnt > 1 ? ss / (cnt - 1) : var;
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu[c]);
            running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
        }
    }
#pragma omp parallel for schedule(static) if (par)
    for (size_t q = 0; q < P; q++) plane_affine(x + q * HW, y + q * HW, HW, a[q % C], bb[q % C]);
    free(part), free(mu), free(a);
}

void cpu_bias_grad(const float *dy, int N, int C, size_t HW, float *db) {
    if (!db) return;
    size_t P = (size_t)N * C;
    double *part = xmalloc(sizeof(double) * (P ? P : 1));
#pragma omp parallel for schedule(static) if (P * HW >= PAR_MIN)
    for (size_t q = 0; q < P; q++) part[q] = plane_sum(dy + q * HW, (int)HW);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += part[(size_t)n * C + c];
        db[c] += (float)s;
    }
    free(part);
}

void cpu_bn2d_fwd_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                       const float *running_mean, const float *running_var, float eps) {
    size_t P = (size_t)N * C;
    float *a = xmalloc(sizeof(float) * 2 * C), *bb = a + C;
    for (int c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)running_var[c] + eps);
        a[c] = (float)(gamma[c] * is);
        bb[c] = (float)(beta[c] - gamma[c] * is * running_mean[c]);
    }
#pragma omp parallel for schedule(static) if (P * HW >= PAR_MIN)
    for (size_t q = 0; q < P; q++) plane_affine(x + q * HW, y + q * HW, HW, a[q % C], bb[q % C]);
    free(a);
}

void cpu_bn2d_bwd(int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,
                  const float *dy, float *dx, float *dgamma, float *dbeta) {
    size_t P = (size_t)N * C;
    int par = P * HW >= PAR_MIN;
    double M = (double)N * HW, *part = xmalloc(sizeof(double) * 2 * P), *k = xmalloc(sizeof(double) * 2 * C);
#pragma omp parallel for schedule(static) if (par)
    for (size_t q = 0; q < P; q++)
        plane_dsums(x + q * HW, dy + q * HW, HW, mean[q % C], invstd[q % C], &part[2 * q], &part[2 * q + 1]);
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0;
        for (int n = 0; n < N; n++) {
            sdy += part[2 * ((size_t)n * C + c)];
            sdyx += part[2 * ((size_t)n * C + c) + 1];
        }
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        k[2 * c] = sdy / M;
        k[2 * c + 1] = sdyx / M;
    }
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (size_t q = 0; q < P; q++) {
            int c = (int)(q % C);
            double is = invstd[c];
            plane_dx(x + q * HW, dy + q * HW, dx + q * HW, HW, gamma[c] * is, k[2 * c], mean[c], is, k[2 * c + 1]);
        }
    }
    free(part), free(k);
}
