/* The cpu backend's table: the reference table with the entries of V3_CPU_OPS (cpu_backend.h) replaced. The
 * designated initialisers name those entries twice (ref first, then cpu); C11 takes the last, which is the point, so
 * the compilers' override warnings are silenced for this one definition. */
#include "backend.h"
#include "cpu_backend.h"
#include "ops.h"

#define V3_TABLE_ENTRY_cpu(name, ret, params) .name = cpu_##name,

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
