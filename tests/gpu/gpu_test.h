/* Shared helpers for the CUDA-vs-CPU tests in tests/gpu/ (tests/run_gpu_tests, `make test-gpu`).
 * Every GPU test starts with REQUIRE_GPU(): without a usable device the first GPU test prints one line
 * "SKIP: no CUDA device (<reason>)" and every test returns 77 (SKIP), so the runner exits 0. */
#ifndef V3_GPU_TEST_H
#define V3_GPU_TEST_H
#include <stddef.h>

#include "testing.h"

enum { GPU_UNKNOWN = -1, GPU_NONE = 0, GPU_READY = 1, GPU_BROKEN = 2 };
/* Probe and initialise the device once per process; GPU_NONE prints the SKIP line the first time. */
int gpu_state(void);
const char *gpu_desc(void);      /* the probe's description of the device */
const char *gpu_init_error(void); /* why cuda_init failed (GPU_BROKEN) */

#define REQUIRE_GPU()                                                                                          \
    do {                                                                                                       \
        int st_ = gpu_state();                                                                                 \
        if (st_ == GPU_NONE) return 77;                                                                        \
        CHECK(st_ == GPU_READY, "cuda_probe found %s, but cuda_init failed: %s", gpu_desc(), gpu_init_error()); \
    } while (0)

float *dput(const float *h, size_t n);  /* device copy of n host floats */
float *dnan(size_t n);                  /* device buffer of NaNs (all bytes 0xFF) */
int *dput_int(const int *h, size_t n);
/* Waits for queued kernels (surfacing asynchronous faults), then copies n floats back into a poisoned h.
 * 1 on success. */
int dget(float *h, const float *d, size_t n);
int dget_int(int *h, const int *d, size_t n);
float *hrand(size_t n, unsigned long long seed, float lo, float hi);
float *hcopy(const float *src, size_t n);
/* 1 when max_scaled_err(gpu, cpu) <= 1, else prints the worst element and gives 0. */
int close_enough(const char *what, const float *gpu, const float *cpu, size_t n, double atol, double rtol);
#endif
