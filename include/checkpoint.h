/* Checkpoint files (.v3ck): everything needed to resume a run exactly.
 *
 * Layout, little-endian:
 *   header, 128 bytes:
 *     char   magic[8] = "V3CKPT\0\1"   u32 version = 1         u32 arch
 *     u64    n_params                  u64 n_trainable         u64 n_bufs
 *     u32    K (codebook size)         u32 d (code width)
 *     u64    step                      u64 adam_t              u64 seed
 *     u64    rng[4]                    f64 val_loss (NaN if none)
 *     u32    epoch                     u32 payload_crc (CRC-32C of the payload)
 *     u32    header_crc (CRC-32C of bytes [0,120))              u32 reserved
 *   payload (float32): params[n_params], adam_m[n_trainable], adam_v[n_trainable], bn_buffers[n_bufs],
 *     vq.embed[K*d], vq.embed_avg[K*d], vq.cluster_size[K], vq.initted[1]
 * Written to NAME.tmp, fsynced, renamed over NAME, then the directory is fsynced. */
#ifndef V3_CHECKPOINT_H
#define V3_CHECKPOINT_H
#include <stdint.h>

#include "model.h"

#define V3CK_MAGIC "V3CKPT\0\1"
#define V3CK_VERSION 1u
#define V3CK_HEADER_BYTES 128

typedef struct {
    uint64_t step, seed;
    uint32_t epoch;
    double val_loss;
} CkptMeta;

int checkpoint_save(const char *path, const Model *m, const CkptMeta *meta);
/* Load into a model built from the same config; rejects files for another shape with a clear message. */
int checkpoint_load(const char *path, Model *m, CkptMeta *meta);
/* Read only the header's metadata (for choosing which checkpoints to keep). */
int checkpoint_peek(const char *path, CkptMeta *meta);
#endif
