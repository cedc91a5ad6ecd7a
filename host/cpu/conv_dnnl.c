/* The cpu backend's wide convolutions: oneDNN's direct convolution and deconvolution primitives (libdnnl-dev, what PyTorch
 * runs on CPUs) instead of the reference's im2col + GEMM. oneDNN picks its own memory layouts (format "any": blocked
 * nChw16c and friends at these widths); we reorder our plain NCHW tensors into them and back, per call, so the rest
 * of the step keeps the op list's layouts. A transposed convolution is oneDNN's deconvolution with weights "iohw"
 * ([cin, cout, kh, kw], PyTorch's ConvTranspose2d layout).
 *
 * Contract (op_list.h): conv_bwd OVERWRITES dx and ACCUMULATES dw, db: oneDNN writes fresh gradients, so they go to
 * scratch and are added by a reorder with a sum post-op (dw) or a loop (db). A NULL bias runs with zeros.
 * Determinism: oneDNN's OpenMP runtime is our pool; its reductions (weight gradients over the batch) are in a fixed
 * order for a fixed thread count, so the step is run-to-run identical at a fixed thread count (NOTES.md).
 * Scratch (blocked copies, primitive workspaces) is shared by all plans and grown on demand: single caller thread,
 * as for the reference convolutions. Built only with oneDNN (V3_HAVE_DNNL); conv_cpu.c decides which layers come
 * here. */
#define _POSIX_C_SOURCE 200809L
#include "cpu_internal.h"

#ifdef V3_HAVE_DNNL
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops.h"

static dnnl_engine_t g_eng;
static dnnl_stream_t g_strm;

#define DNNL_OK(call)                                                                                           \
    do {                                                                                                        \
        dnnl_status_t st_ = (call);                                                                             \
        if (st_ != dnnl_success) V3_FATAL("oneDNN: %s failed (status %d)", #call, (int)st_);                   \
    } while (0)

static void engine_init(void) {
    if (g_eng) return;
    DNNL_OK(dnnl_engine_create(&g_eng, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&g_strm, g_eng, dnnl_stream_default_flags));
}

/* Shared scratch slots (bytes), 64-byte aligned. */
enum { S_SRC, S_WEI, S_DST, S_PAD, S_SRC2, S_DWEI, S_DBIAS, S_ZERO, N_SLOTS };
static void *g_slot[N_SLOTS];
static size_t g_slot_n[N_SLOTS];

static void *slot(int i, size_t bytes) {
    if (g_slot_n[i] < bytes) {
        free(g_slot[i]);
        size_t n = (bytes + 63) / 64 * 64;
        if (posix_memalign(&g_slot[i], 64, n)) V3_FATAL("out of memory: %zu bytes of convolution scratch", n);
        memset(g_slot[i], 0, n);
        g_slot_n[i] = n;
    }
    return g_slot[i];
}

/* One tensor argument of a primitive: the plain layout we hold it in, the layout the primitive wants, and the
 * reorder between them (NULL when they agree: the primitive reads or writes our buffer directly). */
typedef struct {
    dnnl_memory_desc_t user, prim;
    dnnl_memory_t user_mem, prim_mem;
    dnnl_primitive_t reorder; /* user -> prim for inputs, prim -> user for outputs */
    int slot;
} Arg;

static void arg_init(Arg *a, const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *prim, int is_output,
                     int slot_i, float sum_scale) {
    a->user = *user;
    a->prim = *prim;
    a->slot = slot_i;
    a->reorder = NULL;
    DNNL_OK(dnnl_memory_create(&a->user_mem, &a->user, g_eng, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&a->prim_mem, &a->prim, g_eng, DNNL_MEMORY_NONE));
    /* an accumulating output (sum_scale 1) always goes through a reorder: it adds */
    if (!dnnl_memory_desc_equal(&a->user, &a->prim) || sum_scale != 0.0f) {
        dnnl_primitive_attr_t attr = NULL;
        if (sum_scale != 0.0f) {
            dnnl_post_ops_t po;
            DNNL_OK(dnnl_primitive_attr_create(&attr));
            DNNL_OK(dnnl_post_ops_create(&po));
            DNNL_OK(dnnl_post_ops_append_sum(po, sum_scale));
            DNNL_OK(dnnl_primitive_attr_set_post_ops(attr, po));
            dnnl_post_ops_destroy(po);
        }
        dnnl_primitive_desc_t pd;
        if (is_output) DNNL_OK(dnnl_reorder_primitive_desc_create(&pd, &a->prim, g_eng, &a->user, g_eng, attr));
        else DNNL_OK(dnnl_reorder_primitive_desc_create(&pd, &a->user, g_eng, &a->prim, g_eng, attr));
        DNNL_OK(dnnl_primitive_create(&a->reorder, pd));
        dnnl_primitive_desc_destroy(pd);
        if (attr) dnnl_primitive_attr_destroy(attr);
    }
}

static void arg_destroy(Arg *a) {
    if (a->reorder) dnnl_primitive_destroy(a->reorder);
    dnnl_memory_destroy(a->user_mem);
    dnnl_memory_destroy(a->prim_mem);
}

static void run(dnnl_primitive_t p, int n, const dnnl_exec_arg_t *args) {
    DNNL_OK(dnnl_primitive_execute(p, g_strm, n, args));
}

static void reorder_run(dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to) {
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    run(r, 2, a);
}

/* Binds our buffer to an input argument and returns the memory the primitive reads (reordering into scratch). */
static dnnl_memory_t arg_in(Arg *a, const float *user) {
    DNNL_OK(dnnl_memory_set_data_handle(a->user_mem, (void *)user));
    if (!a->reorder) return a->user_mem;
    DNNL_OK(dnnl_memory_set_data_handle(a->prim_mem, slot(a->slot, dnnl_memory_desc_get_size(&a->prim))));
    reorder_run(a->reorder, a->user_mem, a->prim_mem);
    return a->prim_mem;
}

/* The memory an output argument is written to (scratch when a reorder follows); arg_out_finish moves it home. */
static dnnl_memory_t arg_out(Arg *a, float *user) {
    DNNL_OK(dnnl_memory_set_data_handle(a->user_mem, user));
    if (!a->reorder) return a->user_mem;
    DNNL_OK(dnnl_memory_set_data_handle(a->prim_mem, slot(a->slot, dnnl_memory_desc_get_size(&a->prim))));
    return a->prim_mem;
}
static void arg_out_finish(Arg *a) {
    if (a->reorder) reorder_run(a->reorder, a->prim_mem, a->user_mem);
}

typedef struct {
    ConvGeom g;
    int transposed, N, H, W, Ho, Wo;
    dnnl_primitive_t fwd, bwd_data, bwd_w;
    dnnl_memory_desc_t pad_fwd, pad_bd, pad_bw; /* scratchpads */
    dnnl_memory_t pad_mem, bias_mem, dbias_mem;
    Arg f_src, f_wei, f_dst;                     /* forward */
    Arg d_ddst, d_wei, d_dsrc;                   /* backward data */
    Arg w_src, w_ddst, w_dwei;                   /* backward weights */
    char impl[3][64];
} DnnlConv;

static const dnnl_memory_desc_t *q_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, 0);
    if (!md) V3_FATAL("oneDNN: primitive descriptor query %d returned nothing", (int)what);
    return md;
}

static void impl_name(const_dnnl_primitive_desc_t pd, char *out) {
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s) s = "?";
    snprintf(out, 64, "%s", s);
}

static dnnl_primitive_attr_t user_scratchpad_attr(void) {
    dnnl_primitive_attr_t attr;
    DNNL_OK(dnnl_primitive_attr_create(&attr));
    DNNL_OK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    return attr;
}

/* The layouts each direction runs in: oneDNN's blocked layouts ("any") except where its plain-layout (NCHW, GEMM
 * based) implementation measured faster on the models' layers (NOTES.md, "Which implementation runs which layer",
 * ./bench/bench_conv_cpu): 1x1 convolutions with a stride from fewer than 64 channels (blocked reorders the whole
 * strided input for a small GEMM: 1.7x slower at 16->32 on 48x32 planes, but 2.2x faster at 128->256), and
 * transposed 1x1 convolutions to at most 64 channels (2x faster at 64->32 and 32->16, slower at 256->128). A fixed
 * rule, not a timing, so the same geometry always runs the same code. V3_CPU_CONV=blocked|plain forces one. */
enum { D_FWD, D_BWD_DATA, D_BWD_W };
static int plain_layout(const DnnlConv *c, int dir) {
    const char *v = getenv("V3_CPU_CONV");
    if (v && !strcmp(v, "plain")) return 1;
    if (v && !strcmp(v, "blocked")) return 0;
    const ConvGeom *g = &c->g;
    if (g->kh != 1 || g->kw != 1) return 0;
    if (g->sh > 1 || g->sw > 1) return g->cin < 64;
    return c->transposed && g->cout <= 64;
}

typedef struct {
    dnnl_memory_desc_t src, dst, wei, bias;
    dnnl_dims_t strides, pl, pr;
} Descs;

/* One direction's primitive descriptor in plain or blocked layouts; the forward one (hint NULL) is also the hint
 * the backward directions need. */
static dnnl_status_t make_pd(const DnnlConv *c, const Descs *u, int dir, int plain, const_dnnl_primitive_desc_t hint,
                             dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t src = u->src, dst = u->dst, wei = u->wei;
    if (!plain) {
        DNNL_OK(dnnl_memory_desc_init_by_tag(&src, 4, u->src.dims, dnnl_f32, dnnl_format_tag_any));
        DNNL_OK(dnnl_memory_desc_init_by_tag(&dst, 4, u->dst.dims, dnnl_f32, dnnl_format_tag_any));
        DNNL_OK(dnnl_memory_desc_init_by_tag(&wei, 4, u->wei.dims, dnnl_f32, dnnl_format_tag_any));
    }
    dnnl_primitive_attr_t attr = user_scratchpad_attr();
    dnnl_status_t st;
    const dnnl_dim_t *s = u->strides, *pl = u->pl, *pr = u->pr;
    if (c->transposed) {
        dnnl_deconvolution_desc_t d;
        dnnl_alg_kind_t alg = dnnl_deconvolution_direct;
        if (dir == D_FWD)
            st = dnnl_deconvolution_forward_desc_init(&d, dnnl_forward_training, alg, &src, &wei, &u->bias, &dst, s,
                                                      pl, pr);
        else if (dir == D_BWD_DATA)
            st = dnnl_deconvolution_backward_data_desc_init(&d, alg, &src, &wei, &dst, s, pl, pr);
        else st = dnnl_deconvolution_backward_weights_desc_init(&d, alg, &src, &wei, &u->bias, &dst, s, pl, pr);
        if (st == dnnl_success) st = dnnl_primitive_desc_create(pd, &d, attr, g_eng, hint);
    } else {
        dnnl_convolution_desc_t d;
        dnnl_alg_kind_t alg = dnnl_convolution_direct;
        if (dir == D_FWD)
            st = dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, alg, &src, &wei, &u->bias, &dst, s, pl,
                                                    pr);
        else if (dir == D_BWD_DATA) st = dnnl_convolution_backward_data_desc_init(&d, alg, &src, &wei, &dst, s, pl, pr);
        else st = dnnl_convolution_backward_weights_desc_init(&d, alg, &src, &wei, &u->bias, &dst, s, pl, pr);
        if (st == dnnl_success) st = dnnl_primitive_desc_create(pd, &d, attr, g_eng, hint);
    }
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Creates the three primitives; returns -1 with v3_error when oneDNN has no implementation for the geometry. */
static int make_prims(DnnlConv *c) {
    const ConvGeom *g = &c->g;
    int cin = g->cin, cout = g->cout;
    Descs u;
    dnnl_dims_t src_d = {c->N, cin, c->H, c->W}, dst_d = {c->N, cout, c->Ho, c->Wo};
    dnnl_dims_t wei_d = {cout, cin, g->kh, g->kw}, bias_d = {cout};
    u.strides[0] = g->sh, u.strides[1] = g->sw, u.pl[0] = g->ph, u.pl[1] = g->pw;
    if (c->transposed) {
        u.pr[0] = g->ph, u.pr[1] = g->pw; /* output H + kh - 1 - 2 ph */
    } else {
        u.pr[0] = (c->Ho - 1) * g->sh + g->kh - c->H - g->ph;
        u.pr[1] = (c->Wo - 1) * g->sw + g->kw - c->W - g->pw;
    }
    DNNL_OK(dnnl_memory_desc_init_by_tag(&u.src, 4, src_d, dnnl_f32, dnnl_nchw));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&u.dst, 4, dst_d, dnnl_f32, dnnl_nchw));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&u.wei, 4, wei_d, dnnl_f32, c->transposed ? dnnl_iohw : dnnl_oihw));
    DNNL_OK(dnnl_memory_desc_init_by_tag(&u.bias, 1, bias_d, dnnl_f32, dnnl_x));

    /* forward descriptors in both layouts as hints (the backward ones want a forward of their own layout) */
    dnnl_primitive_desc_t hint[2] = {NULL, NULL}, pd[3] = {NULL, NULL, NULL};
    dnnl_status_t st = dnnl_success;
    for (int dir = 0; dir < 3 && st == dnnl_success; dir++) {
        int pl = plain_layout(c, dir);
        if (!hint[pl]) st = make_pd(c, &u, D_FWD, pl, NULL, &hint[pl]);
        if (st == dnnl_success) st = make_pd(c, &u, dir, pl, hint[pl], &pd[dir]);
    }
    for (int i = 0; i < 2; i++)
        if (hint[i]) dnnl_primitive_desc_destroy(hint[i]);
    if (st != dnnl_success) {
        for (int i = 0; i < 3; i++)
            if (pd[i]) dnnl_primitive_desc_destroy(pd[i]);
        return v3_error("oneDNN has no %sconvolution for %d->%d %dx%d stride %d,%d on %dx%d (status %d)",
                        c->transposed ? "transposed " : "", cin, cout, g->kh, g->kw, g->sh, g->sw, c->H, c->W,
                        (int)st);
    }
    dnnl_primitive_desc_t fpd = pd[0], dpd = pd[1], wpd = pd[2];
    impl_name(fpd, c->impl[0]);
    impl_name(dpd, c->impl[1]);
    impl_name(wpd, c->impl[2]);
    arg_init(&c->f_src, &u.src, q_md(fpd, dnnl_query_src_md), 0, S_SRC, 0);
    arg_init(&c->f_wei, &u.wei, q_md(fpd, dnnl_query_weights_md), 0, S_WEI, 0);
    arg_init(&c->f_dst, &u.dst, q_md(fpd, dnnl_query_dst_md), 1, S_DST, 0);
    arg_init(&c->d_ddst, &u.dst, q_md(dpd, dnnl_query_diff_dst_md), 0, S_DST, 0);
    arg_init(&c->d_wei, &u.wei, q_md(dpd, dnnl_query_weights_md), 0, S_WEI, 0);
    arg_init(&c->d_dsrc, &u.src, q_md(dpd, dnnl_query_diff_src_md), 1, S_SRC, 0);
    arg_init(&c->w_src, &u.src, q_md(wpd, dnnl_query_src_md), 0, S_SRC2, 0);
    arg_init(&c->w_ddst, &u.dst, q_md(wpd, dnnl_query_diff_dst_md), 0, S_DST, 0);
    arg_init(&c->w_dwei, &u.wei, q_md(wpd, dnnl_query_diff_weights_md), 1, S_DWEI, 1.0f);
    c->pad_fwd = *q_md(fpd, dnnl_query_scratchpad_md);
    c->pad_bd = *q_md(dpd, dnnl_query_scratchpad_md);
    c->pad_bw = *q_md(wpd, dnnl_query_scratchpad_md);
    DNNL_OK(dnnl_memory_create(&c->pad_mem, &c->pad_fwd, g_eng, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&c->bias_mem, &u.bias, g_eng, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&c->dbias_mem, &u.bias, g_eng, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_primitive_create(&c->fwd, fpd));
    DNNL_OK(dnnl_primitive_create(&c->bwd_data, dpd));
    DNNL_OK(dnnl_primitive_create(&c->bwd_w, wpd));
    for (int i = 0; i < 3; i++) dnnl_primitive_desc_destroy(pd[i]);
    return 0;
}

/* A scratchpad memory of the given descriptor over the shared slot (the memory objects are rebound per call). */
static dnnl_memory_t pad(DnnlConv *c, const dnnl_memory_desc_t *md) {
    size_t n = dnnl_memory_desc_get_size(md);
    dnnl_memory_destroy(c->pad_mem);
    DNNL_OK(dnnl_memory_create(&c->pad_mem, md, g_eng, n ? slot(S_PAD, n) : DNNL_MEMORY_NONE));
    return c->pad_mem;
}

void *dconv_plan(const ConvGeom *g, int transposed, int N, int H, int W) {
    engine_init();
    DnnlConv *c = xcalloc(1, sizeof *c);
    c->g = *g;
    c->transposed = transposed;
    c->N = N, c->H = H, c->W = W;
    c->Ho = transposed ? H + g->kh - 1 - 2 * g->ph : conv_out_size(H, g->kh, g->sh, g->ph);
    c->Wo = transposed ? W + g->kw - 1 - 2 * g->pw : conv_out_size(W, g->kw, g->sw, g->pw);
    if (make_prims(c) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

void dconv_destroy(void *p) {
    DnnlConv *c = p;
    if (!c) return;
    Arg *args[] = {&c->f_src, &c->f_wei, &c->f_dst, &c->d_ddst, &c->d_wei, &c->d_dsrc, &c->w_src, &c->w_ddst, &c->w_dwei};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) arg_destroy(args[i]);
    dnnl_primitive_destroy(c->fwd);
    dnnl_primitive_destroy(c->bwd_data);
    dnnl_primitive_destroy(c->bwd_w);
    dnnl_memory_destroy(c->pad_mem);
    dnnl_memory_destroy(c->bias_mem);
    dnnl_memory_destroy(c->dbias_mem);
    free(c);
}

void dconv_fwd(const void *p, const float *x, const float *w, const float *b, float *y) {
    DnnlConv *c = (DnnlConv *)p;
    if (!b) b = slot(S_ZERO, sizeof(float) * c->g.cout); /* zeros: the slot is only ever zero-filled */
    DNNL_OK(dnnl_memory_set_data_handle(c->bias_mem, (void *)b));
    dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, arg_in(&c->f_src, x)},
                            {DNNL_ARG_WEIGHTS, arg_in(&c->f_wei, w)},
                            {DNNL_ARG_BIAS, c->bias_mem},
                            {DNNL_ARG_DST, arg_out(&c->f_dst, y)},
                            {DNNL_ARG_SCRATCHPAD, pad(c, &c->pad_fwd)}};
    run(c->fwd, 5, a);
    arg_out_finish(&c->f_dst);
}

void dconv_bwd(const void *p, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    DnnlConv *c = (DnnlConv *)p;
    int cout = c->g.cout;
    /* weight (and bias) gradients first: the diff_dst reorder is shared when both want the same layout */
    float *dbs = slot(S_DBIAS, sizeof(float) * cout);
    DNNL_OK(dnnl_memory_set_data_handle(c->dbias_mem, dbs));
    dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, arg_in(&c->w_src, x)},
                            {DNNL_ARG_DIFF_DST, arg_in(&c->w_ddst, dy)},
                            {DNNL_ARG_DIFF_WEIGHTS, arg_out(&c->w_dwei, dw)},
                            {DNNL_ARG_DIFF_BIAS, c->dbias_mem},
                            {DNNL_ARG_SCRATCHPAD, pad(c, &c->pad_bw)}};
    run(c->bwd_w, 5, a);
    arg_out_finish(&c->w_dwei); /* dw += */
    /* db in double, as ref: oneDNN's float sum of N*H*W terms is ~100x noisier where the exact gradient is zero
     * (a bias in front of BatchNorm), which the trajectory test sees */
    if (db) cpu_bias_grad(dy, c->N, cout, (size_t)c->Ho * c->Wo, db);
    if (!dx) return;
    dnnl_memory_t ddst = c->w_ddst.reorder && dnnl_memory_desc_equal(&c->w_ddst.prim, &c->d_ddst.prim)
                             ? c->w_ddst.prim_mem /* already in the slot, same layout */
                             : arg_in(&c->d_ddst, dy);
    dnnl_exec_arg_t d[4] = {{DNNL_ARG_DIFF_DST, ddst},
                            {DNNL_ARG_WEIGHTS, arg_in(&c->d_wei, w)},
                            {DNNL_ARG_DIFF_SRC, arg_out(&c->d_dsrc, dx)},
                            {DNNL_ARG_SCRATCHPAD, pad(c, &c->pad_bd)}};
    run(c->bwd_data, 4, d);
    arg_out_finish(&c->d_dsrc);
}

const char *dconv_impl(const void *p, int which) {
    const DnnlConv *c = p;
    return which >= 0 && which < 3 ? c->impl[which] : "?";
}
const char *dconv_library(void) {
    static char s[48];
    const dnnl_version_t *v = dnnl_version();
    snprintf(s, sizeof s, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
    return s;
}

#endif
