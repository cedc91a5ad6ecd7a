/* SGEMM throughput of one BLAS library at the GEMM shapes our convolutions make (issue 17: "choose the
 * GEMM/convolution library by measuring"). tools/gemm_libs.sh builds it once per library (OpenBLAS pthread,
 * OpenBLAS OpenMP, BLIS OpenMP through their CBLAS, oneDNN through dnnl_sgemm) and prints one table.
 * Usage: gemm_libs THREADS. Row-major C[M,N] = A[M,K] B[K,N]; median of 5 timed calls after one warm-up. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef USE_DNNL
#include <dnnl.h>
#else
#include <cblas.h>
#endif
#include <omp.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void gemm(int M, int N, int K, const float *A, const float *B, float *C) {
#ifdef USE_DNNL
    dnnl_sgemm('N', 'N', M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
#else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
#endif
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    omp_set_num_threads(threads);
#if !defined(USE_DNNL) && defined(OPENBLAS_THREADS)
    openblas_set_num_threads(threads);
#endif
    /* {M, N, K, what}: square; the width-256 5x5 conv chunk (Cout x pixels x Cin*25); width 64; width 16's
     * small M; a linear layer's weight gradient */
    struct { int M, N, K; const char *what; } s[] = {
        {2048, 2048, 2048, "square 2048"},        {256, 4992, 6400, "conv 256->256 5x5 (w256)"},
        {64, 6144, 1600, "conv 64->64 5x5 (w64)"}, {16, 24576, 400, "conv 16->16 5x5 (w16)"},
        {1024, 1536, 320, "linear dW (w256 lin1)"}};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        int M = s[i].M, N = s[i].N, K = s[i].K;
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
        for (long j = 0; j < (long)M * K; j++) A[j] = (float)(j % 13) / 13.0f - 0.5f;
        for (long j = 0; j < (long)K * N; j++) B[j] = (float)(j % 7) / 7.0f - 0.5f;
        gemm(M, N, K, A, B, C);
        double t[5];
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            gemm(M, N, K, A, B, C);
            t[r] = now() - t0;
        }
        for (int a = 1; a < 5; a++)
            for (int b = a; b > 0 && t[b] < t[b - 1]; b--) { double x = t[b]; t[b] = t[b - 1]; t[b - 1] = x; }
        printf("%-28s %7.1f GFLOP/s\n", s[i].what, 2.0 * M * N * (double)K / t[2] / 1e9);
        free(A), free(B), free(C);
    }
    return 0;
}
