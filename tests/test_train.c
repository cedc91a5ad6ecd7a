/* Checkpoints (round trip, corruption, mismatch) and the training loop (exact resume, best-k, input errors). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "dataset.h"
#include "model.h"
#include "testing.h"
#include "train.h"

static Model *tiny_model(uint64_t seed, int K) {
    Config c;
    config_defaults(&c);
    c.arch = ARCH_TINY;
    c.n_channels = 16;
    c.n_fragments = 3;
    c.n_feature = c.fragment_len = 8;
    c.d_emb_c = 6;
    c.d_emb_s = 5;
    c.n_atoms = K;
    c.threshold_ema_dead_code = 0.5;
    return model_build(&c, seed);
}

static float *batch(int B, unsigned seed) {
    size_t n = (size_t)B * 3 * 3 * 64;
    float *x = falloc(n);
    fill_uniform(x, n, seed, -1, 1);
    return x;
}

static double step(Model *m, const float *x, int B) {
    LossTerms L;
    model_forward(m, x, B, 1, &L);
    model_backward(m);
    model_adamw(m, 1e-3f);
    return L.total;
}

static int read_file(const char *p, char **data, long *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = xmalloc((size_t)*n + 1);
    size_t got = fread(*data, 1, (size_t)*n, f);
    fclose(f);
    (*data)[got] = 0;
    return got == (size_t)*n ? 0 : -1;
}

static void write_file(const char *p, const char *data, long n) {
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, (size_t)n, f);
    fclose(f);
}

TEST(ckpt_round_trip_and_identical_continuation) {
    char *dir = test_tmpdir("ck"), path[512];
    snprintf(path, sizeof path, "%s/a.v3ck", dir);
    Model *a = tiny_model(1, 4), *b = tiny_model(2, 4);
    float *x1 = batch(4, 1), *x2 = batch(4, 2);
    step(a, x1, 4);
    step(a, x2, 4);
    CkptMeta meta = {2, 77, 1, 0.5}, got;
    CHECK(checkpoint_save(path, a, &meta) == 0, "save: %s", v3_last_error());
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "temp file left behind");
    CHECK(checkpoint_load(path, b, &got) == 0, "load: %s", v3_last_error());
    CHECK(got.step == 2 && got.seed == 77 && got.epoch == 1 && got.val_loss == 0.5, "metadata mismatch");
    CHECK(!memcmp(a->p, b->p, sizeof(float) * a->n_params), "params differ");
    CHECK(!memcmp(a->m, b->m, sizeof(float) * a->n_trainable) && !memcmp(a->v, b->v, sizeof(float) * a->n_trainable),
          "Adam state differs");
    CHECK(!memcmp(a->buf, b->buf, sizeof(float) * a->n_bufs), "BN buffers differ");
    CHECK(!memcmp(a->vq.embed_avg, b->vq.embed_avg, sizeof(float) * 4 * 6) &&
              !memcmp(a->vq.cluster_size, b->vq.cluster_size, sizeof(float) * 4) && b->vq.initted == 1,
          "codebook EMA state differs");
    CHECK(!memcmp(&a->rng, &b->rng, sizeof a->rng) && a->adam_t == b->adam_t, "RNG or step count differs");
    double la = step(a, x1, 4), lb = step(b, x1, 4);
    CHECK(la == lb, "continuation differs: %.17g vs %.17g", la, lb);
    CHECK(!memcmp(a->p, b->p, sizeof(float) * a->n_params), "params differ after a further step");
    model_free(a); model_free(b); ffree(x1); ffree(x2); free(dir);
    return 0;
}

/* Save a checkpoint, damage it with `damage`, and expect load to fail with `expect` in the message. */
static int ckpt_reject(void (*damage)(const char *), const char *expect, int other_K) {
    char *dir = test_tmpdir("ckbad"), path[512];
    snprintf(path, sizeof path, "%s/a.v3ck", dir);
    Model *a = tiny_model(1, 4), *b = tiny_model(1, other_K);
    CkptMeta meta = {0, 0, 0, NAN};
    CHECK(checkpoint_save(path, a, &meta) == 0, "save: %s", v3_last_error());
    if (damage) damage(path);
    int rc = checkpoint_load(path, b, &meta);
    model_free(a); model_free(b);
    CHECK(rc == -1, "damaged checkpoint accepted (expected '%s')", expect);
    CHECK(strstr(v3_last_error(), expect) && strstr(v3_last_error(), "a.v3ck"), "message: %s", v3_last_error());
    free(dir);
    return 0;
}

static void truncate_it(const char *p) {
    char *d; long n;
    read_file(p, &d, &n);
    write_file(p, d, n - 10);
    free(d);
}
static void flip_payload(const char *p) {
    char *d; long n;
    read_file(p, &d, &n);
    d[n / 2] ^= 0x10;
    write_file(p, d, n);
    free(d);
}
static void flip_header(const char *p) {
    char *d; long n;
    read_file(p, &d, &n);
    d[50] ^= 1;
    write_file(p, d, n);
    free(d);
}
static void bad_magic(const char *p) {
    char *d; long n;
    read_file(p, &d, &n);
    d[0] = 'X';
    write_file(p, d, n);
    free(d);
}
static void remove_it(const char *p) { unlink(p); }

TEST(ckpt_rejects_truncated) { return ckpt_reject(truncate_it, "truncated", 4); }
TEST(ckpt_rejects_payload_corruption) { return ckpt_reject(flip_payload, "checksum", 4); }
TEST(ckpt_rejects_header_corruption) { return ckpt_reject(flip_header, "header checksum", 4); }
TEST(ckpt_rejects_bad_magic) { return ckpt_reject(bad_magic, "not a v3 checkpoint", 4); }
TEST(ckpt_rejects_missing) { return ckpt_reject(remove_it, "cannot open", 4); }
TEST(ckpt_rejects_other_model) { return ckpt_reject(NULL, "n_atoms", 5); }

/* ---- the training loop on a small synthetic dataset ---- */
static char *make_run_env(const char *tag, char *cfg_path, size_t cap, const char *extra) {
    return test_synth_run_env(tag, 20, 3, extra, cfg_path, cap);
}

static int run_train(const char *cfg, const char *out, long steps, int resume) {
    return test_train_cpu(cfg, out, steps, resume, NULL, NULL);
}

/* The synthetic environment with two run directories, DIR/a and DIR/b, for tests that compare two runs. */
static char *ab_run_env(const char *tag, char cfg[600], char a[700], char b[700]) {
    char *dir = make_run_env(tag, cfg, 600, NULL);
    if (dir) snprintf(a, 700, "%s/a", dir), snprintf(b, 700, "%s/b", dir);
    return dir;
}

TEST(train_resume_is_bit_identical) {
    char cfg[600], a[700], b[700], la[800], lb[800];
    char *dir = ab_run_env("resume", cfg, a, b);
    CHECK(dir, "environment");
    /* 20 samples at batch 8 = 3 steps per epoch; stop mid-epoch at step 4, resume to 8 */
    CHECK(run_train(cfg, a, 8, 0) == 0, "uninterrupted run: %s", v3_last_error());
    CHECK(run_train(cfg, b, 4, 0) == 0, "first half: %s", v3_last_error());
    CHECK(run_train(cfg, b, 8, 1) == 0, "resumed half: %s", v3_last_error());
    snprintf(la, sizeof la, "%s/log.jsonl", a);
    snprintf(lb, sizeof lb, "%s/log.jsonl", b);
    char *da, *db; long na, nb;
    CHECK(read_file(la, &da, &na) == 0 && read_file(lb, &db, &nb) == 0, "logs missing");
    int lines = 0;
    for (long i = 0; i < na; i++) lines += da[i] == '\n';
    int same = na == nb && !memcmp(da, db, (size_t)na);
    if (!same) fprintf(stderr, "    uninterrupted:\n%s    resumed:\n%s", da, db);
    free(da); free(db); free(dir);
    CHECK(lines == 8 + 2, "expected 8 train + 2 val log lines, got %d", lines);
    CHECK(same, "resumed log differs from the uninterrupted one");
    return 0;
}

TEST(train_keeps_best_k_plus_latest) {
    char cfg[600], out[700];
    char *dir = make_run_env("bestk", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    snprintf(out, sizeof out, "%s/run", dir);
    CHECK(run_train(cfg, out, 15, 0) == 0, "run: %s", v3_last_error()); /* 5 epochs */
    char ck[800];
    snprintf(ck, sizeof ck, "%s/checkpoints", out);
    DIR *d = opendir(ck);
    struct dirent *e;
    int epochs = 0, latest = 0;
    while ((e = readdir(d))) {
        if (!strncmp(e->d_name, "epoch", 5)) epochs++;
        if (!strcmp(e->d_name, "latest.v3ck")) latest++;
    }
    closedir(d);
    free(dir);
    CHECK(epochs == 2 && latest == 1, "found %d epoch checkpoints (want save_top_k = 2) and %d latest", epochs, latest);
    return 0;
}

TEST(train_rejects_dataset_shape_mismatch) {
    char cfg[600], out[700];
    char *dir = make_run_env("shape", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    snprintf(out, sizeof out, "%s/run", dir);
    int rc = test_train_cpu(cfg, out, 1, 0, NULL, "model_config.n_fragments=4");
    free(dir);
    CHECK(rc == -1, "mismatched dataset accepted");
    CHECK(strstr(v3_last_error(), "train.v3ds") && strstr(v3_last_error(), "expects"), "message: %s", v3_last_error());
    return 0;
}

TEST(train_refuses_to_overwrite_a_run) {
    char cfg[600], out[700];
    char *dir = make_run_env("exists", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    snprintf(out, sizeof out, "%s/run", dir);
    CHECK(run_train(cfg, out, 1, 0) == 0, "run: %s", v3_last_error());
    int rc = run_train(cfg, out, 2, 0);
    free(dir);
    CHECK(rc == -1 && strstr(v3_last_error(), "--resume"), "second run without --resume: rc %d, %s", rc,
          v3_last_error());
    return 0;
}

TEST(train_rejects_missing_dataset) {
    char cfg[600], out[700];
    char *dir = make_run_env("nodata", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    snprintf(out, sizeof out, "%s/run", dir);
    int rc = test_train_cpu(cfg, out, 1, 0, "/nonexistent/v3data", NULL);
    free(dir);
    CHECK(rc == -1 && strstr(v3_last_error(), "/nonexistent/v3data") && strstr(v3_last_error(), "not found"),
          "message: %s", v3_last_error());
    return 0;
}

TEST(metrics_purity_known_values) {
    int ind[6] = {0, 0, 0, 1, 1, 2};
    int32_t lab[6] = {1, 1, 2, 0, 0, 2};
    double p = codebook_purity(ind, lab, 6, 3, 3);
    CHECK(fabs(p - 5.0 / 6.0) < 1e-12, "purity %.6f want %.6f", p, 5.0 / 6.0);
    int ind2[4] = {0, 0, 0, 0};
    int32_t lab2[4] = {0, 1, 2, 3};
    CHECK(fabs(codebook_purity(ind2, lab2, 4, 2, 4) - 0.25) < 1e-12, "single-atom purity wrong");
    return 0;
}

/* Value of "key": in the n-th JSONL line of kind `kind` (n < 0 counts from the end). */
static double log_value(const char *log, const char *kind, int nth, const char *key) {
    char want[64], k[64];
    snprintf(want, sizeof want, "\"kind\":\"%s\"", kind);
    snprintf(k, sizeof k, "\"%s\":", key);
    int count = 0;
    for (const char *p = log; (p = strstr(p, want)); p++) count++;
    int target = nth < 0 ? count + nth : nth, i = 0;
    for (const char *p = log; (p = strstr(p, want)); p++, i++)
        if (i == target) {
            const char *v = strstr(p, k);
            return v ? strtod(v + strlen(k), NULL) : NAN;
        }
    return NAN;
}

TEST(train_reduces_reconstruction_loss) {
    char cfg[600], out[700], logp[800];
    char *dir = make_run_env("learn", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    snprintf(out, sizeof out, "%s/run", dir);
    CHECK(run_train(cfg, out, 45, 0) == 0, "run: %s", v3_last_error());
    snprintf(logp, sizeof logp, "%s/log.jsonl", out);
    char *log; long n;
    CHECK(read_file(logp, &log, &n) == 0, "no log");
    double r0 = log_value(log, "train", 0, "recon"), r1 = log_value(log, "train", -1, "recon");
    double v0 = log_value(log, "val", 0, "recon"), v1 = log_value(log, "val", -1, "recon");
    double lr0 = log_value(log, "train", 0, "lr");
    free(log); free(dir);
    CHECK(isfinite(r0) && isfinite(r1) && r1 < 0.6 * r0, "train recon %.4f -> %.4f: not learning", r0, r1);
    CHECK(isfinite(v0) && isfinite(v1) && v1 < v0, "val recon %.4f -> %.4f", v0, v1);
    CHECK(fabs(lr0 - 1e-3) < 1e-12, "first-epoch learning rate %.3g, want the configured 1e-3", lr0);
    return 0;
}

/* TensorBoard images at validation: present every epoch by default, absent with tb_images_every_n_epochs: 0. */
static int tb_has(const char *run, const char *needle) {
    char tb[800];
    snprintf(tb, sizeof tb, "%s/tb", run);
    DIR *d = opendir(tb);
    if (!d) return -1;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "events.out", 10)) {
            unsigned char *buf = NULL;
            size_t n = 0;
            if (test_read_all(test_path(tb, e->d_name), &buf, &n) == 0) {
                for (size_t i = 0; i + strlen(needle) <= n && !found; i++)
                    found = !memcmp(buf + i, needle, strlen(needle));
                free(buf);
            }
        }
    closedir(d);
    return found;
}

TEST(train_writes_tensorboard_images_at_validation) {
    char cfg[600], a[700];
    char *dir = make_run_env("tbimg", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    snprintf(a, sizeof a, "%s/a", dir);
    CHECK(run_train(cfg, a, 3, 0) == 0, "train: %s", v3_last_error()); /* 20 samples at batch 8: one epoch */
    CHECK(tb_has(a, "val/codebook_sheet") == 1 && tb_has(a, "val/reconstruction") == 1 && tb_has(a, "\x89PNG") == 1,
          "no images in %s/tb", a);
    snprintf(a, sizeof a, "%s/b", dir);
    CHECK(test_train_cpu(cfg, a, 3, 0, NULL, "tb_images_every_n_epochs=0") == 0, "train: %s", v3_last_error());
    CHECK(tb_has(a, "val/codebook_sheet") == 0 && tb_has(a, "val/purity") == 1, "images despite the 0 interval");
    return test_done(0, dir);
}

/* --device: each host backend trains the same run through the one step. cpu runs the reference ops until it
 * gets fast ones, so today the logs are identical; then the losses must still agree to within rounding. A wrong
 * name and --math on a host backend are refused with the choices named. */
TEST(train_device_ref_and_cpu_agree) {
    char cfg[600], out[2][700], lp[1500];
    char *dir = make_run_env("device", cfg, sizeof cfg, NULL);
    CHECK(dir, "environment");
    const char *devs[2] = {"ref", "cpu"};
    double loss[2][6];
    for (int k = 0; k < 2; k++) {
        TrainOpts o;
        snprintf(out[k], sizeof out[k], "%s/%s", dir, devs[k]);
        test_train_opts(&o, cfg, out[k], 6, 0, NULL);
        o.device = devs[k];
        CHECK(train_run(&o) == 0, "--device %s: %s", devs[k], v3_last_error());
        snprintf(lp, sizeof lp, "%s/log.jsonl", out[k]);
        char *txt; long n;
        CHECK(read_file(lp, &txt, &n) == 0, "%s missing", lp);
        const char *p = txt;
        for (int s = 0; s < 6; s++) {
            p = strstr(p, "\"kind\":\"train\"");
            CHECK(p, "--device %s: %d train lines, want 6", devs[k], s);
            const char *v = strstr(p, "\"loss\":");
            CHECK(v, "--device %s: step %d has no loss", devs[k], s + 1);
            loss[k][s] = strtod(v + 7, NULL);
            p++;
        }
        free(txt);
    }
    /* free-running: the cpu ops round differently from ref's, AdamW turns rounding-level gradients (biases in front
     * of BatchNorm) into full-size steps, and codeword near-ties flip, so the runs part from the second step; only
     * the first is compared (test_step_cpu checks the step itself along a 50-step trajectory) */
    for (int s = 0; s < 6; s++)
        CHECK(isfinite(loss[0][s]) && loss[0][s] > 0 && isfinite(loss[1][s]) && loss[1][s] > 0 &&
                  (s >= 1 || fabs(loss[0][s] - loss[1][s]) <= 1e-5 * loss[0][s]),
              "step %d: loss %.9g on ref, %.9g on cpu", s + 1, loss[0][s], loss[1][s]);
    TrainOpts o;
    test_train_opts(&o, cfg, out[0], 7, 1, NULL);
    o.device = "emu";
    CHECK(train_run(&o) == -1 && strstr(v3_last_error(), "ref, cpu, cuda or auto"), "--device emu: %s",
          v3_last_error());
    o.device = "cpu";
    o.math = "tf32";
    CHECK(train_run(&o) == -1 && strstr(v3_last_error(), "--math tf32"), "--math tf32 on cpu: %s", v3_last_error());
    free(dir);
    return 0;
}

/* loss_config.style_from_step: the first N training steps run with the style, sample and fragment weights at 0, and
 * the run is then exactly the one made by training N steps with those weights at 0 and resuming with them back on. The
 * loss logged each step must be the weighted sum of its terms with the weights in force at that step. */

/* model_config.kmeans_reinit_step: the same run as without it up to the step, a different one from the step on
 * (the codebook is drawn again), and a run stopped at that step and resumed matches the uninterrupted one. */
TEST(train_kmeans_reinit_step_redraws_the_codebook) {
    char cfg[600], a[700], b[700], c3[700], la[800], lb[800], lc[800];
    char *dir = ab_run_env("kmreinit", cfg, a, b);
    CHECK(dir, "environment");
    snprintf(c3, sizeof c3, "%s/c", dir);
    CHECK(test_train_cpu(cfg, a, 8, 0, NULL, "model_config.kmeans_reinit_step=4") == 0, "run with it: %s",
          v3_last_error());
    CHECK(test_train_cpu(cfg, b, 8, 0, NULL, NULL) == 0, "run without: %s", v3_last_error());
    CHECK(test_train_cpu(cfg, c3, 4, 0, NULL, "model_config.kmeans_reinit_step=4") == 0, "first half: %s",
          v3_last_error());
    CHECK(test_train_cpu(cfg, c3, 8, 1, NULL, "model_config.kmeans_reinit_step=4") == 0, "resumed half: %s",
          v3_last_error());
    snprintf(la, sizeof la, "%s/log.jsonl", a);
    snprintf(lb, sizeof lb, "%s/log.jsonl", b);
    snprintf(lc, sizeof lc, "%s/log.jsonl", c3);
    char *da, *db, *dc; long na, nb, nc;
    CHECK(read_file(la, &da, &na) == 0 && read_file(lb, &db, &nb) == 0 && read_file(lc, &dc, &nc) == 0,
          "logs missing");
    int before_same = 1, after_differ = 0;
    const char *keys[] = {"loss", "commit", "content"};
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 3; k++) {
            int eq = log_value(da, "train", i, keys[k]) == log_value(db, "train", i, keys[k]);
            if (i < 4) before_same &= eq;
            else after_differ |= !eq;
        }
    int resumed_same = na == nc && !memcmp(da, dc, (size_t)na);
    free(da); free(db); free(dc); free(dir);
    CHECK(before_same, "the first 4 steps differ from the run without the key");
    CHECK(after_differ, "steps 5-8 equal the run without the key: the codebook was not drawn again");
    CHECK(resumed_same, "the run resumed at the re-draw step differs from the uninterrupted one");
    return 0;
}

TEST(train_style_from_step_switches_the_style_terms_on) {
    char cfg[600], a[700], b[700], la[800], lb[800];
    char *dir = ab_run_env("stylefrom", cfg, a, b);
    CHECK(dir, "environment");
    CHECK(test_train_cpu(cfg, a, 8, 0, NULL, "loss_config.style_from_step=4") == 0, "scheduled run: %s",
          v3_last_error());
    TrainOpts o;
    test_train_opts(&o, cfg, b, 4, 0, "loss_config.weights.style_loss=0");
    o.sets[o.n_sets++] = "loss_config.weights.sample_loss=0";
    o.sets[o.n_sets++] = "loss_config.weights.fragment_loss=0";
    CHECK(train_run(&o) == 0, "first phase: %s", v3_last_error());
    CHECK(test_train_cpu(cfg, b, 8, 1, NULL, NULL) == 0, "second phase: %s", v3_last_error());
    snprintf(la, sizeof la, "%s/log.jsonl", a);
    snprintf(lb, sizeof lb, "%s/log.jsonl", b);
    char *da, *db; long na, nb;
    CHECK(read_file(la, &da, &na) == 0 && read_file(lb, &db, &nb) == 0, "logs missing");
    int bad = 0, styled = 0;
    for (int i = 0; i < 8; i++) {
        double rec = log_value(da, "train", i, "recon"), con = log_value(da, "train", i, "content"),
               sty = log_value(da, "train", i, "style"), sam = log_value(da, "train", i, "sample"),
               fra = log_value(da, "train", i, "fragment"), com = log_value(da, "train", i, "commit"),
               tot = log_value(da, "train", i, "loss");
        double on = i >= 4 ? 1.0 : 0.0, want = rec + con + 0.1 * com + on * (sty + sam + fra);
        styled += i >= 4 && sty + sam + fra > 1e-3;
        if (!(fabs(tot - want) <= 1e-5 * (1 + fabs(want)))) {
            fprintf(stderr, "    step %d: loss %.9g, want %.9g (style and sample %s)\n", i + 1, tot, want,
                    on ? "on" : "off");
            bad++;
        }
        /* the same step of the two-phase run: identical terms */
        const char *keys[] = {"loss", "recon", "content", "style", "sample", "fragment", "commit"};
        for (int k = 0; k < 7; k++)
            if (!(log_value(da, "train", i, keys[k]) == log_value(db, "train", i, keys[k]))) {
                fprintf(stderr, "    step %d: %s differs from the two-phase run\n", i + 1, keys[k]);
                bad++;
            }
    }
    /* validation always counts every term: the first epoch's (step 3, weights off in training) included */
    double v_tot = log_value(da, "val", 0, "loss"), v_sty = log_value(da, "val", 0, "style"),
           v_sam = log_value(da, "val", 0, "sample"), v_rest = log_value(da, "val", 0, "recon") +
           log_value(da, "val", 0, "content") + log_value(da, "val", 0, "fragment");
    free(da); free(db); free(dir);
    CHECK(bad == 0, "%d mismatches", bad);
    CHECK(styled > 0, "the style, sample and fragment hinges were 0 after the switch: the test cannot tell");
    CHECK(fabs(v_tot - (v_rest + v_sty + v_sam)) <= 1e-5 * (1 + v_tot) && v_sty + v_sam > 1e-3,
          "validation loss %.9g without its style/sample terms (%.9g + %.9g + %.9g)", v_tot, v_rest, v_sty, v_sam);
    return 0;
}
