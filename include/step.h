/* The training step, written once over a Backend (backend.h): forward (encoder, VQ, decoder, losses), backward,
 * AdamW, and the evaluation pieces (encode, decode), for every backend: ref, cpu, cuda (and emu in tests).
 *
 * All activations live in one arena sized once for up to N_max fragments (no allocation inside a step). The
 * model state (parameters, gradients, AdamW m and v, BatchNorm statistics, codebook and its EMA state) is the
 * Model's own host buffers on backends with host_state (ref, cpu); elsewhere the step keeps it in the backend's
 * memory, and step_to_host / step_from_host are the only ways it moves (before a checkpoint or a log of the
 * weights, after a resume). The host Model stays the owner of the configuration, the layer table, the RNG
 * (k-means initialisation and dead-code draws happen on the host with the model's RNG on every backend, so all
 * consume the same random stream) and the AdamW step count. */
#ifndef V3_STEP_H
#define V3_STEP_H
#include "backend.h"
#include "model.h"

typedef struct Step Step;

/* A step for batches of up to N_max fragments (B * n_fragments rows for training), convolutions in math mode
 * `math`. Brings the model's state to the backend. NULL + v3_error on failure (out of device memory, a plan
 * failing). */
Step *step_create(Model *m, const Backend *be, int N_max, V3Math math);
void step_free(Step *s);
const Backend *step_backend(const Step *s);
int step_capacity(const Step *s); /* N_max */
/* Bytes of the arena (activations, and on backends without host_state the model state too). */
size_t step_arena_bytes(const Step *s);
/* The same, before creating a step: what step_create(m, be, N, ...) would allocate. */
size_t step_estimate_bytes(Model *m, const Backend *be, int N);

/* Forward + loss on x [B, n, C, H, W] (B >= 2, B * n <= N_max). x is host memory, or (x_on_backend) a buffer in
 * the backend's memory (the loader's device buffer), read in place and untouched until the call returns.
 * bn_train: BatchNorm batch statistics (else running); vq_mode: VQ_TRAIN updates the codebook, VQ_FROZEN keeps it,
 * VQ_EVAL also drops the commitment term. Fills out; returns -1 with a v3_error listing the terms if the loss is
 * not finite. */
int step_forward(Step *s, const float *x, int x_on_backend, int B, int bn_train, VqMode vq_mode, LossTerms *out);
/* Makes cfg the loss weights of the next forwards (the model's m->loss, and the V3 workspace of every row count
 * planned so far, remade with it). Call between steps, never between a forward and its backward. 0, or -1 +
 * v3_error. */
int step_set_loss(Step *s, const V3LossCfg *cfg);
/* Backward of the last forward (parameter gradients, zeroed first), and one AdamW step with learning rate lr. */
void step_backward(Step *s);
void step_adamw(Step *s, float lr);
/* 1 if every trainable parameter's gradient of the last backward is finite. */
int step_grads_finite(Step *s);
/* forward (train mode), backward, AdamW, one synchronisation at the end to read the loss terms. */
int step_train(Step *s, const float *x, int x_on_backend, int B, float lr, LossTerms *out);

/* Evaluation pieces (BN running statistics, codebook frozen, no loss), any N <= N_max, host inputs.
 * step_encode: z_c, its nearest codeword q, z_s and the codeword index of every fragment (step_outputs);
 * step_decode: content inputs q [N, dc] with styles zs [N, ds] into host xhat [N, C, H, W]. 0, or -1 + v3_error.
 * They invalidate the last training forward (no backward after them). */
int step_encode(Step *s, const float *x, int N);
int step_decode(Step *s, const float *q, const float *zs, int N, float *xhat);

/* Host views of the last forward or encode: zc, q, zs [N, d], ind [N], xhat [N, C, H, W] (after a forward). They
 * point into the step (host_state) or into host copies made by this call, valid until the next step call. */
typedef struct { int N; const float *zc, *q, *zs, *xhat; const int *ind; } StepOutputs;
int step_outputs(Step *s, StepOutputs *o);
/* The codeword indices of the last forward or encode on the host (only they are copied: validation needs no
 * more); exits on a backend error. */
const int *step_indices(Step *s);
/* The last forward's loss terms and V3 statistics. */
const LossTerms *step_last_terms(const Step *s);
const V3Stats *step_last_stats(const Step *s);
/* Codebook perplexity from the EMA counts of the last training step. */
double step_perplexity(const Step *s);
/* Parameter gradients of the last backward into host g_out [n_params] (tests). */
int step_read_grads(Step *s, float *g_out);
/* The state between the backend and the Model's host buffers (no-ops with host_state). */
int step_to_host(Step *s);
int step_from_host(Step *s);

/* Tests (host_state backends): the buffers the V3 statistics read as q in the last forward (q or q_ste), and the
 * gradient reaching z_c in the last backward. */
typedef struct { const float *q_stats, *q, *q_ste, *gzc; } StepInternals;
void step_internals(const Step *s, StepInternals *v);

/* Test hook: when not NULL, the quantiser output is replaced by zc + model_test_q_offset (fixed) and the
 * commitment loss uses the fixed codewords model_test_q_const, so finite differences of the whole model see
 * exactly the straight-through gradient and no assignment can flip under a perturbation (host_state backends). */
extern const float *model_test_q_offset;
extern const float *model_test_q_const;
#endif
