/* Streaming batches to the trainer: a loader thread assembles the batch of step s+1 (indices, augmentation,
 * for InsNotes the STFT) into one of two host buffers while step s trains; on CUDA the buffers are pinned and
 * the thread also copies the batch to a device buffer on its own stream, so the upload overlaps the step too.
 * Data flows one way: when the source has device features (ds->use_gpu and ds->get_raw: InsNotes on a GPU run),
 * the thread uploads the batch's raw audio instead and cuda_stft_features writes the log-magnitude spectrograms
 * straight into the device buffer the step reads; the features never exist on the host (Batch.x is NULL).
 *
 * Which samples and which augmentation a step gets is a pure function of (seed, step): epoch e = s / spe uses
 * the permutation drawn from rng_derive_seed(seed, 0x5eed0000 + e), and sample i of it the augmentation seed
 * loader_aug_seed(seed, e, i). A resumed run therefore sees exactly the batches of an uninterrupted one. */
#ifndef V3_LOADER_H
#define V3_LOADER_H
#include <stdint.h>

#include "datasource.h"

typedef struct {
    DataSource *ds;
    int B;                 /* batch size */
    int steps_per_epoch;   /* batches per epoch (a trailing 1-sample batch is dropped by the caller) */
    uint64_t seed;
    int cuda;              /* pinned buffers + device batches; the loader thread binds cuda_init's device */
} LoaderOpts;

typedef struct {
    uint64_t step;
    int epoch, B;          /* B: samples in this batch (the last of an epoch may be smaller) */
    float *x;              /* host [B, n_frag, C, H, W]; NULL when the features were made on the device */
    const float *x_dev;    /* device [B, n_frag, C, H, W] (cuda only, else NULL): x uploaded, or the features
                            * computed in place; complete when loader_next returns it. The step must have
                            * finished reading it before the next loader_next hands the slot back. */
    int32_t *content, *style;
} Batch;

typedef struct Loader Loader;

/* NULL with v3_last_error() on failure (e.g. pinned allocation). */
Loader *loader_create(const LoaderOpts *o);
/* Start producing the batches of steps [first, last). */
int loader_start(Loader *l, uint64_t first, uint64_t last);
/* The batch of the next step (blocks until it is ready). It stays valid until the next call, which hands its
 * buffer back to the thread. NULL with v3_last_error() when assembling it failed. */
const Batch *loader_next(Loader *l);
/* Synchronously, in the calling thread, without starting the thread (benchmarks, tests): the batch of `step`
 * exactly as the thread would produce it, in slot 0. NULL with v3_last_error(); not on a started loader. */
const Batch *loader_produce(Loader *l, uint64_t step);
/* Seconds the trainer spent waiting in loader_next, and seconds the thread spent producing, so far. */
void loader_times(const Loader *l, double *wait_s, double *produce_s, uint64_t *batches);
void loader_free(Loader *l);

uint64_t loader_aug_seed(uint64_t seed, int epoch, uint64_t sample);
/* Evaluation batches (synchronous, in the caller's thread): samples first..first+B-1 in order, each with the
 * augmentation seed loader_aug_seed(seed, -1, sample) (fixed per sample, so every validation pass sees the
 * same data). Host batches from get_batch, so the features are the CPU's (FFTW for InsNotes) on every run. */
int loader_eval_batch(DataSource *ds, uint64_t seed, uint64_t first, int B, float *x, int32_t *content,
                      int32_t *style);
#endif
