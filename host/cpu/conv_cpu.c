/* The cpu backend's convolution ops: each plan runs each direction (forward; backward: data and weight gradients)
 * on one of two implementations, by a fixed rule on its geometry (never a timing, so a run always executes the same
 * code and its bits do not depend on machine noise):
 *   - direct kernels for few channels (conv_small.c);
 *   - oneDNN's primitives (conv_dnnl.c) when the build has oneDNN; else the reference im2col + GEMM.
 * V3_CPU_CONV=small|dnnl|blocked|plain|ref forces one for both directions, for benchmarks (bench_conv_cpu, NOTES.md).
 * V3_CPU_CONV_PROFILE=1 prints, at exit, each plan's time in forward and backward (where a step's convolution time
 * goes, layer by layer). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_internal.h"
#include "ops.h"

enum { K_SMALL, K_DNNL, K_REF };
typedef struct {
    int kind_f, kind_b, transposed; /* the forward's and the backward's implementation */
    ConvGeom g;
    SConv sc;      /* K_SMALL: the plain convolution (transposed: its adjoint, see below) */
    size_t out_hw; /* output pixels per channel */
    void *impl;    /* K_DNNL / K_REF plan, when a direction uses one */
    int N, H, W;
    double t_fwd, t_bwd; /* seconds, with V3_CPU_CONV_PROFILE */
    long n_fwd, n_bwd;
} CpuConv;

#ifdef V3_HAVE_DNNL
#define K_WIDE K_DNNL
#else
#define K_WIDE K_REF
#endif

/* The rule (measured per layer with ./bench/bench_conv_cpu on the models' layers at their training batches; NOTES.md,
 * "Which implementation runs which layer"). lo, hi: the smaller and larger channel count; plane: output pixels per
 * image. The direct kernels pay for padding each image and, with a stride, for space to depth, and oneDNN's blocked
 * layouts pad channels to 16, so:
 *   - strided 1x1 kernels, and layers with both sides above 4 and one above 8: oneDNN;
 *   - output planes under 64 pixels (the width-16 model's 6x4 and 3x2 stages): oneDNN (padding dominates);
 *   - other strided layers: forward oneDNN, backward direct (space to depth costs the forward most);
 *   - one side <= 4 and the other above 8: stems (plain) forward oneDNN, backward direct; output layers
 *     (transposed) forward direct, backward oneDNN;
 *   - everything else with both sides <= 8: direct. */
static void choose(const ConvGeom *g, int transposed, int Ho, int Wo, int *kf, int *kb) {
    const char *v = getenv("V3_CPU_CONV");
    int lo = g->cin < g->cout ? g->cin : g->cout, hi = g->cin < g->cout ? g->cout : g->cin;
    *kf = *kb = K_WIDE;
    if (g->sh != g->sw || g->sh > 4) return;
    if (v && !strcmp(v, "small")) { *kf = *kb = K_SMALL; return; }
    if (v && !strcmp(v, "ref")) { *kf = *kb = K_REF; return; }
    if (v && (!strcmp(v, "dnnl") || !strcmp(v, "blocked") || !strcmp(v, "plain"))) return;
    int k1 = g->kh == 1 && g->kw == 1, strided = g->sh > 1;
    if (k1 && strided) return;
    if (hi > 8 && lo > 4) return;
    if ((long)Ho * Wo < 64) return;
    if (strided) { *kb = K_SMALL; return; }
    if (hi > 8) {
        if (transposed) *kf = K_SMALL; /* output layers: the backward stays on oneDNN */
        else *kb = K_SMALL;           /* stems: the forward stays on oneDNN */
        return;
    }
    *kf = *kb = K_SMALL;
}

/* ---- V3_CPU_CONV_PROFILE: per-plan times, printed at exit (plans are kept in a list until then) ---- */
#define MAX_PROF 512
static CpuConv *g_prof[MAX_PROF];
static int g_nprof = -1; /* -1: not yet read the environment; -2: off */
static void prof_print(void) {
    double tot = 0;
    for (int i = 0; i < g_nprof; i++) tot += g_prof[i]->t_fwd + g_prof[i]->t_bwd;
    fprintf(stderr, "conv profile (V3_CPU_CONV_PROFILE): %.3f s in %d plans\n", tot, g_nprof);
    fprintf(stderr, "  %-13s %-28s %-14s %-34s %9s %9s %6s\n", "kind fwd/bwd", "layer", "input", "impl", "fwd ms",
            "bwd ms", "calls");
    for (int i = 0; i < g_nprof; i++) {
        const CpuConv *c = g_prof[i];
        char lay[64], in[32];
        snprintf(lay, sizeof lay, "%s%d->%d %dx%d s%d", c->transposed ? "T " : "", c->g.cin, c->g.cout, c->g.kh,
                 c->g.kw, c->g.sh);
        snprintf(in, sizeof in, "%dx%dx%d", c->N, c->H, c->W);
        const char *kn[] = {"direct", "dnnl", "ref"};
        char kind[16], impl[64];
        snprintf(kind, sizeof kind, "%s%s%s", kn[c->kind_f], c->kind_b != c->kind_f ? "/" : "",
                 c->kind_b != c->kind_f ? kn[c->kind_b] : "");
        snprintf(impl, sizeof impl, "%s%s%s", cpu_conv_impl(c, 0), c->kind_b != c->kind_f ? " / " : "",
                 c->kind_b != c->kind_f ? cpu_conv_impl(c, 1) : "");
        fprintf(stderr, "  %-13s %-28s %-14s %-34.34s %9.2f %9.2f %6ld\n", kind, lay, in, impl,
                c->n_fwd ? 1e3 * c->t_fwd / c->n_fwd : 0, c->n_bwd ? 1e3 * c->t_bwd / c->n_bwd : 0,
                c->n_fwd + c->n_bwd);
    }
}
static void prof_add(CpuConv *c) {
    if (g_nprof == -1) {
        const char *v = getenv("V3_CPU_CONV_PROFILE");
        g_nprof = v && *v && strcmp(v, "0") ? 0 : -2;
        if (g_nprof == 0) atexit(prof_print);
    }
    if (g_nprof >= 0 && g_nprof < MAX_PROF) g_prof[g_nprof++] = c;
}
static int prof_on(void) { return g_nprof >= 0; }

void *cpu_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    if (transposed && (g->sh != 1 || g->sw != 1)) {
        v3_error("transposed convolution supports stride 1 only (got %d,%d)", g->sh, g->sw);
        return NULL;
    }
    CpuConv *c = xcalloc(1, sizeof *c);
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
    choose(g, transposed, transposed ? c->sc.H : c->sc.Ho, transposed ? c->sc.W : c->sc.Wo, &c->kind_f, &c->kind_b);
    int wide = c->kind_f != K_SMALL ? c->kind_f : c->kind_b; /* the library plan a direction needs, if any */
#ifdef V3_HAVE_DNNL
    if (wide == K_DNNL) c->impl = dconv_plan(g, transposed, N, H, W);
#endif
    if (wide == K_REF) c->impl = ref_conv_plan(g, transposed, N, H, W, math);
    if (wide != K_SMALL && !c->impl) {
        free(c);
        return NULL;
    }
    c->N = N, c->H = H, c->W = W;
    prof_add(c);
    return c;
}

void cpu_conv_destroy(void *p) {
    CpuConv *c = p;
    if (!c || prof_on()) return; /* profiling keeps plans for the report at exit */
    int wide = c->kind_f != K_SMALL ? c->kind_f : c->kind_b;
#ifdef V3_HAVE_DNNL
    if (wide == K_DNNL) dconv_destroy(c->impl);
#endif
    if (wide == K_REF) ref_conv_destroy(c->impl);
    free(c);
}

static void conv_fwd(const CpuConv *c, const float *x, const float *w, const float *b, float *y) {
#ifdef V3_HAVE_DNNL
    if (c->kind_f == K_DNNL) return dconv_fwd(c->impl, x, w, b, y);
#endif
    if (c->kind_f == K_REF) return ref_conv_fwd(c->impl, x, w, b, y);
    if (c->transposed) sconv_bwd_data(&c->sc, x, w, b, y);
    else sconv_fwd(&c->sc, x, w, b, y);
}

static void conv_bwd(const CpuConv *c, const float *x, const float *w, const float *dy, float *dx, float *dw,
                     float *db) {
#ifdef V3_HAVE_DNNL
    if (c->kind_b == K_DNNL) return dconv_bwd(c->impl, x, w, dy, dx, dw, db);
#endif
    if (c->kind_b == K_REF) return ref_conv_bwd(c->impl, x, w, dy, dx, dw, db);
    if (db) cpu_bias_grad(dy, c->sc.N, c->g.cout, c->out_hw, db);
    if (c->transposed) {
        /* the adjoint convolution's input is dy (channels cout), its output x (channels cin) */
        sconv_bwd_weights(&c->sc, dy, x, dw);
        if (dx) sconv_fwd(&c->sc, dy, w, NULL, dx);
    } else {
        sconv_bwd_weights(&c->sc, x, dy, dw);
        if (dx) sconv_bwd_data(&c->sc, dy, w, NULL, dx);
    }
}

void cpu_conv_fwd(const void *p, const float *x, const float *w, const float *b, float *y) {
    CpuConv *c = (CpuConv *)p;
    double t0 = prof_on() ? omp_get_wtime() : 0;
    conv_fwd(c, x, w, b, y);
    if (prof_on()) c->t_fwd += omp_get_wtime() - t0, c->n_fwd++;
}

void cpu_conv_bwd(const void *p, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    CpuConv *c = (CpuConv *)p;
    double t0 = prof_on() ? omp_get_wtime() : 0;
    conv_bwd(c, x, w, dy, dx, dw, db);
    if (prof_on()) c->t_bwd += omp_get_wtime() - t0, c->n_bwd++;
}

/* "direct (few channels)", "im2col+gemm (reference)", or oneDNN's implementation name for which = 0 forward,
 * 1 data gradient, 2 weight gradient */
const char *cpu_conv_impl(const void *p, int which) {
    const CpuConv *c = p;
    int k = which == 0 ? c->kind_f : c->kind_b;
#ifdef V3_HAVE_DNNL
    if (k == K_DNNL) return dconv_impl(c->impl, which);
#endif
    return k == K_SMALL ? "direct (few channels)" : "im2col+gemm (reference)";
}

const char *cpu_conv_library(void) {
#ifdef V3_HAVE_DNNL
    return dconv_library();
#else
    return "none (built without libdnnl-dev): wide layers run the reference im2col + OpenBLAS";
#endif
}
