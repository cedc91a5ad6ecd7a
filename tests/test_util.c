/* Helpers shared by the tests: numeric comparisons, fills, temporary directories and files. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <ftw.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "dataset.h"
#include "insnotes.h"
#include "rng.h"
#include "testing.h"
#include "train.h"

double max_scaled_err(const float *a, const float *b, size_t n, double atol, double rtol, size_t *worst) {
    double m = 0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            if (worst) *worst = i;
            return INFINITY;
        }
        double e = fabs((double)a[i] - b[i]) / (atol + rtol * fabs((double)b[i]));
        if (e > m) { m = e; w = i; }
    }
    if (worst) *worst = w;
    return m;
}

void fill_uniform(float *x, size_t n, unsigned long long seed, float lo, float hi) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform_range(&r, lo, hi);
}

void poison(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

char *test_tmpdir(const char *tag) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *p = xmalloc(strlen(base) + strlen(tag) + 32);
    sprintf(p, "%s/v3test_%s_XXXXXX", base, tag);
    if (!mkdtemp(p)) V3_FATAL("mkdtemp %s failed", p);
    return p;
}

double fd_rel_error(fd_loss_fn f, void *ctx, float *theta, const float *grad, size_t n, size_t max_coords,
                    double eps) {
    return fd_rel_error_floor(f, ctx, theta, grad, n, max_coords, eps, 0);
}

double fd_rel_error_floor(fd_loss_fn f, void *ctx, float *theta, const float *grad, size_t n, size_t max_coords,
                          double eps, double floor_rms) {
    size_t checked = 0;
    size_t stride = n <= max_coords ? 1 : (n + max_coords - 1) / max_coords;
    double num = 0, na = 0, nb = 0;
    for (size_t i = (stride > 1 ? stride / 2 : 0); i < n; i += stride) {
        float keep = theta[i];
        theta[i] = (float)(keep + eps);
        double lp = f(ctx);
        theta[i] = (float)(keep - eps);
        double lm = f(ctx);
        theta[i] = keep;
        double fd = (lp - lm) / (2 * eps), g = grad[i];
        if (!isfinite(fd) || !isfinite(g)) return INFINITY;
        checked++;
        num += (fd - g) * (fd - g);
        na += fd * fd;
        nb += g * g;
    }
    double den = sqrt(na > nb ? na : nb), fl = floor_rms * sqrt((double)checked);
    if (den < fl) den = fl;
    return sqrt(num) / (den > 1e-30 ? den : 1e-30);
}

double fd_dir_error(fd_loss_fn f, void *ctx, float *theta, const float *grad, size_t n, int ndirs, double eps,
                    double floor_rms, unsigned long long seed) {
    float *keep = xmalloc(sizeof(float) * n);
    signed char *v = xmalloc(n);
    memcpy(keep, theta, sizeof(float) * n);
    Rng r;
    rng_seed(&r, seed);
    double worst = 0, gnorm = 0;
    for (size_t i = 0; i < n; i++) gnorm += (double)grad[i] * grad[i];
    gnorm = sqrt(gnorm); /* E|g.v| for a random +-1 direction */
    for (int d = 0; d < ndirs; d++) {
        double gv = 0;
        for (size_t i = 0; i < n; i++) {
            v[i] = (rng_u64(&r) >> 63) ? 1 : -1;
            gv += (double)grad[i] * v[i];
        }
        for (size_t i = 0; i < n; i++) theta[i] = (float)(keep[i] + eps * v[i]);
        double lp = f(ctx);
        for (size_t i = 0; i < n; i++) theta[i] = (float)(keep[i] - eps * v[i]);
        double lm = f(ctx);
        memcpy(theta, keep, sizeof(float) * n);
        double fd = (lp - lm) / (2 * eps);
        if (!isfinite(fd) || !isfinite(gv)) { worst = INFINITY; break; }
        double den = fmax(fmax(fabs(fd), fabs(gv)), fmax(gnorm, floor_rms * sqrt((double)n)));
        double e = fabs(fd - gv) / (den > 1e-30 ? den : 1e-30);
        if (e > worst) worst = e;
    }
    free(keep);
    free(v);
    return worst;
}

char *test_path(const char *dir, const char *name) {
    static char ring[16][1024];
    static int next;
    char *p = ring[next++ % 16];
    if ((size_t)snprintf(p, 1024, "%s/%s", dir, name) >= 1024) V3_FATAL("test path too long: %s/%s", dir, name);
    return p;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) { return remove(p); }

void test_rm_tree(char *dir) {
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

int test_done(int rc, char *dir) {
    if (rc == 0) test_rm_tree(dir);
    else free(dir);
    return rc;
}

int test_read_all(const char *p, unsigned char **buf, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = xmalloc((size_t)len + 1);
    *n = fread(*buf, 1, (size_t)len, f);
    (*buf)[*n] = 0;
    fclose(f);
    return *n == (size_t)len ? 0 : -1;
}

int test_write_all(const char *p, const void *buf, size_t n) {
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    size_t w = fwrite(buf, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* Worst errors of a log-magnitude STFT `got` against the reference `ref` over n fragments:
 *   *mag: max over bins of |m_got - m_ref| / (max over the frame's bins of m_ref), m = exp(value) - 1e-5;
 *   *lg:  max |got - ref| over bins whose reference magnitude is at least 1e-3 of the frame's largest.
 * NaN anywhere gives INFINITY. */
void test_stft_err(const float *got, const float *ref, int n, double *mag, double *lg) {
    *mag = *lg = 0;
    for (int b = 0; b < n; b++)
        for (int f = 0; f < INSNOTES_FRAMES; f++) {
            const float *g = got + (size_t)b * INSNOTES_BINS * INSNOTES_FRAMES + f, *r = ref + (size_t)b * INSNOTES_BINS * INSNOTES_FRAMES + f;
            double M = 0;
            for (int k = 0; k < INSNOTES_BINS; k++) M = fmax(M, exp(r[k * INSNOTES_FRAMES]) - 1e-5);
            for (int k = 0; k < INSNOTES_BINS; k++) {
                double gv = g[k * INSNOTES_FRAMES], rv = r[k * INSNOTES_FRAMES];
                if (!isfinite(gv) || !isfinite(rv)) {
                    *mag = *lg = INFINITY;
                    return;
                }
                double e = fabs((exp(gv) - 1e-5) - (exp(rv) - 1e-5)) / fmax(M, 1e-30);
                if (e > *mag) *mag = e;
                if (exp(rv) - 1e-5 >= 1e-3 * M && fabs(gv - rv) > *lg) *lg = fabs(gv - rv);
            }
        }
}

void test_train_opts(TrainOpts *o, const char *cfg, const char *out, long steps, int resume, const char *set) {
    memset(o, 0, sizeof *o);
    o->config_path = cfg;
    o->out_dir = out;
    o->steps = steps;
    o->resume = resume;
    o->device = "cpu";
    o->max_rollbacks = 3;
    if (set) o->sets[o->n_sets++] = set;
}

int test_train_cpu(const char *cfg, const char *out, long steps, int resume, const char *data_dir, const char *set) {
    TrainOpts o;
    test_train_opts(&o, cfg, out, steps, resume, set);
    o.data_dir = data_dir;
    return train_run(&o);
}

char *test_synth_run_env(const char *tag, int n_train, int seed, const char *extra, char *cfg, size_t cap) {
    char *dir = test_tmpdir(tag), data[600];
    snprintf(data, sizeof data, "%s/data", dir);
    SynthParams sp;
    synth_defaults(&sp);
    sp.n_train = n_train; sp.n_val = 6; sp.n_test = 6; sp.n_frag = 3; sp.n_content = 4; sp.n_style = 3;
    sp.H = sp.W = 8;
    if (synth_generate(data, &sp)) { fprintf(stderr, "    synth: %s\n", v3_last_error()); free(dir); return NULL; }
    snprintf(cfg, cap, "%s/cfg.yaml", dir);
    FILE *f = fopen(cfg, "w");
    fprintf(f, "name: \"test\"\ndata_dir: \"%s\"\nrandom_seed: %d\nbatch_size: 8\nsave_top_k: 2\n"
               "loss_config:\n  relativity: 15\n"
               "model_config:\n  arch: tiny\n  n_channels: 16\n  n_fragments: 3\n  fragment_len: 8\n  n_feature: 8\n"
               "  d_emb_c: 6\n  d_emb_s: 5\n  n_atoms: 4\n  threshold_ema_dead_code: 0.5\n%s",
            data, seed, extra ? extra : "");
    fclose(f);
    return dir;
}

int test_sh(const char *cmd, char *out, size_t cap) {
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

double test_json_number(const char *txt, const char *after, const char *key) {
    const char *p = after ? strstr(txt, after) : txt;
    if (!p) return -1e300;
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    p = strstr(p, pat);
    return p ? strtod(p + strlen(pat), NULL) : -1e300;
}
