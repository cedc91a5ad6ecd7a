/* Minimal test framework: TEST(name) { ...; return 0; } registers itself at load time.
 * Return 0 = pass, 1 = fail, 77 = skip. CHECK() prints the location and a message and fails the test. */
#ifndef V3_TESTING_H
#define V3_TESTING_H
#include <stdio.h>
#include <math.h>

typedef int (*test_fn)(void);
void test_register(const char *name, const char *file, test_fn fn);

#define TEST(name)                                                              \
    static int name(void);                                                      \
    __attribute__((constructor)) static void register_##name(void) {            \
        test_register(#name, __FILE__, name);                                   \
    }                                                                           \
    static int name(void)

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "    %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            return 1;                                                           \
        }                                                                       \
    } while (0)

#define SKIP(...) do { fprintf(stderr, "    SKIP: "); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 77; } while (0)

/* Helpers for numeric tests (tests/test_util.c). */
/* Max over i of |a-b| / (atol + rtol*|b|); NaN or Inf anywhere in a or b gives +INFINITY (NaN never passes). */
double max_scaled_err(const float *a, const float *b, size_t n, double atol, double rtol, size_t *worst);
void fill_uniform(float *x, size_t n, unsigned long long seed, float lo, float hi);
void poison(float *x, size_t n); /* fills with NaN so untouched outputs are caught */
/* Run a shell command with stdout+stderr captured into out (NUL-terminated, cut at cap - 1); returns its exit
 * status, or -1 if it did not exit normally. */
int test_sh(const char *cmd, char *out, size_t cap);
/* CLI tests run the built ./v3 from the repository root; without it they SKIP. */
#define NEED_V3() do { if (access("./v3", X_OK)) SKIP("./v3 not built in the current directory"); } while (0)
/* A fresh temporary directory for a test (under $TMPDIR or /tmp); caller owns the string. */
char *test_tmpdir(const char *tag);
/* dir/name in one of 16 rotating static buffers (paths built inline without freeing); aborts if too long. */
char *test_path(const char *dir, const char *name);
/* Remove a test directory and everything in it, and free the string. */
void test_rm_tree(char *dir);
/* The usual test ending: on success remove the directory, on failure keep it to inspect; free it; return rc. */
int test_done(int rc, char *dir);
/* Whole file into a NUL-terminated xmalloc'ed buffer / a buffer to a file. 0 or -1. */
int test_read_all(const char *path, unsigned char **buf, size_t *n);
/* The number after "key": in a JSON text, at its first occurrence after the text `after` (or anywhere when NULL);
 * -1e300 when absent (results.json checks). */
double test_json_number(const char *txt, const char *after, const char *key);
int test_write_all(const char *path, const void *buf, size_t n);
/* Worst errors of log-magnitude STFT blocks [n][512][32] `got` against `ref` (CPU and GPU STFT tests):
 * *mag relative to each frame's largest reference magnitude, *lg on bins above 1e-3 of it; NaN gives INFINITY. */
/* One `v3 train` run on the CPU; data_dir (overrides the config) and set (one --set override) may be NULL. */
int test_train_cpu(const char *cfg, const char *out, long steps, int resume, const char *data_dir, const char *set);
/* The options test_train_cpu runs with (CPU, --max-rollbacks 3, set may be NULL), for tests that change more. */
struct TrainOpts;
void test_train_opts(struct TrainOpts *o, const char *cfg, const char *out, long steps, int resume, const char *set);
/* A fresh directory with a small synthetic dataset (n_train samples, 3 fragments of 8x8, 4 contents, 3 styles)
 * and cfg.yaml for the tiny architecture on it (batch 8, the given seed, extra YAML appended; may be NULL).
 * n_train 20 gives 3 steps per epoch, 8 one. NULL (after a message) if the data cannot be made. */
char *test_synth_run_env(const char *tag, int n_train, int seed, const char *extra, char *cfg, size_t cap);
void test_stft_err(const float *got, const float *ref, int n, double *mag, double *lg);


/* Finite-difference gradient check. f(ctx) evaluates the scalar loss from the current buffers; theta (n floats)
 * is perturbed in place by +-eps at up to max_coords coordinates (all when n <= max_coords, else an even
 * stride), and the central difference is compared with grad. Returns the relative error
 * ||fd - g|| / max(||fd||, ||g||, tiny) over the checked coordinates (INFINITY if anything is not finite). */
typedef double (*fd_loss_fn)(void *ctx);
double fd_rel_error(fd_loss_fn f, void *ctx, float *theta, const float *grad, size_t n, size_t max_coords,
                    double eps);
/* Same with the denominator at least floor_rms * sqrt(checked coordinates): for tensors whose true gradient is
 * ~0 (a conv bias followed by BatchNorm), errors are then measured against the model's gradient scale. */
double fd_rel_error_floor(fd_loss_fn f, void *ctx, float *theta, const float *grad, size_t n, size_t max_coords,
                          double eps, double floor_rms);
/* Directional version for large models: for `ndirs` random +-1 directions v (seeded), compares
 * (f(theta + eps v) - f(theta - eps v)) / 2 eps with grad . v. Returns the worst
 * |fd - g.v| / max(|fd|, |g.v|, ||g||, floor_rms * sqrt(n)) (||g|| is the expected size of g.v, so a
 * direction that happens to cancel does not inflate the error). Far less float32 noise than per-coordinate. */
double fd_dir_error(fd_loss_fn f, void *ctx, float *theta, const float *grad, size_t n, int ndirs, double eps,
                    double floor_rms, unsigned long long seed);
#endif
