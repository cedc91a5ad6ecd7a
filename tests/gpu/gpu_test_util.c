/* Shared helpers for the CUDA-vs-CPU tests (see gpu_test.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "gpu_test.h"

/* ---- device availability, decided once per process ---- */

static int g_gpu = GPU_UNKNOWN;
static char g_desc[256], g_init_err[512];

int gpu_state(void) {
    if (g_gpu != GPU_UNKNOWN) return g_gpu;
    int n = cuda_probe(g_desc, sizeof g_desc);
    if (n <= 0) {
        /* The probe's reason starts with "no CUDA device: " for runtime errors; do not say it twice. */
        const char *why = g_desc, *pre = "no CUDA device: ";
        if (!strncmp(why, pre, strlen(pre))) why += strlen(pre);
        printf("SKIP: no CUDA device (%s)\n", *why ? why : "cuda_probe gave no reason");
        fflush(stdout);
        return g_gpu = GPU_NONE;
    }
    int dev = 0;
    const char *tag = strstr(g_desc, "[CUDA device ");
    if (tag) dev = atoi(tag + strlen("[CUDA device "));
    if (cuda_init(dev)) {
        snprintf(g_init_err, sizeof g_init_err, "%s", v3_last_error());
        return g_gpu = GPU_BROKEN;
    }
    return g_gpu = GPU_READY;
}

/* ---- helpers ---- */

float *dput(const float *h, size_t n) {
    float *d = cuda_alloc(n * sizeof(float));
    if (cuda_h2d(d, h, n * sizeof(float))) V3_FATAL("%s", v3_last_error());
    return d;
}

/* A device buffer of NaNs (all bytes 0xFF), so anything a kernel fails to write is caught. */
float *dnan(size_t n) {
    float *d = cuda_alloc(n * sizeof(float));
    if (cuda_memset(d, 0xFF, n * sizeof(float))) V3_FATAL("%s", v3_last_error());
    return d;
}

/* Waits for the queued kernels (surfacing asynchronous faults), then copies n floats back. 1 on success. */
int dget(float *h, const float *d, size_t n) {
    poison(h, n);
    if (cuda_sync() || cuda_d2h(h, d, n * sizeof(float))) {
        fprintf(stderr, "    %s\n", v3_last_error());
        return 0;
    }
    return 1;
}

float *hrand(size_t n, unsigned long long seed, float lo, float hi) {
    float *h = falloc(n);
    fill_uniform(h, n, seed, lo, hi);
    return h;
}

float *hcopy(const float *src, size_t n) {
    float *h = falloc(n);
    memcpy(h, src, n * sizeof(float));
    return h;
}

/* 1 when max_scaled_err(gpu, cpu) <= 1, else prints the worst element and gives 0. */
int close_enough(const char *what, const float *gpu, const float *cpu, size_t n, double atol, double rtol) {
    size_t w = 0;
    double e = max_scaled_err(gpu, cpu, n, atol, rtol, &w);
    if (e <= 1.0) return 1;
    fprintf(stderr, "    %s: max scaled error %.3g at [%zu] of %zu: gpu %.9g, cpu %.9g (atol %g, rtol %g)\n", what,
            e, w, n, n ? gpu[w] : 0.0, n ? cpu[w] : 0.0, atol, rtol);
    return 0;
}

const char *gpu_desc(void) { return g_desc; }
const char *gpu_init_error(void) { return g_init_err; }

int *dput_int(const int *h, size_t n) {
    int *d = cuda_alloc(n * sizeof(int));
    if (cuda_h2d(d, h, n * sizeof(int))) V3_FATAL("%s", v3_last_error());
    return d;
}

int dget_int(int *h, const int *d, size_t n) {
    memset(h, 0xFF, n * sizeof(int));
    if (cuda_sync() || cuda_d2h(h, d, n * sizeof(int))) {
        fprintf(stderr, "    %s\n", v3_last_error());
        return 0;
    }
    return 1;
}
