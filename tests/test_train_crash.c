/* Training that survives its accidents (issue 15): --resume before the first checkpoint, non-finite steps (the
 * error message, --on-nan rollback and its limit) and SIGKILL at random moments followed by --resume, each
 * required to end byte-identical to an uninterrupted run. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "dataset.h"
#include "testing.h"
#include "train.h"

static char *make_env(const char *tag, int n_train, const char *extra, char *cfg, size_t cap) {
    return test_synth_run_env(tag, n_train, 5, extra, cfg, cap);
}

static int train(const char *cfg, const char *out, long steps, int resume, int rollback, int max_rollbacks,
                 const char *set) {
    TrainOpts o;
    test_train_opts(&o, cfg, out, steps, resume, set);
    o.on_nan_rollback = rollback;
    o.max_rollbacks = max_rollbacks;
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

static long latest_step(const char *run) {
    char p[800];
    CkptMeta meta;
    snprintf(p, sizeof p, "%s/checkpoints/latest.v3ck", run);
    return checkpoint_peek(p, &meta) ? -1 : (long)meta.step;
}

TEST(train_resume_before_first_checkpoint_starts_at_zero) {
    char cfg[600], a[700], b[700], c[700], cmd[2400], out[4096];
    char *dir = make_env("resume0", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    CHECK(train(cfg, a, 5, 0, 0, 3, NULL) == 0, "uninterrupted run: %s", v3_last_error());
    /* b: killed before its first checkpoint, after logging a step and part of the next */
    CHECK(mkdir(b, 0755) == 0 && mkdir(test_path(b, "checkpoints"), 0755) == 0, "mkdir %s", b);
    const char *stale = "{\"kind\":\"train\",\"step\":1,\"epoch\":0,\"loss\":1}\n{\"kind\":\"train\",\"st";
    CHECK(test_write_all(test_path(b, "log.jsonl"), stale, strlen(stale)) == 0, "write log");
    CHECK(train(cfg, b, 5, 1, 0, 3, NULL) == 0, "--resume without a checkpoint: %s", v3_last_error());
    CHECK(same_run(a, b), "resumed-from-nothing run differs from the uninterrupted one");
    CHECK(train(cfg, c, 5, 1, 0, 3, NULL) == 0, "--resume of a directory that does not exist: %s", v3_last_error());
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
    CHECK(train(cfg, a, 8, 0, 0, 3, NULL) == 0, "uninterrupted run: %s", v3_last_error());
    CHECK(train(cfg, b, 6, 0, 0, 3, NULL) == 0, "first part: %s", v3_last_error());
    FILE *f = fopen(test_path(b, "log.jsonl"), "a"); /* a line a kill cut short (no "step" yet) */
    CHECK(f && fputs("{\"kind\":\"tr", f) >= 0 && fclose(f) == 0, "append to log.jsonl");
    CHECK(train(cfg, b, 8, 1, 0, 3, NULL) == 0, "resumed part: %s", v3_last_error());
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
    int rc = train(cfg, a, 6, 0, 0, 3, "optimizer_config.lr=1e30");
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
    rc = train(cfg, b, 8, 0, 0, 3, NULL);
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

TEST(train_nan_rollback_skips_the_batch_and_resumes_alike) {
    char cfg[600], a[700], b[700], d[700];
    char *dir = make_env("rollback", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(d, sizeof d, "%s/d", dir);
    g_nan_from = g_nan_to = 5; /* latest.v3ck is at step 3 then */
    train_test_nan_hook = nan_hook;
    int rc = train(cfg, a, 9, 0, 1, 3, NULL);
    train_test_nan_hook = NULL;
    CHECK(rc == 0, "run with a rollback: %s", v3_last_error());
    CHECK(latest_step(a) == 9, "latest.v3ck at step %ld, want 9", latest_step(a));
    char *log = read_text(test_path(a, "log.jsonl")), *skips = read_text(test_path(a, "checkpoints/skipped_steps.txt"));
    CHECK(log && skips && !strcmp(skips, "5 recon\n"), "skipped_steps.txt: %s", skips ? skips : "(none)");
    int n4 = 0, finite = !strstr(log, "nan") && !strstr(log, "inf");
    for (const char *s = log; (s = strstr(s, "{\"kind\":\"train\",\"step\":4,")); s++) n4++;
    int ok = strstr(log, "{\"kind\":\"rollback\",\"step\":5,\"term\":\"recon\"}\n") &&
             !strstr(log, "{\"kind\":\"train\",\"step\":5,") && strstr(log, "{\"kind\":\"train\",\"step\":9,");
    if (!ok || n4 != 1 || !finite) fprintf(stderr, "    log.jsonl:\n%s", log);
    free(log);
    free(skips);
    CHECK(ok && n4 == 1 && finite, "log: rollback line, no step 5, step 9; step 4 %d time(s); finite %d", n4, finite);
    /* the rollback restored step 3 exactly: a run resumed at step 3 with only the skip list gives the same */
    CHECK(train(cfg, d, 3, 0, 0, 3, NULL) == 0, "d, first part: %s", v3_last_error());
    CHECK(test_write_all(test_path(d, "checkpoints/skipped_steps.txt"), "5 recon\n", 8) == 0, "write skip list");
    CHECK(train(cfg, d, 9, 1, 0, 3, NULL) == 0, "d, resumed: %s", v3_last_error());
    CHECK(same_run(a, d), "rolled-back run differs from a resume at the checkpoint that skips step 5");
    /* a run stopped after its rollback and resumed (no NaN any more) makes the same skip */
    train_test_nan_hook = nan_hook;
    rc = train(cfg, b, 7, 0, 1, 3, NULL);
    train_test_nan_hook = NULL;
    CHECK(rc == 0, "b, first part: %s", v3_last_error());
    CHECK(train(cfg, b, 9, 1, 1, 3, NULL) == 0, "b, resumed: %s", v3_last_error());
    CHECK(same_run(a, b), "resumed rolled-back run differs from the uninterrupted one");
    return test_done(0, dir);
}

TEST(train_nan_rollback_stops_at_the_limit) {
    char cfg[600], a[700], b[700], c[700], msg[2048], want[900];
    char *dir = make_env("rblimit", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    train_test_nan_hook = nan_hook;
    /* every step from 5 on: roll back at 5 and 6 (to step 3), skip both, checkpoint at 6, then give up at 7 */
    g_nan_from = 5;
    g_nan_to = 1000;
    int rc = train(cfg, a, 12, 0, 1, 2, NULL);
    snprintf(msg, sizeof msg, "%s", v3_last_error());
    snprintf(want, sizeof want, "last good checkpoint: %s/checkpoints/latest.v3ck (step 6)", a);
    int ok = rc == -1 && strstr(msg, "step 7: non-finite loss: recon") &&
             strstr(msg, "rolled back 2 time(s), the limit (--max-rollbacks 2)") && strstr(msg, want);
    /* no checkpoint yet: nothing to roll back to */
    g_nan_from = g_nan_to = 2;
    int rc_b = train(cfg, b, 6, 0, 1, 3, NULL);
    char msg_b[2048];
    snprintf(msg_b, sizeof msg_b, "%s", v3_last_error());
    /* --max-rollbacks 0: the first non-finite step ends the run */
    g_nan_from = g_nan_to = 5;
    int rc_c = train(cfg, c, 8, 0, 1, 0, NULL);
    train_test_nan_hook = NULL;
    CHECK(ok, "rc %d, message: %s", rc, msg);
    char *skips = read_text(test_path(a, "checkpoints/skipped_steps.txt"));
    CHECK(skips && !strcmp(skips, "5 recon\n6 recon\n"), "skipped_steps.txt: %s", skips ? skips : "(none)");
    free(skips);
    char *log = read_text(test_path(a, "log.jsonl"));
    CHECK(log && strstr(log, "{\"kind\":\"rollback\",\"step\":6,\"term\":\"recon\"}\n{\"kind\":\"val\",\"step\":6,"),
          "log.jsonl:\n%s", log ? log : "");
    free(log);
    CHECK(rc_b == -1 && strstr(msg_b, "step 2: non-finite loss") && strstr(msg_b, "no checkpoint in") &&
          strstr(msg_b, "to roll back to"), "rc %d, message: %s", rc_b, msg_b);
    CHECK(rc_c == -1 && strstr(v3_last_error(), "step 5:") && strstr(v3_last_error(), "rolled back 0 time(s)"),
          "rc %d, message: %s", rc_c, v3_last_error());
    return test_done(0, dir);
}

/* The options on the command line: --help, a bad value, and real divergences (lr 1e30): with one step per
 * epoch the validation after step 1 is the first non-finite loss; after a warm-up epoch at lr 1e-3 (checkpoint
 * at step 3) step 4's update blows the weights up, step 5 rolls back, its replay blows them up again and step 6
 * meets the limit. */
TEST(cli_train_on_nan_options) {
    NEED_V3();
    char cfg[600], cmd[2400], out[8192], want[900];
    int rc = test_sh("./v3 train --help", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "--on-nan A") && strstr(out, "--max-rollbacks N"), "--help: %s", out);
    rc = test_sh("./v3 train --config configs/tiny.yaml --out /tmp/v3cli_nan --on-nan maybe", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--on-nan expects stop or rollback, got 'maybe'"), "exit %d: %s", rc, out);
    char *dir = make_env("clinan", 20, NULL, cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 ./v3 train --config %s --out %s/v --steps 6 --device cpu --quiet "
             "--set optimizer_config.lr=1e30 --set batch_size=20", cfg, dir);
    rc = test_sh(cmd, out, sizeof out);
    snprintf(want, sizeof want, "; stopping; no checkpoint in %s/v/checkpoints yet\n", dir);
    CHECK(rc == 1 && strstr(out, "v3: error: step 1: validation: non-finite loss: ") && strstr(out, want),
          "exit %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 ./v3 train --config %s --out %s/r --steps 9 --device cpu "
             "--set optimizer_config.lr=1e30 --set optimizer_config.warmup_epochs=1 "
             "--set optimizer_config.warmup_factor=1e-33 --on-nan rollback --max-rollbacks 1", cfg, dir);
    rc = test_sh(cmd, out, sizeof out);
    snprintf(want, sizeof want, "rolled back to %s/r/checkpoints/latest.v3ck (step 3)", dir);
    CHECK(rc == 1 && strstr(out, "v3: step 5: non-finite ") && strstr(out, want) &&
          strstr(out, "v3: error: step 6: non-finite loss") && strstr(out, "(--max-rollbacks 1); last good checkpoint"),
          "exit %d: %s", rc, out);
    char *log = read_text(test_path(test_path(dir, "r"), "log.jsonl"));
    CHECK(log && strstr(log, "{\"kind\":\"rollback\",\"step\":5,\"term\":\""), "log.jsonl: %s", log ? log : "");
    free(log);
    return test_done(0, dir);
}

/* ---- SIGKILL at random moments, then --resume ---- */

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static pid_t spawn_train(const char *cfg, const char *out, int steps, int resume) {
    char steps_s[32];
    snprintf(steps_s, sizeof steps_s, "%d", steps);
    pid_t pid = fork();
    if (pid == 0) {
        /* one OpenMP thread: fast on shared cores, and every process of the comparison uses the same count */
        setenv("OMP_NUM_THREADS", "1", 1);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        const char *argv[] = {"./v3", "train", "--config", cfg, "--out", out, "--steps", steps_s, "--device", "cpu",
                              "--quiet", resume ? "--resume" : NULL, NULL};
        execv("./v3", (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* The highest "step" of a train line in log.jsonl so far (0 if none). */
static long logged_step(const char *run) {
    char *log = read_text(test_path(run, "log.jsonl"));
    long best = 0;
    const char *key = "{\"kind\":\"train\",\"step\":";
    for (const char *s = log; s && (s = strstr(s, key)); s++) {
        long v = strtol(s + strlen(key), NULL, 10);
        if (v > best) best = v;
    }
    free(log);
    return best;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

TEST(train_kill9_at_random_moments_resumes_byte_identical) {
    NEED_V3();
    enum { STEPS = 23, KILLS = 10 }; /* odd: the run ends between validations, with a mid-period checkpoint */
    char cfg[600], a[700], b[700];
    /* one step per epoch: a checkpoint every step, a validation every second one (so checkpoints in between carry
     * an older validation loss) */
    char *dir = make_env("kill9", 8, "val_every_n_epochs: 2\n", cfg, sizeof cfg);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    int st;
    pid_t pid = spawn_train(cfg, a, STEPS, 0);
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "uninterrupted run");
    /* kill k when the log reaches a random step (sorted, spread over the run; the first two before any step,
     * after a random 0-2 and 0-30 ms; the last near the end), plus a random 0-3 ms so the kill lands anywhere in
     * the step, its validation or its checkpoint writes */
    uint64_t seed = 15;
    long target[KILLS];
    for (int k = 0; k < KILLS; k++)
        target[k] = k < 2 ? 0 : k == KILLS - 1 ? STEPS - 1 : 1 + (long)(lcg(&seed) % (STEPS - 1));
    for (int i = 2; i < KILLS; i++) /* insertion sort */
        for (int j = i; j > 2 && target[j - 1] > target[j]; j--) {
            long t = target[j];
            target[j] = target[j - 1];
            target[j - 1] = t;
        }
    int killed = 0, early = 0;
    for (int k = 0; k < KILLS; k++) {
        pid = spawn_train(cfg, b, STEPS, k > 0);
        CHECK(pid > 0, "fork");
        int done = 0; /* the child ended before its kill (reaped by the WNOHANG poll) */
        if (target[k] == 0) sleep_us((long)(lcg(&seed) % (k == 0 ? 2000 : 30000)));
        else
            for (int w = 0; w < 20000 && logged_step(b) < target[k] && !(done = waitpid(pid, &st, WNOHANG) == pid);
                 w++)
                sleep_us(500);
        if (!done) {
            sleep_us((long)(lcg(&seed) % 3000));
            if (access(test_path(b, "checkpoints/latest.v3ck"), F_OK)) early++;
            kill(pid, SIGKILL);
            CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
        }
        if (WIFSIGNALED(st)) killed++;
        else CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "attempt %d exited with status %d", k, st);
    }
    pid = spawn_train(cfg, b, STEPS, 1);
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "final --resume");
    CHECK(killed >= KILLS / 2, "only %d attempts were killed (the rest finished first)", killed);
    CHECK(early >= 1, "no kill before the first checkpoint");
    CHECK(same_run(a, b), "killed and resumed run differs from the uninterrupted one");
    return test_done(0, dir);
}
