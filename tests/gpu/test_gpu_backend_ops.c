/* Every compute op of the op list on the cuda backend against ref (tests/backend_cases.c: small and odd shapes
 * and the authors' sizes, NaN-poisoned outputs, guard bytes, the per-op tolerance table), FP32 math, plus the
 * memory ops as a round trip. SKIP without a usable GPU. V3_BO_VERBOSE=1 prints a line per case with times. */
#include <stdlib.h>
#include <string.h>

#include "../backend_cases.h"
#include "backend.h"
#include "common.h"
#include "cuda_backend.h"
#include "gpu_test.h"
#include "testing.h"

static int libs_ready(void) {
    if (cuda_libs_load()) {
        fprintf(stderr, "    cuda_libs_load: %s\n", v3_last_error());
        return 0;
    }
    cuda_set_math(V3_MATH_FP32);
    return 1;
}

TEST(gpu_backend_ops_memory_round_trip) {
    REQUIRE_GPU();
    CHECK(bo_check_memory(&backend_cuda, stderr) == 0, "memory ops of cuda");
    return 0;
}

TEST(gpu_backend_ops_cuda_matches_ref) {
    REQUIRE_GPU();
    CHECK(libs_ready(), "cuBLAS/cuDNN could not be loaded");
    const char *v = getenv("V3_BO_VERBOSE");
    const Backend *bes[] = {&backend_cuda};
    BoOpts o = {.log = stderr, .verbose = v && *v && strcmp(v, "0")};
    BoReport r;
    int failed = bo_check(bes, 1, &o, &r);
    CHECK(failed == 0, "%d of %d cases differ from ref on cuda; see above", failed, r.runs);
    return 0;
}
