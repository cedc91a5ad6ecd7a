/* The training step on a device: the same model, loss and optimiser as host/model_step.c, op for op, with all
 * parameters, optimiser state, BatchNorm statistics, codebook and activations in one device arena sized once
 * (no device allocation inside a step), run through a DevOps table (include/devops.h: the CUDA backend, or the
 * emulated device the CPU tests use).
 *
 * The host Model stays the owner of the configuration, the layer table and the RNG (k-means initialisation and
 * dead-code draws are made on the host with the model's RNG, exactly as the CPU path makes them, so both paths
 * consume the same random stream). Its parameter and state buffers are a host mirror, refreshed by
 * gpu_model_download (before a checkpoint) and pushed by gpu_model_upload (after a resume). */
#ifndef V3_GPU_MODEL_H
#define V3_GPU_MODEL_H
#include "devops.h"
#include "model.h"

typedef struct GpuModel GpuModel;

/* Device model for batches of up to B_max samples (B_max * n_fragments rows), in math mode `math`. Uploads the
 * host model's state. NULL + v3_error on failure (e.g. out of device memory, a cuDNN plan failing). */
GpuModel *gpu_model_create(Model *m, const DevOps *ops, int B_max, V3Math math);
void gpu_model_free(GpuModel *g);
/* Bytes of device memory in the arena (parameters, state, activations). */
size_t gpu_model_arena_bytes(const GpuModel *g);

/* Forward + loss on host x [B, n, C, H, W] (B <= B_max), as model_forward_mode. Synchronises and fills out.
 * Returns 0, or -1 with a v3_error if the loss is not finite. */
int gpu_model_forward_mode(GpuModel *g, const float *x, int B, int bn_train, VqMode vq_mode, LossTerms *out);
int gpu_model_forward(GpuModel *g, const float *x, int B, int train, LossTerms *out);
/* Backward of the last training forward; parameter gradients on the device. */
void gpu_model_backward(GpuModel *g);
void gpu_model_adamw(GpuModel *g, float lr);
/* One training step: forward (train mode), backward, AdamW, with one synchronisation at the end to read the
 * loss terms. Returns -1 with a v3_error (listing every term) if the loss is not finite. */
int gpu_model_train_step(GpuModel *g, const float *x, int B, float lr, LossTerms *out);
/* The same step reading its input from device memory (the loader's buffer, filled on its copy stream and
 * complete before this call); the buffer must stay untouched until the step returns. */
int gpu_model_train_step_dev(GpuModel *g, const float *x_dev, int B, float lr, LossTerms *out);

/* Codeword indices of the last forward (host copy, B * n_fragments entries). */
const int *gpu_model_indices(GpuModel *g);
/* Parameter gradients of the last backward into host g_out [n_params] (tests). */
int gpu_model_read_grads(GpuModel *g, float *g_out);
/* Device -> host mirror (parameters, AdamW m and v, BN statistics, codebook EMA state) and back. */
int gpu_model_download(GpuModel *g);
int gpu_model_upload(GpuModel *g);
#endif
