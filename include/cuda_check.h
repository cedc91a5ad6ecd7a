/* Error checking and shared helpers for the CUDA sources (the kernels/ .cu files only; needs cuda_runtime.h).
 * CUDA_CHECK(call): on failure prints "v3: CUDA error at file:line: <call text>: <error string>" and exits(1).
 * CUDA_CHECK_LAUNCH(): checks the launch just made (configuration errors; faults surface at the next sync).
 * Later cuDNN/cuBLAS twins follow the same pattern (CUDNN_CHECK, CUBLAS_CHECK). */
#ifndef V3_CUDA_CHECK_H
#define V3_CUDA_CHECK_H
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                                   \
    do {                                                                                                   \
        cudaError_t v3_cuda_err_ = (call);                                                                 \
        if (v3_cuda_err_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "v3: CUDA error at %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                 \
                    cudaGetErrorString(v3_cuda_err_));                                                     \
            exit(1);                                                                                       \
        }                                                                                                  \
    } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

/* Backend internals, defined in kernels/cuda_runtime.cu (C++ linkage: used only between .cu files). */
cudaStream_t v3cu_stream(void);          /* the backend's stream (legacy default stream before cuda_init) */
void *v3cu_scratch(size_t bytes);        /* device scratch of at least `bytes`, valid until the next call;
                                          * growing it synchronises the stream first, so queued work is safe */

/* Launch geometry for grid-stride loops: fixed block size, grid capped (the loops cover the rest). */
#define V3CU_BLOCK 256
static inline unsigned v3cu_grid(size_t n) {
    size_t g = (n + V3CU_BLOCK - 1) / V3CU_BLOCK;
    if (g < 1) g = 1;
    if (g > 8192) g = 8192;
    return (unsigned)g;
}
#endif
