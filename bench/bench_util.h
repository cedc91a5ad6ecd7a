/* Shared pieces of the benchmark programs in bench/ (built by `make bench`).
 * Timing: a measurement runs `reps` back-to-back launches of a variant between two CUDA events, `batches`
 * times, after warm-up, and reports the median and minimum per launch (warm L2: the inputs stay resident, which
 * is the state the training step sees). Results go to a table on stdout (printed last) and to a JSON file with
 * one object per line, comparable with the rows of the JSON files in ../shared/anchors/. */
#ifndef V3_BENCH_UTIL_H
#define V3_BENCH_UTIL_H
#include <stddef.h>

typedef void (*bench_fn)(void *ctx);

typedef struct {
    double median_ms, min_ms; /* per launch */
    int reps, batches;
} BenchTime;

/* Runs fn(ctx) `warmup` times, then `batches` timed batches of `reps` calls each (CUDA events on the backend
 * stream). Never returns on a CUDA error (the wrappers exit with the error's location). */
BenchTime bench_time(bench_fn fn, void *ctx, int warmup, int reps, int batches);

/* Result rows: kernel family, variant, shape text, time, bytes and FLOPs moved/done per launch (for GB/s,
 * TFLOP/s), an optional extra column (e.g. "max err 3e-7" or "fragments/s 12345"), and 1 if validated. */
typedef struct {
    char kernel[48], variant[48], shape[96], note[96];
    BenchTime t;
    double bytes, flops;
    int valid;
} BenchRow;

void bench_add(const BenchRow *r);
/* Prints the table of all rows (median, min, GB/s, TFLOP/s, note) and writes them as JSON lines to path
 * (the device description is included in each row). Returns 0, or -1 if the file cannot be written. */
int bench_finish(const char *path, const char *device);

/* Start-up shared by the bench programs: probe + init the device or print why not and exit(2).
 * Fills desc (>= 256 bytes). */
void bench_init_device(char *desc, size_t n);
/* Is item one of the comma-separated entries of list ("fp32,tf32" has "tf32", not "tf")? */
int bench_list_has(const char *list, const char *item);
/* Every distinct convolution layer (geometry, transposed or not, input size) of a model's encoder and decoder at
 * batch N, counted by uses, appended to L[*n] (at most BENCH_MAX_CONV in all). name: the model's label. */
#include "op_list.h"
struct Model;
typedef struct {
    char model[16];
    ConvGeom g;
    int transposed, N, H, W;
    int uses; /* how many layers of the model have this shape */
} BenchConvLayer;
#define BENCH_MAX_CONV 512
void bench_model_convs(const char *name, const struct Model *m, int N, BenchConvLayer *L, int *n);
#endif
