/* The CUDA device-ops table: thin adapters from the DevOps signatures to include/cuda_backend.h. */
#include "devops.h"

static void *d_malloc(size_t bytes) { return cuda_malloc_or_die(bytes); }
static void *d_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    return cuda_conv_plan(g, transposed, N, H, W, math);
}
static void d_conv_destroy(void *p) { cuda_conv_destroy((CudaConv *)p); }
static void d_conv_fwd(const void *p, const float *x, const float *w, const float *b, float *y) {
    cuda_conv_fwd((const CudaConv *)p, x, w, b, y);
}
static void d_conv_bwd(const void *p, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db) {
    cuda_conv_bwd((const CudaConv *)p, x, w, dy, dx, dw, db);
}
static void *d_vq_create(int K, int d, int N_max) { return cuda_vq_create(K, d, N_max); }
static void d_vq_destroy(void *w) { cuda_vq_destroy((CudaVq *)w); }
static void d_vq_search(void *w, int N, const float *x, const float *embed, int *ind, float *q, double *commit_sum) {
    cuda_vq_search((CudaVq *)w, N, x, embed, ind, q, commit_sum);
}
static void d_vq_ema(void *w, float decay, float *embed, float *embed_avg, float *cluster_size) {
    cuda_vq_ema((CudaVq *)w, decay, embed, embed_avg, cluster_size);
}
static void d_vq_revive(void *w, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                        float *embed, float *embed_avg, float *cluster_size) {
    cuda_vq_revive((CudaVq *)w, ndead, dead, rows, x, threshold, embed, embed_avg, cluster_size);
}
static void *d_v3_create(const V3LossCfg *cfg, int B, int n, int dc, int ds) { return cuda_v3_create(cfg, B, n, dc, ds); }
static void d_v3_destroy(void *w) { cuda_v3_destroy((CudaV3 *)w); }
static void d_v3_forward(void *w, const float *zc, const float *q, const float *zs) {
    cuda_v3_forward((CudaV3 *)w, zc, q, zs);
}
static void d_v3_backward(void *w, const float *zc, const float *q, const float *zs, float *gzc, float *gzs) {
    cuda_v3_backward((CudaV3 *)w, zc, q, zs, gzc, gzs);
}
static const double *d_v3_stats_dev(const void *w) { return cuda_v3_stats_dev((const CudaV3 *)w); }

const DevOps dev_cuda = {
    .name = "cuda",
    .malloc = d_malloc,
    .free = cuda_free,
    .h2d = cuda_h2d,
    .d2h = cuda_d2h,
    .memset = cuda_memset,
    .sync = cuda_sync,
    .reserve_scratch = cuda_scratch_reserve,
    .gelu_fwd = cuda_gelu_fwd,
    .gelu_bwd = cuda_gelu_bwd,
    .upsample_fwd = cuda_upsample_fwd,
    .upsample_bwd = cuda_upsample_bwd,
    .add_inplace = cuda_add_inplace,
    .mse_fwd_dev = cuda_mse_fwd_dev,
    .mse_bwd = cuda_mse_bwd,
    .adamw = cuda_adamw,
    .bn_fwd_train = cuda_bn2d_fwd_train,
    .bn_fwd_eval = cuda_bn2d_fwd_eval,
    .bn_bwd = cuda_bn2d_bwd,
    .conv_plan = d_conv_plan,
    .conv_destroy = d_conv_destroy,
    .conv_fwd = d_conv_fwd,
    .conv_bwd = d_conv_bwd,
    .linear_fwd = cuda_linear_fwd,
    .linear_bwd = cuda_linear_bwd,
    .copy_cols = cuda_copy_cols,
    .gelu_fwd_cols = cuda_gelu_fwd_cols,
    .gelu_bwd_cols = cuda_gelu_bwd_cols,
    .axpy_diff = cuda_axpy_diff,
    .ste_value = cuda_ste_value,
    .vq_create = d_vq_create,
    .vq_destroy = d_vq_destroy,
    .vq_search = d_vq_search,
    .vq_ema = d_vq_ema,
    .vq_revive = d_vq_revive,
    .v3_create = d_v3_create,
    .v3_destroy = d_v3_destroy,
    .v3_forward = d_v3_forward,
    .v3_backward = d_v3_backward,
    .v3_stats_dev = d_v3_stats_dev,
};
