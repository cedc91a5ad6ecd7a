/* The cpu backend's table: the reference table with the entries of V3_CPU_OPS (cpu_backend.h) replaced. The
 * designated initialisers name those entries twice (ref first, then cpu); C11 takes the last, which is the point, so
 * the compilers' override warnings are silenced for this one definition. */
#include "backend.h"
#include "cpu_backend.h"
#include "ops.h"

#define V3_TABLE_ENTRY_cpu(name) .name = cpu_##name,

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Winitializer-overrides"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
#endif
const Backend backend_cpu = {.name = "cpu", .host_state = 1, V3_BACKEND_TABLE(ref) V3_CPU_OPS(V3_TABLE_ENTRY_cpu)};
#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* Denormals (subnormal floats) cost up to ~100 cycles an operation on x86 when an input or result is one. The cpu
 * backend's threads flush them to zero: MXCSR's FTZ (results below 2^-126 become 0) and DAZ (such inputs read as 0),
 * set on every thread of the OpenMP pool, which oneDNN and OpenBLAS run on too. V3_DENORMALS=keep leaves them. */
#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif
#include <omp.h>
#include <stdlib.h>
#include <string.h>

const char *cpu_denormals_init(void) {
    const char *v = getenv("V3_DENORMALS");
    if (v && !strcmp(v, "keep")) return "kept (V3_DENORMALS=keep)";
#if defined(__x86_64__) || defined(__SSE__)
#pragma omp parallel
    _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ (bit 15) | DAZ (bit 6) */
    return "flushed to zero (FTZ/DAZ)";
#else
    return "kept (no FTZ/DAZ control on this architecture)";
#endif
}
