/* The reference backend's table ops that are not plain reference functions of their own file: memory (host
 * memory), convolution plans over ref_conv2d/ref_convT2d, column ops, the VQ workspace over vq.c and the V3
 * statistics over v3_loss; and the ref and emu tables (backend.h; the cpu table is host/cpu/backend_cpu.c). */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "ops.h"
#include "v3loss.h"
#include "vq.h"

void *ref_alloc(size_t bytes) { return xmalloc(bytes ? bytes : 1); }
void ref_free(void *p) { free(p); }
/* The step's state may be the Model's own buffers (host_state): a copy onto itself is then a no-op. */
static int host_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) memcpy(dst, src, bytes);
    return 0;
}
int ref_h2d(void *dst, const void *src, size_t bytes) { return host_copy(dst, src, bytes); }
int ref_d2h(void *dst, const void *src, size_t bytes) { return host_copy(dst, src, bytes); }
int ref_memset(void *dst, int byte, size_t bytes) {
    memset(dst, byte, bytes);
    return 0;
}
int ref_sync(void) { return 0; }
void ref_reserve_scratch(size_t bytes) { (void)bytes; }
int ref_algos_save(const char *path) { return 0; }
int ref_algos_load(const char *path) { return 0; }

void ref_mse_fwd(size_t n, const float *a, const float *b, double *out) { *out = ref_mse(n, a, b); }
void ref_ste_value(size_t n, const float *z, const float *q, float *out) { v3_ste_value(n, z, q, out); }

typedef struct { ConvGeom g; int transposed, N, H, W; } RefConv;

void *ref_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    RefConv *c = xmalloc(sizeof *c);
    c->g = *g;
    c->transposed = transposed;
    c->N = N;
    c->H = H;
    c->W = W;
    return c;
}
void ref_conv_destroy(void *p) { free(p); }
void ref_conv_fwd(const void *p, const float *x, const float *w, const float *b, float *y) {
    const RefConv *c = p;
    if (c->transposed) ref_convT2d_fwd(&c->g, c->N, c->H, c->W, x, w, b, y);
    else ref_conv2d_fwd(&c->g, c->N, c->H, c->W, x, w, b, y);
}
void ref_conv_bwd(const void *p, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    const RefConv *c = p;
    if (c->transposed) ref_convT2d_bwd(&c->g, c->N, c->H, c->W, x, w, dy, dx, dw, db);
    else ref_conv2d_bwd(&c->g, c->N, c->H, c->W, x, w, dy, dx, dw, db);
}

void ref_copy_cols(int rows, int cols, const float *src, int lds, float *dst, int ldd) {
    for (int i = 0; i < rows; i++) memcpy(dst + (size_t)i * ldd, src + (size_t)i * lds, sizeof(float) * cols);
}
void ref_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy) {
    for (int i = 0; i < rows; i++) ref_gelu_fwd((size_t)cols, x + (size_t)i * ldx, y + (size_t)i * ldy);
}
void ref_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd) {
    for (int i = 0; i < rows; i++)
        ref_gelu_bwd((size_t)cols, x + (size_t)i * ldx, dy + (size_t)i * lddy, dx + (size_t)i * ldd);
}
void ref_axpy_diff(size_t n, double k, const float *a, const float *b, float *g) {
    for (size_t i = 0; i < n; i++) g[i] += (float)(k * ((double)a[i] - (b ? b[i] : 0.0f)));
}

/* VQ: the search remembers its batch for the EMA, which is vq_ema_update on borrowed arrays (threshold 0). */
typedef struct { int K, d, N; const float *x; const int *ind; } RefVq;

void *ref_vq_create(int K, int d, int N_max) {
    RefVq *w = xcalloc(1, sizeof *w);
    w->K = K;
    w->d = d;
    return w;
}
void ref_vq_destroy(void *w) { free(w); }
void ref_vq_search(void *p, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum) {
    RefVq *w = p;
    int d = w->d;
    vq_assign(embed, w->K, d, N, x, ind);
    double s = 0;
    for (int i = 0; i < N; i++) {
        const float *e = embed + (size_t)ind[i] * d;
        memcpy(q + (size_t)i * d, e, sizeof(float) * d);
        for (int t = 0; t < d; t++) {
            double v = (double)e[t] - x[(size_t)i * d + t];
            s += v * v;
        }
    }
    *commit_sum = s;
    w->N = N;
    w->x = x;
    w->ind = ind;
}
void ref_vq_ema(void *p, float decay, float *embed, float *embed_avg, float *cluster_size) {
    RefVq *w = p;
    VQ v;
    memset(&v, 0, sizeof v);
    v.K = w->K;
    v.d = w->d;
    v.decay = decay;
    v.embed = embed;
    v.embed_avg = embed_avg;
    v.cluster_size = cluster_size;
    vq_ema_update(&v, w->N, w->x, w->ind, NULL);
}
void ref_vq_revive(void *p, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                   float *embed, float *embed_avg, float *cluster_size) {
    RefVq *w = p;
    vq_revive_codes(w->d, ndead, dead, rows, x, threshold, embed, embed_avg, cluster_size);
}

/* V3: v3_loss itself; the forward packs its statistics into the block layout. */
typedef struct { V3LossCfg cfg; int B, n, dc, ds; double stats[V3_STATS_DOUBLES]; } RefV3;

void *ref_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds) {
    RefV3 *w = xcalloc(1, sizeof *w);
    w->cfg = *cfg;
    w->B = B;
    w->n = n;
    w->dc = dc;
    w->ds = ds;
    return w;
}
void ref_v3_destroy(void *w) { free(w); }
void ref_v3_forward(void *p, const float *zc, const float *q, const float *zs) {
    RefV3 *w = p;
    V3Stats st;
    v3_loss(&w->cfg, w->B, w->n, w->dc, w->ds, zc, q, zs, &st, NULL, NULL);
    v3_stats_pack(&st, w->stats);
}
void ref_v3_backward(void *p, const float *zc, const float *q, const float *zs, float *gzc, float *gzs) {
    RefV3 *w = p;
    V3Stats st;
    v3_loss(&w->cfg, w->B, w->n, w->dc, w->ds, zc, q, zs, &st, gzc, gzs);
}
const double *ref_v3_stats(const void *p) { return ((const RefV3 *)p)->stats; }

const Backend backend_ref = {.name = "ref", .host_state = 1, V3_BACKEND_TABLE(ref)};
const Backend backend_emu = {.name = "emu", .host_state = 0, V3_BACKEND_TABLE(ref)};
