/* CUDA kernels against the CPU reference ops (tests/run_gpu_tests, `make test-gpu`).
 * Every test starts with REQUIRE_GPU(): without a usable device the first gpu test prints one line
 * "SKIP: no CUDA device (<reason>)" and every test returns 77 (SKIP), so the runner exits 0.
 * Each kernel test draws fresh random inputs at several shapes (odd sizes, sizes that cross block and chunk
 * boundaries, the authors' sizes: batch 32 x 12 fragments = 384, 512 channels, fragment length 32), fills the
 * device outputs with NaN bytes (0xFF) before the run, and compares with the cpu_* reference using
 * max_scaled_err (NaN or Inf anywhere fails). Bounds: elementwise 1e-6 relative (tiny atol), reductions and
 * BatchNorm 1e-5, AdamW 1e-6 after several steps; reductions must also be bit-identical run to run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "ops.h"
#include "gpu_test.h"
#include "testing.h"

#define EW_ATOL 1e-12
#define EW_RTOL 1e-6
#define RED_ATOL 1e-6
#define RED_RTOL 1e-5

/* Flat sizes: empty, tiny, around the 256-thread block, odd, past the 8192-block grid cap (grid-stride loop),
 * and the authors' activation size 32 x 12 fragments x 512 channels x 32 steps. */
static const size_t k_sizes[] = {0, 1, 2, 255, 256, 257, 4099, 1000003, 2097152 + 77, (size_t)384 * 512 * 32};
#define N_SIZES (sizeof k_sizes / sizeof k_sizes[0])

/* ---- tests ---- */

TEST(gpu_probe) {
    REQUIRE_GPU();
    char again[256];
    int n = cuda_probe(again, sizeof again);
    CHECK(n > 0 && !strcmp(again, gpu_desc()), "cuda_probe is not stable: %d '%s' then '%s'", n, gpu_desc(), again);
    printf("GPU: %d usable device(s); %s\n", n, gpu_desc());
    return 0;
}

static int gelu_case(int bwd, size_t n, unsigned long long seed) {
    float *x = hrand(n, seed, -8.0f, 8.0f), *dy = hrand(n, seed + 1, -2.0f, 2.0f);
    for (size_t i = 0; i < n; i += 7) x[i] *= 1e-4f; /* small inputs: relative accuracy near 0 */
    float *ref = falloc(n), *got = falloc(n);
    poison(ref, n);
    if (bwd) ref_gelu_bwd(n, x, dy, ref);
    else ref_gelu_fwd(n, x, ref);
    float *dx_ = dput(x, n), *ddy = dput(dy, n), *dout = dnan(n);
    if (bwd) cuda_gelu_bwd(n, dx_, ddy, dout);
    else cuda_gelu_fwd(n, dx_, dout);
    int ok = dget(got, dout, n) && close_enough(bwd ? "gelu_bwd dx" : "gelu_fwd y", got, ref, n, EW_ATOL, EW_RTOL);
    cuda_free(dx_), cuda_free(ddy), cuda_free(dout);
    ffree(x), ffree(dy), ffree(ref), ffree(got);
    return ok;
}

TEST(gpu_vs_cpu_gelu_fwd) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_SIZES; k++) CHECK(gelu_case(0, k_sizes[k], 100 + k), "n = %zu", k_sizes[k]);
    return 0;
}

TEST(gpu_vs_cpu_gelu_bwd) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_SIZES; k++) CHECK(gelu_case(1, k_sizes[k], 200 + k), "n = %zu", k_sizes[k]);
    return 0;
}

TEST(gpu_vs_cpu_add_inplace) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = k_sizes[k];
        float *y = hrand(n, 300 + k, -3.0f, 3.0f), *x = hrand(n, 350 + k, -3.0f, 3.0f), *got = falloc(n);
        float *dy = dput(y, n), *dx = dput(x, n);
        ref_add_inplace(n, y, x);
        cuda_add_inplace(n, dy, dx);
        int ok = dget(got, dy, n) && close_enough("add_inplace y", got, y, n, EW_ATOL, EW_RTOL);
        cuda_free(dy), cuda_free(dx);
        ffree(y), ffree(x), ffree(got);
        CHECK(ok, "n = %zu", n);
    }
    return 0;
}

/* The straight-through value z + (q - z) must round exactly as the host's float32 (it decides which ties
 * PyTorch's training sees): bit-identical, not just close. */
TEST(gpu_vs_cpu_ste_value_bit_identical) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = k_sizes[k];
        float *z = hrand(n, 380 + k, -3.0f, 3.0f), *q = hrand(n, 390 + k, -3.0f, 3.0f), *ref = falloc(n),
              *got = falloc(n);
        poison(ref, n);
        v3_ste_value(n, z, q, ref);
        float *dz = dput(z, n), *dq = dput(q, n), *dout = dnan(n);
        cuda_ste_value(n, dz, dq, dout);
        int ok = dget(got, dout, n) && (n == 0 || !memcmp(got, ref, sizeof(float) * n));
        cuda_free(dz), cuda_free(dq), cuda_free(dout);
        ffree(z), ffree(q), ffree(ref), ffree(got);
        CHECK(ok, "n = %zu: device z + (q - z) differs from the host's float32 bits", n);
    }
    return 0;
}

typedef struct { int N, C, H, W, fh, fw; } UpShape;
static const UpShape k_up[] = {
    {1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 2, 3}, {2, 3, 5, 7, 2, 2}, {3, 2, 4, 5, 1, 3}, {1, 4, 3, 1, 3, 1},
    {2, 5, 7, 9, 2, 3}, {3, 7, 11, 13, 3, 2}, {32, 512, 12, 16, 2, 2}, /* 3.1M in, 12.6M out */
    {384, 32, 16, 16, 1, 2},                                         /* 3.1M in, 6.3M out */
};

static int upsample_case(int bwd, const UpShape *s, unsigned long long seed) {
    size_t nin = (size_t)s->N * s->C * s->H * s->W, nout = nin * s->fh * s->fw;
    size_t nsrc = bwd ? nout : nin, ndst = bwd ? nin : nout;
    float *src = hrand(nsrc, seed, -2.0f, 2.0f), *ref = falloc(ndst), *got = falloc(ndst);
    poison(ref, ndst);
    if (bwd) ref_upsample_bwd(s->N, s->C, s->H, s->W, s->fh, s->fw, src, ref);
    else ref_upsample_fwd(s->N, s->C, s->H, s->W, s->fh, s->fw, src, ref);
    float *dsrc = dput(src, nsrc), *ddst = dnan(ndst);
    if (bwd) cuda_upsample_bwd(s->N, s->C, s->H, s->W, s->fh, s->fw, dsrc, ddst);
    else cuda_upsample_fwd(s->N, s->C, s->H, s->W, s->fh, s->fw, dsrc, ddst);
    int ok = dget(got, ddst, ndst) &&
             close_enough(bwd ? "upsample_bwd dx" : "upsample_fwd y", got, ref, ndst, EW_ATOL, EW_RTOL);
    cuda_free(dsrc), cuda_free(ddst);
    ffree(src), ffree(ref), ffree(got);
    return ok;
}

TEST(gpu_vs_cpu_upsample_fwd) {
    REQUIRE_GPU();
    for (size_t k = 0; k < sizeof k_up / sizeof k_up[0]; k++) {
        const UpShape *s = &k_up[k];
        CHECK(upsample_case(0, s, 400 + k), "N=%d C=%d H=%d W=%d fh=%d fw=%d", s->N, s->C, s->H, s->W, s->fh, s->fw);
    }
    return 0;
}

TEST(gpu_vs_cpu_upsample_bwd) {
    REQUIRE_GPU();
    for (size_t k = 0; k < sizeof k_up / sizeof k_up[0]; k++) {
        const UpShape *s = &k_up[k];
        CHECK(upsample_case(1, s, 450 + k), "N=%d C=%d H=%d W=%d fh=%d fw=%d", s->N, s->C, s->H, s->W, s->fh, s->fw);
    }
    return 0;
}

TEST(gpu_vs_cpu_mse_fwd) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = k_sizes[k];
        float *a = hrand(n, 500 + k, -1.0f, 3.0f), *b = hrand(n, 550 + k, -2.0f, 2.0f);
        float *da = dput(a, n), *db = dput(b, n);
        double ref = ref_mse(n, a, b);
        double got = cuda_mse_value(n, da, db), again = cuda_mse_value(n, da, db), same = cuda_mse_value(n, da, da);
        cuda_free(da), cuda_free(db);
        ffree(a), ffree(b);
        if (n == 0) {
            CHECK(isnan(got) && isnan(ref), "n = 0: gpu %g, cpu %g (both should be NaN, the mean of nothing)", got,
                  ref);
            continue;
        }
        /* Double accumulation on both sides: the sums differ only in order, far below the bound. */
        CHECK(isfinite(got) && fabs(got - ref) <= RED_RTOL * fabs(ref), "n = %zu: gpu %.17g, cpu %.17g", n, got,
              ref);
        CHECK(memcmp(&got, &again, sizeof got) == 0, "n = %zu: not deterministic: %.17g then %.17g", n, got, again);
        CHECK(same == 0.0, "n = %zu: mse(a, a) = %g, expected exactly 0", n, same);
    }
    return 0;
}

TEST(gpu_vs_cpu_mse_bwd) {
    REQUIRE_GPU();
    const float scales[] = {1.0f, 0.37f, -2.5f};
    for (size_t k = 0; k < N_SIZES; k++) {
        size_t n = k_sizes[k];
        float scale = scales[k % 3];
        float *a = hrand(n, 600 + k, -1.0f, 3.0f), *b = hrand(n, 650 + k, -2.0f, 2.0f);
        float *ref = falloc(n), *got = falloc(n);
        poison(ref, n);
        ref_mse_bwd(n, a, b, scale, ref);
        float *da = dput(a, n), *db = dput(b, n), *dg = dnan(n);
        cuda_mse_bwd(n, da, db, scale, dg);
        int ok = dget(got, dg, n) && close_enough("mse_bwd da", got, ref, n, EW_ATOL, EW_RTOL);
        cuda_free(da), cuda_free(db), cuda_free(dg);
        ffree(a), ffree(b), ffree(ref), ffree(got);
        CHECK(ok, "n = %zu, scale %g", n, scale);
    }
    return 0;
}

typedef struct { float lr, b1, b2, eps, wd; } AdamHp;

static int adamw_case(size_t n, const AdamHp *h, int steps, unsigned long long seed) {
    float *p = hrand(n, seed, -1.0f, 1.0f), *m = falloc(n), *v = falloc(n), *g = falloc(n);
    float *dp = dput(p, n), *dm = dput(m, n), *dv = dput(v, n), *dg = dnan(n);
    float *got = falloc(n);
    int ok = 1;
    for (int t = 1; t <= steps && ok; t++) {
        fill_uniform(g, n, seed + 1000 * t, -1.0f, 1.0f);
        for (size_t i = t; i < n; i += 11) g[i] *= 1e-3f; /* a spread of gradient magnitudes */
        if (cuda_h2d(dg, g, n * sizeof(float))) V3_FATAL("%s", v3_last_error());
        ref_adamw(n, p, g, m, v, h->lr, h->b1, h->b2, h->eps, h->wd, t);
        cuda_adamw(n, dp, dg, dm, dv, h->lr, h->b1, h->b2, h->eps, h->wd, t);
    }
    ok = ok && dget(got, dp, n) && close_enough("adamw p", got, p, n, EW_ATOL, EW_RTOL);
    ok = ok && dget(got, dm, n) && close_enough("adamw m", got, m, n, EW_ATOL, EW_RTOL);
    ok = ok && dget(got, dv, n) && close_enough("adamw v", got, v, n, EW_ATOL, EW_RTOL);
    cuda_free(dp), cuda_free(dm), cuda_free(dv), cuda_free(dg);
    ffree(p), ffree(m), ffree(v), ffree(g), ffree(got);
    return ok;
}

TEST(gpu_vs_cpu_adamw) {
    REQUIRE_GPU();
    /* The configs' optimizer (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.1) and a harsher one. */
    const AdamHp hps[] = {{1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f}, {3e-2f, 0.5f, 0.9f, 1e-6f, 0.0f}};
    /* sizes: tiny, odd, a 512x512x3x3 conv weight (+1) */
    const size_t sizes[] = {1, 3, 1000, 65537, (size_t)512 * 512 * 9 + 1};
    for (size_t h = 0; h < 2; h++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            CHECK(adamw_case(sizes[k], &hps[h], 6, 700 + 10 * h + k), "n = %zu, hyperparameters #%zu, 6 steps",
                  sizes[k], h);
    return 0;
}

/* BatchNorm shapes [N, C, HW]: single element, odd, one channel crossing the stats chunk (4096) boundary, 1x1
 * spatial, channels longer than 256 chunks (the split cap), and the authors' sizes (fragments 384 = 32 x 12,
 * channels 512 or 32, fragment length 32). */
typedef struct { int N, C, HW; } BnShape;
static const BnShape k_bn[] = {
    {1, 1, 1}, {2, 3, 5}, {3, 7, 33}, {1, 5, 4097}, {16, 3, 1000}, {5, 9, 1}, {2, 300, 3},
    {384, 3, 4096}, {384, 32, 512}, {32, 512, 384}, {384, 512, 32},
};
#define N_BN (sizeof k_bn / sizeof k_bn[0])

static int bn_train_case(const BnShape *s, int with_running, unsigned long long seed) {
    size_t n = (size_t)s->N * s->C * s->HW, C = (size_t)s->C;
    float *x = hrand(n, seed, 2.0f, 4.0f); /* offset data: the variance must not come from E[x^2] - E[x]^2 */
    float *gamma = hrand(C, seed + 1, 0.5f, 1.5f), *beta = hrand(C, seed + 2, -0.5f, 0.5f);
    float *rm = hrand(C, seed + 3, -1.0f, 1.0f), *rv = hrand(C, seed + 4, 0.5f, 2.0f);
    float *rm_ref = hcopy(rm, C), *rv_ref = hcopy(rv, C);
    float *y = falloc(n), *mean = falloc(C), *invstd = falloc(C), *got = falloc(n);
    poison(y, n), poison(mean, C), poison(invstd, C);
    ref_bn2d_fwd_train(s->N, s->C, s->HW, x, gamma, beta, y, mean, invstd, with_running ? rm_ref : NULL,
                       with_running ? rv_ref : NULL, 0.1f, 1e-5f);
    float *dx = dput(x, n), *dgm = dput(gamma, C), *dbt = dput(beta, C), *drm = dput(rm, C), *drv = dput(rv, C);
    float *dy = dnan(n), *dmean = dnan(C), *dinv = dnan(C);
    cuda_bn2d_fwd_train(s->N, s->C, s->HW, dx, dgm, dbt, dy, dmean, dinv, with_running ? drm : NULL,
                        with_running ? drv : NULL, 0.1f, 1e-5f);
    int ok = dget(got, dy, n) && close_enough("bn_train y", got, y, n, RED_ATOL, RED_RTOL);
    ok = ok && dget(got, dmean, C) && close_enough("bn_train mean", got, mean, C, RED_ATOL, RED_RTOL);
    ok = ok && dget(got, dinv, C) && close_enough("bn_train invstd", got, invstd, C, RED_ATOL, RED_RTOL);
    ok = ok && dget(got, drm, C) && close_enough("bn_train running_mean", got, rm_ref, C, RED_ATOL, RED_RTOL);
    ok = ok && dget(got, drv, C) && close_enough("bn_train running_var", got, rv_ref, C, RED_ATOL, RED_RTOL);
    if (ok) { /* determinism: a second run gives the same bits */
        float *first = falloc(n), *first_inv = falloc(C);
        ok = dget(first, dy, n) && dget(first_inv, dinv, C);
        cuda_bn2d_fwd_train(s->N, s->C, s->HW, dx, dgm, dbt, dy, dmean, dinv, NULL, NULL, 0.1f, 1e-5f);
        ok = ok && dget(got, dy, n) && !memcmp(got, first, n * sizeof(float)) && dget(got, dinv, C) &&
             !memcmp(got, first_inv, C * sizeof(float));
        if (!ok) fprintf(stderr, "    bn_train: a second run on the same input gave different bits\n");
        ffree(first), ffree(first_inv);
    }
    cuda_free(dx), cuda_free(dgm), cuda_free(dbt), cuda_free(drm), cuda_free(drv);
    cuda_free(dy), cuda_free(dmean), cuda_free(dinv);
    ffree(x), ffree(gamma), ffree(beta), ffree(rm), ffree(rv), ffree(rm_ref), ffree(rv_ref);
    ffree(y), ffree(mean), ffree(invstd), ffree(got);
    return ok;
}

TEST(gpu_vs_cpu_bn2d_fwd_train) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_BN; k++) {
        const BnShape *s = &k_bn[k];
        CHECK(bn_train_case(s, 1, 800 + 10 * k), "N=%d C=%d HW=%d", s->N, s->C, s->HW);
    }
    CHECK(bn_train_case(&k_bn[2], 0, 890), "N=%d C=%d HW=%d without running statistics", k_bn[2].N, k_bn[2].C,
          k_bn[2].HW);
    return 0;
}

TEST(gpu_vs_cpu_bn2d_fwd_eval) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_BN; k++) {
        const BnShape *s = &k_bn[k];
        size_t n = (size_t)s->N * s->C * s->HW, C = (size_t)s->C;
        unsigned long long seed = 900 + 10 * k;
        float *x = hrand(n, seed, -3.0f, 5.0f), *gamma = hrand(C, seed + 1, 0.5f, 1.5f);
        float *beta = hrand(C, seed + 2, -0.5f, 0.5f), *rm = hrand(C, seed + 3, -1.0f, 1.0f);
        float *rv = hrand(C, seed + 4, 0.05f, 3.0f), *y = falloc(n), *got = falloc(n);
        poison(y, n);
        ref_bn2d_fwd_eval(s->N, s->C, s->HW, x, gamma, beta, y, rm, rv, 1e-5f);
        float *dx = dput(x, n), *dgm = dput(gamma, C), *dbt = dput(beta, C), *drm = dput(rm, C), *drv = dput(rv, C);
        float *dy = dnan(n);
        cuda_bn2d_fwd_eval(s->N, s->C, s->HW, dx, dgm, dbt, dy, drm, drv, 1e-5f);
        int ok = dget(got, dy, n) && close_enough("bn_eval y", got, y, n, RED_ATOL, RED_RTOL);
        cuda_free(dx), cuda_free(dgm), cuda_free(dbt), cuda_free(drm), cuda_free(drv), cuda_free(dy);
        ffree(x), ffree(gamma), ffree(beta), ffree(rm), ffree(rv), ffree(y), ffree(got);
        CHECK(ok, "N=%d C=%d HW=%d", s->N, s->C, s->HW);
    }
    return 0;
}

static int bn_bwd_case(const BnShape *s, int with_dx, unsigned long long seed) {
    size_t n = (size_t)s->N * s->C * s->HW, C = (size_t)s->C;
    float *x = hrand(n, seed, -1.0f, 3.0f), *dy = hrand(n, seed + 1, -1.0f, 1.0f);
    float *gamma = hrand(C, seed + 2, 0.5f, 1.5f), *beta = hrand(C, seed + 3, -0.5f, 0.5f);
    float *y = falloc(n), *mean = falloc(C), *invstd = falloc(C);
    ref_bn2d_fwd_train(s->N, s->C, s->HW, x, gamma, beta, y, mean, invstd, NULL, NULL, 0.1f, 1e-5f);
    /* Parameter gradients accumulate: start both sides from the same non-zero values. */
    float *dgamma = hrand(C, seed + 4, -1.0f, 1.0f), *dbeta = hrand(C, seed + 5, -1.0f, 1.0f);
    float *dx = falloc(n), *got = falloc(n);
    poison(dx, n);
    float *d_x = dput(x, n), *d_dy = dput(dy, n), *d_g = dput(gamma, C), *d_mean = dput(mean, C);
    float *d_inv = dput(invstd, C), *d_dg = dput(dgamma, C), *d_db = dput(dbeta, C), *d_dx = dnan(n);
    ref_bn2d_bwd(s->N, s->C, s->HW, x, gamma, mean, invstd, dy, with_dx ? dx : NULL, dgamma, dbeta);
    cuda_bn2d_bwd(s->N, s->C, s->HW, d_x, d_g, d_mean, d_inv, d_dy, with_dx ? d_dx : NULL, d_dg, d_db);
    int ok = 1;
    if (with_dx) ok = dget(got, d_dx, n) && close_enough("bn_bwd dx", got, dx, n, RED_ATOL, RED_RTOL);
    ok = ok && dget(got, d_dg, C) && close_enough("bn_bwd dgamma", got, dgamma, C, RED_ATOL, RED_RTOL);
    ok = ok && dget(got, d_db, C) && close_enough("bn_bwd dbeta", got, dbeta, C, RED_ATOL, RED_RTOL);
    cuda_free(d_x), cuda_free(d_dy), cuda_free(d_g), cuda_free(d_mean), cuda_free(d_inv);
    cuda_free(d_dg), cuda_free(d_db), cuda_free(d_dx);
    ffree(x), ffree(dy), ffree(gamma), ffree(beta), ffree(y), ffree(mean), ffree(invstd);
    ffree(dgamma), ffree(dbeta), ffree(dx), ffree(got);
    return ok;
}

TEST(gpu_vs_cpu_bn2d_bwd) {
    REQUIRE_GPU();
    for (size_t k = 0; k < N_BN; k++) {
        const BnShape *s = &k_bn[k];
        CHECK(bn_bwd_case(s, 1, 1000 + 10 * k), "N=%d C=%d HW=%d", s->N, s->C, s->HW);
    }
    CHECK(bn_bwd_case(&k_bn[3], 0, 1990), "N=%d C=%d HW=%d with dx = NULL", k_bn[3].N, k_bn[3].C, k_bn[3].HW);
    return 0;
}
