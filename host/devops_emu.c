/* An emulated device in host memory: every DevOps entry is the CPU reference op (see devops.h). It runs the GPU
 * step's orchestration in the CPU test suite; it is not a fast path and `v3 train` never uses it. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "devops.h"
#include "v3loss.h"
#include "vq.h"

static void *e_malloc(size_t bytes) { return xmalloc(bytes ? bytes : 1); }
static void e_free(void *p) { free(p); }
static int e_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
    return 0;
}
static int e_memset(void *dst, int byte, size_t bytes) {
    memset(dst, byte, bytes);
    return 0;
}
static int e_sync(void) { return 0; }
static void e_reserve(size_t bytes) { (void)bytes; }
static void e_mse_fwd_dev(size_t n, const float *a, const float *b, double *out) { *out = cpu_mse_fwd(n, a, b); }

typedef struct { ConvGeom g; int transposed, N, H, W; } EmuConv;

static void *e_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    EmuConv *c = xmalloc(sizeof *c);
    c->g = *g;
    c->transposed = transposed;
    c->N = N;
    c->H = H;
    c->W = W;
    return c;
}
static void e_conv_destroy(void *p) { free(p); }
static void e_conv_fwd(const void *p, const float *x, const float *w, const float *b, float *y) {
    const EmuConv *c = p;
    if (c->transposed) cpu_convT2d_fwd(&c->g, c->N, c->H, c->W, x, w, b, y);
    else cpu_conv2d_fwd(&c->g, c->N, c->H, c->W, x, w, b, y);
}
static void e_conv_bwd(const void *p, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    const EmuConv *c = p;
    if (c->transposed) cpu_convT2d_bwd(&c->g, c->N, c->H, c->W, x, w, dy, dx, dw, db);
    else cpu_conv2d_bwd(&c->g, c->N, c->H, c->W, x, w, dy, dx, dw, db);
}

static void e_copy_cols(int rows, int cols, const float *src, int lds, float *dst, int ldd) {
    for (int i = 0; i < rows; i++) memcpy(dst + (size_t)i * ldd, src + (size_t)i * lds, sizeof(float) * cols);
}
static void e_gelu_fwd_cols(int rows, int cols, const float *x, int ldx, float *y, int ldy) {
    for (int i = 0; i < rows; i++) cpu_gelu_fwd((size_t)cols, x + (size_t)i * ldx, y + (size_t)i * ldy);
}
static void e_gelu_bwd_cols(int rows, int cols, const float *x, int ldx, const float *dy, int lddy, float *dx, int ldd) {
    for (int i = 0; i < rows; i++)
        cpu_gelu_bwd((size_t)cols, x + (size_t)i * ldx, dy + (size_t)i * lddy, dx + (size_t)i * ldd);
}
static void e_axpy_diff(size_t n, double k, const float *a, const float *b, float *g) {
    for (size_t i = 0; i < n; i++) g[i] += (float)(k * ((double)a[i] - (b ? b[i] : 0.0f)));
}

/* VQ: the search remembers its batch for the EMA, which is vq_ema_update on borrowed arrays (threshold 0). */
typedef struct { int K, d, N; const float *x; const int *ind; } EmuVq;

static void *e_vq_create(int K, int d, int N_max) {
    EmuVq *w = xcalloc(1, sizeof *w);
    w->K = K;
    w->d = d;
    return w;
}
static void e_vq_search(void *p, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum) {
    EmuVq *w = p;
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
static void e_vq_ema(void *p, float decay, float *embed, float *embed_avg, float *cluster_size) {
    EmuVq *w = p;
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
static void e_vq_revive(void *p, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                        float *embed, float *embed_avg, float *cluster_size) {
    EmuVq *w = p;
    int d = w->d;
    for (int i = 0; i < ndead; i++) {
        int k = dead[i];
        memcpy(embed + (size_t)k * d, x + (size_t)rows[i] * d, sizeof(float) * d);
        cluster_size[k] = threshold;
        for (int t = 0; t < d; t++) embed_avg[(size_t)k * d + t] = threshold * embed[(size_t)k * d + t];
    }
}

/* V3: v3_loss itself; the forward packs its statistics into the device-block layout. */
typedef struct { V3LossCfg cfg; int B, n, dc, ds; double stats[V3_STATS_DOUBLES]; } EmuV3;

static void *e_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds) {
    EmuV3 *w = xcalloc(1, sizeof *w);
    w->cfg = *cfg;
    w->B = B;
    w->n = n;
    w->dc = dc;
    w->ds = ds;
    return w;
}
static void e_v3_forward(void *p, const float *zc, const float *q, const float *zs) {
    EmuV3 *w = p;
    V3Stats st;
    v3_loss(&w->cfg, w->B, w->n, w->dc, w->ds, zc, q, zs, &st, NULL, NULL);
    double v[V3_STATS_DOUBLES] = {st.Fc, st.Sc, st.Fs, st.Ss, st.Ss_ss, st.content, st.style, st.sample, st.fragment,
                                  st.weighted};
    memcpy(w->stats, v, sizeof v);
}
static void e_v3_backward(void *p, const float *zc, const float *q, const float *zs, float *gzc, float *gzs) {
    EmuV3 *w = p;
    V3Stats st;
    v3_loss(&w->cfg, w->B, w->n, w->dc, w->ds, zc, q, zs, &st, gzc, gzs);
}
static const double *e_v3_stats_dev(const void *p) { return ((const EmuV3 *)p)->stats; }

const DevOps dev_emu = {
    .name = "emulated (host memory, CPU reference ops)",
    .malloc = e_malloc,
    .free = e_free,
    .h2d = e_copy,
    .d2h = e_copy,
    .memset = e_memset,
    .sync = e_sync,
    .reserve_scratch = e_reserve,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .upsample_fwd = cpu_upsample_fwd,
    .upsample_bwd = cpu_upsample_bwd,
    .add_inplace = cpu_add_inplace,
    .mse_fwd_dev = e_mse_fwd_dev,
    .mse_bwd = cpu_mse_bwd,
    .adamw = cpu_adamw,
    .bn_fwd_train = cpu_bn2d_fwd_train,
    .bn_fwd_eval = cpu_bn2d_fwd_eval,
    .bn_bwd = cpu_bn2d_bwd,
    .conv_plan = e_conv_plan,
    .conv_destroy = e_conv_destroy,
    .conv_fwd = e_conv_fwd,
    .conv_bwd = e_conv_bwd,
    .linear_fwd = cpu_linear_fwd,
    .linear_bwd = cpu_linear_bwd,
    .copy_cols = e_copy_cols,
    .gelu_fwd_cols = e_gelu_fwd_cols,
    .gelu_bwd_cols = e_gelu_bwd_cols,
    .axpy_diff = e_axpy_diff,
    .ste_value = v3_ste_value,
    .vq_create = e_vq_create,
    .vq_destroy = e_free,
    .vq_search = e_vq_search,
    .vq_ema = e_vq_ema,
    .vq_revive = e_vq_revive,
    .v3_create = e_v3_create,
    .v3_destroy = e_free,
    .v3_forward = e_v3_forward,
    .v3_backward = e_v3_backward,
    .v3_stats_dev = e_v3_stats_dev,
};
