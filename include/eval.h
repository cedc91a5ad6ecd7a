/* `v3 eval` and `v3 transfer`: load a trained run (DIR/config.yaml + a checkpoint), encode a split in eval mode
 * (BatchNorm running statistics, codebook frozen) and measure, draw and sonify the disentanglement
 * (spec v3.md §6 plus a one-to-one accuracy and linear probes the authors lack). */
#ifndef V3_EVAL_H
#define V3_EVAL_H
#include <stdint.h>

#include "checkpoint.h"
#include "datasource.h"
#include "eval_metrics.h"
#include "model.h"

typedef struct {
    const char *run_dir;
    const char *checkpoint;  /* NULL: the best (lowest validation loss) checkpoint, else latest.v3ck */
    const char *split;       /* "test" (default), "val" or "ood" (the OOD set's test split) */
    const char *data_dir;    /* overrides the run config's data_dir */
    const char *ood_dir;     /* OOD dataset; NULL: <data_dir>-ood when it exists */
    const char *out_dir;     /* where results go; NULL: DIR/eval (test split), DIR/eval-val, DIR/eval-ood */
    const char *device;      /* auto | cpu | cuda: where Griffin-Lim runs (the network runs on the CPU) */
    PrVariant pr_variant;
    int tsne_points;         /* points per t-SNE map (seeded subsample); 0 = no t-SNE */
    int sheet_styles;        /* style columns of the codebook sheet / audio grid */
    int gl_iters;            /* Griffin-Lim iterations */
    int probe_samples;       /* train samples encoded for the linear probes; 0 = all, <0 = no probes */
    int few_shot;            /* 1: few-shot OOD adaptation when an OOD set is present */
    int figures, audio;      /* 0 turns them off */
} EvalOpts;
void eval_opts_defaults(EvalOpts *o);
/* Writes DIR/eval/results.json (or out_dir/...), figures and (InsNotes) audio; prints a table on stdout. 0 or -1. */
int eval_run(const EvalOpts *o);

/* A loaded run: its effective config, the model with the checkpoint's weights, and where they came from. */
typedef struct {
    Config cfg;
    Model *m;
    char ckpt[1200];
    CkptMeta meta;
    uint64_t seed;           /* the run's data seed (augmentation of evaluation batches) */
    char data_dir[512];
} EvalRun;
int eval_run_open(EvalRun *r, const char *run_dir, const char *checkpoint, const char *data_dir);
void eval_run_close(EvalRun *r);
/* Re-read the checkpoint into r->m (few-shot adaptation starts from it each time). */
int eval_run_reload(EvalRun *r);

/* Everything one split's encoding yields, per fragment (N = samples x n_frag). */
typedef struct {
    int N, n_frag, dc, ds;
    float *zc, *q, *zs;      /* [N, dc], [N, dc], [N, ds] */
    int *atom;               /* [N] */
    int32_t *content, *style;/* [N] */
    float *x;                /* [N, C, H, W] inputs (kept only when asked) */
} Encoded;
/* Encode the first max_samples samples (0 = all) of ds with the fixed evaluation augmentation. keep_x keeps the
 * inputs. Progress on stderr for long splits. */
int eval_encode(EvalRun *r, DataSource *ds, int max_samples, int keep_x, Encoded *e);
void encoded_free(Encoded *e);

/* `v3 transfer`: decode the content codes of sample `content` with the style of sample `style` (each "SPLIT:I" or
 * "I" for the test split) into out (.png: the fragments side by side; .wav for InsNotes: Griffin-Lim audio). */
typedef struct {
    const char *run_dir, *checkpoint, *data_dir, *content, *style, *out, *device;
    int gl_iters;
} TransferOpts;
int transfer_run(const TransferOpts *o);

#endif
