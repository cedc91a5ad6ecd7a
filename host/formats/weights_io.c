/* The model as the authors' PyTorch state_dict (include/weights_io.h). One ordered plan of every state_dict tensor,
 * built from the model's name tables, drives both export and import, so the two cannot disagree. The order is
 * PyTorch's module order (CSAE: encoder, vq, decoder; each BatchNorm's weight, bias, running_mean, running_var,
 * num_batches_tracked together). Our memory layouts are PyTorch's row-major layouts (include/model.h TensorInfo:
 * checked against the conv, transposed conv and linear ops), so no tensor is transposed on the way. */
#define _POSIX_C_SOURCE 200809L
#include "weights_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef enum {
    W_F32,     /* floats of the model (parameters, BN statistics, codebook buffers) */
    W_NBT,     /* BatchNorm num_batches_tracked: I64 scalar, not kept by our model (import checks and drops it) */
    W_CONST,   /* running stats of the unused bn_c / bn_s, which our model does not keep: written as a constant */
    W_INITTED, /* vq._codebook.initted: F32 [1], our VQ's flag */
} WKind;

typedef struct {
    char name[112];
    WKind kind;
    int ndim;
    int64_t shape[4];
    float *p;      /* W_F32 */
    float value;   /* W_CONST */
    long count;    /* W_NBT: exported value */
} WEntry;

typedef struct { WEntry *e; int n; } Plan;

static WEntry *push(Plan *pl, const char *name, WKind kind, int ndim, const int64_t *shape) {
    pl->e = xrealloc(pl->e, sizeof(WEntry) * (size_t)(pl->n + 1));
    WEntry *e = &pl->e[pl->n++];
    memset(e, 0, sizeof *e);
    if ((size_t)snprintf(e->name, sizeof e->name, "%s", name) >= sizeof e->name) V3_FATAL("name too long: %s", name);
    e->kind = kind;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    return e;
}

static void push_info(Plan *pl, float *base, const TensorInfo *t) {
    push(pl, t->name, W_F32, t->ndim, t->shape)->p = base + t->off;
}

static const TensorInfo *find_info(const TensorInfo *tab, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(tab[i].name, name)) return &tab[i];
    return NULL;
}

static void push_nbt(Plan *pl, const char *prefix, long count) {
    char name[140];
    snprintf(name, sizeof name, "%.96s.num_batches_tracked", prefix);
    push(pl, name, W_NBT, 0, NULL)->count = count;
}

/* The unused BatchNorm1d bn_c / bn_s: weight and bias are ours; running stats are the PyTorch init values. */
static void push_unused_bn(Plan *pl, Model *m, const char *prefix) {
    char name[112];
    const char *pw[2] = {"weight", "bias"};
    int64_t C = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof name, "%s.%s", prefix, pw[k]);
        const TensorInfo *t = find_info(m->params, m->n_params_t, name);
        if (!t) V3_FATAL("model has no %s", name);
        push_info(pl, m->p, t);
        C = t->shape[0];
    }
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    push(pl, name, W_CONST, 1, &C)->value = 0.0f;
    snprintf(name, sizeof name, "%s.running_var", prefix);
    push(pl, name, W_CONST, 1, &C)->value = 1.0f;
    push_nbt(pl, prefix, 0);
}

/* vector-quantize-pytorch 1.18.0 VectorQuantize(dim, K) with one codebook: its EuclideanCodebook `_codebook`
 * registers initted [1] (a float tensor), cluster_size [1, K], embed_avg [1, K, d], embed [1, K, d], in this order;
 * no projections (codebook_dim == dim) and `zero` is not persistent. */
static void push_vq(Plan *pl, Model *m) {
    int64_t K = m->vq.K, d = m->vq.d, one = 1;
    int64_t cs[2] = {1, K}, e[3] = {1, K, d};
    push(pl, "vq._codebook.initted", W_INITTED, 1, &one);
    push(pl, "vq._codebook.cluster_size", W_F32, 2, cs)->p = m->vq.cluster_size;
    push(pl, "vq._codebook.embed_avg", W_F32, 3, e)->p = m->vq.embed_avg;
    push(pl, "vq._codebook.embed", W_F32, 3, e)->p = m->vq.embed;
}

/* Every state_dict tensor in PyTorch's order. Our tables hold the encoder, then the decoder, then bn_c/bn_s
 * (untrained, kept last); bn_c follows encoder.linear_c, bn_s encoder.linear_s, then the vq, then the decoder. */
static Plan make_plan(Model *m, long batches_tracked) {
    Plan pl = {NULL, 0};
    size_t np = 0, nb = 0;
    for (int i = 0; i < m->n_params_t; i++) {
        const TensorInfo *t = &m->params[i];
        if (!t->trainable) continue; /* bn_c / bn_s, placed below */
        push_info(&pl, m->p, t);
        np += t->n;
        size_t L = strlen(t->name);
        if (L < 5 || strcmp(t->name + L - 5, ".bias")) continue;
        char prefix[96], name[112];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(L - 5), t->name);
        snprintf(name, sizeof name, "%s.running_mean", prefix);
        const TensorInfo *rm = find_info(m->bufs, m->n_bufs_t, name);
        if (rm) { /* a BatchNorm2d: its buffers follow its bias */
            snprintf(name, sizeof name, "%s.running_var", prefix);
            const TensorInfo *rv = find_info(m->bufs, m->n_bufs_t, name);
            if (!rv) V3_FATAL("model has %s but no %s", rm->name, name);
            push_info(&pl, m->buf, rm);
            push_info(&pl, m->buf, rv);
            push_nbt(&pl, prefix, batches_tracked);
            nb += rm->n + rv->n;
        }
        if (t->off == m->linc_b) push_unused_bn(&pl, m, "encoder.bn_c");
        if (t->off == m->lins_b) {
            push_unused_bn(&pl, m, "encoder.bn_s");
            push_vq(&pl, m);
        }
    }
    for (int i = 0; i < m->n_params_t; i++)
        if (!m->params[i].trainable) np += m->params[i].n;
    /* every parameter and buffer exactly once (a new layer kind would otherwise go missing silently) */
    if (np != m->n_params || nb != m->n_bufs)
        V3_FATAL("state_dict plan covers %zu of %zu parameters and %zu of %zu buffers", np, m->n_params, nb, m->n_bufs);
    return pl;
}

static size_t numel(const WEntry *e) {
    size_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n;
}

static int add_meta_int(StWriter *w, const char *key, long v) {
    char s[32];
    snprintf(s, sizeof s, "%ld", v);
    return st_add_meta(w, key, s);
}

int weights_export(const Model *cm, StWriter *w, long batches_tracked) {
    Model *m = (Model *)cm; /* the plan holds writable pointers for import; export only reads through them */
    Plan pl = make_plan(m, batches_tracked);
    const Config *c = &m->cfg;
    int rc = st_add_meta(w, "format", "v3-state-dict") || st_add_meta(w, "arch", arch_name(c->arch)) ||
             add_meta_int(w, "n_channels", c->n_channels) || add_meta_int(w, "n_atoms", m->vq.K) ||
             add_meta_int(w, "d_emb_c", m->dc) || add_meta_int(w, "d_emb_s", m->ds) ||
             add_meta_int(w, "in_channels", m->arch.C) || add_meta_int(w, "n_feature", m->arch.H) ||
             add_meta_int(w, "fragment_len", m->arch.W) ? -1 : 0;
    for (int i = 0; i < pl.n && !rc; i++) {
        const WEntry *e = &pl.e[i];
        if (e->kind == W_F32) {
            rc = st_add(w, e->name, ST_F32, e->ndim, e->shape, e->p);
        } else if (e->kind == W_NBT) {
            int64_t v = e->count;
            rc = st_add(w, e->name, ST_I64, 0, NULL, &v);
        } else if (e->kind == W_INITTED) {
            float v = m->vq.initted;
            rc = st_add(w, e->name, ST_F32, e->ndim, e->shape, &v);
        } else {
            size_t n = numel(e);
            float *v = xmalloc(sizeof(float) * (n ? n : 1));
            for (size_t k = 0; k < n; k++) v[k] = e->value;
            rc = st_add(w, e->name, ST_F32, e->ndim, e->shape, v);
            free(v);
        }
    }
    free(pl.e);
    return rc ? -1 : 0;
}

static const char *shape_text(int ndim, const int64_t *s, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* Presence, dtype and shape of one expected tensor. */
static int check_entry(const StFile *f, const WEntry *e) {
    char want[96], got[96];
    shape_text(e->ndim, e->shape, want, sizeof want);
    const StTensor *t = st_find(f, e->name);
    if (!t) return v3_error("%s: tensor '%s' is missing; expected %s %s", f->path, e->name, e->kind == W_NBT ? "I64" : "F32", want);
    if (e->kind == W_NBT) {
        if (t->dtype != ST_I64 || t->ndim != 0)
            return v3_error("%s: tensor '%s' is %s %s; expected I64 [] (a scalar)", f->path, e->name,
                            st_dtype_name(t->dtype), shape_text(t->ndim, t->shape, got, sizeof got));
        return 0;
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F64 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return v3_error("%s: tensor '%s' has dtype %s; expected F32 (or F64, F16, BF16)", f->path, e->name,
                        st_dtype_name(t->dtype));
    int same = t->ndim == e->ndim;
    for (int i = 0; same && i < e->ndim; i++) same = t->shape[i] == e->shape[i];
    if (!same)
        return v3_error("%s: tensor '%s' has shape %s; expected %s", f->path, e->name,
                        shape_text(t->ndim, t->shape, got, sizeof got), want);
    return 0;
}

/* Copy one tensor into dst (finite values only: a NaN weight would poison every output silently). */
static int load_entry(const StFile *f, const WEntry *e, float *dst) {
    size_t n = numel(e);
    if (st_get_f32(f, e->name, e->ndim, e->shape, dst)) return -1;
    for (size_t k = 0; k < n; k++)
        if (!isfinite(dst[k]))
            return v3_error("%s: tensor '%s' element %zu is %g; expected finite values", f->path, e->name, k, dst[k]);
    return 0;
}

int weights_import(Model *m, const StFile *f) {
    Plan pl = make_plan(m, 0);
    int rc = 0;
    for (int i = 0; i < pl.n && !rc; i++) rc = check_entry(f, &pl.e[i]);
    for (int k = 0; k < f->n && !rc; k++) { /* nothing beyond the state_dict */
        int known = 0;
        for (int i = 0; i < pl.n && !known; i++) known = !strcmp(pl.e[i].name, f->t[k].name);
        if (!known)
            rc = v3_error("%s: unexpected tensor '%s'; expected only the %d state_dict tensors of this config's %s model",
                          f->path, f->t[k].name, pl.n, arch_name(m->cfg.arch));
    }
    /* Everything checked: load into scratch first, so a bad value leaves the model untouched. */
    float **tmp = xcalloc((size_t)pl.n + 1, sizeof(float *));
    for (int i = 0; i < pl.n && !rc; i++) {
        const WEntry *e = &pl.e[i];
        if (e->kind == W_F32 || e->kind == W_INITTED) {
            tmp[i] = xmalloc(sizeof(float) * (numel(e) ? numel(e) : 1));
            rc = load_entry(f, e, tmp[i]);
        }
    }
    for (int i = 0; i < pl.n && !rc; i++) {
        const WEntry *e = &pl.e[i];
        if (e->kind == W_F32) memcpy(e->p, tmp[i], sizeof(float) * numel(e));
        else if (e->kind == W_INITTED) m->vq.initted = tmp[i][0] != 0.0f ? 1.0f : 0.0f;
    }
    for (int i = 0; i < pl.n; i++) free(tmp[i]);
    free(tmp);
    free(pl.e);
    return rc ? -1 : 0;
}
