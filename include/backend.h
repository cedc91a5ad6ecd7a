/* A backend: one table of the ops in op_list.h, plus how its memory relates to the host. The training step
 * (step.h) is written once against this table.
 *   ref   the plain C reference ops in host memory: the specification (host/ref/backend_ref.c);
 *   cpu   the fast CPU backend (its ops are the reference ops until they get faster ones);
 *   cuda  device memory, cuDNN, cuBLAS and our kernels (include/cuda_backend.h);
 *   emu   the reference ops behind a separate "device" memory: the step keeps its own copy of the model state
 *         and moves it as it does on CUDA, so the CPU test suite runs CUDA's data movement (tests only). */
#ifndef V3_BACKEND_H
#define V3_BACKEND_H
#include "op_list.h"

typedef struct Backend {
    const char *name;
    /* 1: the step may use the Model's host buffers as its state directly (nothing to copy to or from the host) */
    int host_state;
#define V3_BACKEND_MEMBER(name, ret, params) ret(*name) params;
    V3_ALL_OPS(V3_BACKEND_MEMBER)
#undef V3_BACKEND_MEMBER
} Backend;

extern const Backend backend_ref, backend_cpu, backend_cuda, backend_emu;

/* The table filled with one backend's prefix: V3_BACKEND_TABLE(ref) -> .alloc = ref_alloc, ... */
#define V3_TABLE_ENTRY_ref(name, ret, params) .name = ref_##name,
#define V3_TABLE_ENTRY_cuda(name, ret, params) .name = cuda_##name,
#define V3_BACKEND_TABLE(prefix) V3_ALL_OPS(V3_TABLE_ENTRY_##prefix)

/* --device: "ref" | "cpu" | "cuda" | "auto". auto takes CUDA when a usable GPU is present, else cpu.
 * Initialises the chosen backend (CUDA: device, libraries, math mode) and says which (v3_log).
 * Returns the table, or NULL with a v3_error naming what is missing. */
const Backend *backend_select(const char *want, V3Math math);
/* "ref" | "cpu" | "cuda" | "emu" -> table, or NULL. */
const Backend *backend_by_name(const char *name);
#endif
