/* GELU, linear, nearest upsampling, MSE, add, AdamW: the small CPU reference ops. */
#include <math.h>
#include <string.h>

#include "ops.h"

void ref_gelu_fwd(size_t n, const float *x, float *y) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] * 0.70710678118654752440)));
}

void ref_gelu_bwd(size_t n, const float *x, const float *dy, float *dx) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        double cdf = 0.5 * (1.0 + erf(v * 0.70710678118654752440));
        double pdf = exp(-0.5 * v * v) * 0.39894228040143267794;
        dx[i] = (float)(dy[i] * (cdf + v * pdf));
    }
}

void ref_linear_fwd(int N, int in, int out, const float *x, const float *w, const float *b, float *y) {
    cpu_sgemm(0, 1, N, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (b)
        for (int i = 0; i < N; i++)
            for (int o = 0; o < out; o++) y[(size_t)i * out + o] += b[o];
}

void ref_linear_bwd(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
                    float *db) {
    cpu_sgemm(1, 0, out, in, N, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (dx) cpu_sgemm(0, 0, N, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int i = 0; i < N; i++) s += dy[(size_t)i * out + o];
            db[o] += (float)s;
        }
}

void ref_upsample_fwd(int N, int C, int H, int W, int fh, int fw, const float *x, float *y) {
    int Ho = H * fh, Wo = W * fw;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < N * C; p++) {
        const float *xs = x + (size_t)p * H * W;
        float *ys = y + (size_t)p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) ys[(size_t)oh * Wo + ow] = xs[(size_t)(oh / fh) * W + ow / fw];
    }
}

void ref_upsample_bwd(int N, int C, int H, int W, int fh, int fw, const float *dy, float *dx) {
    int Ho = H * fh, Wo = W * fw;
#pragma omp parallel for schedule(static)
    for (int p = 0; p < N * C; p++) {
        const float *ds = dy + (size_t)p * Ho * Wo;
        float *xs = dx + (size_t)p * H * W;
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                float s = 0;
                for (int i = 0; i < fh; i++)
                    for (int j = 0; j < fw; j++) s += ds[(size_t)(h * fh + i) * Wo + w * fw + j];
                xs[(size_t)h * W + w] = s;
            }
    }
}

double ref_mse(size_t n, const float *a, const float *b) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        s += d * d;
    }
    return s / (double)n;
}

void ref_mse_bwd(size_t n, const float *a, const float *b, float scale, float *da) {
    double k = 2.0 * scale / (double)n;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) da[i] = (float)(k * ((double)a[i] - b[i]));
}

void ref_add_inplace(size_t n, float *y, const float *x) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void ref_adamw(size_t n, float *p, const float *g, float *m, float *v, float lr, float beta1, float beta2,
               float eps, float wd, long t) {
    double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    float step = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        p[i] *= decay;
        m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}

void ref_count_nonfinite(size_t n, const float *x, unsigned long long *count) {
    unsigned long long c = 0;
    for (size_t i = 0; i < n; i++) c += !isfinite(x[i]);
    *count = c;
}
