/* The one GEMM entry point of the CPU path (OpenBLAS, row-major). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "common.h"

#include "ops.h"

/* GEMMs use as many threads as the OpenMP pool: the build links the OpenMP variant of OpenBLAS, whose threads ARE
 * that pool. (The pthread variant's own pool fought ours for the cores: twice the wall time on 2 cores, so GEMMs
 * ran on one thread and a core idled through every GEMM; NOTES.md, "Fast CPU backend".) OpenBLAS splits a GEMM by
 * rows and columns, never along K, so each result element is summed by one thread in the same order: results are
 * bit-identical for any thread count (checked: 50 logged steps). OPENBLAS_NUM_THREADS, when set, wins. */
void cpu_gemm_init(void) {
    const char *e = getenv("OPENBLAS_NUM_THREADS");
    if (!e || !*e) openblas_set_num_threads(openblas_get_parallel() == 2 ? omp_get_max_threads() : 1);
}

void cpu_sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}

/* The machine's SGEMM ceiling for the benchmarks: an n^3 GEMM on `threads` OpenBLAS threads (median of 5 after one
 * warm-up), in GFLOP/s; the training threads setting is restored after. */
double cpu_sgemm_ceiling(int threads, int n) {
    float *A = falloc((size_t)n * n), *B = falloc((size_t)n * n), *C = falloc((size_t)n * n);
    for (size_t i = 0; i < (size_t)n * n; i++) A[i] = B[i] = (float)((i % 17) - 8) / 16.0f;
    openblas_set_num_threads(threads);
    double t[5];
    cpu_sgemm(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
    for (int r = 0; r < 5; r++) {
        double t0 = now_seconds();
        cpu_sgemm(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        t[r] = now_seconds() - t0;
    }
    for (int i = 1; i < 5; i++) /* insertion sort of 5 */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) { double x = t[j]; t[j] = t[j - 1]; t[j - 1] = x; }
    cpu_gemm_init();
    const char *e = getenv("OPENBLAS_NUM_THREADS");
    if (e && *e) openblas_set_num_threads(atoi(e));
    ffree(A), ffree(B), ffree(C);
    return 2.0 * n * n * (double)n / t[2] / 1e9;
}
