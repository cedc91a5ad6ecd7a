/* cuBLAS and cuDNN, loaded at run time (kernels/cuda_libs.cu). Internal header for the kernels/ .cu files only.
 *
 * The binary never links libcublas or libcudnn: cuda_libs_load() dlopen()s them and resolves every entry point
 * used into the table v3_libs, so a machine without the libraries still runs the CPU path. Call through the
 * table with BLAS(fn)(...) / DNN(fn)(...), fn being the exported symbol name (cuBLAS's _v2 names where
 * cublas_v2.h maps the plain name to one, e.g. BLAS(cublasCreate_v2)). The pointer types come from the headers
 * through decltype (an unevaluated operand: no link-time reference to the libraries is created).
 *
 * CUDNN_CHECK(call) / CUBLAS_CHECK(call): on failure print "v3: cuDNN error at file:line: <call>: <status>"
 * (cuBLAS likewise) and exit(1), like CUDA_CHECK. */
#ifndef V3_CUDA_LIBS_H
#define V3_CUDA_LIBS_H
#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda_backend.h"
#include "cuda_check.h"

/* Every cuBLAS entry point used (exported names). cublasGemmEx is resolved separately: C++ sees an inline
 * overload of it in cublas_api.h (legacy cudaDataType compute type), so its pointer type is spelled out. */
#define V3_CUBLAS_FUNCS(X) \
    X(cublasCreate_v2)     \
    X(cublasDestroy_v2)    \
    X(cublasSetStream_v2)  \
    X(cublasSetMathMode)   \
    X(cublasGetMathMode)   \
    X(cublasGetVersion_v2)

/* Every cuDNN entry point used (legacy convolution API, still present in cuDNN 9). */
#define V3_CUDNN_FUNCS(X)                                \
    X(cudnnGetVersion)                                   \
    X(cudnnGetCudartVersion)                             \
    X(cudnnGetErrorString)                               \
    X(cudnnCreate)                                       \
    X(cudnnDestroy)                                      \
    X(cudnnSetStream)                                    \
    X(cudnnCreateTensorDescriptor)                       \
    X(cudnnSetTensor4dDescriptor)                        \
    X(cudnnDestroyTensorDescriptor)                      \
    X(cudnnCreateFilterDescriptor)                       \
    X(cudnnSetFilter4dDescriptor)                        \
    X(cudnnDestroyFilterDescriptor)                      \
    X(cudnnCreateConvolutionDescriptor)                  \
    X(cudnnSetConvolution2dDescriptor)                   \
    X(cudnnSetConvolutionMathType)                       \
    X(cudnnDestroyConvolutionDescriptor)                 \
    X(cudnnGetConvolution2dForwardOutputDim)             \
    X(cudnnGetConvolutionForwardAlgorithmMaxCount)       \
    X(cudnnGetConvolutionBackwardDataAlgorithmMaxCount)  \
    X(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount) \
    X(cudnnFindConvolutionForwardAlgorithmEx)            \
    X(cudnnFindConvolutionBackwardDataAlgorithmEx)       \
    X(cudnnFindConvolutionBackwardFilterAlgorithmEx)     \
    X(cudnnGetConvolutionForwardWorkspaceSize)           \
    X(cudnnGetConvolutionBackwardDataWorkspaceSize)      \
    X(cudnnGetConvolutionBackwardFilterWorkspaceSize)    \
    X(cudnnConvolutionForward)                           \
    X(cudnnConvolutionBackwardData)                      \
    X(cudnnConvolutionBackwardFilter)

/* The non-legacy cublasGemmEx (cublasComputeType_t compute type); checked against the header's declaration. */
typedef cublasStatus_t(CUBLASWINAPI *v3_cublasGemmEx_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                                          int, int, const void *, const void *, cudaDataType, int,
                                                          const void *, cudaDataType, int, const void *, void *,
                                                          cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);

#define V3_LIBS_MEMBER(fn) decltype(&fn) fn##_p;
struct V3Libs {
    void *cublas_so, *cudnn_so;   /* dlopen handles */
    cublasHandle_t blas;          /* bound to v3cu_stream(), math mode CUBLAS_DEFAULT_MATH */
    cudnnHandle_t dnn;            /* bound to v3cu_stream() */
    int cublas_version;           /* e.g. 130001 */
    size_t cudnn_version;         /* e.g. 91900 */
    V3_CUBLAS_FUNCS(V3_LIBS_MEMBER)
    V3_CUDNN_FUNCS(V3_LIBS_MEMBER)
    v3_cublasGemmEx_fn cublasGemmEx_p;
    /* Optional (cuDNN >= 9.0 exports it; NULL if absent): the detailed message of the last cuDNN error. */
    decltype(&cudnnGetLastErrorString) cudnnGetLastErrorString_p;
};
#undef V3_LIBS_MEMBER

extern V3Libs v3_libs;
/* 1 once cuda_libs_load() has succeeded. */
int v3cu_libs_ready(void);
/* cuda_libs_load() or print its error ("v3: <what>: <message>") and exit(1): for the void-returning entry
 * points (GEMMs), where running without the libraries is a programming error. */
void v3cu_libs_require(const char *what);

#define BLAS(fn) (v3_libs.fn##_p)
#define DNN(fn) (v3_libs.fn##_p)

/* Readable names of the library status codes. */
const char *v3cu_cublas_status_name(cublasStatus_t s);
const char *v3cu_cudnn_status_name(cudnnStatus_t s);
/* Print "v3: <lib> error at file:line: <call>: <status>" (plus cuDNN's last detailed message) and exit(1). */
void v3cu_cudnn_fail(const char *file, int line, const char *call, cudnnStatus_t s);
void v3cu_cublas_fail(const char *file, int line, const char *call, cublasStatus_t s);

#define CUDNN_CHECK(call)                                                                   \
    do {                                                                                    \
        cudnnStatus_t v3_cudnn_st_ = (call);                                                \
        if (v3_cudnn_st_ != CUDNN_STATUS_SUCCESS) v3cu_cudnn_fail(__FILE__, __LINE__, #call, v3_cudnn_st_); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                  \
    do {                                                                                    \
        cublasStatus_t v3_cublas_st_ = (call);                                              \
        if (v3_cublas_st_ != CUBLAS_STATUS_SUCCESS) v3cu_cublas_fail(__FILE__, __LINE__, #call, v3_cublas_st_); \
    } while (0)
#endif
