/* The fast CPU backend (backend_cpu, host/cpu/): the reference table (host/ref/) with the ops below replaced by
 * faster implementations of the same semantics (op_list.h). Each replacement is checked against its ref_ op in
 * test_backend_ops with the tolerance stated in tests/backend_cases.c. */
#ifndef V3_CPU_BACKEND_H
#define V3_CPU_BACKEND_H
#include "op_list.h"

/* The ops the cpu backend implements itself (names of include/op_list.h's entries); every other entry of its table
 * is the ref_ op. */
#define V3_CPU_OPS(X)                                                                                           \
    X(conv_plan) X(conv_destroy) X(conv_fwd) X(conv_bwd)                                                        \
    X(gelu_fwd) X(gelu_bwd) X(gelu_fwd_cols) X(gelu_bwd_cols)                                                   \
    X(bn2d_fwd_train) X(bn2d_fwd_eval) X(bn2d_bwd)                                                              \
    X(vq_create) X(vq_destroy) X(vq_search) X(vq_ema) X(vq_revive)                                              \
    X(v3_create) X(v3_destroy) X(v3_forward) X(v3_backward) X(v3_stats)                                         \
    X(mse_fwd) X(axpy_diff) X(count_nonfinite) X(add_inplace)

/* cpu_<op> with the op list's signature, declared for every compute op (only those in V3_CPU_OPS are defined) */
#define V3_DECLARE_CPU(name, ret, params) ret cpu_##name params;
V3_COMPUTE_OPS(V3_DECLARE_CPU)

/* Sets flush-to-zero for denormals on every thread of the OpenMP pool (backend_cpu.c; run once the thread count is
 * final, before training); returns what it did, for the log and platform.txt. */
const char *cpu_denormals_init(void);

/* The convolution library the cpu backend was built with ("oneDNN 2.6.3", or the reference im2col + GEMM), and the
 * implementation a plan runs for which = 0 forward, 1 data gradient, 2 weight gradient (oneDNN's name for it). */
const char *cpu_conv_library(void);
const char *cpu_conv_impl(const void *plan, int which);
#endif
