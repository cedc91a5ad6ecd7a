/* Convolutions through cuDNN (legacy convolution API of cuDNN 9, loaded at run time by cuda_libs.cu).
 *
 * A plan (CudaConv) describes one "underlying" cuDNN convolution C (cross-correlation, NCHW, as PyTorch):
 *   conv2d            C: in [N,cin,H,W] -> out [N,cout,Ho,Wo], filter [cout,cin,kh,kw], stride (sh,sw), pad (ph,pw)
 *   transposed conv   C: in [N,cout,Hy,Wy] -> out [N,cin,H,W], filter [cin,cout,kh,kw] (the ConvTranspose2d
 *                     weight as it is), stride 1, pad (ph,pw); Hy = H+kh-1-2ph. The transposed conv is C's
 *                     adjoint, so its three products are C's three products with the roles swapped:
 *   op                conv2d                                   transposed conv
 *   y  = f(x, w)      Forward(in=x -> out=y)                   BackwardData(w, "dy"=x (out-shaped) -> "dx"=y)
 *   dx = g(dy, w)     BackwardData(w, "dy"=dy -> "dx"=dx)      Forward(in=dy -> out=dx)
 *   dw += h(x, dy)    BackwardFilter("x"=x, "dy"=dy)           BackwardFilter("x"=dy (in-shaped), "dy"=x)
 * All three cuDNN algorithms are chosen once per plan by cudnnFind*AlgorithmEx on scratch buffers allocated (and
 * freed) in cuda_conv_plan; only results with status success, deterministic, and in FP32 mode FMA math (no
 * TF32: cudnnFind also times CUDNN_DEFAULT_MATH, which may use TF32) are eligible; the fastest wins, its math
 * type is set on that op's descriptor, and the three chosen algorithms run once on the scratch buffers (an
 * unsupported combination fails in the plan call, not in a step). Choices are cached per (geometry, N, H, W,
 * transposed, math) for the life of the process, so every plan of a shape runs the same algorithms
 * (bit-identical results between two models in one process); a new process may time them differently and pick
 * others.
 *
 * Workspace: one device buffer shared by all plans, grown in cuda_conv_plan (synchronise, free, malloc) to the
 * largest need of any live plan: cuDNN's workspace for the plan's three algorithms, plus in BF16 mode the bf16
 * staging copies of C's input, output and filter tensors. Running a plan allocates nothing. The buffer is freed
 * when the last plan is destroyed.
 *
 * Math modes: FP32 = float tensors, CUDNN_FMA_MATH; TF32 = float tensors, CUDNN_TENSOR_OP_MATH; BF16 = bf16
 * tensors (converted here from/to float, round to nearest even), float compute type, CUDNN_TENSOR_OP_MATH; the
 * bf16 weight gradient is converted and added into the float dw. Bias and bias gradient: step_ops.cu. */
#include <cuda_bf16.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_libs.h"
extern "C" {
#include "common.h"
}

enum { OP_F = 0, OP_BD = 1, OP_BF = 2, N_OPS = 3 }; /* cuDNN Forward, BackwardData, BackwardFilter on C */

/* Workspace offered to cudnnFind (algorithms needing more are not timed), and so the largest workspace a plan
 * can end up with. Also at most a quarter of the free device memory at plan time. */
#define FIND_WS_CAP ((size_t)1 << 30)

typedef struct {
    int algo[N_OPS];
    cudnnMathType_t math[N_OPS];
    size_t ws[N_OPS]; /* bytes */
    float ms[N_OPS];  /* cudnnFind's time */
} AlgoChoice;

typedef struct {
    int transposed, cin, cout, kh, kw, sh, sw, ph, pw, N, H, W, math;
} PlanKey;

typedef struct {
    PlanKey k;
    AlgoChoice a;
} CacheEntry;

struct CudaConv {
    ConvGeom g;
    int transposed, N, H, W, Ho, Wo; /* Ho x Wo: the op's output y (Hy x Wy for a transposed conv) */
    V3Math math;
    cudnnDataType_t dtype;
    cudnnTensorDescriptor_t in_d, out_d; /* C's input and output */
    cudnnFilterDescriptor_t w_d;
    cudnnConvolutionDescriptor_t conv_d[N_OPS]; /* one per op: each carries its algorithm's math type */
    AlgoChoice a;
    size_t n_in, n_out, n_w;            /* elements of C's input, output, filter */
    size_t ws_bytes;                    /* cuDNN workspace: max over the three algorithms */
    size_t off_in, off_out, off_w;      /* BF16: byte offsets of the bf16 staging tensors in the shared buffer */
    size_t need;                        /* bytes of the shared buffer this plan uses */
    char desc[640];
};

static void *g_ws = NULL;       /* the shared workspace */
static size_t g_ws_bytes = 0;
static int g_nplans = 0;        /* live plans */
static CacheEntry *g_cache = NULL;
static int g_ncache = 0;

/* ---- names ---- */

static const char *fwd_algo_name(int a) {
    static const char *n[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                              "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
    return a >= 0 && a < (int)(sizeof n / sizeof n[0]) ? n[a] : "?";
}
static const char *bwd_data_algo_name(int a) {
    static const char *n[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
    return a >= 0 && a < (int)(sizeof n / sizeof n[0]) ? n[a] : "?";
}
static const char *bwd_filter_algo_name(int a) {
    static const char *n[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
    return a >= 0 && a < (int)(sizeof n / sizeof n[0]) ? n[a] : "?";
}
static const char *algo_name(int op, int a) {
    return op == OP_F ? fwd_algo_name(a) : op == OP_BD ? bwd_data_algo_name(a) : bwd_filter_algo_name(a);
}
static const char *op_name(int op) { return op == OP_F ? "Forward" : op == OP_BD ? "BackwardData" : "BackwardFilter"; }
static const char *math_type_name(cudnnMathType_t m) {
    switch (m) {
    case CUDNN_DEFAULT_MATH: return "default-math";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op-allow-conversion";
    case CUDNN_FMA_MATH: return "fma";
    }
    return "?";
}

/* ---- bf16 staging kernels ---- */

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void f32_to_bf16_kernel(size_t n, const float *__restrict__ x, __nv_bfloat16 *__restrict__ y) {
    GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]);
}
__global__ void bf16_to_f32_kernel(size_t n, const __nv_bfloat16 *__restrict__ x, float *__restrict__ y) {
    GRID_STRIDE(i, n) y[i] = __bfloat162float(x[i]);
}
__global__ void bf16_add_f32_kernel(size_t n, const __nv_bfloat16 *__restrict__ x, float *__restrict__ y) {
    GRID_STRIDE(i, n) y[i] += __bfloat162float(x[i]);
}

static void to_bf16(size_t n, const float *x, void *y) {
    if (!n) return;
    f32_to_bf16_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, x, (__nv_bfloat16 *)y);
    CUDA_CHECK_LAUNCH();
}
static void from_bf16(size_t n, const void *x, float *y) {
    if (!n) return;
    bf16_to_f32_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, (const __nv_bfloat16 *)x, y);
    CUDA_CHECK_LAUNCH();
}
static void add_from_bf16(size_t n, const void *x, float *y) {
    if (!n) return;
    bf16_add_f32_kernel<<<v3cu_grid(n), V3CU_BLOCK, 0, v3cu_stream()>>>(n, (const __nv_bfloat16 *)x, y);
    CUDA_CHECK_LAUNCH();
}

/* ---- shared workspace ---- */

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Grow the shared buffer to at least `bytes` (never shrinks while plans live). 0, or -1 + v3_error. */
static int ws_reserve(size_t bytes) {
    if (bytes <= g_ws_bytes) return 0;
    size_t old = g_ws_bytes;
    if (g_ws) {
        CUDA_CHECK(cudaStreamSynchronize(v3cu_stream())); /* queued convolutions may still use it */
        CUDA_CHECK(cudaFree(g_ws));
    }
    g_ws = NULL;
    g_ws_bytes = 0;
    cudaError_t e = cudaMalloc(&g_ws, bytes);
    if (e == cudaSuccess) {
        g_ws_bytes = bytes;
        return 0;
    }
    (void)cudaGetLastError();
    g_ws = NULL;
    /* Put the old buffer back so the existing plans keep working. */
    if (old) {
        if (cudaMalloc(&g_ws, old) != cudaSuccess) {
            (void)cudaGetLastError();
            V3_FATAL("cuDNN workspace: cannot re-allocate %zu bytes after a failed grow", old);
        }
        g_ws_bytes = old;
    }
    return v3_error("cuda_conv_plan: cannot allocate the %.1f MiB cuDNN workspace: %s", bytes / 1048576.0,
                    cudaGetErrorString(e));
}

/* ---- plan construction ---- */

#define PLAN_TRY(call)                                                                                      \
    do {                                                                                                    \
        cudnnStatus_t st_ = (call);                                                                         \
        if (st_ != CUDNN_STATUS_SUCCESS)                                                                    \
            return v3_error("cuda_conv_plan (%s): %s failed: %s", what, #call, v3cu_cudnn_status_name(st_)); \
    } while (0)

static void plan_free(CudaConv *c) {
    if (!c) return;
    if (c->in_d) CUDNN_CHECK(DNN(cudnnDestroyTensorDescriptor)(c->in_d));
    if (c->out_d) CUDNN_CHECK(DNN(cudnnDestroyTensorDescriptor)(c->out_d));
    if (c->w_d) CUDNN_CHECK(DNN(cudnnDestroyFilterDescriptor)(c->w_d));
    for (int op = 0; op < N_OPS; op++)
        if (c->conv_d[op]) CUDNN_CHECK(DNN(cudnnDestroyConvolutionDescriptor)(c->conv_d[op]));
    free(c);
}

/* Shape text used in messages and in the description. */
static void shape_text(char *s, size_t n, const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    snprintf(s, n, "%s %d->%d %dx%d s%d,%d p%d,%d [%d,%d,%d,%d] %s", transposed ? "convT" : "conv", g->cin, g->cout,
             g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, N, g->cin, H, W, v3_math_name(math));
}

static int fits_int(size_t a, size_t b, size_t c, size_t d) {
    double p = (double)a * (double)b * (double)c * (double)d;
    return p <= (double)INT_MAX;
}

static int validate(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math, const char *what) {
    if (math != V3_MATH_FP32 && math != V3_MATH_TF32 && math != V3_MATH_BF16)
        return v3_error("cuda_conv_plan: unknown math mode %d", (int)math);
    if (N < 1 || H < 1 || W < 1) return v3_error("cuda_conv_plan (%s): batch and input size must be >= 1", what);
    if (g->cin < 1 || g->cout < 1 || g->kh < 1 || g->kw < 1)
        return v3_error("cuda_conv_plan (%s): channels and kernel size must be >= 1", what);
    if (g->sh < 1 || g->sw < 1) return v3_error("cuda_conv_plan (%s): stride must be >= 1", what);
    if (g->ph < 0 || g->pw < 0) return v3_error("cuda_conv_plan (%s): padding must be >= 0", what);
    if (transposed) {
        if (g->sh != 1 || g->sw != 1)
            return v3_error("cuda_conv_plan (%s): transposed convolutions support stride 1 only", what);
        if (H + g->kh - 1 - 2 * g->ph < 1 || W + g->kw - 1 - 2 * g->pw < 1)
            return v3_error("cuda_conv_plan (%s): the padding leaves an empty output (%dx%d)", what,
                            H + g->kh - 1 - 2 * g->ph, W + g->kw - 1 - 2 * g->pw);
    } else if (H + 2 * g->ph < g->kh || W + 2 * g->pw < g->kw) {
        return v3_error("cuda_conv_plan (%s): the %dx%d kernel is larger than the padded %dx%d input", what, g->kh,
                        g->kw, H + 2 * g->ph, W + 2 * g->pw);
    }
    return 0;
}

/* The eligible result of a cudnnFind: success, deterministic, no down-conversion to fp16, FMA only in FP32
 * mode; the fastest such. Fills a->algo/math/ms[op] or gives -1 + v3_error listing what cuDNN returned. */
template <typename Perf>
static int pick(const Perf *p, int n, int op, V3Math math, AlgoChoice *a, const char *what) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (p[i].status != CUDNN_STATUS_SUCCESS || p[i].determinism != CUDNN_DETERMINISTIC || p[i].time < 0) continue;
        if (p[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
        if (math == V3_MATH_FP32 && p[i].mathType != CUDNN_FMA_MATH) continue;
        if (best < 0 || p[i].time < p[best].time) best = i;
    }
    if (best >= 0) {
        a->algo[op] = (int)p[best].algo;
        a->math[op] = p[best].mathType;
        a->ms[op] = p[best].time;
        a->ws[op] = p[best].memory;
        return 0;
    }
    char list[1024];
    list[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s(%s, %s, %s)", i ? ", " : "", algo_name(op, (int)p[i].algo),
                 p[i].status == CUDNN_STATUS_SUCCESS ? "ok" : v3cu_cudnn_status_name(p[i].status),
                 p[i].determinism == CUDNN_DETERMINISTIC ? "deterministic" : "non-deterministic",
                 math_type_name(p[i].mathType));
    }
    return v3_error("cuda_conv_plan (%s): cuDNN has no usable %s algorithm (deterministic%s); cudnnFind returned: %s",
                    what, op_name(op), math == V3_MATH_FP32 ? ", FMA math" : "", n ? list : "nothing");
}

/* Largest workspace any algorithm of `op` asks for, up to `cap` (algorithms over the cap are left out). */
static size_t max_algo_ws(const CudaConv *c, int op, size_t cap) {
    size_t best = 0;
    int count = op == OP_F    ? (int)CUDNN_CONVOLUTION_FWD_ALGO_COUNT
                : op == OP_BD ? (int)CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT
                              : (int)CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
    for (int a = 0; a < count; a++) {
        size_t s = 0;
        cudnnStatus_t st;
        if (op == OP_F)
            st = DNN(cudnnGetConvolutionForwardWorkspaceSize)(v3_libs.dnn, c->in_d, c->w_d, c->conv_d[op], c->out_d,
                                                              (cudnnConvolutionFwdAlgo_t)a, &s);
        else if (op == OP_BD)
            st = DNN(cudnnGetConvolutionBackwardDataWorkspaceSize)(v3_libs.dnn, c->w_d, c->out_d, c->conv_d[op],
                                                                   c->in_d, (cudnnConvolutionBwdDataAlgo_t)a, &s);
        else
            st = DNN(cudnnGetConvolutionBackwardFilterWorkspaceSize)(v3_libs.dnn, c->in_d, c->out_d, c->conv_d[op],
                                                                     c->w_d, (cudnnConvolutionBwdFilterAlgo_t)a, &s);
        if (st == CUDNN_STATUS_SUCCESS && s <= cap && s > best) best = s;
    }
    return best;
}

/* Workspace the chosen algorithm of `op` needs with its math type set on conv_d[op]. */
static int chosen_ws(const CudaConv *c, int op, size_t *out, const char *what) {
    size_t s = 0;
    if (op == OP_F)
        PLAN_TRY(DNN(cudnnGetConvolutionForwardWorkspaceSize)(v3_libs.dnn, c->in_d, c->w_d, c->conv_d[op], c->out_d,
                                                              (cudnnConvolutionFwdAlgo_t)c->a.algo[op], &s));
    else if (op == OP_BD)
        PLAN_TRY(DNN(cudnnGetConvolutionBackwardDataWorkspaceSize)(
            v3_libs.dnn, c->w_d, c->out_d, c->conv_d[op], c->in_d, (cudnnConvolutionBwdDataAlgo_t)c->a.algo[op], &s));
    else
        PLAN_TRY(DNN(cudnnGetConvolutionBackwardFilterWorkspaceSize)(
            v3_libs.dnn, c->in_d, c->out_d, c->conv_d[op], c->w_d, (cudnnConvolutionBwdFilterAlgo_t)c->a.algo[op], &s));
    *out = s;
    return 0;
}

/* Sets each op's descriptor to the math type its algorithm was timed with (FMA in FP32 mode: pick() keeps only
 * FMA results there) and sizes the cuDNN workspace: the max over the three algorithms. */
static int apply_choice(CudaConv *c, const char *what) {
    size_t ws = 0;
    for (int op = 0; op < N_OPS; op++) {
        cudnnMathType_t mt = c->math == V3_MATH_FP32 ? CUDNN_FMA_MATH : c->a.math[op];
        PLAN_TRY(DNN(cudnnSetConvolutionMathType)(c->conv_d[op], mt));
        size_t s = 0;
        if (chosen_ws(c, op, &s, what)) return -1;
        if (c->a.ws[op] > s) s = c->a.ws[op];
        c->a.ws[op] = s;
        if (s > ws) ws = s;
    }
    c->ws_bytes = ws;
    return 0;
}

static const float k_one = 1.0f, k_zero = 0.0f; /* alpha/beta: float for float and bf16 data (float compute) */

/* C's three products with the plan's algorithms; data pointers are float or bf16 as the descriptors say. */
static cudnnStatus_t do_F(const CudaConv *c, const void *in, const void *w, void *out, void *ws) {
    return DNN(cudnnConvolutionForward)(v3_libs.dnn, &k_one, c->in_d, in, c->w_d, w, c->conv_d[OP_F],
                                        (cudnnConvolutionFwdAlgo_t)c->a.algo[OP_F], ws, c->ws_bytes, &k_zero, c->out_d,
                                        out);
}
static cudnnStatus_t do_BD(const CudaConv *c, const void *w, const void *out, void *in, void *ws) {
    return DNN(cudnnConvolutionBackwardData)(v3_libs.dnn, &k_one, c->w_d, w, c->out_d, out, c->conv_d[OP_BD],
                                             (cudnnConvolutionBwdDataAlgo_t)c->a.algo[OP_BD], ws, c->ws_bytes, &k_zero,
                                             c->in_d, in);
}
static cudnnStatus_t do_BF(const CudaConv *c, const void *in, const void *out, const float *beta, void *dw, void *ws) {
    return DNN(cudnnConvolutionBackwardFilter)(v3_libs.dnn, &k_one, c->in_d, in, c->out_d, out, c->conv_d[OP_BF],
                                               (cudnnConvolutionBwdFilterAlgo_t)c->a.algo[OP_BF], ws, c->ws_bytes,
                                               beta, c->w_d, dw);
}

typedef struct {
    void *in, *out, *w, *dw, *ws;
    size_t ws_bytes;
} FindBufs;

static void find_bufs_free(FindBufs *b) {
    CUDA_CHECK(cudaStreamSynchronize(v3cu_stream()));
    void *p[5] = {b->in, b->out, b->w, b->dw, b->ws};
    for (int i = 0; i < 5; i++)
        if (p[i]) CUDA_CHECK(cudaFree(p[i]));
    memset(b, 0, sizeof *b);
}

static int find_alloc(void **p, size_t bytes, const char *what, const char *name) {
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        return v3_error("cuda_conv_plan (%s): cannot allocate %.1f MiB for the algorithm search (%s): %s", what,
                        bytes / 1048576.0, name, cudaGetErrorString(e));
    }
    CUDA_CHECK(cudaMemsetAsync(*p, 0, bytes ? bytes : 1, v3cu_stream()));
    return 0;
}

/* cudnnFind for the three ops on zero-filled scratch tensors; fills c->a. */
static int find_algos(CudaConv *c, const char *what) {
    size_t esz = c->dtype == CUDNN_DATA_BFLOAT16 ? 2 : 4;
    FindBufs b;
    memset(&b, 0, sizeof b);
    int rc = -1;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        free_b = FIND_WS_CAP;
    }
    size_t cap = free_b / 4 < FIND_WS_CAP ? free_b / 4 : FIND_WS_CAP;
    size_t want = 0;
    for (int op = 0; op < N_OPS; op++) {
        size_t s = max_algo_ws(c, op, cap);
        if (s > want) want = s;
    }
    if (find_alloc(&b.in, c->n_in * esz, what, "input") || find_alloc(&b.out, c->n_out * esz, what, "output") ||
        find_alloc(&b.w, c->n_w * esz, what, "filter") || find_alloc(&b.dw, c->n_w * esz, what, "filter gradient")) {
        find_bufs_free(&b);
        return -1;
    }
    /* The workspace: the largest request; halve on failure (algorithms that need more are then not timed). */
    for (size_t s = want; s > 0; s /= 2) {
        if (cudaMalloc(&b.ws, s) == cudaSuccess) {
            b.ws_bytes = s;
            break;
        }
        (void)cudaGetLastError();
        b.ws = NULL;
        if (s < ((size_t)16 << 20)) break;
    }
    CUDA_CHECK(cudaStreamSynchronize(v3cu_stream()));

    int maxc[N_OPS] = {0, 0, 0};
    cudnnStatus_t st = DNN(cudnnGetConvolutionForwardAlgorithmMaxCount)(v3_libs.dnn, &maxc[OP_F]);
    if (st == CUDNN_STATUS_SUCCESS)
        st = DNN(cudnnGetConvolutionBackwardDataAlgorithmMaxCount)(v3_libs.dnn, &maxc[OP_BD]);
    if (st == CUDNN_STATUS_SUCCESS)
        st = DNN(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount)(v3_libs.dnn, &maxc[OP_BF]);
    if (st != CUDNN_STATUS_SUCCESS) {
        v3_error("cuda_conv_plan (%s): cannot query cuDNN's algorithm counts: %s", what, v3cu_cudnn_status_name(st));
        find_bufs_free(&b);
        return -1;
    }
    /* Find tries every algorithm with the descriptor's math type and with CUDNN_DEFAULT_MATH: room for both. */
    const int counts[N_OPS] = {(int)CUDNN_CONVOLUTION_FWD_ALGO_COUNT, (int)CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                               (int)CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};
    for (int op = 0; op < N_OPS; op++) maxc[op] = 2 * (maxc[op] > counts[op] ? maxc[op] : counts[op]);

    cudnnConvolutionFwdAlgoPerf_t *pf =
        (cudnnConvolutionFwdAlgoPerf_t *)calloc((size_t)maxc[OP_F], sizeof(cudnnConvolutionFwdAlgoPerf_t));
    cudnnConvolutionBwdDataAlgoPerf_t *pd =
        (cudnnConvolutionBwdDataAlgoPerf_t *)calloc((size_t)maxc[OP_BD], sizeof(cudnnConvolutionBwdDataAlgoPerf_t));
    cudnnConvolutionBwdFilterAlgoPerf_t *pw = (cudnnConvolutionBwdFilterAlgoPerf_t *)calloc(
        (size_t)maxc[OP_BF], sizeof(cudnnConvolutionBwdFilterAlgoPerf_t));
    if (!pf || !pd || !pw) V3_FATAL("out of host memory");
    int nf = 0, nd = 0, nw = 0;
    st = DNN(cudnnFindConvolutionForwardAlgorithmEx)(v3_libs.dnn, c->in_d, b.in, c->w_d, b.w, c->conv_d[OP_F],
                                                      c->out_d, b.out, maxc[OP_F], &nf, pf, b.ws, b.ws_bytes);
    if (st != CUDNN_STATUS_SUCCESS) {
        v3_error("cuda_conv_plan (%s): cudnnFindConvolutionForwardAlgorithmEx failed: %s", what,
                 v3cu_cudnn_status_name(st));
        goto done;
    }
    if (pick(pf, nf, OP_F, c->math, &c->a, what)) goto done;
    st = DNN(cudnnFindConvolutionBackwardDataAlgorithmEx)(v3_libs.dnn, c->w_d, b.w, c->out_d, b.out,
                                                           c->conv_d[OP_BD], c->in_d, b.in, maxc[OP_BD], &nd, pd, b.ws,
                                                           b.ws_bytes);
    if (st != CUDNN_STATUS_SUCCESS) {
        v3_error("cuda_conv_plan (%s): cudnnFindConvolutionBackwardDataAlgorithmEx failed: %s", what,
                 v3cu_cudnn_status_name(st));
        goto done;
    }
    if (pick(pd, nd, OP_BD, c->math, &c->a, what)) goto done;
    st = DNN(cudnnFindConvolutionBackwardFilterAlgorithmEx)(v3_libs.dnn, c->in_d, b.in, c->out_d, b.out,
                                                             c->conv_d[OP_BF], c->w_d, b.dw, maxc[OP_BF], &nw, pw, b.ws,
                                                             b.ws_bytes);
    if (st != CUDNN_STATUS_SUCCESS) {
        v3_error("cuda_conv_plan (%s): cudnnFindConvolutionBackwardFilterAlgorithmEx failed: %s", what,
                 v3cu_cudnn_status_name(st));
        goto done;
    }
    if (pick(pw, nw, OP_BF, c->math, &c->a, what)) goto done;
    /* Run each chosen algorithm once, as the plan will (math types set, beta = 1 for dw), so that an unsupported
     * combination fails here with a message rather than in a training step. */
    if (apply_choice(c, what)) goto done;
    if (c->ws_bytes > b.ws_bytes) {
        if (b.ws) CUDA_CHECK(cudaFree(b.ws));
        b.ws = NULL;
        b.ws_bytes = 0;
        if (find_alloc(&b.ws, c->ws_bytes, what, "workspace")) goto done;
        b.ws_bytes = c->ws_bytes;
    }
    if ((st = do_F(c, b.in, b.w, b.out, b.ws)) != CUDNN_STATUS_SUCCESS ||
        (st = do_BD(c, b.w, b.out, b.in, b.ws)) != CUDNN_STATUS_SUCCESS ||
        (st = do_BF(c, b.in, b.out, &k_one, b.dw, b.ws)) != CUDNN_STATUS_SUCCESS) {
        v3_error("cuda_conv_plan (%s): a trial run of the chosen algorithms (Forward %s, BackwardData %s, "
                 "BackwardFilter %s) failed: %s", what, fwd_algo_name(c->a.algo[OP_F]),
                 bwd_data_algo_name(c->a.algo[OP_BD]), bwd_filter_algo_name(c->a.algo[OP_BF]),
                 v3cu_cudnn_status_name(st));
        goto done;
    }
    CUDA_CHECK(cudaStreamSynchronize(v3cu_stream()));
    CUDA_CHECK(cudaGetLastError());
    rc = 0;
done:
    free(pf);
    free(pd);
    free(pw);
    find_bufs_free(&b);
    return rc;
}

static int build(CudaConv *c, const char *what) {
    const ConvGeom *g = &c->g;
    int N = c->N;
    /* C's tensors: see the top of the file. */
    int in_c, in_h, in_w, out_c, out_h, out_w, fk, fc;
    if (!c->transposed) {
        in_c = g->cin, in_h = c->H, in_w = c->W;
        out_c = g->cout, out_h = c->Ho, out_w = c->Wo;
        fk = g->cout, fc = g->cin;
    } else {
        in_c = g->cout, in_h = c->Ho, in_w = c->Wo;
        out_c = g->cin, out_h = c->H, out_w = c->W;
        fk = g->cin, fc = g->cout;
    }
    if (!fits_int((size_t)N, (size_t)in_c, (size_t)in_h, (size_t)in_w) ||
        !fits_int((size_t)N, (size_t)out_c, (size_t)out_h, (size_t)out_w) ||
        !fits_int((size_t)fk, (size_t)fc, (size_t)g->kh, (size_t)g->kw))
        return v3_error("cuda_conv_plan (%s): a tensor has 2^31 elements or more (not supported)", what);
    c->n_in = (size_t)N * in_c * in_h * in_w;
    c->n_out = (size_t)N * out_c * out_h * out_w;
    c->n_w = (size_t)fk * fc * g->kh * g->kw;

    PLAN_TRY(DNN(cudnnCreateTensorDescriptor)(&c->in_d));
    PLAN_TRY(DNN(cudnnCreateTensorDescriptor)(&c->out_d));
    PLAN_TRY(DNN(cudnnCreateFilterDescriptor)(&c->w_d));
    PLAN_TRY(DNN(cudnnSetTensor4dDescriptor)(c->in_d, CUDNN_TENSOR_NCHW, c->dtype, N, in_c, in_h, in_w));
    PLAN_TRY(DNN(cudnnSetTensor4dDescriptor)(c->out_d, CUDNN_TENSOR_NCHW, c->dtype, N, out_c, out_h, out_w));
    PLAN_TRY(DNN(cudnnSetFilter4dDescriptor)(c->w_d, c->dtype, CUDNN_TENSOR_NCHW, fk, fc, g->kh, g->kw));
    int sh = c->transposed ? 1 : g->sh, sw = c->transposed ? 1 : g->sw;
    cudnnMathType_t search_math = c->math == V3_MATH_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
    for (int op = 0; op < N_OPS; op++) {
        PLAN_TRY(DNN(cudnnCreateConvolutionDescriptor)(&c->conv_d[op]));
        PLAN_TRY(DNN(cudnnSetConvolution2dDescriptor)(c->conv_d[op], g->ph, g->pw, sh, sw, 1, 1,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
        PLAN_TRY(DNN(cudnnSetConvolutionMathType)(c->conv_d[op], search_math));
    }
    /* cuDNN's idea of C's output must be ours. */
    int dn = 0, dc = 0, dh = 0, dw = 0;
    PLAN_TRY(DNN(cudnnGetConvolution2dForwardOutputDim)(c->conv_d[OP_F], c->in_d, c->w_d, &dn, &dc, &dh, &dw));
    if (dn != N || dc != out_c || dh != out_h || dw != out_w)
        return v3_error("cuda_conv_plan (%s): internal error: cuDNN computes the output [%d,%d,%d,%d], expected "
                        "[%d,%d,%d,%d]", what, dn, dc, dh, dw, N, out_c, out_h, out_w);
    return 0;
}

static PlanKey plan_key(const CudaConv *c) {
    PlanKey k;
    memset(&k, 0, sizeof k);
    k.transposed = c->transposed;
    k.cin = c->g.cin, k.cout = c->g.cout, k.kh = c->g.kh, k.kw = c->g.kw;
    k.sh = c->g.sh, k.sw = c->g.sw, k.ph = c->g.ph, k.pw = c->g.pw;
    k.N = c->N, k.H = c->H, k.W = c->W, k.math = (int)c->math;
    return k;
}

static void describe(CudaConv *c) {
    char shape[160];
    shape_text(shape, sizeof shape, &c->g, c->transposed, c->N, c->H, c->W, c->math);
    /* Which cuDNN op computes y, dx and dw (see the table at the top). */
    int op_y = c->transposed ? OP_BD : OP_F, op_dx = c->transposed ? OP_F : OP_BD;
    const int ops[3] = {op_y, op_dx, OP_BF};
    const char *lab[3] = {"y", "dx", "dw"};
    size_t len = (size_t)snprintf(c->desc, sizeof c->desc, "%s -> [%d,%d,%d,%d]:", shape, c->N, c->g.cout, c->Ho,
                                  c->Wo);
    for (int i = 0; i < 3 && len < sizeof c->desc; i++) {
        int op = ops[i];
        len += (size_t)snprintf(c->desc + len, sizeof c->desc - len, " %s=%s %s (%s, %.3f ms)%s", lab[i], op_name(op),
                                algo_name(op, c->a.algo[op]), math_type_name(c->a.math[op]), c->a.ms[op],
                                i < 2 ? ";" : "");
    }
    if (len < sizeof c->desc)
        snprintf(c->desc + len, sizeof c->desc - len, "; workspace %.2f MiB", c->need / 1048576.0);
}

extern "C" void *cuda_conv_plan(const ConvGeom *g, int transposed, int N, int H, int W, V3Math math) {
    if (!g) {
        v3_error("cuda_conv_plan: no geometry");
        return NULL;
    }
    char what[160];
    shape_text(what, sizeof what, g, transposed ? 1 : 0, N, H, W, math);
    if (validate(g, transposed, N, H, W, math, what)) return NULL;
    if (cuda_libs_load()) return NULL;

    CudaConv *c = (CudaConv *)calloc(1, sizeof *c);
    if (!c) V3_FATAL("out of host memory");
    c->g = *g;
    c->transposed = transposed ? 1 : 0;
    c->N = N, c->H = H, c->W = W;
    c->math = math;
    c->dtype = math == V3_MATH_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    if (c->transposed) {
        c->Ho = H + g->kh - 1 - 2 * g->ph;
        c->Wo = W + g->kw - 1 - 2 * g->pw;
    } else {
        c->Ho = conv_out_size(H, g->kh, g->sh, g->ph);
        c->Wo = conv_out_size(W, g->kw, g->sw, g->pw);
    }
    if (build(c, what)) {
        plan_free(c);
        return NULL;
    }

    PlanKey key = plan_key(c);
    int hit = -1;
    for (int i = 0; i < g_ncache; i++)
        if (!memcmp(&g_cache[i].k, &key, sizeof key)) {
            hit = i;
            break;
        }
    if (hit >= 0) {
        c->a = g_cache[hit].a;
        if (apply_choice(c, what)) {
            plan_free(c);
            return NULL;
        }
    } else if (find_algos(c, what)) { /* also applies the choice */
        plan_free(c);
        return NULL;
    }
    size_t end = align256(c->ws_bytes);
    if (c->dtype == CUDNN_DATA_BFLOAT16) {
        c->off_in = end;
        end = align256(end + c->n_in * sizeof(__nv_bfloat16));
        c->off_out = end;
        end = align256(end + c->n_out * sizeof(__nv_bfloat16));
        c->off_w = end;
        end = align256(end + c->n_w * sizeof(__nv_bfloat16));
    }
    c->need = end;
    if (ws_reserve(c->need)) {
        plan_free(c);
        return NULL;
    }
    if (hit < 0) {
        CacheEntry *nc = (CacheEntry *)realloc(g_cache, sizeof(CacheEntry) * (size_t)(g_ncache + 1));
        if (!nc) V3_FATAL("out of host memory");
        g_cache = nc;
        g_cache[g_ncache].k = key;
        g_cache[g_ncache].a = c->a;
        g_ncache++;
    }
    describe(c);
    if (hit < 0) v3_log("cuDNN plan: %s", c->desc);
    g_nplans++;
    return c;
}

extern "C" void cuda_conv_destroy(void *c_) {
    CudaConv *c = (CudaConv *)c_;
    if (!c) return;
    plan_free(c);
    if (--g_nplans == 0 && g_ws) {
        CUDA_CHECK(cudaStreamSynchronize(v3cu_stream()));
        CUDA_CHECK(cudaFree(g_ws));
        g_ws = NULL;
        g_ws_bytes = 0;
    }
}

extern "C" const char *cuda_conv_describe(const CudaConv *c) { return c ? c->desc : "(no plan)"; }

/* ---- running ---- */

static void check_plan(const CudaConv *c, const char *fn) {
    if (!c) V3_FATAL("%s: NULL plan", fn);
    if (g_ws_bytes < c->need || (c->need && !g_ws))
        V3_FATAL("%s: the cuDNN workspace (%zu bytes) is smaller than the plan needs (%zu)", fn, g_ws_bytes, c->need);
}

static void *ws_ptr(const CudaConv *c) { return c->ws_bytes ? g_ws : NULL; }

/* The products as the plan runs them, on the shared workspace; a failure is fatal (as CUDA_CHECK). */
static void checked(const CudaConv *c, cudnnStatus_t st, const char *fn, int line) {
    if (st == CUDNN_STATUS_SUCCESS) return;
    char call[800];
    snprintf(call, sizeof call, "%s for %s", fn, c->desc);
    v3cu_cudnn_fail(__FILE__, line, call, st);
}
static void run_F(const CudaConv *c, const void *in, const void *w, void *out) {
    checked(c, do_F(c, in, w, out, ws_ptr(c)), "cudnnConvolutionForward", __LINE__);
}
static void run_BD(const CudaConv *c, const void *w, const void *out, void *in) {
    checked(c, do_BD(c, w, out, in, ws_ptr(c)), "cudnnConvolutionBackwardData", __LINE__);
}
static void run_BF(const CudaConv *c, const void *in, const void *out, const float *beta, void *dw) {
    checked(c, do_BF(c, in, out, beta, dw, ws_ptr(c)), "cudnnConvolutionBackwardFilter", __LINE__);
}

extern "C" void cuda_conv_fwd(const void *c_, const float *x, const float *w, const float *b, float *y) {
    const CudaConv *c = (const CudaConv *)c_;
    check_plan(c, "cuda_conv_fwd");
    size_t HWo = (size_t)c->Ho * c->Wo;
    if (c->dtype == CUDNN_DATA_BFLOAT16) {
        char *base = (char *)g_ws;
        void *s_in = base + c->off_in, *s_out = base + c->off_out, *s_w = base + c->off_w;
        to_bf16(c->n_w, w, s_w);
        if (!c->transposed) {
            to_bf16(c->n_in, x, s_in);
            run_F(c, s_in, s_w, s_out);
            from_bf16(c->n_out, s_out, y);
        } else {
            to_bf16(c->n_out, x, s_out);
            run_BD(c, s_w, s_out, s_in);
            from_bf16(c->n_in, s_in, y);
        }
    } else if (!c->transposed) {
        run_F(c, x, w, y);
    } else {
        run_BD(c, w, x, y);
    }
    if (b) cuda_bias_add(c->N, c->g.cout, (int)HWo, y, b);
}

extern "C" void cuda_conv_bwd(const void *c_, const float *x, const float *w, const float *dy, float *dx, float *dw,
                              float *db) {
    const CudaConv *c = (const CudaConv *)c_;
    check_plan(c, "cuda_conv_bwd");
    size_t HWo = (size_t)c->Ho * c->Wo;
    if (db) cuda_bias_grad(c->N, c->g.cout, (int)HWo, dy, db);
    if (c->dtype == CUDNN_DATA_BFLOAT16) {
        char *base = (char *)g_ws;
        void *s_in = base + c->off_in, *s_out = base + c->off_out, *s_w = base + c->off_w;
        /* dy is y-shaped: C's output for a conv, C's input for a transposed conv; x the other one. */
        void *s_dy = c->transposed ? s_in : s_out, *s_x = c->transposed ? s_out : s_in;
        size_t n_dy = c->transposed ? c->n_in : c->n_out, n_x = c->transposed ? c->n_out : c->n_in;
        to_bf16(n_dy, dy, s_dy);
        if (dx) {
            to_bf16(c->n_w, w, s_w);
            if (!c->transposed) run_BD(c, s_w, s_dy, s_x); /* dx staged in x's slot */
            else run_F(c, s_dy, s_w, s_x);
            from_bf16(n_x, s_x, dx);
        }
        to_bf16(n_x, x, s_x); /* overwrites the staged dx, already converted (same stream) */
        if (!c->transposed) run_BF(c, s_x, s_dy, &k_zero, s_w); /* bf16 dw in w's slot */
        else run_BF(c, s_dy, s_x, &k_zero, s_w);
        add_from_bf16(c->n_w, s_w, dw);
        return;
    }
    if (dx) {
        if (!c->transposed) run_BD(c, w, dy, dx);
        else run_F(c, dy, w, dx);
    }
    if (!c->transposed) run_BF(c, x, dy, &k_one, dw);
    else run_BF(c, dy, x, &k_one, dw);
}

/* ---- pinning the algorithm choice across processes ----
 * cudnnFind's timings are noisy, so two processes may choose different algorithms for a shape and then differ
 * in the last bits. The trainer saves the process's choices beside its checkpoints and loads them on --resume,
 * so a resumed run uses the algorithms of the run it continues (bit-identical resume on the same machine).
 * One line per shape: "v3conv1 transposed cin cout kh kw sh sw ph pw N H W math  algo mathtype ws  x3". */
#define ALGO_MAGIC "v3conv1"

extern "C" int cuda_algos_save(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return v3_error("%s: cannot write the cuDNN algorithm choices", tmp);
    for (int i = 0; i < g_ncache; i++) {
        const PlanKey *k = &g_cache[i].k;
        const AlgoChoice *a = &g_cache[i].a;
        fprintf(f, ALGO_MAGIC " %d %d %d %d %d %d %d %d %d %d %d %d %d", k->transposed, k->cin, k->cout, k->kh, k->kw,
                k->sh, k->sw, k->ph, k->pw, k->N, k->H, k->W, k->math);
        for (int op = 0; op < N_OPS; op++) fprintf(f, "  %d %d %zu", a->algo[op], (int)a->math[op], a->ws[op]);
        fputc('\n', f);
    }
    if (fclose(f)) return v3_error("%s: write failed", tmp);
    if (rename(tmp, path)) return v3_error("%s: cannot rename to %s", tmp, path);
    return 0;
}

extern "C" int cuda_algos_load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return v3_error("%s: cannot read the cuDNN algorithm choices", path);
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        CacheEntry e;
        memset(&e, 0, sizeof e);
        PlanKey *k = &e.k;
        int mt[N_OPS], used = 0;
        char magic[16];
        int n = sscanf(line, "%15s %d %d %d %d %d %d %d %d %d %d %d %d %d %n", magic, &k->transposed, &k->cin, &k->cout,
                       &k->kh, &k->kw, &k->sh, &k->sw, &k->ph, &k->pw, &k->N, &k->H, &k->W, &k->math, &used);
        int ok = n == 14 && !strcmp(magic, ALGO_MAGIC);
        const char *p = line + used;
        for (int op = 0; ok && op < N_OPS; op++) {
            int adv = 0;
            ok = sscanf(p, "%d %d %zu %n", &e.a.algo[op], &mt[op], &e.a.ws[op], &adv) == 3;
            e.a.math[op] = (cudnnMathType_t)mt[op];
            p += adv;
        }
        if (!ok) {
            fclose(f);
            return v3_error("%s:%d: not a cuDNN algorithm line (expected '" ALGO_MAGIC " <13 shape ints> <3 x algo "
                            "mathtype workspace>')", path, lineno);
        }
        int hit = -1;
        for (int i = 0; i < g_ncache; i++)
            if (!memcmp(&g_cache[i].k, k, sizeof *k)) hit = i;
        if (hit < 0) {
            CacheEntry *nc = (CacheEntry *)realloc(g_cache, sizeof(CacheEntry) * (size_t)(g_ncache + 1));
            if (!nc) V3_FATAL("out of host memory");
            g_cache = nc;
            hit = g_ncache++;
        }
        g_cache[hit] = e;
    }
    fclose(f);
    return 0;
}
