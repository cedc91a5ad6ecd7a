/* Backend-independent helpers of the CUDA API: math-mode names (used by the CLI and the benchmarks). */
#include <string.h>

#include "common.h"
#include "cuda_backend.h"

static const char *k_math[] = {"fp32", "tf32", "bf16"};

int v3_math_parse(const char *s, V3Math *out) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, k_math[i])) {
            *out = (V3Math)i;
            return 0;
        }
    return v3_error("unknown math mode '%s' (expected fp32, tf32 or bf16)", s ? s : "(null)");
}

const char *v3_math_name(V3Math m) { return (unsigned)m < 3 ? k_math[m] : "?"; }
