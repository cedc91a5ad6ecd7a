/* Internal pieces of `v3 eval` shared between host/eval*.c (not a public API). */
#ifndef V3_EVAL_PARTS_H
#define V3_EVAL_PARTS_H
#include <stdio.h>

#include "eval.h"

/* Few-shot OOD adaptation (spec v3.md §6): from the checkpoint's weights, a fresh AdamW (lr, weight decay wd,
 * the config's betas/eps), `epochs` epochs over `shots` in a seeded order in batches of the config's batch size,
 * BatchNorm in train mode, the full V3 loss, codebook frozen (no EMA, no dead-code replacement; the commitment
 * term stays). A trailing 1-sample batch is skipped (sample-level spreads need 2). *steps gets the step count. */
int eval_few_shot_adapt(EvalRun *r, DataSource *shots, double lr, double wd, int epochs, int *steps, double *loss);

/* Display names of labels ("0".."9", "C".."B", colours, instruments) for a data source; NULL when unnamed. */
const char *eval_content_name(const DataSource *ds, int c, char *buf, size_t n);
const char *eval_style_name(const DataSource *ds, int s, char *buf, size_t n);

/* Figures and audio (host/eval/eval_figures.c). Each appends the files it wrote to the JSON array writer `files`
 * ("name" strings, comma-separated; *first tracks the comma). Return 0 or -1. */
int eval_fig_confusion(const char *dir, const DataSource *ds, const int64_t *M, int K, int C, FILE *files, int *first);
int eval_fig_tsne(const char *dir, const DataSource *ds, const Encoded *e, const float *codebook, int K, int points,
                  uint64_t seed, FILE *files, int *first);
int eval_fig_curves(const char *run_dir, const char *dir, FILE *files, int *first);
/* The codebook sheet: rows = up to max_styles style sources (one fragment of each of the first style labels
 * met), column 0 the source fragment itself, columns 1..K every atom decoded with that fragment's style.
 * InsNotes also gets eval/audio/atomAA_styleSS.wav per cell (Griffin-Lim, gl_iters, on the GPU when use_gpu),
 * listed in `audio` as JSON objects. */
int eval_codebook_sheet(EvalRun *r, const DataSource *ds, const Encoded *e, const char *dir, int max_styles,
                        int figures, int audio, int gl_iters, int use_gpu, FILE *files, int *first, FILE *audio_json,
                        int *audio_first);
#endif
