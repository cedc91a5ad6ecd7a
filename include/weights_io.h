/* Model weights as the authors' PyTorch state_dict (spec v3.md §2, §4) in safetensors files: every parameter and
 * BatchNorm buffer under its PyTorch name and layout (Conv2d [out,in,kh,kw], ConvTranspose2d [in,out,kh,kw],
 * Linear [out,in], BatchNorm running_mean/var and num_batches_tracked, the unused encoder.bn_c/bn_s) and the
 * VectorQuantize 1.18.0 codebook buffers (vq._codebook.initted, cluster_size, embed_avg, embed) in its shapes.
 * The file is the bare state_dict of the authors' CSAE, in its order: model.load_state_dict(load_file(path)) in
 * PyTorch. (Their own .pt checkpoints wrap the same dict: {"epoch", "model": state_dict, "optimizer"}.) */
#ifndef V3_WEIGHTS_IO_H
#define V3_WEIGHTS_IO_H
#include "model.h"
#include "safetensors.h"

/* Add every state_dict tensor of m to w. num_batches_tracked is written as `batches_tracked`. 0, or -1. */
int weights_export(const Model *m, StWriter *w, long batches_tracked);
/* Fill a built model from a state_dict file: every expected tensor must be present with exactly the expected shape
 * (dtype F32, or F64/F16/BF16 converted; num_batches_tracked I64); a missing, misshaped or unexpected tensor is an
 * error naming the file, the tensor and the expected shape. 0, or -1 with v3_error. */
int weights_import(Model *m, const StFile *f);
#endif
