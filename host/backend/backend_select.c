/* --device: which backend a run uses (backend.h). */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "cpu_backend.h"
#include "cuda_backend.h"
#include "platform_info.h"

const Backend *backend_by_name(const char *name) {
    const Backend *all[] = {&backend_ref, &backend_cpu, &backend_cuda, &backend_emu};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(all[i]->name, name)) return all[i];
    return NULL;
}

static const Backend *host(const Backend *be, V3Math math, const char *why) {
    if (math != V3_MATH_FP32)
        return v3_error("--math %s needs the CUDA backend; the %s backend is exact float32 (use --math fp32)%s%s",
                        v3_math_name(math), be->name, why[0] ? ": " : "", why), NULL;
    char pl[512];
    platform_describe(pl, sizeof pl);
    v3_log("v3: device: CPU, backend %s%s%s%s\n", be->name, why[0] ? " (" : "", why, why[0] ? ")" : "");
    v3_log("v3: CPU math: %s (a run is bit-reproducible with the same binary, kernels and thread count)\n", pl);
    if (be == &backend_cpu) v3_log("v3: denormals: %s\n", platform_denormals(cpu_denormals_init()));
    return be;
}

/* cuda needs a usable GPU plus cuBLAS/cuDNN; auto takes the GPU when one is present and says so. A GPU that is
 * present but unusable is an error in both modes (no silent fall-back to the CPU). */
const Backend *backend_select(const char *want, V3Math math) {
    char desc[256];
    if (!want) want = "auto";
    if (strcmp(want, "ref") && strcmp(want, "cpu") && strcmp(want, "cuda") && strcmp(want, "auto"))
        return v3_error("--device: expected ref, cpu, cuda or auto, got '%s'", want), NULL;
    int n = cuda_probe(desc, sizeof desc);
    if (strcmp(want, "cuda") && strcmp(want, "auto")) {
        char why[300] = "";
        if (n > 0) snprintf(why, sizeof why, "--device %s; a GPU is present: %s", want, desc);
        return host(backend_by_name(want), math, why);
    }
    if (n <= 0) {
        if (!strcmp(want, "cuda")) return v3_error("--device cuda: %s", desc), NULL;
        return host(&backend_cpu, math, desc);
    }
    int dev = 0;
    const char *tag = strstr(desc, "[CUDA device ");
    if (tag) dev = atoi(tag + strlen("[CUDA device "));
    if (cuda_init(dev) || cuda_libs_load())
        return v3_error("--device %s: %s found, but it cannot be used: %s (pass --device cpu to train on the CPU)",
                        want, desc, v3_last_error()), NULL;
    cuda_set_math(math);
    v3_log("v3: device: %s, backend cuda, math %s\n", desc, v3_math_name(math));
    return &backend_cuda;
}
