/* Golden test on the GPU: one training step of the device model (host/model/step.c over the CUDA backend, fp32
 * math) against the independent PyTorch float64 reference in tests/golden/ (tools/torch_reference.py), with the
 * tolerances of the CPU golden test (tests/golden/golden_check.h) times gold_scale = 10 for the groups that float32
 * summation order moves (cuDNN may choose FFT or Winograd convolutions in fp32 FMA math); AdamW's arithmetic bound
 * is not scaled. NOT YET RUN on a GPU (written on a machine without one; no GPU was lent to this task); the
 * measured errors are printed. Checked: codeword indices exactly, every loss term, every parameter gradient, every
 * parameter after AdamW, BN running statistics, the codebook EMA state, and the eval forward after the step
 * (indices and loss terms). SKIP without a GPU (REQUIRE_GPU). */
#include "../golden/golden_check.h"
#include "cuda_backend.h"
#include "gpu_test.h"
#include "testing.h"

TEST(gpu_golden_step_matches_torch_reference) {
    REQUIRE_GPU();
    CHECK(cuda_libs_load() == 0, "%s", v3_last_error());
    cuda_set_math(V3_MATH_FP32);
    gold_scale = 10.0;
    int rc = gold_device_step(&backend_cuda, V3_MATH_FP32, "GPU fp32");
    gold_scale = 1.0;
    CHECK(rc == 0, "the GPU step differs from the PyTorch reference (details above)");
    return 0;
}
