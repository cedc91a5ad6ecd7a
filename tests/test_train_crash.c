/* Training that survives its accidents (issue 15): --resume before the first checkpoint, required to end
 * byte-identical to an uninterrupted run, and the error of a non-finite step. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "dataset.h"
#include "testing.h"
#include "train.h"

/* A synthetic dataset with n_train samples and a small model's config in a fresh directory; at batch size 8,
 * n_train 20 gives 3 steps per epoch and n_train 8 one (a checkpoint every step). */
static char *make_env(const char *tag, int n_train, const char *extra, char *cfg, size_t cap) {
    char *dir = test_tmpdir(tag), data[600];
    snprintf(data, sizeof data, "%s/data", dir);
    SynthParams sp;
    synth_defaults(&sp);
    sp.n_train = n_train; sp.n_val = 6; sp.n_test = 6; sp.n_frag = 3; sp.n_content = 4; sp.n_style = 3;
    sp.H = sp.W = 8;
    if (synth_generate(data, &sp)) { fprintf(stderr, "    synth: %s\n", v3_last_error()); free(dir); return NULL; }
    snprintf(cfg, cap, "%s/cfg.yaml", dir);
    FILE *f = fopen(cfg, "w");
    fprintf(f, "name: \"crash\"\ndata_dir: \"%s\"\nrandom_seed: 5\nbatch_size: 8\nsave_top_k: 2\n"
               "loss_config:\n  relativity: 15\n"
               "model_config:\n  arch: tiny\n  n_channels: 16\n  n_fragments: 3\n  fragment_len: 8\n  n_feature: 8\n"
               "  d_emb_c: 6\n  d_emb_s: 5\n  n_atoms: 4\n  threshold_ema_dead_code: 0.5\n%s",
            data, extra ? extra : "");
    fclose(f);
    return dir;
}

static int train(const char *cfg, const char *out, long steps, int resume, const char *set) {
    TrainOpts o;
    memset(&o, 0, sizeof o);
    o.config_path = cfg;
    o.out_dir = out;
    o.steps = steps;
    o.resume = resume;
    o.device = "cpu";
    if (set) o.sets[o.n_sets++] = set;
    /* one OpenMP thread: these tiny steps run far faster so on shared cores, and each comparison is between
     * runs at the same thread count (what exact resume promises) */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    int rc = train_run(&o);
    omp_set_num_threads(nt);
    return rc;
}

static int same_file(const char *a, const char *b) {
    unsigned char *x, *y;
    size_t nx, ny;
    if (test_read_all(a, &x, &nx)) return 0;
    if (test_read_all(b, &y, &ny)) { free(x); return 0; }
    int same = nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

/* The sorted file names of dir, joined by '\n' (at most cap bytes). */
static void list_dir(const char *dir, char *out, size_t cap) {
    char names[64][256];
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 64)
        if (e->d_name[0] != '.') snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(out + k, cap - k, "%s\n", names[i]);
}

/* Run b has the same checkpoints/ (every file, bytes too) and log.jsonl as run a; says which differs. */
static int same_run(const char *a, const char *b) {
    char la[4096], lb[4096], ca[700], cb[700];
    snprintf(ca, sizeof ca, "%s/checkpoints", a);
    snprintf(cb, sizeof cb, "%s/checkpoints", b);
    list_dir(ca, la, sizeof la);
    list_dir(cb, lb, sizeof lb);
    if (strcmp(la, lb)) { fprintf(stderr, "    checkpoints differ:\n%s    vs\n%s", la, lb); return 0; }
    for (char *s = la, *nl; (nl = strchr(s, '\n')); s = nl + 1) {
        *nl = 0;
        if (!same_file(test_path(ca, s), test_path(cb, s))) { fprintf(stderr, "    %s differs\n", s); return 0; }
    }
    if (!same_file(test_path(a, "log.jsonl"), test_path(b, "log.jsonl"))) {
        fprintf(stderr, "    log.jsonl differs\n");
        return 0;
    }
    return 1;
}

static char *read_text(const char *path) {
    unsigned char *t;
    size_t n;
    return test_read_all(path, &t, &n) ? NULL : (char *)t;
}

TEST(train_resume_before_first_checkpoint_starts_at_zero) {
    char cfg[600], a[700], b[700], c[700], cmd[2400], out[4096];
    char *dir = make_env("resume0", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    CHECK(train(cfg, a, 5, 0, NULL) == 0, "uninterrupted run: %s", v3_last_error());
    /* b: killed before its first checkpoint, after logging a step and part of the next */
    CHECK(mkdir(b, 0755) == 0 && mkdir(test_path(b, "checkpoints"), 0755) == 0, "mkdir %s", b);
    const char *stale = "{\"kind\":\"train\",\"step\":1,\"epoch\":0,\"loss\":1}\n{\"kind\":\"train\",\"st";
    CHECK(test_write_all(test_path(b, "log.jsonl"), stale, strlen(stale)) == 0, "write log");
    CHECK(train(cfg, b, 5, 1, NULL) == 0, "--resume without a checkpoint: %s", v3_last_error());
    CHECK(same_run(a, b), "resumed-from-nothing run differs from the uninterrupted one");
    CHECK(train(cfg, c, 5, 1, NULL) == 0, "--resume of a directory that does not exist: %s", v3_last_error());
    CHECK(same_run(a, c), "--resume into a new directory differs from the uninterrupted run");
    if (access("./v3", X_OK) == 0) { /* the one-line notice */
        snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 ./v3 train --config %s --out %s/d --steps 1 --device cpu --resume",
                 cfg, dir);
        CHECK(mkdir(test_path(dir, "d"), 0755) == 0, "mkdir d");
        int rc = test_sh(cmd, out, sizeof out);
        char want[800];
        snprintf(want, sizeof want, "v3: --resume: no checkpoint in %s/d/checkpoints yet; starting at step 0\n", dir);
        CHECK(rc == 0 && strstr(out, want), "exit %d, output:\n%s", rc, out);
    }
    return test_done(0, dir);
}

/* A resumed run's checkpoints carry the validation loss of the checkpoint it resumed from, as the uninterrupted
 * run's do (latest.v3ck at a mid-epoch stop, epoch checkpoints between validations), and a log line cut short
 * by a kill is dropped. */
TEST(train_resume_gives_byte_identical_checkpoints) {
    char cfg[600], a[700], b[700];
    char *dir = make_env("resumeck", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    CHECK(train(cfg, a, 8, 0, NULL) == 0, "uninterrupted run: %s", v3_last_error());
    CHECK(train(cfg, b, 6, 0, NULL) == 0, "first part: %s", v3_last_error());
    FILE *f = fopen(test_path(b, "log.jsonl"), "a"); /* a line a kill cut short (no "step" yet) */
    CHECK(f && fputs("{\"kind\":\"tr", f) >= 0 && fclose(f) == 0, "append to log.jsonl");
    CHECK(train(cfg, b, 8, 1, NULL) == 0, "resumed part: %s", v3_last_error());
    CHECK(same_run(a, b), "resumed run differs from the uninterrupted one");
    return test_done(0, dir);
}

static uint64_t g_nan_from, g_nan_to; /* steps [from, to] get a non-finite loss */
static int nan_hook(uint64_t step) { return step >= g_nan_from && step <= g_nan_to; }

TEST(train_nan_message_names_log_step_term_and_checkpoint) {
    char cfg[600], a[700], b[700];
    char *dir = make_env("nanmsg", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    /* a real divergence: step 1 logs a finite loss, its update blows the weights up, step 2 is non-finite */
    int rc = train(cfg, a, 6, 0, "optimizer_config.lr=1e30");
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", v3_last_error());
    char *log = read_text(test_path(a, "log.jsonl"));
    CHECK(log, "no log.jsonl");
    int logged1 = strstr(log, "\"step\":1,") != NULL, logged2 = strstr(log, "\"step\":2,") != NULL;
    free(log);
    CHECK(rc == -1 && logged1 && !logged2, "rc %d, log has step 1: %d, step 2: %d", rc, logged1, logged2);
    CHECK(strstr(msg, "step 2: non-finite loss: recon") && strstr(msg, "no checkpoint in") &&
          !strstr(msg, "latest.v3ck"), "message: %s", msg);
    /* a non-finite step after a checkpoint names that checkpoint, with its step */
    g_nan_from = g_nan_to = 5;
    train_test_nan_hook = nan_hook;
    rc = train(cfg, b, 8, 0, NULL);
    train_test_nan_hook = NULL;
    snprintf(msg, sizeof msg, "%s", v3_last_error());
    char want[900];
    snprintf(want, sizeof want, "last good checkpoint: %s/checkpoints/latest.v3ck (step 3)", b);
    CHECK(rc == -1 && strstr(msg, "step 5: non-finite loss: recon (total nan") && strstr(msg, want),
          "rc %d, message: %s", rc, msg);
    log = read_text(test_path(b, "log.jsonl"));
    CHECK(log && strstr(log, "\"step\":4,") && !strstr(log, "\"step\":5,"), "log.jsonl:\n%s", log ? log : "");
    free(log);
    return test_done(0, dir);
}
