/* Every compute op of the op list, forward and backward, on the cpu and emu backends against ref, at small and odd
 * shapes and the authors' sizes (the cases, tolerances and runner: tests/backend_cases.c; the cuda backend:
 * tests/gpu/test_gpu_backend_ops.c). cpu runs its own ops where include/cpu_backend.h lists them (the ref functions
 * elsewhere); emu runs the ref functions behind its own memory (alloc, h2d, d2h).
 * V3_BO_VERBOSE=1 prints a line per case and backend (the case table, with times); V3_BO_OPS=op,op runs only
 * those ops' cases. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cases.h"
#include "ops.h"
#include "testing.h"

static int verbose(void) {
    const char *v = getenv("V3_BO_VERBOSE");
    return v && *v && strcmp(v, "0");
}

TEST(backend_ops_every_op_has_a_case) {
    CHECK(bo_uncovered_ops(stderr) == 0, "every compute op of include/op_list.h needs a case and a tolerance row");
    return 0;
}

TEST(backend_ops_memory_round_trip) {
    const Backend *bes[] = {&backend_ref, &backend_cpu, &backend_emu};
    for (int b = 0; b < 3; b++) CHECK(bo_check_memory(bes[b], stderr) == 0, "memory ops of %s", bes[b]->name);
    return 0;
}

TEST(backend_ops_cpu_and_emu_match_ref) {
    const Backend *bes[] = {&backend_cpu, &backend_emu};
    BoOpts o = {.log = stderr, .verbose = verbose(), .ops = getenv("V3_BO_OPS")};
    BoReport r;
    int failed = bo_check(bes, 2, &o, &r);
    if (o.ops) return failed ? 1 : 0;
    CHECK(failed == 0, "%d of %d runs (%d cases x cpu, emu) differ from ref; see above", failed, r.runs, r.cases);
    for (int k = 0; k < BO_N_OPS; k++) /* the handle ops run inside their groups' cases */
        CHECK(r.op_runs[k] > 0 || strstr(bo_op_names[k], "plan") || strstr(bo_op_names[k], "create") ||
                  strstr(bo_op_names[k], "destroy") || !strcmp(bo_op_names[k], "v3_stats"),
              "op %s was not run", bo_op_names[k]);
    return 0;
}

/* ---- the checker can fail: a deliberately wrong backend ---- */

/* leaves y untouched */
static void wrong_gelu_fwd(size_t n, const float *x, float *y) {}
/* overwrites dw and db instead of accumulating */
static void wrong_linear_bwd(int N, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
                             float *db) {
    memset(dw, 0, sizeof(float) * (size_t)in * out);
    memset(db, 0, sizeof(float) * (size_t)out);
    ref_linear_bwd(N, in, out, x, w, dy, dx, dw, db);
}
/* one element off by 0.01 (outputs are O(1): over 100 times conv_fwd's tolerance), after a correct forward */
static void wrong_conv_fwd(const void *plan, const float *x, const float *w, const float *b, float *y) {
    ref_conv_fwd(plan, x, w, b, y);
    y[0] += 0.01f;
}

TEST(backend_ops_checker_fails_a_wrong_backend) {
    Backend wrong = backend_ref;
    wrong.name = "wrong";
    wrong.gelu_fwd = wrong_gelu_fwd;
    wrong.linear_bwd = wrong_linear_bwd;
    wrong.conv_fwd = wrong_conv_fwd;
    const Backend *bes[] = {&wrong};
    BoOpts o = {.ops = "gelu_fwd,linear_bwd,conv_fwd,gelu_bwd,linear_fwd", .small_only = 1, .log = NULL};
    BoReport r;
    bo_check(bes, 1, &o, &r);
    CHECK(r.op_runs[BO_OP_gelu_fwd] > 0 && r.op_runs[BO_OP_linear_bwd] > 0 && r.op_runs[BO_OP_conv_fwd] > 0,
          "the wrong ops were not run");
    /* n = 0 has nothing to leave untouched: every other gelu_fwd case must fail */
    CHECK(r.op_failed[BO_OP_gelu_fwd] == r.op_runs[BO_OP_gelu_fwd] - 1, "gelu_fwd leaving y untouched failed %d of %d cases",
          r.op_failed[BO_OP_gelu_fwd], r.op_runs[BO_OP_gelu_fwd]);
    CHECK(r.op_failed[BO_OP_linear_bwd] == r.op_runs[BO_OP_linear_bwd],
          "linear_bwd overwriting dw failed only %d of %d cases", r.op_failed[BO_OP_linear_bwd], r.op_runs[BO_OP_linear_bwd]);
    CHECK(r.op_failed[BO_OP_conv_fwd] == r.op_runs[BO_OP_conv_fwd], "conv_fwd off by 0.01 failed only %d of %d cases",
          r.op_failed[BO_OP_conv_fwd], r.op_runs[BO_OP_conv_fwd]);
    /* and the correct ops of the same table pass */
    CHECK(r.op_runs[BO_OP_gelu_bwd] > 0 && r.op_failed[BO_OP_gelu_bwd] == 0, "gelu_bwd (correct) failed");
    CHECK(r.op_runs[BO_OP_linear_fwd] > 0 && r.op_failed[BO_OP_linear_fwd] == 0, "linear_fwd (correct) failed");
    return 0;
}
