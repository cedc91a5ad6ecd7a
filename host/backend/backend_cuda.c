/* The CUDA backend's table: every op of op_list.h as cuda_<name> (include/cuda_backend.h, kernels/). */
#include "backend.h"
#include "cuda_backend.h"

const Backend backend_cuda = {.name = "cuda", .host_state = 0, V3_BACKEND_TABLE(cuda)};
