/* The V3 content/style autoencoder (spec v3.md §2) on the CPU: encoder CNNs, linear heads, VQ, decoder CNNs.
 * All parameters live in one float buffer (grads, Adam m and v beside it) behind a name table that follows the
 * authors' PyTorch state_dict names; BatchNorm running statistics live in a second buffer. */
#ifndef V3_MODEL_H
#define V3_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ops.h"
#include "rng.h"
#include "v3loss.h"
#include "vq.h"

typedef struct { int cin, ch, L, nb, kh, kw, sh, sw; } EncSpec; /* EncCNN(cin, ch, L, nb, k, s) */
typedef struct { int ch, cout, L, nb, kh, kw, uh, uw; } DecSpec; /* DecCNN(ch, cout, L, nb, k, up) */
typedef struct {
    int C, H, W;          /* fragment tensor */
    EncSpec e1, e2;
    DecSpec d2, d1;
    int bc, bh, bw;       /* bottleneck [ch, H, W] */
} ArchSpec;

/* Architecture of a config (fragment shape from in_channels/n_feature/fragment_len). -1 + error if the
 * sizes do not work out (odd sizes at a stride, bottleneck mismatch). */
int arch_spec(const Config *c, ArchSpec *a);

/* One named tensor of the parameter or buffer table: offset and size in its buffer, and its shape in PyTorch's
 * layout (Conv2d [out, in, kh, kw], ConvTranspose2d [in, out, kh, kw], Linear [out, in], biases and BatchNorm [C]),
 * which is also our memory layout (row-major), so a state_dict tensor maps onto the floats at off unchanged. */
typedef struct {
    size_t off, n;
    char name[96];
    int trainable;
    int enc;
    int ndim;
    int64_t shape[4];
} TensorInfo;

typedef enum { ST_STEM, ST_BLOCK, ST_UPSAMPLE, ST_OUTCONV } StageKind;
typedef struct { ConvGeom g; size_t w, b; int transposed; } ConvL;
typedef struct { int C; size_t g, b, rm, rv; } BnL;
typedef struct {
    StageKind kind;
    int cin, H, W, cout, Ho, Wo, uh, uw, has_sc;
    ConvL c0, c1, sc;
    BnL n0, n1, nsc;
} Stage;

typedef struct { double total, recon, commit, content, style, sample, fragment, Fc, Sc, Fs, Ss; } LossTerms;

typedef struct Model {
    Config cfg;
    ArchSpec arch;
    int dc, ds, flat;
    /* parameters */
    TensorInfo *params; int n_params_t;
    TensorInfo *bufs; int n_bufs_t;
    size_t n_params, n_trainable, n_bufs, n_enc_params;
    float *p, *g, *m, *v;   /* [n_params] (m, v cover the trainable prefix) */
    float *buf;             /* BN running stats [n_bufs] */
    /* layers */
    Stage *enc; int n_enc; Stage *dec; int n_dec;
    ConvL dummy;
    size_t lin1_w, lin1_b, linc_w, linc_b, lins_w, lins_b;    /* encoder linear layers */
    size_t dlinc_w, dlinc_b, dlins_w, dlins_b, lin0_w, lin0_b; /* decoder linear layers */
    VQ vq;
    Rng rng;                /* VQ k-means and dead-code draws */
    V3LossCfg loss;
    int tie_pytorch;        /* loss_config.tie_gradient == "pytorch" */
    /* The model's own step on the host (model_forward and the calls below; host/model/model_api.c) */
    const struct Backend *host_backend; /* cpu unless set otherwise */
    struct Step *host_step;
    /* Host views of the last model_forward or model_encode: N fragments, zc, q, zs [N, d], ind [N], xhat [N, C, H, W]
     * (a forward only). Valid until the next call. */
    int N;
    const float *zc, *q, *zs, *xhat;
    const int *ind;
    long adam_t;            /* AdamW steps taken */
} Model;

/* Build from a config: architecture, parameter table, PyTorch-default initialisation from `seed`. */
Model *model_build(const Config *c, uint64_t seed);
void model_free(Model *m);
/* Bytes of the activation buffers the host step allocates for N fragments (step_estimate_bytes). */
size_t model_activation_bytes(Model *m, int N);
/* The multiply-add FLOPs (2 per MAC) of one training step over N fragments in its convolutions and linear layers:
 * forward, data gradient (not for the first layer, which has none) and weight gradient. BatchNorm, GELU, the VQ
 * and the V3 statistics are left out (a few percent at the authors' sizes). */
double model_step_flops(const Model *m, int N);
/* Print the parameter count (total, encoder, decoder, and without the unused bn_c/bn_s). */
void model_print_info(const Model *m, FILE *f);

/* Forward + loss on x [B, n, C, H, W]. train=1: BN batch statistics, VQ EMA update (VQ_TRAIN);
 * train=0: BN running statistics, VQ frozen and no commit term. Returns 0, or -1 if the loss is NaN/Inf. */
int model_forward(Model *m, const float *x, int B, int train, LossTerms *out);
/* Variant for tests: VQ in a given mode (e.g. VQ_FROZEN keeps BN in train mode but leaves the codebook). */
int model_forward_mode(Model *m, const float *x, int B, int bn_train, VqMode vq_mode, LossTerms *out);
/* The names of L's non-finite terms into buf, comma-separated ("recon,content"), or "total" when only the weighted
 * sum is non-finite; "" when L.total is finite. Returns buf. */
const char *loss_nonfinite_terms(const LossTerms *L, char *buf, size_t cap);
/* v3_error naming the non-finite term(s) and listing all terms; returns -1. */
int loss_nonfinite_error(const LossTerms *L);
/* Evaluation pieces (BN running statistics, codebook frozen, no loss; N fragments, any count):
 * model_encode fills m->zc, m->q (nearest codeword), m->zs [N, d] and m->ind [N];
 * model_decode decodes content inputs q [N, dc] with styles zs [N, ds] into xhat [N, C, H, W].
 * Both return 0, or -1 with v3_last_error(). They invalidate the last training forward (no backward after) and may
 * reallocate the model's activations: q and zs must be the caller's buffers, not m->q / m->zs. */
int model_encode(Model *m, const float *x, int N);
int model_decode(Model *m, const float *q, const float *zs, int N, float *xhat);
/* Backward of the last training forward: fills m->g (zeroed first). */
void model_backward(Model *m);
/* One AdamW step over the trainable parameters with learning rate lr. */
void model_adamw(Model *m, float lr);

/* Test hooks of the step (step.h). */
extern const float *model_test_q_offset;
extern const float *model_test_q_const;
#endif
