/* The CUDA backend's symbols for builds without nvcc (the Makefile compiles this file instead of the kernels/ .cu files).
 * cuda_probe reports 0 devices with the reason and cuda_init fails with it, so backend_select never picks the CUDA
 * backend: its ops (generated from the op list) and the other device functions are unreachable, and calling one is
 * an internal error. */
#include <stddef.h>
#include <stdio.h>

#include "common.h"
#include "cuda_backend.h"

#define NO_CUDA "this build has no CUDA support (nvcc was not found at build time)"
#define UNREACHABLE(fn) V3_FATAL("%s called, but " NO_CUDA, fn)

int cuda_probe(char *desc, size_t n) {
    if (desc && n) snprintf(desc, n, "%s", NO_CUDA);
    return 0;
}
int cuda_init(int device) { return v3_error("cannot use CUDA device %d: %s", device, NO_CUDA); }
int cuda_libs_load(void) { return v3_error("cannot load cuBLAS/cuDNN: %s", NO_CUDA); }
void cuda_set_math(V3Math m) { (void)m; }
V3Math cuda_get_math(void) { return V3_MATH_FP32; }

/* every op of the op list */
#define STUB(name, ret, params) \
    ret cuda_##name params { UNREACHABLE("cuda_" #name); }
V3_ALL_OPS(STUB)

double cuda_mse_value(size_t n, const float *a, const float *b) { UNREACHABLE("cuda_mse_value"); }
CudaTimer *cuda_timer_create(void) { UNREACHABLE("cuda_timer_create"); }
void cuda_timer_destroy(CudaTimer *t) { if (t) UNREACHABLE("cuda_timer_destroy"); }
void cuda_timer_start(CudaTimer *t) { UNREACHABLE("cuda_timer_start"); }
double cuda_timer_stop_ms(CudaTimer *t) { UNREACHABLE("cuda_timer_stop_ms"); }
const char *cuda_conv_describe(const CudaConv *c) { return NO_CUDA; }
void cuda_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc) {
    UNREACHABLE("cuda_sgemm");
}
void cuda_bias_add(int N, int C, int HW, float *y, const float *b) { UNREACHABLE("cuda_bias_add"); }
void cuda_bias_grad(int N, int C, int HW, const float *dy, float *db) { UNREACHABLE("cuda_bias_grad"); }
const char *cuda_vq_variant_name(int v) { return "none"; }
void cuda_v3_debug_options(int force_global_rows, int tile) { (void)force_global_rows, (void)tile; }
int cuda_vq_argmin(CudaVq *w, int variant, int N, const float *x, const float *embed, int *ind) {
    UNREACHABLE("cuda_vq_argmin");
}

void *cuda_host_alloc(size_t bytes) {
    v3_error("cuda_host_alloc: %s", NO_CUDA);
    return NULL;
}
void cuda_host_free(void *p) {
    if (p) UNREACHABLE("cuda_host_free");
}
int cuda_thread_bind(void) { return v3_error("cuda_thread_bind: %s", NO_CUDA); }
CudaCopyStream *cuda_copy_stream_create(void) {
    v3_error("cuda_copy_stream_create: %s", NO_CUDA);
    return NULL;
}
void cuda_copy_stream_destroy(CudaCopyStream *c) {
    if (c) UNREACHABLE("cuda_copy_stream_destroy");
}
int cuda_copy_stream_h2d(CudaCopyStream *c, void *dst, const void *src, size_t bytes) {
    return v3_error("cuda_copy_stream_h2d: %s", NO_CUDA);
}

/* InsNotes features on the GPU: unavailable, so the loader reports it instead of falling back to the CPU. */
CudaStft *cuda_stft_create(void) {
    v3_error("GPU STFT: this build has no CUDA support (built without CUDA: nvcc was not found at build time)");
    return NULL;
}
void cuda_stft_destroy(CudaStft *s) {
    if (s) UNREACHABLE("cuda_stft_destroy");
}
int cuda_stft_features(CudaStft *s, const float *audio, int B, int n_frag, const int32_t *mask, float *out_dev) {
    return v3_error("cuda_stft_features: %s", NO_CUDA);
}

/* Griffin-Lim on the GPU (include/griffinlim.h): unavailable; griffinlim_cpu is the working path. */
#include "griffinlim.h"
int griffinlim_gpu(const float *mag, int frames, int iters, uint64_t seed, float *audio) {
    return v3_error("GPU Griffin-Lim: this build has no CUDA support (built without CUDA: nvcc was not found at "
                    "build time); use griffinlim_cpu");
}
