/* BatchNorm2d forward (train and eval) and backward, per-channel statistics accumulated in double. */
#include <math.h>

#include "ops.h"

void ref_bn2d_fwd_train(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                        float *mean, float *invstd, float *running_mean, float *running_var, float momentum,
                        float eps) {
    double cnt = (double)N * HW;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW;
            for (int k = 0; k < HW; k++) s += p[k];
        }
        double mu = s / cnt;
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW;
            for (int k = 0; k < HW; k++) {
                double d = p[k] - mu;
                ss += d * d;
            }
        }
        double var = ss / cnt; /* biased: used to normalise */
        double is = 1.0 / sqrt(var + eps);
        mean[c] = (float)mu;
        invstd[c] = (float)is;
        float a = (float)(gamma[c] * is), bb = (float)(beta[c] - gamma[c] * is * mu);
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW;
            float *q = y + ((size_t)n * C + c) * HW;
            for (int k = 0; k < HW; k++) q[k] = p[k] * a + bb;
        }
        if (running_mean) {
            double unbiased = cnt > 1 ? ss / (cnt - 1) : var;
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
            running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
        }
    }
}

void ref_bn2d_fwd_eval(int N, int C, int HW, const float *x, const float *gamma, const float *beta, float *y,
                       const float *running_mean, const float *running_var, float eps) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double is = 1.0 / sqrt((double)running_var[c] + eps);
        float a = (float)(gamma[c] * is), bb = (float)(beta[c] - gamma[c] * is * running_mean[c]);
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW;
            float *q = y + ((size_t)n * C + c) * HW;
            for (int k = 0; k < HW; k++) q[k] = p[k] * a + bb;
        }
    }
}

/* dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)), xhat = (x-mean)*invstd. */
void ref_bn2d_bwd(int N, int C, int HW, const float *x, const float *gamma, const float *mean, const float *invstd,
                  const float *dy, float *dx, float *dgamma, float *dbeta) {
    double M = (double)N * HW;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyx = 0, mu = mean[c], is = invstd[c];
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW, *g = dy + ((size_t)n * C + c) * HW;
            for (int k = 0; k < HW; k++) {
                sdy += g[k];
                sdyx += g[k] * ((p[k] - mu) * is);
            }
        }
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        if (!dx) continue;
        double k1 = gamma[c] * is, mdy = sdy / M, mdyx = sdyx / M;
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW, *g = dy + ((size_t)n * C + c) * HW;
            float *d = dx + ((size_t)n * C + c) * HW;
            for (int k = 0; k < HW; k++) d[k] = (float)(k1 * (g[k] - mdy - (p[k] - mu) * is * mdyx));
        }
    }
}
