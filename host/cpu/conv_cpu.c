/* The cpu backend's convolution ops: each plan goes to one of two implementations by a fixed rule on its geometry
 * (never a timing, so a run always executes the same code and its bits do not depend on machine noise):
 *   - direct kernels for few channels (conv_small.c) when the layer is narrow;
 *   - oneDNN's primitives (conv_dnnl.c) otherwise, when the build has oneDNN; else the reference im2col + GEMM.
 * V3_CPU_CONV=small|dnnl|ref forces one for benchmarks (bench_ops, NOTES.md). */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_internal.h"
#include "ops.h"

enum { K_SMALL, K_DNNL, K_REF };
typedef struct {
    int kind, transposed;
    ConvGeom g;
    SConv sc;      /* K_SMALL: the plain convolution (transposed: its adjoint, see below) */
    size_t out_hw; /* output pixels per channel */
    void *impl;    /* K_DNNL / K_REF plan */
} CpuConv;

/* Narrow: both sides at most 8 channels, or one side at most 4 (measured per layer in NOTES.md, "Convolutions
 * for few channels"). */
static int narrow(const ConvGeom *g) {
    int lo = g->cin < g->cout ? g->cin : g->cout, hi = g->cin < g->cout ? g->cout : g->cin;
    return hi <= 8 || lo <= 4;
}

static int choose(const ConvGeom *g) {
    const char *v = getenv("V3_CPU_CONV");
    if (g->sh != g->sw || g->sh > 4) return
#ifdef V3_HAVE_DNNL
        K_DNNL;
#else
        K_REF;
#endif
    if (v && !strcmp(v, "small")) return K_SMALL;
    if (v && !strcmp(v, "ref")) return K_REF;
#ifdef V3_HAVE_DNNL
    if (v && (!strcmp(v, "dnnl") || !strcmp(v, "blocked") || !strcmp(v, "plain"))) return K_DNNL;
    return narrow(g) ? K_SMALL : K_DNNL;
#else
    return narrow(g) ? K_SMALL : K_REF;
#endif
}

void *cpu_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    if (transposed && (g->sh != 1 || g->sw != 1)) {
        v3_error("transposed convolution supports stride 1 only (got %d,%d)", g->sh, g->sw);
        return NULL;
    }
    CpuConv *c = xcalloc(1, sizeof *c);
    c->kind = choose(g);
    c->transposed = transposed;
    c->g = *g;
    if (transposed) {
        /* A stride-1 transposed convolution cin -> cout on H x W is the adjoint of the plain convolution
         * cout -> cin on its output Hy x Wy with the same weights read as [co = cin][ci = cout][kh][kw]: its forward
         * is that convolution's data gradient, its data gradient that convolution's forward. */
        int Hy = H + g->kh - 1 - 2 * g->ph, Wy = W + g->kw - 1 - 2 * g->pw;
        c->sc = (SConv){N, g->cout, Hy, Wy, g->cin, H, W, g->kh, g->kw, 1, 1, g->ph, g->pw};
        c->out_hw = (size_t)Hy * Wy;
    } else {
        int Ho = conv_out_size(H, g->kh, g->sh, g->ph), Wo = conv_out_size(W, g->kw, g->sw, g->pw);
        c->sc = (SConv){N, g->cin, H, W, g->cout, Ho, Wo, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw};
        c->out_hw = (size_t)Ho * Wo;
    }
#ifdef V3_HAVE_DNNL
    if (c->kind == K_DNNL) c->impl = dconv_plan(g, transposed, N, H, W);
#endif
    if (c->kind == K_REF) c->impl = ref_conv_plan(g, transposed, N, H, W, math);
    if (c->kind != K_SMALL && !c->impl) {
        free(c);
        return NULL;
    }
    return c;
}

void cpu_conv_destroy(void *p) {
    CpuConv *c = p;
    if (!c) return;
#ifdef V3_HAVE_DNNL
    if (c->kind == K_DNNL) dconv_destroy(c->impl);
#endif
    if (c->kind == K_REF) ref_conv_destroy(c->impl);
    free(c);
}

void cpu_conv_fwd(const void *p, const float *x, const float *w, const float *b, float *y) {
    const CpuConv *c = p;
#ifdef V3_HAVE_DNNL
    if (c->kind == K_DNNL) return dconv_fwd(c->impl, x, w, b, y);
#endif
    if (c->kind == K_REF) return ref_conv_fwd(c->impl, x, w, b, y);
    if (c->transposed) sconv_bwd_data(&c->sc, x, w, b, y);
    else sconv_fwd(&c->sc, x, w, b, y);
}

void cpu_conv_bwd(const void *p, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    const CpuConv *c = p;
#ifdef V3_HAVE_DNNL
    if (c->kind == K_DNNL) return dconv_bwd(c->impl, x, w, dy, dx, dw, db);
#endif
    if (c->kind == K_REF) return ref_conv_bwd(c->impl, x, w, dy, dx, dw, db);
    if (db) ref_bias_grad(dy, c->sc.N, c->g.cout, c->out_hw, db);
    if (c->transposed) {
        /* the adjoint convolution's input is dy (channels cout), its output x (channels cin) */
        sconv_bwd_weights(&c->sc, dy, x, dw);
        if (dx) sconv_fwd(&c->sc, dy, w, NULL, dx);
    } else {
        sconv_bwd_weights(&c->sc, x, dy, dw);
        if (dx) sconv_bwd_data(&c->sc, dy, w, NULL, dx);
    }
}

/* "small", "ref", or oneDNN's implementation name for which = 0 forward, 1 data gradient, 2 weight gradient */
const char *cpu_conv_impl(const void *p, int which) {
    const CpuConv *c = p;
#ifdef V3_HAVE_DNNL
    if (c->kind == K_DNNL) return dconv_impl(c->impl, which);
#endif
    return c->kind == K_SMALL ? "direct (few channels)" : "im2col+gemm (reference)";
}

const char *cpu_conv_library(void) {
#ifdef V3_HAVE_DNNL
    return dconv_library();
#else
    return "none (built without libdnnl-dev): wide layers run the reference im2col + OpenBLAS";
#endif
}
