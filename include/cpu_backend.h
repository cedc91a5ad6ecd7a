/* The fast CPU backend (backend_cpu, host/cpu/): the reference table (host/ref/) with the ops below replaced by
 * faster implementations of the same semantics (op_list.h). Each replacement is checked against its ref_ op in
 * test_backend_ops with the tolerance stated in tests/backend_cases.c. */
#ifndef V3_CPU_BACKEND_H
#define V3_CPU_BACKEND_H
#include "op_list.h"

/* The ops the cpu backend implements itself; every other entry of its table is the ref_ op. */
#define V3_CPU_OPS(OP)                                                                                          \
    OP(conv_plan, void *, (const ConvGeom *g, int transposed, int N, int H, int W, V3Math math))                \
    OP(conv_destroy, void, (void *plan))                                                                        \
    OP(conv_fwd, void, (const void *plan, const float *x, const float *w, const float *b, float *y))            \
    OP(conv_bwd, void,                                                                                          \
       (const void *plan, const float *x, const float *w, const float *dy, float *dx, float *dw, float *db))

#define V3_DECLARE_CPU(name, ret, params) ret cpu_##name params;
V3_CPU_OPS(V3_DECLARE_CPU)

/* The convolution library the cpu backend was built with ("oneDNN 2.6.3", or the reference im2col + GEMM), and the
 * implementation a plan runs for which = 0 forward, 1 data gradient, 2 weight gradient (oneDNN's name for it). */
const char *cpu_conv_library(void);
const char *cpu_conv_impl(const void *plan, int which);
#endif
