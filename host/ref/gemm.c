/* The one GEMM entry point of the CPU path (OpenBLAS, row-major). */
#include <cblas.h>
#include <stdlib.h>

#include "ops.h"

/* OpenBLAS's own thread pool competes with our OpenMP threads for the same cores (measured: twice the wall time
 * and a third of it in the kernel on 2 cores, NOTES.md), so GEMMs run on the calling thread unless the user
 * sets OPENBLAS_NUM_THREADS. A fixed count also keeps results (and resumes) bit-reproducible. */
void cpu_gemm_init(void) {
    const char *e = getenv("OPENBLAS_NUM_THREADS");
    if (!e || !*e) openblas_set_num_threads(1);
}

void cpu_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}
