/* cuDNN convolutions and cuBLAS GEMMs of the authors' models, in each math mode.
 *   make bench && ./bench/bench_conv [OUT.json] [--math fp32,tf32,bf16] [--configs insnotes,phonenums]
 *                                    [--gemm N] [--no-gemm]
 * Rows, for every math mode:
 *   - every distinct convolution layer (geometry, transposed or not, input size) of the insnotes and phonenums
 *     encoders and decoders (from model_build on configs/<name>.yaml) at the training batch, 32 samples x
 *     n_fragments, forward (with bias) and backward (dx, dw, db);
 *   - every distinct linear layer of the two models, forward and backward;
 *   - one large SGEMM (default 8192^3) for the device's fp32 / tf32 / bf16 GEMM ceiling.
 * Times: median and minimum per call over 7 batches of back-to-back calls (bench_util.h). FLOPs count 2 per
 * multiply-add of the direct convolution (padding included); backward = 2x forward (dx + dw). Bytes: the
 * tensors read and written once. Validation (the row's "validated" flag and max error in the note): the forward
 * output and dx of the first two samples of the timed batch against the CPU reference, with the tolerances of
 * tests/gpu/test_gpu_conv.c; the SGEMM at 64 sampled entries against double-precision dot products. The cuDNN
 * algorithm choices are printed before the table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "common.h"
#include "config.h"
#include "cuda_backend.h"
#include "model.h"
#include "ops.h"
#include "rng.h"

typedef struct {
    char model[16], name[32];
    int N, in, out, uses;
} LinLayer;

static BenchConvLayer g_conv[BENCH_MAX_CONV];
static int g_nconv;
static LinLayer g_lin[64];
static int g_nlin;

static void add_lin(const char *model, const char *name, int N, int in, int out) {
    for (int i = 0; i < g_nlin; i++) {
        LinLayer *l = &g_lin[i];
        if (l->N == N && l->in == in && l->out == out && !strcmp(l->model, model)) {
            l->uses++;
            return;
        }
    }
    if (g_nlin == (int)(sizeof g_lin / sizeof g_lin[0])) V3_FATAL("too many linear layers");
    LinLayer *l = &g_lin[g_nlin++];
    snprintf(l->model, sizeof l->model, "%s", model);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->N = N, l->in = in, l->out = out, l->uses = 1;
}

static int collect(const char *name) {
    char path[64];
    snprintf(path, sizeof path, "configs/%s.yaml", name);
    Config c;
    config_defaults(&c);
    if (config_load(path, &c)) return -1;
    Model *m = model_build(&c, 1);
    if (!m) return -1;
    int N = c.batch_size * c.n_fragments;
    bench_model_convs(name, m, N, g_conv, &g_nconv);
    add_lin(name, "encoder.linear_1", N, m->flat, m->dc + m->ds);
    add_lin(name, "linear_c/_s (enc, dec)", N, m->dc, m->dc);
    add_lin(name, "linear_s (enc, dec)", N, m->ds, m->ds);
    add_lin(name, "decoder.linear_c", N, m->dc, m->dc);
    add_lin(name, "decoder.linear_s", N, m->ds, m->ds);
    add_lin(name, "decoder.linear_0", N, m->dc + m->ds, m->flat);
    model_free(m);
    return 0;
}

/* ---- helpers ---- */

static float *hrandom(size_t n, uint64_t seed) {
    float *h = falloc(n);
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) h[i] = rng_uniform_range(&r, -1.0f, 1.0f);
    return h;
}

static float *to_dev(const float *h, size_t n) {
    float *d = cuda_alloc(n * sizeof(float));
    if (cuda_h2d(d, h, n * sizeof(float))) V3_FATAL("%s", v3_last_error());
    return d;
}

static void from_dev(float *h, const float *d, size_t n) {
    if (cuda_sync() || cuda_d2h(h, d, n * sizeof(float))) V3_FATAL("%s", v3_last_error());
}

static double tol_base(V3Math m) { return m == V3_MATH_FP32 ? 1e-5 : m == V3_MATH_TF32 ? 2e-3 : 2e-2; }

/* Worst |got - ref| / ((base + 1e-6 sqrt(K)) max|ref| + base |ref|): <= 1 passes (test_gpu_conv.c's bound). */
static double scaled_err(const float *got, const float *ref, size_t n, V3Math m, double K) {
    double s = 0, base = tol_base(m), worst = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)ref[i]) > s) s = fabs((double)ref[i]);
    double atol = (base + 1e-6 * sqrt(K > 1 ? K : 1)) * (s > 1e-30 ? s : 1e-30);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        double e = fabs((double)got[i] - ref[i]) / (atol + base * fabs((double)ref[i]));
        if (e > worst) worst = e;
    }
    return worst;
}

static const char *short_model(const char *m) {
    return !strcmp(m, "insnotes") ? "ins" : !strcmp(m, "phonenums") ? "phn" : m;
}

/* ---- convolutions ---- */

typedef struct {
    CudaConv *p;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
} ConvCtx;

static void conv_fwd_fn(void *v) {
    ConvCtx *c = v;
    cuda_conv_fwd(c->p, c->x, c->w, c->b, c->y);
}
static void conv_bwd_fn(void *v) {
    ConvCtx *c = v;
    cuda_conv_bwd(c->p, c->x, c->w, c->dy, c->dx, c->dw, c->db);
}

static void bench_conv_layer(const BenchConvLayer *L, const int *modes, int nmodes) {
    const ConvGeom *g = &L->g;
    int T = L->transposed, N = L->N, H = L->H, W = L->W, Ho, Wo;
    if (T) {
        Ho = H + g->kh - 1 - 2 * g->ph;
        Wo = W + g->kw - 1 - 2 * g->pw;
    } else {
        Ho = conv_out_size(H, g->kh, g->sh, g->ph);
        Wo = conv_out_size(W, g->kw, g->sw, g->pw);
    }
    size_t px = (size_t)g->cin * H * W, py = (size_t)g->cout * Ho * Wo; /* per sample */
    size_t nx = (size_t)N * px, ny = (size_t)N * py, nw = (size_t)g->cin * g->cout * g->kh * g->kw;
    float *x = hrandom(nx, 1), *w = hrandom(nw, 2), *b = hrandom((size_t)g->cout, 3), *dy = hrandom(ny, 4);
    /* CPU reference for the first n0 samples (forward and dx do not mix samples). */
    int n0 = N < 2 ? N : 2;
    float *yref = falloc((size_t)n0 * py), *dxref = falloc((size_t)n0 * px), *dws = falloc(nw);
    if (T) {
        ref_convT2d_fwd(g, n0, H, W, x, w, b, yref);
        ref_convT2d_bwd(g, n0, H, W, x, w, dy, dxref, dws, NULL);
    } else {
        ref_conv2d_fwd(g, n0, H, W, x, w, b, yref);
        ref_conv2d_bwd(g, n0, H, W, x, w, dy, dxref, dws, NULL);
    }
    float *got_y = falloc((size_t)n0 * py), *got_dx = falloc((size_t)n0 * px);
    ConvCtx c;
    memset(&c, 0, sizeof c);
    c.x = to_dev(x, nx), c.w = to_dev(w, nw), c.b = to_dev(b, (size_t)g->cout), c.dy = to_dev(dy, ny);
    c.y = cuda_alloc(ny * sizeof(float)), c.dx = cuda_alloc(nx * sizeof(float));
    c.dw = to_dev(w, nw), c.db = to_dev(b, (size_t)g->cout); /* any starting values: they accumulate */
    double macs = (double)N * (T ? (double)H * W : (double)Ho * Wo) * g->cin * g->cout * g->kh * g->kw;
    char shape[96];
    snprintf(shape, sizeof shape, "%.15s %d->%d %dx%d s%d,%d [%d,%d,%d,%d] x%d", short_model(L->model), g->cin,
             g->cout, g->kh, g->kw, g->sh, g->sw, N, g->cin, H, W, L->uses);
    for (int mi = 0; mi < nmodes; mi++) {
        V3Math m = (V3Math)modes[mi];
        c.p = cuda_conv_plan(g, T, N, H, W, m);
        if (!c.p) {
            fprintf(stderr, "bench_conv: %s\n", v3_last_error());
            exit(1);
        }
        printf("%s\n", cuda_conv_describe(c.p));
        fflush(stdout);
        if (cuda_memset(c.y, 0xFF, ny * sizeof(float)) || cuda_memset(c.dx, 0xFF, nx * sizeof(float)))
            V3_FATAL("%s", v3_last_error());
        conv_fwd_fn(&c);
        conv_bwd_fn(&c);
        from_dev(got_y, c.y, (size_t)n0 * py);
        from_dev(got_dx, c.dx, (size_t)n0 * px);
        double ey = scaled_err(got_y, yref, (size_t)n0 * py, m, (double)g->cin * g->kh * g->kw);
        double edx = scaled_err(got_dx, dxref, (size_t)n0 * px, m, (double)g->cout * g->kh * g->kw);
        int valid = ey <= 1 && edx <= 1;
        BenchRow r;
        memset(&r, 0, sizeof r);
        snprintf(r.kernel, sizeof r.kernel, "%s_fwd", T ? "convT" : "conv");
        snprintf(r.variant, sizeof r.variant, "cudnn %s", v3_math_name(m));
        snprintf(r.shape, sizeof r.shape, "%s", shape);
        r.t = bench_time(conv_fwd_fn, &c, 3, 20, 7);
        r.flops = 2 * macs;
        r.bytes = 4.0 * (nx + nw + ny);
        r.valid = valid;
        snprintf(r.note, sizeof r.note, "y err %.2f of bound", ey);
        bench_add(&r);
        snprintf(r.kernel, sizeof r.kernel, "%s_bwd", T ? "convT" : "conv");
        r.t = bench_time(conv_bwd_fn, &c, 3, 20, 7);
        r.flops = 4 * macs;
        r.bytes = 4.0 * (2 * nx + ny + 2 * nw);
        snprintf(r.note, sizeof r.note, "dx err %.2f of bound", edx);
        bench_add(&r);
        cuda_conv_destroy(c.p);
        c.p = NULL;
    }
    cuda_free((void *)c.x), cuda_free((void *)c.w), cuda_free((void *)c.b), cuda_free((void *)c.dy);
    cuda_free(c.y), cuda_free(c.dx), cuda_free(c.dw), cuda_free(c.db);
    ffree(x), ffree(w), ffree(b), ffree(dy), ffree(yref), ffree(dxref), ffree(dws), ffree(got_y), ffree(got_dx);
}

/* ---- linear layers ---- */

typedef struct {
    int N, in, out;
    const float *x, *w, *b, *dy;
    float *y, *dx, *dw, *db;
} LinCtx;

static void lin_fwd_fn(void *v) {
    LinCtx *c = v;
    cuda_linear_fwd(c->N, c->in, c->out, c->x, c->w, c->b, c->y);
}
static void lin_bwd_fn(void *v) {
    LinCtx *c = v;
    cuda_linear_bwd(c->N, c->in, c->out, c->x, c->w, c->dy, c->dx, c->dw, c->db);
}

static void bench_lin_layer(const LinLayer *L, const int *modes, int nmodes) {
    int N = L->N, in = L->in, out = L->out, n0 = N < 2 ? N : 2;
    size_t nx = (size_t)N * in, ny = (size_t)N * out, nw = (size_t)in * out;
    float *x = hrandom(nx, 5), *w = hrandom(nw, 6), *b = hrandom((size_t)out, 7), *dy = hrandom(ny, 8);
    float *yref = falloc((size_t)n0 * out), *dxref = falloc((size_t)n0 * in), *dws = falloc(nw);
    ref_linear_fwd(n0, in, out, x, w, b, yref);
    ref_linear_bwd(n0, in, out, x, w, dy, dxref, dws, NULL);
    float *got_y = falloc((size_t)n0 * out), *got_dx = falloc((size_t)n0 * in);
    LinCtx c = {N, in, out, to_dev(x, nx), to_dev(w, nw), to_dev(b, (size_t)out), to_dev(dy, ny),
                cuda_alloc(ny * sizeof(float)), cuda_alloc(nx * sizeof(float)), to_dev(w, nw),
                to_dev(b, (size_t)out)};
    char shape[96];
    snprintf(shape, sizeof shape, "%.15s %.31s (%d, %d, %d) x%d", short_model(L->model), L->name, N, in, out,
             L->uses);
    for (int mi = 0; mi < nmodes; mi++) {
        V3Math m = (V3Math)modes[mi];
        cuda_set_math(m);
        lin_fwd_fn(&c);
        lin_bwd_fn(&c);
        from_dev(got_y, c.y, (size_t)n0 * out);
        from_dev(got_dx, c.dx, (size_t)n0 * in);
        double ey = scaled_err(got_y, yref, (size_t)n0 * out, m, in);
        double edx = scaled_err(got_dx, dxref, (size_t)n0 * in, m, out);
        BenchRow r;
        memset(&r, 0, sizeof r);
        snprintf(r.kernel, sizeof r.kernel, "linear_fwd");
        snprintf(r.variant, sizeof r.variant, "cublas %s", v3_math_name(m));
        snprintf(r.shape, sizeof r.shape, "%s", shape);
        r.t = bench_time(lin_fwd_fn, &c, 3, 20, 7);
        r.flops = 2.0 * N * in * out;
        r.bytes = 4.0 * (nx + nw + ny);
        r.valid = ey <= 1 && edx <= 1;
        snprintf(r.note, sizeof r.note, "y err %.2f of bound", ey);
        bench_add(&r);
        snprintf(r.kernel, sizeof r.kernel, "linear_bwd");
        r.t = bench_time(lin_bwd_fn, &c, 3, 20, 7);
        r.flops = 4.0 * N * in * out;
        r.bytes = 4.0 * (2 * nx + ny + 2 * nw);
        snprintf(r.note, sizeof r.note, "dx err %.2f of bound", edx);
        bench_add(&r);
    }
    cuda_set_math(V3_MATH_FP32);
    cuda_free((void *)c.x), cuda_free((void *)c.w), cuda_free((void *)c.b), cuda_free((void *)c.dy);
    cuda_free(c.y), cuda_free(c.dx), cuda_free(c.dw), cuda_free(c.db);
    ffree(x), ffree(w), ffree(b), ffree(dy), ffree(yref), ffree(dxref), ffree(dws), ffree(got_y), ffree(got_dx);
}

/* ---- large SGEMM ---- */

typedef struct {
    int n;
    const float *A, *B;
    float *C;
} GemmCtx;

static void gemm_fn(void *v) {
    GemmCtx *c = v;
    cuda_sgemm(0, 0, c->n, c->n, c->n, 1.0f, c->A, c->n, c->B, c->n, 0.0f, c->C, c->n);
}

static void bench_gemm(int n, const int *modes, int nmodes) {
    size_t nn = (size_t)n * n;
    float *A = hrandom(nn, 9), *B = hrandom(nn, 10), *C = falloc(nn);
    GemmCtx c = {n, to_dev(A, nn), to_dev(B, nn), cuda_alloc(nn * sizeof(float))};
    enum { SAMPLES = 64 };
    int si[SAMPLES], sj[SAMPLES];
    float ref[SAMPLES], got[SAMPLES];
    Rng r;
    rng_seed(&r, 11);
    for (int s = 0; s < SAMPLES; s++) {
        si[s] = (int)rng_below(&r, (uint32_t)n);
        sj[s] = (int)rng_below(&r, (uint32_t)n);
        double acc = 0;
        for (int k = 0; k < n; k++) acc += (double)A[(size_t)si[s] * n + k] * B[(size_t)k * n + sj[s]];
        ref[s] = (float)acc;
    }
    for (int mi = 0; mi < nmodes; mi++) {
        V3Math m = (V3Math)modes[mi];
        cuda_set_math(m);
        gemm_fn(&c);
        from_dev(C, c.C, nn);
        for (int s = 0; s < SAMPLES; s++) got[s] = C[(size_t)si[s] * n + sj[s]];
        double e = scaled_err(got, ref, SAMPLES, m, n);
        BenchRow row;
        memset(&row, 0, sizeof row);
        snprintf(row.kernel, sizeof row.kernel, "sgemm");
        snprintf(row.variant, sizeof row.variant, "cublas %s", v3_math_name(m));
        snprintf(row.shape, sizeof row.shape, "%dx%dx%d NN", n, n, n);
        row.t = bench_time(gemm_fn, &c, 2, n >= 4096 ? 3 : 10, 7);
        row.flops = 2.0 * n * (double)n * n;
        row.bytes = 3.0 * 4.0 * nn;
        row.valid = e <= 1;
        snprintf(row.note, sizeof row.note, "64 entries: err %.2f of bound", e);
        bench_add(&row);
    }
    cuda_set_math(V3_MATH_FP32);
    cuda_free((void *)c.A), cuda_free((void *)c.B), cuda_free(c.C);
    ffree(A), ffree(B), ffree(C);
}

int main(int argc, char **argv) {
    const char *out = "bench/conv.json", *maths = "fp32,tf32,bf16", *configs = "insnotes,phonenums";
    int gemm_n = 8192;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--math") && i + 1 < argc) maths = argv[++i];
        else if (!strcmp(argv[i], "--configs") && i + 1 < argc) configs = argv[++i];
        else if (!strcmp(argv[i], "--gemm") && i + 1 < argc) gemm_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-gemm")) gemm_n = 0;
        else if (argv[i][0] != '-') out = argv[i];
        else {
            fprintf(stderr, "bench_conv: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    int modes[3], nmodes = 0;
    for (int m = 0; m < 3; m++)
        if (bench_list_has(maths, v3_math_name((V3Math)m))) modes[nmodes++] = m;
    if (!nmodes || gemm_n < 0) {
        fprintf(stderr, "bench_conv: --math expects a list of fp32,tf32,bf16; --gemm a size >= 0\n");
        return 2;
    }
    cpu_gemm_init();
    char desc[256];
    bench_init_device(desc, sizeof desc);
    const char *names[] = {"insnotes", "phonenums"};
    for (int k = 0; k < 2; k++)
        if (bench_list_has(configs, names[k]) && collect(names[k])) {
            fprintf(stderr, "bench_conv: %s\n", v3_last_error());
            return 1;
        }
    printf("%d distinct convolution layers, %d distinct linear layers\n", g_nconv, g_nlin);
    for (int i = 0; i < g_nconv; i++) bench_conv_layer(&g_conv[i], modes, nmodes);
    for (int i = 0; i < g_nlin; i++) bench_lin_layer(&g_lin[i], modes, nmodes);
    if (gemm_n > 0) bench_gemm(gemm_n, modes, nmodes);
    if (bench_finish(out, desc)) {
        fprintf(stderr, "bench_conv: %s\n", v3_last_error());
        return 1;
    }
    return 0;
}
