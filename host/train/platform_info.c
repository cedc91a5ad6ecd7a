/* The CPU math a run used. OpenBLAS picks its SGEMM kernels by CPU model at load time (or by the environment
 * variable OPENBLAS_CORETYPE), and kernel sets round differently, so two machines with the same binary, seed and
 * thread count can still diverge; recording the kernel set makes a difference explainable. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cpu_backend.h"
#include "platform_info.h"

static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            const char *v = strchr(line, ':') + 1;
            while (*v == ' ' || *v == '\t') v++;
            snprintf(buf, n, "%.*s", (int)strcspn(v, "\n"), v);
            break;
        }
    fclose(f);
}

static void blas_version(char *buf, size_t n) {
    /* openblas_get_config(): "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..."; keep name and version */
    const char *cfg = openblas_get_config();
    const char *sp = cfg ? strchr(cfg, ' ') : NULL;
    size_t len = sp ? strcspn(sp + 1, " ") + (size_t)(sp + 1 - cfg) : (cfg ? strlen(cfg) : 0);
    snprintf(buf, n, "%.*s", (int)len, cfg ? cfg : "OpenBLAS");
}

/* openblas_get_parallel(): 0 sequential, 1 its own pthreads, 2 OpenMP (our pool) */
static const char *blas_threading(void) {
    int p = openblas_get_parallel();
    return p == 2 ? "OpenMP" : p == 1 ? "pthreads" : "sequential";
}

void platform_describe(char *buf, size_t n) {
    char ver[64], cpu[256];
    blas_version(ver, sizeof ver);
    cpu_model(cpu, sizeof cpu);
    snprintf(buf, n, "%s (%s) %s kernels%s, %d threads (GEMM %d), convolutions: %s, %s", ver, blas_threading(),
             openblas_get_corename(), getenv("OPENBLAS_CORETYPE") ? " (OPENBLAS_CORETYPE)" : "", omp_get_max_threads(),
             openblas_get_num_threads(), cpu_conv_library(), cpu);
}

static const char *g_denormals = "kept (IEEE gradual underflow)";
const char *platform_denormals(const char *set) {
    if (set) g_denormals = set;
    return g_denormals;
}

int platform_write(const char *dir) {
    char path[1100], ver[64], cpu[256];
    snprintf(path, sizeof path, "%s/platform.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return v3_error("%s: cannot write: %s", path, strerror(errno));
    blas_version(ver, sizeof ver);
    cpu_model(cpu, sizeof cpu);
    const char *forced = getenv("OPENBLAS_CORETYPE");
    const char *isa = getenv("ONEDNN_MAX_CPU_ISA");
    fprintf(f, "blas: %s\nblas_threading: %s\nblas_kernels: %s\nblas_kernels_forced: %s\nomp_threads: %d\n"
               "gemm_threads: %d\nconv_library: %s\nconv_isa_forced: %s\ndenormals: %s\ncpu: %s\n", ver,
            blas_threading(), openblas_get_corename(), forced ? forced : "no", omp_get_max_threads(),
            openblas_get_num_threads(), cpu_conv_library(), isa ? isa : "no", g_denormals, cpu);
    return fclose(f) == 0 ? 0 : v3_error("%s: write failed: %s", path, strerror(errno));
}
