/* Op-by-op checks of a backend against the reference backend (the spirit of ggml's test-backend-ops; the layout
 * of llm.c's dev/cuda: the cases and the check helpers live here, shared by the tests and any benchmark).
 *
 * A case is one call of one op of the op list (include/op_list.h; handle ops as a group through their handle) on
 * one shape: a list of buffers, each an input, an output, an accumulating in/out or a handle's own memory, and
 * the call itself. Running a case on a backend goes through that backend's own memory ops only: alloc, h2d of
 * the inputs (every buffer framed by guard bytes), memset 0xFF of the outputs (NaN floats, -1 ints), setup (a
 * conv plan, a VQ or V3 workspace), the call, sync, d2h. The reference backend runs the same path, and
 * bo_compare judges the backend's results against ref's with the op's row of the tolerance table
 * (backend_cases.c): bit-exact ops compare bits, the others a relative error; NaN or Inf in any result, a guard
 * byte changed or an input modified always fails.
 *
 * Tests: bo_check (tests/test_backend_ops.c: cpu and emu; tests/gpu/test_gpu_backend_ops.c: cuda).
 * Benchmarks: bo_cases, bo_inputs, bo_prepare, then bo_call as often as wanted (the op alone), bo_download and
 * bo_compare to validate, bo_release. */
#ifndef V3_BACKEND_CASES_H
#define V3_BACKEND_CASES_H
#include <stdio.h>

#include "backend.h"

/* The compute ops of the op list, in its order: bo_op_names[BO_OP_conv_plan] = "conv_plan", ... */
#define BO_OP_ENUM(name, ret, params) BO_OP_##name,
enum { V3_COMPUTE_OPS(BO_OP_ENUM) BO_N_OPS };
#undef BO_OP_ENUM
extern const char *const bo_op_names[BO_N_OPS];
int bo_op_index(const char *op); /* -1 when not a compute op */

typedef enum { BO_F32, BO_F64, BO_I32, BO_U64 } BoType;
/* IN: random, uploaded, must come back unchanged. OUT: poisoned (all bytes 0xFF) on the backend, compared.
 * INOUT: random starting values (accumulated gradients, running statistics, optimiser state), compared.
 * VIEW: memory of the case's handle (v3_stats), pointed at by setup, poisoned and compared like OUT.
 * NONE: the op gets NULL (optional arguments). */
typedef enum { BO_IN, BO_OUT, BO_INOUT, BO_VIEW, BO_NONE } BoRole;

typedef struct {
    const char *name;
    BoType type;
    BoRole role;
    size_t n;           /* elements */
    float lo, hi;       /* uniform fill (IN, INOUT, the gaps of a strided OUT) */
    double K;           /* the length of the sums behind each element (the tolerance's ksum term) */
    int rows, cols, ld; /* strided OUT (cols > 0): the op writes [i*ld + j], j < cols; the gaps must stay */
    int exact;          /* bit-exact whatever the op's tolerance row */
    const char *tol;    /* the tolerance row of another op (vq_search's outputs in a vq_ema case); NULL: the case's */
} BoBuf;

#define BO_MAX_BUFS 10

typedef struct BoCase BoCase;
/* setup: the handle (NULL when the case has none); may point VIEW buffers at the handle's memory. */
typedef void *(*BoSetupFn)(const Backend *be, const BoCase *c, void **dev);
typedef void (*BoCallFn)(const Backend *be, const BoCase *c, void *handle, void *const *dev);
typedef void (*BoTeardownFn)(const Backend *be, void *handle);
/* After the random fill: inputs with structure (planted NaN, ties, consistent statistics). 0, or -1 with msg. */
typedef int (*BoFillFn)(const BoCase *c, void **host, char *msg, size_t cap);

struct BoCase {
    const char *op;  /* the op the case checks: its tolerance row */
    const char *ops; /* every op the case calls, comma-separated (the coverage test) */
    char shape[128];
    int full;        /* an authors' size (full channel and spatial sizes; the batch is in shape) */
    int nb;
    BoBuf b[BO_MAX_BUFS];
    /* the call's scalars */
    size_t n;
    int i[8];
    double x[6];
    long t;
    ConvGeom g;
    int transposed;
    V3LossCfg cfg;
    int ndead, dead[4], rows[4]; /* vq_revive's host arrays */
    BoSetupFn setup;
    BoCallFn call;
    BoTeardownFn teardown;
    BoFillFn fill;
};

/* One row of the tolerance table. A result r passes against the reference value e of a tensor whose largest
 * |reference| is S when |r - e| <= rtol |e| + (srel + ksum sqrt(K)) S; a row of zeros means bit-exact.
 * Integer results are always exact. */
typedef struct {
    const char *op;
    double rtol, srel, ksum;
    const char *why;
} BoTol;
const BoTol *bo_tol(const char *op); /* NULL when the table has no row */
extern const BoTol bo_tols[];
extern const int bo_n_tols;

/* Every case (small and odd shapes, then the authors' layers of configs/phonenums.yaml and configs/insnotes.yaml,
 * read from the working directory: the repository root). Built once. -1 with v3_last_error() if the configs or
 * models cannot be built. */
int bo_cases(const BoCase **cases);

/* Host arrays of a case, one per buffer (NULL for NONE). */
typedef struct { void *p[BO_MAX_BUFS]; } BoData;
/* Fresh inputs from seed (and the starting contents of the outputs). 0, or -1 with msg. */
int bo_inputs(const BoCase *c, unsigned long long seed, BoData *in, char *msg, size_t cap);
void bo_data_free(const BoCase *c, BoData *d);

/* A case on a backend. */
typedef struct {
    const Backend *be;
    const BoCase *c;
    void *h;
    void *base[BO_MAX_BUFS]; /* allocations (guards included) */
    void *dev[BO_MAX_BUFS];  /* what the op gets */
} BoRun;
/* alloc, upload, poison, setup. 0, or -1 with msg (nothing left allocated). */
int bo_prepare(BoRun *r, const Backend *be, const BoCase *c, const BoData *in, char *msg, size_t cap);
void bo_call(BoRun *r);
/* sync, then every buffer back into out (fresh arrays; guards checked). 0, or -1 with msg. */
int bo_download(BoRun *r, BoData *out, char *msg, size_t cap);
void bo_release(BoRun *r);
/* got against ref for one case (in: the inputs, for the unchanged-input check). 1 pass, 0 fail with msg;
 * *worst: the largest error as a fraction of its bound (0 for exact matches). */
int bo_compare(const BoCase *c, const BoData *in, const BoData *got, const BoData *ref, double *worst, char *msg,
               size_t cap);

typedef struct {
    const char *ops;          /* comma-separated op names (a case runs when its op is listed); NULL: all */
    int small_only;           /* skip the authors' sizes */
    int verbose;              /* a line per case and backend, with times */
    FILE *log;                /* failures (and verbose lines); NULL: silent */
    unsigned long long seed;  /* 0: the default */
} BoOpts;
typedef struct {
    int cases, runs, failed;
    int op_runs[BO_N_OPS], op_failed[BO_N_OPS];
} BoReport;
/* Every selected case on every backend of bes against backend_ref (the reference computed once per case).
 * Returns the number of failed runs (also rep->failed); a case that cannot be set up counts as failed. */
int bo_check(const Backend *const *bes, int nbes, const BoOpts *o, BoReport *rep);

/* The memory ops as a round trip on be: alloc, h2d, d2h, memset (whole and partial), sync, free, at byte counts
 * 0, 1, odd and large. Returns the number of failures (messages to log when not NULL). */
int bo_check_memory(const Backend *be, FILE *log);

/* Compute ops with no case or no tolerance row, named to log. Returns their number (0: every op is covered). */
int bo_uncovered_ops(FILE *log);
#endif
