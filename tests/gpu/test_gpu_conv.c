/* cuDNN convolutions and cuBLAS GEMMs (kernels/cudnn_conv.cu, kernels/cublas_linear.cu) against the CPU
 * reference ops, in every math mode (tests/run_gpu_tests, `make test-gpu`).
 *
 * Each case draws random inputs in [-1, 1], computes the cpu_* reference once, and for FP32, TF32 and BF16:
 * runs the GPU op into NaN-filled outputs (dx) and into non-zero starting dw/db (accumulation), and compares.
 * Tolerance, per output tensor, relative to its scale s = max|ref| and the length K of the sums behind it:
 *   |gpu - ref| <= (base + 1e-6 sqrt(K)) s + base |ref|,   base = 1e-5 (FP32), 2e-3 (TF32), 2e-2 (BF16).
 * base covers the inputs' rounding (TF32 keeps 10 mantissa bits, bf16 7: a dot product of K random terms then
 * errs by ~2^-11 resp. ~2^-8 of its typical size, plus the bf16 rounding of cuDNN's bf16 output, <= 2^-8 of
 * the element) and, for FP32, the differences of summation order and algorithm (FFT/Winograd are allowed);
 * 1e-6 sqrt(K) covers float accumulation over long sums on both sides (the CPU reference sums sequentially in
 * float: ~6e-8 sqrt(K) relative; dw of a full-batch layer sums over K = N*Ho*Wo = 6.3M terms). K: y cin*kh*kw,
 * dx cout*kh*kw, dw and db N times the output (conv) or input (convT) pixels; linear: in, out, N, N; sgemm: K.
 * NaN or Inf anywhere fails. Every run is also repeated: forward and backward must give identical bits, and the
 * backward with dx = NULL, db = NULL must give the same dw bits. The errors measured are printed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "gpu_test.h"
#include "ops.h"
#include "testing.h"

static const V3Math k_modes[] = {V3_MATH_FP32, V3_MATH_TF32, V3_MATH_BF16};
#define N_MODES 3

static double tol_base(V3Math m) { return m == V3_MATH_FP32 ? 1e-5 : m == V3_MATH_TF32 ? 2e-3 : 2e-2; }

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m || isnan(a[i])) m = isnan(a[i]) ? INFINITY : fabs((double)a[i]);
    return m;
}

/* max|got - ref| / max|ref| (INFINITY on NaN/Inf). */
static double rel_err(const float *got, const float *ref, size_t n) {
    double s = max_abs(ref, n), d = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        double e = fabs((double)got[i] - ref[i]);
        if (e > d) d = e;
    }
    return s > 0 ? d / s : d;
}

/* The bound above; *err receives rel_err for the report. */
static int within(const char *what, const float *got, const float *ref, size_t n, V3Math m, double K, double *err) {
    double base = tol_base(m), s = max_abs(ref, n);
    double atol = (base + 1e-6 * sqrt(K > 1 ? K : 1)) * (s > 1e-30 ? s : 1e-30);
    *err = rel_err(got, ref, n);
    char label[160];
    snprintf(label, sizeof label, "%s (%s)", what, v3_math_name(m));
    return close_enough(label, got, ref, n, atol, base);
}

static int libs_ok(void) {
    if (cuda_libs_load() == 0) return 1;
    fprintf(stderr, "    cuda_libs_load: %s\n", v3_last_error());
    return 0;
}

/* ---- convolutions ---- */

typedef struct {
    const char *name;
    ConvGeom g; /* cin, cout, kh, kw, sh, sw, ph, pw */
    int transposed, N, H, W;
    int show; /* print the plans' algorithm choices */
} ConvCase;

static void out_size(const ConvCase *cc, int *Ho, int *Wo) {
    const ConvGeom *g = &cc->g;
    if (cc->transposed) {
        *Ho = cc->H + g->kh - 1 - 2 * g->ph;
        *Wo = cc->W + g->kw - 1 - 2 * g->pw;
    } else {
        *Ho = conv_out_size(cc->H, g->kh, g->sh, g->ph);
        *Wo = conv_out_size(cc->W, g->kw, g->sw, g->pw);
    }
}

static int same_bits(const char *what, const float *a, const float *b, size_t n) {
    if (!memcmp(a, b, n * sizeof(float))) return 1;
    size_t i = 0;
    while (i < n && !memcmp(&a[i], &b[i], sizeof(float))) i++;
    fprintf(stderr, "    %s: not deterministic: [%zu] %.9g then %.9g\n", what, i, a[i], b[i]);
    return 0;
}

static int conv_case(const ConvCase *cc, unsigned long long seed) {
    const ConvGeom *g = &cc->g;
    int T = cc->transposed, N = cc->N, H = cc->H, W = cc->W, Ho, Wo;
    out_size(cc, &Ho, &Wo);
    size_t nx = (size_t)N * g->cin * H * W, ny = (size_t)N * g->cout * Ho * Wo;
    size_t nw = (size_t)g->cin * g->cout * g->kh * g->kw, nb = (size_t)g->cout;
    float *x = hrand(nx, seed, -1.0f, 1.0f), *w = hrand(nw, seed + 1, -1.0f, 1.0f);
    float *b = hrand(nb, seed + 2, -1.0f, 1.0f);
    float *dy = hrand(ny, seed + 3, -1.0f, 1.0f), *dw0 = hrand(nw, seed + 4, -1.0f, 1.0f);
    float *db0 = hrand(nb, seed + 5, -1.0f, 1.0f);
    float *yref = falloc(ny), *dxref = falloc(nx), *dwref = hcopy(dw0, nw), *dbref = hcopy(db0, nb);
    poison(yref, ny), poison(dxref, nx);
    if (T) {
        ref_convT2d_fwd(g, N, H, W, x, w, b, yref);
        ref_convT2d_bwd(g, N, H, W, x, w, dy, dxref, dwref, dbref);
    } else {
        ref_conv2d_fwd(g, N, H, W, x, w, b, yref);
        ref_conv2d_bwd(g, N, H, W, x, w, dy, dxref, dwref, dbref);
    }
    double K_y = (double)g->cin * g->kh * g->kw, K_dx = (double)g->cout * g->kh * g->kw;
    double K_dw = (double)N * (T ? (double)H * W : (double)Ho * Wo), K_db = (double)N * Ho * Wo;

    float *d_x = dput(x, nx), *d_w = dput(w, nw), *d_b = dput(b, nb), *d_dy = dput(dy, ny);
    float *d_y = dnan(ny), *d_dx = dnan(nx), *d_dw = dnan(nw), *d_db = dnan(nb);
    size_t nmax = nx > ny ? nx : ny;
    if (nw > nmax) nmax = nw;
    float *got = falloc(nmax), *first = falloc(nmax), *dw_first = falloc(nw);
    int ok = 1;
    for (int mi = 0; mi < N_MODES && ok; mi++) {
        V3Math m = k_modes[mi];
        CudaConv *p = cuda_conv_plan(g, T, N, H, W, m);
        if (!p) {
            fprintf(stderr, "    cuda_conv_plan (%s): %s\n", v3_math_name(m), v3_last_error());
            ok = 0;
            break;
        }
        if (cc->show) printf("    plan: %s\n", cuda_conv_describe(p));
        double ey = 0, edx = 0, edw = 0, edb = 0;
        /* forward, twice */
        if (cuda_memset(d_y, 0xFF, ny * sizeof(float))) V3_FATAL("%s", v3_last_error());
        cuda_conv_fwd(p, d_x, d_w, d_b, d_y);
        ok = ok && dget(first, d_y, ny) && within("conv y", first, yref, ny, m, K_y, &ey);
        if (ok) {
            if (cuda_memset(d_y, 0xFF, ny * sizeof(float))) V3_FATAL("%s", v3_last_error());
            cuda_conv_fwd(p, d_x, d_w, d_b, d_y);
            ok = dget(got, d_y, ny) && same_bits("conv y", first, got, ny);
        }
        /* backward: dx overwritten (NaN before), dw and db accumulate into non-zero values */
        if (ok) {
            if (cuda_memset(d_dx, 0xFF, nx * sizeof(float)) || cuda_h2d(d_dw, dw0, nw * sizeof(float)) ||
                cuda_h2d(d_db, db0, nb * sizeof(float)))
                V3_FATAL("%s", v3_last_error());
            cuda_conv_bwd(p, d_x, d_w, d_dy, d_dx, d_dw, d_db);
            ok = dget(got, d_dx, nx) && within("conv dx", got, dxref, nx, m, K_dx, &edx);
            ok = ok && dget(dw_first, d_dw, nw) && within("conv dw", dw_first, dwref, nw, m, K_dw, &edw);
            ok = ok && dget(got, d_db, nb) && within("conv db", got, dbref, nb, m, K_db, &edb);
        }
        /* again without dx and db: the same dw bits */
        if (ok) {
            if (cuda_h2d(d_dw, dw0, nw * sizeof(float))) V3_FATAL("%s", v3_last_error());
            cuda_conv_bwd(p, d_x, d_w, d_dy, NULL, d_dw, NULL);
            ok = dget(got, d_dw, nw) && same_bits("conv dw (second backward, dx = db = NULL)", dw_first, got, nw);
        }
        cuda_conv_destroy(p);
        printf("    %-44s %s: rel err y %.2e dx %.2e dw %.2e db %.2e%s\n", cc->name, v3_math_name(m), ey, edx, edw,
               edb, ok ? "" : "  FAILED");
        fflush(stdout);
    }
    cuda_free(d_x), cuda_free(d_w), cuda_free(d_b), cuda_free(d_dy);
    cuda_free(d_y), cuda_free(d_dx), cuda_free(d_dw), cuda_free(d_db);
    ffree(x), ffree(w), ffree(b), ffree(dy), ffree(dw0), ffree(db0);
    ffree(yref), ffree(dxref), ffree(dwref), ffree(dbref), ffree(got), ffree(first), ffree(dw_first);
    return ok;
}

static int conv_cases(const ConvCase *cs, size_t n, unsigned long long seed) {
    for (size_t k = 0; k < n; k++) {
        const ConvCase *c = &cs[k];
        if (!conv_case(c, seed + 100 * k)) {
            fprintf(stderr, "    case %s: %s %d->%d %dx%d s%d,%d p%d,%d N=%d H=%d W=%d failed\n", c->name,
                    c->transposed ? "convT" : "conv", c->g.cin, c->g.cout, c->g.kh, c->g.kw, c->g.sh, c->g.sw,
                    c->g.ph, c->g.pw, c->N, c->H, c->W);
            return 0;
        }
    }
    return 1;
}

/* Small odd geometries: odd channel counts, 1x1, rectangular kernels with the configs' stride patterns (2,1)
 * and (1,2) on odd sizes, padding above k/2 (a conv output larger than its input), an exactly-fitting kernel,
 * and transposed convs whose output differs from the input size (padding below k/2, an even kernel). */
static const ConvCase k_small[] = {
    {"3->5 3x3 p1", {3, 5, 3, 3, 1, 1, 1, 1}, 0, 2, 7, 9, 0},
    {"T 3->5 3x3 p1", {3, 5, 3, 3, 1, 1, 1, 1}, 1, 2, 7, 9, 0},
    {"4->6 1x1", {4, 6, 1, 1, 1, 1, 0, 0}, 0, 3, 5, 4, 0},
    {"T 4->6 1x1", {4, 6, 1, 1, 1, 1, 0, 0}, 1, 3, 5, 4, 0},
    {"5->7 1x1 s2 (odd input)", {5, 7, 1, 1, 2, 2, 0, 0}, 0, 2, 9, 6, 0},
    {"3->4 3x1 s2,1 p1,0", {3, 4, 3, 1, 2, 1, 1, 0}, 0, 2, 11, 5, 0},
    {"4->3 1x3 s1,2 p0,1", {4, 3, 1, 3, 1, 2, 0, 1}, 0, 3, 5, 11, 0},
    {"2->3 5x3 s2,1 p2,1", {2, 3, 5, 3, 2, 1, 2, 1}, 0, 2, 9, 4, 0},
    {"3->2 9x3 s2 p4,1", {3, 2, 9, 3, 2, 2, 4, 1}, 0, 2, 17, 6, 0},
    {"3->5 3x3 p2 (output > input)", {3, 5, 3, 3, 1, 1, 2, 2}, 0, 2, 4, 5, 0},
    {"1->1 3x3 p0 (one output pixel)", {1, 1, 3, 3, 1, 1, 0, 0}, 0, 1, 3, 3, 0},
    {"7->9 3x3 s2 p1 N=5", {7, 9, 3, 3, 2, 2, 1, 1}, 0, 5, 13, 10, 0},
    {"T 2->3 3x3 p0 (Hy = H+2)", {2, 3, 3, 3, 1, 1, 0, 0}, 1, 2, 5, 6, 0},
    {"T 3->2 4x2 p1,0 (even kernel)", {3, 2, 4, 2, 1, 1, 1, 0}, 1, 2, 6, 5, 0},
    {"T 3->4 5x3 p2,1", {3, 4, 5, 3, 1, 1, 2, 1}, 1, 3, 8, 4, 0},
    {"T 4->1 9x3 p4,1", {4, 1, 9, 3, 1, 1, 4, 1}, 1, 2, 16, 6, 0},
    {"T 6->3 5x5 p2", {6, 3, 5, 5, 1, 1, 2, 2}, 1, 2, 6, 4, 0},
};

/* The insnotes model's layers (configs/insnotes.yaml: 512 x 32 fragments, batch 32 x 12 = 384 fragments; see
 * host/model/model_build.c): encoder cnn_1 (9x3 kernels, stride 2, 4..32 channels), cnn_2 (5x3, stride (2,1),
 * 32..512 channels), 1x1 shortcuts, and the transposed decoder. Two layers at the full batch, the others at
 * N = 16..32 to keep the CPU reference quick. */
static const ConvCase k_insnotes[] = {
    {"insnotes enc stem 1->4 9x3 512x32 N=384", {1, 4, 9, 3, 1, 1, 4, 1}, 0, 384, 512, 32, 1},
    {"insnotes enc 4->4 9x3 512x32", {4, 4, 9, 3, 1, 1, 4, 1}, 0, 16, 512, 32, 1},
    {"insnotes enc 4->8 9x3 s2 512x32", {4, 8, 9, 3, 2, 2, 4, 1}, 0, 16, 512, 32, 1},
    {"insnotes enc sc 4->8 1x1 s2 512x32", {4, 8, 1, 1, 2, 2, 0, 0}, 0, 32, 512, 32, 1},
    {"insnotes enc 16->32 9x3 s2 128x8", {16, 32, 9, 3, 2, 2, 4, 1}, 0, 32, 128, 8, 1},
    {"insnotes enc 32->32 5x3 64x4", {32, 32, 5, 3, 1, 1, 2, 1}, 0, 32, 64, 4, 1},
    {"insnotes enc 32->64 5x3 s2,1 64x4", {32, 64, 5, 3, 2, 1, 2, 1}, 0, 32, 64, 4, 1},
    {"insnotes enc sc 256->512 1x1 s2,1 8x4", {256, 512, 1, 1, 2, 1, 0, 0}, 0, 32, 8, 4, 1},
    {"insnotes enc 512->512 5x3 4x4", {512, 512, 5, 3, 1, 1, 2, 1}, 0, 32, 4, 4, 1},
    {"insnotes dec T 512->512 5x3 4x4", {512, 512, 5, 3, 1, 1, 2, 1}, 1, 32, 4, 4, 1},
    {"insnotes dec T 512->256 5x3 4x4", {512, 256, 5, 3, 1, 1, 2, 1}, 1, 32, 4, 4, 1},
    {"insnotes dec T sc 512->256 1x1 4x4", {512, 256, 1, 1, 1, 1, 0, 0}, 1, 32, 4, 4, 1},
    {"insnotes dec T 32->16 9x3 64x4", {32, 16, 9, 3, 1, 1, 4, 1}, 1, 32, 64, 4, 1},
    {"insnotes dec T 8->8 9x3 256x16", {8, 8, 9, 3, 1, 1, 4, 1}, 1, 16, 256, 16, 1},
    {"insnotes dec T out 4->1 9x3 512x32 N=384", {4, 1, 9, 3, 1, 1, 4, 1}, 1, 384, 512, 32, 1},
};

/* The phonenums model's layers (configs/phonenums.yaml: 3 x 48 x 32 fragments, batch 32 x 10 = 320; 5x5
 * kernels, stride 2, 16..256 channels, down to 3x2 where the 5x5 kernel is larger than the image). */
static const ConvCase k_phonenums[] = {
    {"phonenums enc stem 3->16 5x5 48x32 N=320", {3, 16, 5, 5, 1, 1, 2, 2}, 0, 320, 48, 32, 1},
    {"phonenums enc 16->32 5x5 s2 48x32", {16, 32, 5, 5, 2, 2, 2, 2}, 0, 32, 48, 32, 1},
    {"phonenums enc sc 16->32 1x1 s2 48x32", {16, 32, 1, 1, 2, 2, 0, 0}, 0, 32, 48, 32, 1},
    {"phonenums enc 64->64 5x5 12x8", {64, 64, 5, 5, 1, 1, 2, 2}, 0, 32, 12, 8, 1},
    {"phonenums enc 128->256 5x5 s2 6x4", {128, 256, 5, 5, 2, 2, 2, 2}, 0, 32, 6, 4, 1},
    {"phonenums enc 256->256 5x5 3x2", {256, 256, 5, 5, 1, 1, 2, 2}, 0, 32, 3, 2, 1},
    {"phonenums dec T 256->128 5x5 3x2", {256, 128, 5, 5, 1, 1, 2, 2}, 1, 32, 3, 2, 1},
    {"phonenums dec T 64->32 5x5 12x8", {64, 32, 5, 5, 1, 1, 2, 2}, 1, 32, 12, 8, 1},
    {"phonenums dec T out 16->3 5x5 48x32 N=320", {16, 3, 5, 5, 1, 1, 2, 2}, 1, 320, 48, 32, 1},
};

TEST(gpu_conv_small_geometries) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    CHECK(conv_cases(k_small, sizeof k_small / sizeof k_small[0], 3000), "see above");
    return 0;
}

TEST(gpu_conv_insnotes_layers) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    CHECK(conv_cases(k_insnotes, sizeof k_insnotes / sizeof k_insnotes[0], 4000), "see above");
    return 0;
}

TEST(gpu_conv_phonenums_layers) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    CHECK(conv_cases(k_phonenums, sizeof k_phonenums / sizeof k_phonenums[0], 5000), "see above");
    return 0;
}

/* Plans of one shape share the algorithm choice (cached per process), so they give the same bits. */
TEST(gpu_conv_plan_cache) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    ConvGeom g = {8, 16, 3, 3, 1, 1, 1, 1};
    for (int mi = 0; mi < N_MODES; mi++) {
        CudaConv *a = cuda_conv_plan(&g, 0, 4, 10, 12, k_modes[mi]);
        CHECK(a, "%s", v3_last_error());
        CudaConv *b = cuda_conv_plan(&g, 0, 4, 10, 12, k_modes[mi]);
        CHECK(b, "%s", v3_last_error());
        char da[640];
        snprintf(da, sizeof da, "%s", cuda_conv_describe(a));
        CHECK(!strcmp(da, cuda_conv_describe(b)), "two plans of one shape differ:\n      %s\n      %s", da,
              cuda_conv_describe(b));
        CHECK(strstr(da, v3_math_name(k_modes[mi])) && strstr(da, "y=") && strstr(da, "dx=") && strstr(da, "dw="),
              "unexpected description: %s", da);
        cuda_conv_destroy(a);
        cuda_conv_destroy(b);
    }
    return 0;
}

/* Invalid geometries fail at plan time with a message (and leave the backend usable). */
TEST(gpu_conv_plan_rejects_invalid) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    struct { const char *why; ConvGeom g; int transposed, N, H, W; } bad[] = {
        {"kernel larger than the padded input", {1, 1, 5, 5, 1, 1, 0, 0}, 0, 1, 3, 3},
        {"kernel larger than the padded input (stride 2)", {2, 3, 5, 1, 2, 1, 0, 0}, 0, 1, 4, 3},
        {"transposed with stride 2", {2, 3, 3, 3, 2, 2, 1, 1}, 1, 1, 4, 4},
        {"transposed padding leaves no output", {2, 3, 1, 1, 1, 1, 1, 0}, 1, 1, 1, 4},
        {"empty batch", {2, 3, 3, 3, 1, 1, 1, 1}, 0, 0, 4, 4},
        {"negative padding", {2, 3, 3, 3, 1, 1, -1, 1}, 0, 1, 4, 4},
        {"zero stride", {2, 3, 3, 3, 0, 1, 1, 1}, 0, 1, 4, 4},
        {"zero channels", {0, 3, 3, 3, 1, 1, 1, 1}, 0, 1, 4, 4},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        v3_clear_error();
        CudaConv *p = cuda_conv_plan(&bad[k].g, bad[k].transposed, bad[k].N, bad[k].H, bad[k].W, V3_MATH_FP32);
        CHECK(!p, "%s: cuda_conv_plan accepted it", bad[k].why);
        CHECK(strstr(v3_last_error(), "cuda_conv_plan"), "%s: unexpected message '%s'", bad[k].why, v3_last_error());
        printf("    rejected (%s): %s\n", bad[k].why, v3_last_error());
    }
    CHECK(cuda_conv_plan(NULL, 0, 1, 4, 4, V3_MATH_FP32) == NULL, "NULL geometry accepted");
    ConvGeom ok = {2, 3, 3, 3, 1, 1, 1, 1};
    CudaConv *p = cuda_conv_plan(&ok, 0, 1, 4, 4, V3_MATH_FP32);
    CHECK(p, "a valid plan after the rejected ones failed: %s", v3_last_error());
    cuda_conv_destroy(p);
    return 0;
}

/* ---- linear layers and SGEMM ---- */

typedef struct { const char *name; int N, in, out; } LinCase;

static int linear_case(const LinCase *lc, unsigned long long seed) {
    int N = lc->N, in = lc->in, out = lc->out;
    size_t nx = (size_t)N * in, ny = (size_t)N * out, nw = (size_t)out * in, nb = (size_t)out;
    float *x = hrand(nx, seed, -1.0f, 1.0f), *w = hrand(nw, seed + 1, -1.0f, 1.0f);
    float *b = hrand(nb, seed + 2, -1.0f, 1.0f);
    float *dy = hrand(ny, seed + 3, -1.0f, 1.0f), *dw0 = hrand(nw, seed + 4, -1.0f, 1.0f);
    float *db0 = hrand(nb, seed + 5, -1.0f, 1.0f);
    float *yref = falloc(ny), *dxref = falloc(nx), *dwref = hcopy(dw0, nw), *dbref = hcopy(db0, nb);
    poison(yref, ny), poison(dxref, nx);
    ref_linear_fwd(N, in, out, x, w, b, yref);
    ref_linear_bwd(N, in, out, x, w, dy, dxref, dwref, dbref);
    float *d_x = dput(x, nx), *d_w = dput(w, nw), *d_b = dput(b, nb), *d_dy = dput(dy, ny);
    float *d_y = dnan(ny), *d_dx = dnan(nx), *d_dw = dnan(nw), *d_db = dnan(nb);
    size_t nmax = nx > ny ? nx : ny;
    if (nw > nmax) nmax = nw;
    float *got = falloc(nmax), *first = falloc(nmax), *dw_first = falloc(nw);
    int ok = 1;
    for (int mi = 0; mi < N_MODES && ok; mi++) {
        V3Math m = k_modes[mi];
        cuda_set_math(m);
        double ey = 0, edx = 0, edw = 0, edb = 0;
        if (cuda_memset(d_y, 0xFF, ny * sizeof(float))) V3_FATAL("%s", v3_last_error());
        cuda_linear_fwd(N, in, out, d_x, d_w, d_b, d_y);
        ok = dget(first, d_y, ny) && within("linear y", first, yref, ny, m, in, &ey);
        if (ok) {
            cuda_linear_fwd(N, in, out, d_x, d_w, d_b, d_y);
            ok = dget(got, d_y, ny) && same_bits("linear y", first, got, ny);
        }
        if (ok) {
            if (cuda_memset(d_dx, 0xFF, nx * sizeof(float)) || cuda_h2d(d_dw, dw0, nw * sizeof(float)) ||
                cuda_h2d(d_db, db0, nb * sizeof(float)))
                V3_FATAL("%s", v3_last_error());
            cuda_linear_bwd(N, in, out, d_x, d_w, d_dy, d_dx, d_dw, d_db);
            ok = dget(got, d_dx, nx) && within("linear dx", got, dxref, nx, m, out, &edx);
            ok = ok && dget(dw_first, d_dw, nw) && within("linear dw", dw_first, dwref, nw, m, N, &edw);
            ok = ok && dget(got, d_db, nb) && within("linear db", got, dbref, nb, m, N, &edb);
        }
        if (ok) {
            if (cuda_h2d(d_dw, dw0, nw * sizeof(float))) V3_FATAL("%s", v3_last_error());
            cuda_linear_bwd(N, in, out, d_x, d_w, d_dy, NULL, d_dw, NULL);
            ok = dget(got, d_dw, nw) && same_bits("linear dw (second backward, dx = db = NULL)", dw_first, got, nw);
        }
        printf("    linear %-38s %s: rel err y %.2e dx %.2e dw %.2e db %.2e%s\n", lc->name, v3_math_name(m), ey, edx,
               edw, edb, ok ? "" : "  FAILED");
        fflush(stdout);
    }
    cuda_set_math(V3_MATH_FP32);
    cuda_free(d_x), cuda_free(d_w), cuda_free(d_b), cuda_free(d_dy);
    cuda_free(d_y), cuda_free(d_dx), cuda_free(d_dw), cuda_free(d_db);
    ffree(x), ffree(w), ffree(b), ffree(dy), ffree(dw0), ffree(db0);
    ffree(yref), ffree(dxref), ffree(dwref), ffree(dbref), ffree(got), ffree(first), ffree(dw_first);
    return ok;
}

/* Tiny and odd sizes, the heads' 512x512 layers, and the bottleneck layers: insnotes encoder.linear_1
 * (flat 512*4*4 = 8192 -> 1024) and decoder.linear_0 (1024 -> 8192), phonenums linear_1 (1536 -> 1024), and a
 * wider 16384-input layer. */
static const LinCase k_lin[] = {
    {"(1, 1, 1)", 1, 1, 1},
    {"(7, 5, 3)", 7, 5, 3},
    {"(33, 65, 17)", 33, 65, 17},
    {"(384, 512, 512) heads", 384, 512, 512},
    {"(384, 8192, 1024) insnotes linear_1", 384, 8192, 1024},
    {"(384, 1024, 8192) insnotes linear_0", 384, 1024, 8192},
    {"(320, 1536, 1024) phonenums linear_1", 320, 1536, 1024},
    {"(384, 16384, 1024)", 384, 16384, 1024},
};

TEST(gpu_linear_vs_cpu) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    for (size_t k = 0; k < sizeof k_lin / sizeof k_lin[0]; k++)
        CHECK(linear_case(&k_lin[k], 6000 + 100 * k), "linear %s", k_lin[k].name);
    return 0;
}

/* cuda_sgemm against cpu_sgemm: all four transpose combinations, padded leading dimensions, alpha/beta. */
static int sgemm_case(int tA, int tB, int M, int N, int K, int pad, float alpha, float beta, unsigned long long seed) {
    int ar = tA ? K : M, ac = tA ? M : K, br = tB ? N : K, bc = tB ? K : N;
    int lda = ac + pad, ldb = bc + pad, ldc = N + pad;
    size_t na = (size_t)ar * lda, nb = (size_t)br * ldb, nc = (size_t)M * ldc;
    float *A = hrand(na, seed, -1.0f, 1.0f), *B = hrand(nb, seed + 1, -1.0f, 1.0f);
    float *C0 = hrand(nc, seed + 2, -1.0f, 1.0f);
    float *ref = hcopy(C0, nc), *got = falloc(nc), *first = falloc(nc);
    cpu_sgemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, ref, ldc);
    float *dA = dput(A, na), *dB = dput(B, nb), *dC = dput(C0, nc);
    int ok = 1;
    for (int mi = 0; mi < N_MODES && ok; mi++) {
        V3Math m = k_modes[mi];
        cuda_set_math(m);
        double e = 0;
        char what[96];
        snprintf(what, sizeof what, "sgemm %c%c %dx%dx%d", tA ? 'T' : 'N', tB ? 'T' : 'N', M, N, K);
        if (cuda_h2d(dC, C0, nc * sizeof(float))) V3_FATAL("%s", v3_last_error());
        cuda_sgemm(tA, tB, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
        ok = dget(first, dC, nc) && within(what, first, ref, nc, m, K, &e); /* padding columns: C0 kept */
        if (ok) {
            if (cuda_h2d(dC, C0, nc * sizeof(float))) V3_FATAL("%s", v3_last_error());
            cuda_sgemm(tA, tB, M, N, K, alpha, dA, lda, dB, ldb, beta, dC, ldc);
            ok = dget(got, dC, nc) && same_bits(what, first, got, nc);
        }
        printf("    %-34s %s: rel err %.2e%s\n", what, v3_math_name(m), e, ok ? "" : "  FAILED");
    }
    cuda_set_math(V3_MATH_FP32);
    cuda_free(dA), cuda_free(dB), cuda_free(dC);
    ffree(A), ffree(B), ffree(C0), ffree(ref), ffree(got), ffree(first);
    return ok;
}

TEST(gpu_sgemm_vs_cpu) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    for (int t = 0; t < 4; t++) {
        int tA = t >> 1, tB = t & 1;
        CHECK(sgemm_case(tA, tB, 37, 53, 61, 3, 0.75f, -0.5f, 7000 + 10 * t), "transA %d transB %d (odd, padded)", tA,
              tB);
        CHECK(sgemm_case(tA, tB, 300, 257, 1031, 0, 1.0f, 0.0f, 7100 + 10 * t), "transA %d transB %d (larger)", tA, tB);
        CHECK(sgemm_case(tA, tB, 1, 9, 4, 1, -1.0f, 1.0f, 7200 + 10 * t), "transA %d transB %d (one row)", tA, tB);
    }
    return 0;
}

TEST(gpu_math_mode_setting) {
    REQUIRE_GPU();
    CHECK(libs_ok(), "cuBLAS/cuDNN could not be loaded");
    CHECK(cuda_libs_load() == 0, "second cuda_libs_load: %s", v3_last_error());
    for (int mi = 0; mi < N_MODES; mi++) {
        cuda_set_math(k_modes[mi]);
        CHECK(cuda_get_math() == k_modes[mi], "set %s, got %s", v3_math_name(k_modes[mi]),
              v3_math_name(cuda_get_math()));
    }
    cuda_set_math(V3_MATH_FP32);
    return 0;
}
