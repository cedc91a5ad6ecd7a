/* Training configuration, read from the authors' YAML layout (cfg_v3_*.yaml) plus a few keys of our own.
 * Every authors' key is accepted; keys that only drive their Python code (wandb, num_workers, ...) are accepted
 * and ignored with a one-line notice. Unknown keys and wrong types are errors naming file, key and expectation. */
#ifndef V3_CONFIG_H
#define V3_CONFIG_H
#include <stdint.h>
#include <stdio.h>

typedef enum { ARCH_INSNOTES = 0, ARCH_PHONENUMS, ARCH_SPRITES, ARCH_SVHN, ARCH_TINY, ARCH_COUNT } ArchKind;

typedef struct {
    char path[512];           /* file the config came from */

    /* top level (authors' keys) */
    char name[128];
    char dataloader[64];      /* e.g. "phonenums_dataloader"; selects the architecture as in the authors' factory */
    char data_dir[512];       /* dataset directory: holds train.v3ds, val.v3ds, test.v3ds */
    char method[32];          /* only "V3" is supported here */
    char device[16];          /* "cuda" or "cpu" (CLI --device overrides) */
    char precision[16];       /* "float32" (others rejected for now) */
    int batch_size;
    int epochs;
    int val_every_n_epochs;
    int log_every_n_steps;
    int save_top_k;
    int save_every_n_epochs;
    int tb_images_every_n_epochs; /* ours: TensorBoard images (reconstructions, codebook sheet) every N epochs; 0 = never */
    int has_seed;             /* random_seed given (an empty value means unseeded in the authors' code; we default to 0 and say so) */
    uint64_t random_seed;

    /* loss_config */
    double w_recon, w_content, w_style, w_sample, w_fragment, w_commit;
    double relativity;
    double r_content, r_style, r_sample, r_fragment; /* ours (loss_config.term_relativity.<term>_loss): one
                                 term's own r, e.g. a larger r for the content hinge alone; 0 (default) =
                                 relativity (NOTES.md, issue 18) */
    int supersample_content;  /* bool */
    int per_sample_hinges;    /* ours (bool, default false): the content, style and fragment hinges taken per sample
                                 and averaged, so that a few samples whose codes fail are not outvoted by the
                                 rest (include/v3_coef.h, NOTES.md issue 18); false: the authors' hinges */
    char content_spread[16];  /* ours: "means" (default; the authors' S_c, the spread of the samples' content means)
                                 or "energy" (the mean energy distance between the samples' sets of content codes,
                                 which also sees codebooks whose atoms depend on the style but whose means agree;
                                 NOTES.md, issue 18) */
    char hinge[16];           /* ours: "linear" (default; the authors' h = (r - t)/r) or "log" (h = ln(r/t)/ln r,
                                 linear below t = 1: a constant push per unit of log ratio; NOTES.md, issue 18) */
    char tie_gradient[16];    /* ours: "pytorch" (default) or "zero": the V3 statistics' gradient where two
                                 quantised codes coincide (NOTES.md, "Ties in the quantised codes") */
    int style_from_step;      /* ours: training steps before this one run with the weights of the terms that
                                 involve the style code (style, sample, fragment) at 0, so the style code first
                                 learns what the decoder needs (colour) before those hinges squeeze it (NOTES.md,
                                 issue 18); validation always uses the full weights. 0 (default): every term from
                                 the first step, as the authors */

    /* model_config */
    ArchKind arch;            /* from model_config.arch (ours) or else from the dataloader name */
    int n_channels, n_fragments, fragment_len, n_feature, d_emb_c, d_emb_s, n_atoms;
    int in_channels;          /* ours: image channels (1 InsNotes, 3 images); default from the architecture */
    double threshold_ema_dead_code;
    double vq_ema_decay;
    int kmeans_iters;         /* ours, default 10 */
    char revive_from[16];     /* ours: where a dead code restarts: "batch" (default; a uniform random row of the
                                 batch, as the library) or "largest" (a row of the batch's largest atom, so that a
                                 merged atom is split; vq_revive_rows, NOTES.md issue 18) */
    int kmeans_reinit_step;   /* ours: after this many training steps the codebook is drawn again by k-means on the
                                 next step's batch, from the encoder as trained so far (the first draw sees a random
                                 encoder); 0 (default): only the first draw, as the authors (NOTES.md, issue 18) */

    /* optimizer_config */
    char optimizer[16];       /* "AdamW" (SGD is rejected for now) */
    double lr, beta1, beta2, eps, momentum, weight_decay;
    char scheduler[32];       /* "exponential_decay" or "cosine_annealing" */
    double lr_anneal_epochs, lr_anneal_min_factor;
    double lr_decay_factor, lr_decay_epochs, lr_decay_min_factor;
    double warmup_epochs, warmup_factor;
} Config;

/* Fill with the authors' defaults (their cfg values; arch phonenums). */
void config_defaults(Config *c);
/* Load a YAML file over the defaults. Returns 0, or -1 with v3_last_error() naming file, key and expectation. */
int config_load(const char *path, Config *c);
/* Apply one "section.key=value" override (the same typing rules as the file). */
int config_set(Config *c, const char *assignment);
/* Check cross-field consistency (positive sizes, n_channels divisible as the architecture needs, ...). */
/* Stated limits (config_validate and `v3 train --steps`): far above any configuration of the papers, low
 * enough that sizes multiply without overflow and a typo fails at once instead of allocating for minutes. */
#define V3_MAX_STEPS 1000000000LL  /* total training steps */
#define V3_MAX_EPOCHS 1000000
#define V3_MAX_BATCH 65536         /* batch_size */
#define V3_MAX_FRAGMENTS 4096      /* model_config.n_fragments */
#define V3_MAX_ATOMS 65536         /* model_config.n_atoms */
#define V3_MAX_WIDTH 65536         /* n_channels, d_emb_c, d_emb_s, fragment_len, n_feature */
int config_validate(const Config *c);
const char *arch_name(ArchKind a);
int arch_from_name(const char *s, ArchKind *out); /* accepts insnotes|phonenums|sprites|svhn|tiny */
/* Learning-rate multiplier for epoch e (0-based) under the configured scheduler (authors' formulas). */
double config_lr_factor(const Config *c, int epoch);
/* Print the effective configuration as a `| key | value |` table to f. */
void config_print(const Config *c, FILE *f);
/* Write the configuration as YAML that config_load reads back to the same values (atomically). */
int config_save(const Config *c, const char *path);
#endif
