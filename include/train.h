/* `v3 train`: the training loop over the one step (step.h) on the chosen backend, with validation, logging, best-k checkpoints and exact resume. */
#ifndef V3_TRAIN_H
#define V3_TRAIN_H
#include <stdint.h>

typedef struct TrainOpts {
    const char *config_path;
    const char *out_dir;
    const char *data_dir;   /* overrides config data_dir when set */
    long steps;             /* stop after this many total steps (<0: epochs * steps per epoch) */
    int resume;
    const char *device;     /* the backend: "auto", "ref", "cpu", "cuda" (backend_select) */
    const char *math;       /* "fp32" (default), "tf32", "bf16": cuDNN/cuBLAS math on the CUDA path */
    const char *sets[64];   /* --set key=value overrides */
    int n_sets;
    int on_nan_rollback;    /* --on-nan rollback: a non-finite step reloads latest.v3ck and skips its batch */
    int max_rollbacks;      /* --max-rollbacks: rollbacks a run may make in all (the CLI's default is 3) */
} TrainOpts;

int train_run(const TrainOpts *o);

/* Test hook: when set and nonzero for a step (numbered as log.jsonl numbers it), that step's loss is made
 * non-finite before any update, as a diverging step's would be (CPU path only). */
extern int (*train_test_nan_hook)(uint64_t step);

/* Codebook purity: fraction of fragments whose atom's majority content label equals their own label. */
double codebook_purity(const int *ind, const int32_t *content, int N, int K, int n_content);
#endif
