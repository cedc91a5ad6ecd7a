/* Internal interfaces of the cpu backend's files (host/cpu/); the backend's public face is include/cpu_backend.h. */
#ifndef V3_CPU_INTERNAL_H
#define V3_CPU_INTERNAL_H
#include "cpu_backend.h"

/* Hot loops are built for AVX-512, AVX2 and the baseline, picked at load time (GCC; sanitizer builds take one). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define V3_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define V3_CLONES
#endif

/* db[c] += sum of dy [N, C, HW] over N and HW, in double (bn_cpu.c: BatchNorm's reduction over planes) */
void cpu_bias_grad(const float *dy, int N, int C, size_t HW, float *db);

/* oneDNN convolutions (conv_dnnl.c, only with V3_HAVE_DNNL): the op list's semantics for one geometry. */
void *dconv_plan(const ConvGeom *g, int transposed, int N, int H, int W);
void dconv_destroy(void *plan);
void dconv_fwd(const void *plan, const float *x, const float *w, const float *b, float *y);
void dconv_bwd(const void *plan, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db);
const char *dconv_impl(const void *plan, int which);
const char *dconv_library(void);

/* Direct convolutions for few channels (conv_small.c), on one plain convolution: x [N, ci, H, W], weights
 * [co, ci, kh, kw], y [N, co, Ho, Wo], any stride and padding (Ho, Wo as conv_out_size). */
typedef struct { int N, ci, H, W, co, Ho, Wo, kh, kw, sh, sw, ph, pw; } SConv;
/* 1 when the direct kernels take this geometry (equal strides of 1-4) */
int sconv_ok(const SConv *c);
/* y = conv(x, w) + b (b may be NULL); overwrites y */
void sconv_fwd(const SConv *c, const float *x, const float *w, const float *b, float *y);
/* dx = the adjoint of conv applied to dy, + b per input channel when b is not NULL; overwrites dx */
void sconv_bwd_data(const SConv *c, const float *dy, const float *w, const float *b, float *dx);
/* dw += the weight gradient */
void sconv_bwd_weights(const SConv *c, const float *x, const float *dy, float *dw);
#endif
