/* CPU reference ops: forward against direct definitions, backward against finite differences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops.h"
#include "testing.h"

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ---- conv2d / convT2d ---- */
typedef struct {
    ConvGeom g;
    int N, H, W, Ho, Wo, transposed;
    float *x, *w, *b, *y, *r;
    size_t nx, nw, ny;
} ConvCtx;

static void conv_ctx(ConvCtx *c, int transposed, ConvGeom g, int N, int H, int W, unsigned seed) {
    memset(c, 0, sizeof *c);
    c->g = g;
    c->N = N; c->H = H; c->W = W;
    c->transposed = transposed;
    if (transposed) { c->Ho = H + g.kh - 1 - 2 * g.ph; c->Wo = W + g.kw - 1 - 2 * g.pw; }
    else { c->Ho = conv_out_size(H, g.kh, g.sh, g.ph); c->Wo = conv_out_size(W, g.kw, g.sw, g.pw); }
    c->nx = (size_t)N * g.cin * H * W;
    c->nw = (size_t)g.cin * g.cout * g.kh * g.kw;
    c->ny = (size_t)N * g.cout * c->Ho * c->Wo;
    c->x = falloc(c->nx); c->w = falloc(c->nw); c->b = falloc(g.cout); c->y = falloc(c->ny); c->r = falloc(c->ny);
    fill_uniform(c->x, c->nx, seed, -1, 1);
    fill_uniform(c->w, c->nw, seed + 1, -0.5f, 0.5f);
    fill_uniform(c->b, g.cout, seed + 2, -0.5f, 0.5f);
    fill_uniform(c->r, c->ny, seed + 3, -1, 1);
}

static void conv_free(ConvCtx *c) { ffree(c->x); ffree(c->w); ffree(c->b); ffree(c->y); ffree(c->r); }

static void conv_run(ConvCtx *c) {
    if (c->transposed) ref_convT2d_fwd(&c->g, c->N, c->H, c->W, c->x, c->w, c->b, c->y);
    else ref_conv2d_fwd(&c->g, c->N, c->H, c->W, c->x, c->w, c->b, c->y);
}

static double conv_loss(void *p) {
    ConvCtx *c = p;
    conv_run(c);
    return dot(c->y, c->r, c->ny);
}

/* Direct definition: y[n,o,oh,ow] = b[o] + sum x[n,i,oh*s-p+a, ow*s-p+b] w[o,i,a,b]. */
static double conv_direct(const ConvCtx *c, int n, int o, int oh, int ow) {
    const ConvGeom *g = &c->g;
    double s = c->b[o];
    for (int i = 0; i < g->cin; i++)
        for (int a = 0; a < g->kh; a++)
            for (int b = 0; b < g->kw; b++) {
                int ih = oh * g->sh - g->ph + a, iw = ow * g->sw - g->pw + b;
                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                s += (double)c->x[(((size_t)n * g->cin + i) * c->H + ih) * c->W + iw] *
                     c->w[(((size_t)o * g->cin + i) * g->kh + a) * g->kw + b];
            }
    return s;
}

/* Direct definition of ConvTranspose2d (stride 1): y[n,o,h',w'] += x[n,i,h,w] w[i,o,a,b] at h' = h - p + a. */
static void convT_direct(const ConvCtx *c, double *y) {
    const ConvGeom *g = &c->g;
    for (size_t k = 0; k < c->ny; k++) y[k] = c->b[(k / ((size_t)c->Ho * c->Wo)) % g->cout];
    for (int n = 0; n < c->N; n++)
        for (int i = 0; i < g->cin; i++)
            for (int h = 0; h < c->H; h++)
                for (int w = 0; w < c->W; w++)
                    for (int o = 0; o < g->cout; o++)
                        for (int a = 0; a < g->kh; a++)
                            for (int b = 0; b < g->kw; b++) {
                                int yh = h - g->ph + a, yw = w - g->pw + b;
                                if (yh < 0 || yh >= c->Ho || yw < 0 || yw >= c->Wo) continue;
                                y[(((size_t)n * g->cout + o) * c->Ho + yh) * c->Wo + yw] +=
                                    (double)c->x[(((size_t)n * g->cin + i) * c->H + h) * c->W + w] *
                                    c->w[(((size_t)i * g->cout + o) * g->kh + a) * g->kw + b];
                            }
}

TEST(ops_conv2d_forward_matches_direct) {
    ConvGeom gs[] = {{3, 4, 3, 5, 2, 1, 1, 2}, {2, 3, 5, 5, 2, 2, 2, 2}, {4, 2, 1, 1, 2, 2, 0, 0}, {1, 2, 9, 3, 2, 2, 4, 1}};
    for (int t = 0; t < 4; t++) {
        ConvCtx c;
        conv_ctx(&c, 0, gs[t], 3, 10, 8, 10 + t);
        poison(c.y, c.ny);
        conv_run(&c);
        double worst = 0;
        for (int n = 0; n < c.N; n++)
            for (int o = 0; o < gs[t].cout; o++)
                for (int oh = 0; oh < c.Ho; oh++)
                    for (int ow = 0; ow < c.Wo; ow++) {
                        double ref = conv_direct(&c, n, o, oh, ow);
                        double got = c.y[(((size_t)n * gs[t].cout + o) * c.Ho + oh) * c.Wo + ow];
                        double e = isfinite(got) ? fabs(got - ref) / (1e-5 + 1e-5 * fabs(ref)) : INFINITY;
                        if (e > worst) worst = e;
                    }
        conv_free(&c);
        CHECK(worst <= 1.0, "geometry %d: worst error %.3g of tolerance", t, worst);
    }
    return 0;
}

TEST(ops_convT2d_forward_matches_direct) {
    ConvGeom gs[] = {{3, 4, 3, 5, 1, 1, 1, 2}, {2, 3, 5, 5, 1, 1, 2, 2}, {4, 2, 1, 1, 1, 1, 0, 0}};
    for (int t = 0; t < 3; t++) {
        ConvCtx c;
        conv_ctx(&c, 1, gs[t], 2, 7, 6, 20 + t);
        poison(c.y, c.ny);
        conv_run(&c);
        double *ref = xmalloc(sizeof(double) * c.ny);
        convT_direct(&c, ref);
        double worst = 0;
        for (size_t k = 0; k < c.ny; k++) {
            double e = isfinite(c.y[k]) ? fabs(c.y[k] - ref[k]) / (1e-5 + 1e-5 * fabs(ref[k])) : INFINITY;
            if (e > worst) worst = e;
        }
        free(ref);
        CHECK(c.Ho == 7 && c.Wo == 6, "same-size output expected, got %dx%d", c.Ho, c.Wo);
        conv_free(&c);
        CHECK(worst <= 1.0, "geometry %d: worst error %.3g of tolerance", t, worst);
    }
    return 0;
}

static int conv_grad_check(int transposed, ConvGeom g, int N, int H, int W, unsigned seed) {
    ConvCtx c;
    conv_ctx(&c, transposed, g, N, H, W, seed);
    float *dx = falloc(c.nx), *dw = falloc(c.nw), *db = falloc(g.cout);
    poison(dx, c.nx);
    conv_run(&c);
    if (transposed) ref_convT2d_bwd(&g, N, H, W, c.x, c.w, c.r, dx, dw, db);
    else ref_conv2d_bwd(&g, N, H, W, c.x, c.w, c.r, dx, dw, db);
    double ex = fd_rel_error(conv_loss, &c, c.x, dx, c.nx, 300, 1e-2);
    double ew = fd_rel_error(conv_loss, &c, c.w, dw, c.nw, 300, 1e-2);
    double eb = fd_rel_error(conv_loss, &c, c.b, db, g.cout, 300, 1e-2);
    /* parameter gradients accumulate: a second backward doubles them */
    float dw0 = dw[0];
    if (transposed) ref_convT2d_bwd(&g, N, H, W, c.x, c.w, c.r, NULL, dw, db);
    else ref_conv2d_bwd(&g, N, H, W, c.x, c.w, c.r, NULL, dw, db);
    double acc = fabs(dw[0] - 2 * dw0) / (1e-6 + fabs(dw0));
    conv_free(&c); ffree(dx); ffree(dw); ffree(db);
    CHECK(ex < 2e-3 && ew < 2e-3 && eb < 2e-3, "relative FD error dx %.3g dw %.3g db %.3g", ex, ew, eb);
    CHECK(acc < 1e-4, "dw does not accumulate (%.3g)", acc);
    return 0;
}

TEST(ops_conv2d_backward_fd_rect_stride) { return conv_grad_check(0, (ConvGeom){3, 4, 3, 5, 2, 1, 1, 2}, 2, 9, 7, 31); }
TEST(ops_conv2d_backward_fd_stride2) { return conv_grad_check(0, (ConvGeom){2, 3, 5, 5, 2, 2, 2, 2}, 3, 8, 6, 32); }
TEST(ops_conv2d_backward_fd_1x1_shortcut) { return conv_grad_check(0, (ConvGeom){4, 3, 1, 1, 2, 1, 0, 0}, 2, 6, 6, 33); }
TEST(ops_convT2d_backward_fd) { return conv_grad_check(1, (ConvGeom){3, 4, 3, 5, 1, 1, 1, 2}, 2, 7, 6, 34); }
TEST(ops_convT2d_backward_fd_1x1) { return conv_grad_check(1, (ConvGeom){4, 2, 1, 1, 1, 1, 0, 0}, 2, 5, 4, 35); }

/* ---- BatchNorm ---- */
typedef struct { int N, C, HW; float *x, *gm, *bt, *y, *mean, *is, *r; } BnCtx;

static double bn_loss(void *p) {
    BnCtx *b = p;
    ref_bn2d_fwd_train(b->N, b->C, b->HW, b->x, b->gm, b->bt, b->y, b->mean, b->is, NULL, NULL, 0.1f, 1e-5f);
    return dot(b->y, b->r, (size_t)b->N * b->C * b->HW);
}

TEST(ops_bn_train_forward_stats_and_running) {
    int N = 4, C = 3, HW = 10;
    size_t n = (size_t)N * C * HW;
    float *x = falloc(n), *y = falloc(n), g[3] = {1, 2, 0.5f}, b[3] = {0, 1, -1}, mean[3], is[3];
    float rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
    fill_uniform(x, n, 5, -2, 3);
    poison(y, n);
    ref_bn2d_fwd_train(N, C, HW, x, g, b, y, mean, is, rm, rv, 0.1f, 1e-5f);
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0, xs = 0, xss = 0;
        for (int i = 0; i < N; i++)
            for (int k = 0; k < HW; k++) {
                double v = y[((size_t)i * C + c) * HW + k], u = x[((size_t)i * C + c) * HW + k];
                s += v; ss += v * v; xs += u; xss += u * u;
            }
        double M = N * HW, mu = s / M, var = ss / M - mu * mu;
        double xmu = xs / M, xvar_b = xss / M - xmu * xmu, xvar_u = xvar_b * M / (M - 1);
        CHECK(fabs(mu - b[c]) < 1e-5, "channel %d mean %.7f, want beta %.3f", c, mu, b[c]);
        CHECK(fabs(var - g[c] * g[c] * xvar_b / (xvar_b + 1e-5)) < 1e-4, "channel %d variance %.6f", c, var);
        CHECK(fabs(rm[c] - 0.1 * xmu) < 1e-6, "running mean %.7f want %.7f", rm[c], 0.1 * xmu);
        CHECK(fabs(rv[c] - (0.9 + 0.1 * xvar_u)) < 1e-5, "running var %.7f want unbiased-based %.7f", rv[c],
              0.9 + 0.1 * xvar_u);
    }
    /* eval mode uses the running statistics */
    ref_bn2d_fwd_eval(N, C, HW, x, g, b, y, rm, rv, 1e-5f);
    double want = g[1] * (x[HW] - rm[1]) / sqrt(rv[1] + 1e-5) + b[1];
    CHECK(fabs(y[HW] - want) < 1e-5, "eval output %.7f want %.7f", y[HW], want);
    ffree(x); ffree(y);
    return 0;
}

TEST(ops_bn_backward_fd) {
    BnCtx b = {3, 4, 7};
    size_t n = (size_t)b.N * b.C * b.HW;
    b.x = falloc(n); b.y = falloc(n); b.r = falloc(n);
    b.gm = falloc(4); b.bt = falloc(4); b.mean = falloc(4); b.is = falloc(4);
    fill_uniform(b.x, n, 7, -2, 2);
    fill_uniform(b.r, n, 8, -1, 1);
    fill_uniform(b.gm, 4, 9, 0.5f, 1.5f);
    fill_uniform(b.bt, 4, 10, -0.5f, 0.5f);
    float *dx = falloc(n), dg[4] = {0}, dbt[4] = {0};
    poison(dx, n);
    bn_loss(&b);
    ref_bn2d_bwd(b.N, b.C, b.HW, b.x, b.gm, b.mean, b.is, b.r, dx, dg, dbt);
    double ex = fd_rel_error(bn_loss, &b, b.x, dx, n, 400, 1e-3);
    double eg = fd_rel_error(bn_loss, &b, b.gm, dg, 4, 10, 1e-3);
    double eb = fd_rel_error(bn_loss, &b, b.bt, dbt, 4, 10, 1e-3);
    ffree(b.x); ffree(b.y); ffree(b.r); ffree(b.gm); ffree(b.bt); ffree(b.mean); ffree(b.is); ffree(dx);
    CHECK(ex < 5e-3 && eg < 1e-3 && eb < 1e-3, "relative FD error dx %.3g dgamma %.3g dbeta %.3g", ex, eg, eb);
    return 0;
}

/* ---- GELU, linear, upsample, MSE ---- */
typedef struct { size_t n; float *x, *y, *r; } ElemCtx;
static double gelu_loss(void *p) {
    ElemCtx *c = p;
    ref_gelu_fwd(c->n, c->x, c->y);
    return dot(c->y, c->r, c->n);
}

TEST(ops_gelu_exact_erf_values_and_fd) {
    float x[5] = {-3, -1, 0, 1, 2.5f}, y[5];
    ref_gelu_fwd(5, x, y);
    double want[5] = {-0.00404969409489, -0.15865525393146, 0, 0.84134474606854, 2.48447583668556};
    for (int i = 0; i < 5; i++) CHECK(fabs(y[i] - want[i]) < 2e-7, "gelu(%g) = %.9f want %.9f", x[i], y[i], want[i]);
    ElemCtx c = {200};
    c.x = falloc(c.n); c.y = falloc(c.n); c.r = falloc(c.n);
    fill_uniform(c.x, c.n, 3, -4, 4);
    fill_uniform(c.r, c.n, 4, -1, 1);
    float *dx = falloc(c.n);
    poison(dx, c.n);
    ref_gelu_bwd(c.n, c.x, c.r, dx);
    double e = fd_rel_error(gelu_loss, &c, c.x, dx, c.n, 200, 1e-3);
    ffree(c.x); ffree(c.y); ffree(c.r); ffree(dx);
    CHECK(e < 1e-3, "relative FD error %.3g", e);
    return 0;
}

typedef struct { int N, in, out; float *x, *w, *b, *y, *r; } LinCtx;
static double lin_loss(void *p) {
    LinCtx *c = p;
    ref_linear_fwd(c->N, c->in, c->out, c->x, c->w, c->b, c->y);
    return dot(c->y, c->r, (size_t)c->N * c->out);
}

TEST(ops_linear_forward_and_fd) {
    LinCtx c = {5, 7, 3};
    c.x = falloc(35); c.w = falloc(21); c.b = falloc(3); c.y = falloc(15); c.r = falloc(15);
    fill_uniform(c.x, 35, 1, -1, 1); fill_uniform(c.w, 21, 2, -1, 1); fill_uniform(c.b, 3, 3, -1, 1);
    fill_uniform(c.r, 15, 4, -1, 1);
    poison(c.y, 15);
    lin_loss(&c);
    double ref = c.b[2];
    for (int k = 0; k < 7; k++) ref += (double)c.x[7 * 4 + k] * c.w[7 * 2 + k];
    CHECK(fabs(c.y[4 * 3 + 2] - ref) < 1e-5, "y[4,2] = %.7f want %.7f", c.y[14], ref);
    float *dx = falloc(35), *dw = falloc(21), *db = falloc(3);
    poison(dx, 35);
    ref_linear_bwd(5, 7, 3, c.x, c.w, c.r, dx, dw, db);
    double ex = fd_rel_error(lin_loss, &c, c.x, dx, 35, 100, 1e-2);
    double ew = fd_rel_error(lin_loss, &c, c.w, dw, 21, 100, 1e-2);
    double eb = fd_rel_error(lin_loss, &c, c.b, db, 3, 100, 1e-2);
    ffree(c.x); ffree(c.w); ffree(c.b); ffree(c.y); ffree(c.r); ffree(dx); ffree(dw); ffree(db);
    CHECK(ex < 1e-3 && ew < 1e-3 && eb < 1e-3, "relative FD error dx %.3g dw %.3g db %.3g", ex, ew, eb);
    return 0;
}

typedef struct { int fh, fw; float *x, *y, *r; } UpCtx;
static double up_loss(void *p) {
    UpCtx *c = p;
    ref_upsample_fwd(2, 3, 4, 5, c->fh, c->fw, c->x, c->y);
    return dot(c->y, c->r, (size_t)2 * 3 * 4 * 5 * c->fh * c->fw);
}

TEST(ops_upsample_nearest_2x2_and_2x1) {
    int f[2][2] = {{2, 2}, {2, 1}};
    for (int t = 0; t < 2; t++) {
        UpCtx c = {f[t][0], f[t][1]};
        size_t nx = 120, ny = nx * c.fh * c.fw;
        c.x = falloc(nx); c.y = falloc(ny); c.r = falloc(ny);
        fill_uniform(c.x, nx, 1, -1, 1);
        fill_uniform(c.r, ny, 2, -1, 1);
        poison(c.y, ny);
        up_loss(&c);
        int Wo = 5 * c.fw;
        /* y[n=1,c=2,h=3*fh+fh-1,w=4*fw+fw-1] = x[1,2,3,4] */
        float got = c.y[((size_t)(1 * 3 + 2) * 4 * c.fh + (3 * c.fh + c.fh - 1)) * Wo + 4 * c.fw + c.fw - 1];
        CHECK(got == c.x[(1 * 3 + 2) * 20 + 3 * 5 + 4], "upsample (%d,%d) copies the wrong pixel", c.fh, c.fw);
        float *dx = falloc(nx);
        poison(dx, nx);
        ref_upsample_bwd(2, 3, 4, 5, c.fh, c.fw, c.r, dx);
        double e = fd_rel_error(up_loss, &c, c.x, dx, nx, 200, 1e-2);
        ffree(c.x); ffree(c.y); ffree(c.r); ffree(dx);
        CHECK(e < 1e-4, "upsample (%d,%d) relative FD error %.3g", f[t][0], f[t][1], e);
    }
    return 0;
}

typedef struct { size_t n; float *a, *b; } MseCtx;
static double mse_loss(void *p) { MseCtx *c = p; return ref_mse(c->n, c->a, c->b); }

TEST(ops_mse_forward_backward) {
    MseCtx c = {50};
    c.a = falloc(50); c.b = falloc(50);
    fill_uniform(c.a, 50, 1, -1, 1);
    fill_uniform(c.b, 50, 2, -1, 1);
    double ref = 0;
    for (int i = 0; i < 50; i++) ref += ((double)c.a[i] - c.b[i]) * ((double)c.a[i] - c.b[i]);
    CHECK(fabs(mse_loss(&c) - ref / 50) < 1e-12, "mse %.12f want %.12f", mse_loss(&c), ref / 50);
    float *da = falloc(50);
    poison(da, 50);
    ref_mse_bwd(50, c.a, c.b, 1.0f, da);
    double e = fd_rel_error(mse_loss, &c, c.a, da, 50, 50, 1e-3);
    ffree(c.a); ffree(c.b); ffree(da);
    CHECK(e < 1e-4, "relative FD error %.3g", e);
    return 0;
}

/* ---- AdamW against a double-precision transcription of PyTorch's update ---- */
TEST(ops_adamw_matches_reference) {
    size_t n = 64;
    float *p = falloc(n), *g = falloc(n), *m = falloc(n), *v = falloc(n);
    double P[64], M[64] = {0}, V[64] = {0};
    fill_uniform(p, n, 1, -1, 1);
    for (size_t i = 0; i < n; i++) P[i] = p[i];
    double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    for (long t = 1; t <= 5; t++) {
        fill_uniform(g, n, 100 + t, -1, 1);
        ref_adamw(n, p, g, m, v, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, t);
        for (size_t i = 0; i < n; i++) {
            P[i] *= 1 - lr * wd;
            M[i] = b1 * M[i] + (1 - b1) * g[i];
            V[i] = b2 * V[i] + (1 - b2) * (double)g[i] * g[i];
            double mh = M[i] / (1 - pow(b1, t)), vh = V[i] / (1 - pow(b2, t));
            P[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(p[i] - P[i]) / (1e-7 + 1e-6 * fabs(P[i]));
        if (!isfinite(p[i])) e = INFINITY;
        if (e > worst) worst = e;
    }
    /* bias correction matters: after step 1 a parameter with g != 0 moves by ~lr */
    ffree(p); ffree(g); ffree(m); ffree(v);
    CHECK(worst <= 1.0, "AdamW deviates from the reference: %.3g of tolerance", worst);
    return 0;
}
