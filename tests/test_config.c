/* Config tests: the shipped authors' configs load with the right values; bad keys, types, files and syntax are
 * rejected with messages naming file and dotted key; --set, validation and the learning-rate schedules. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "testing.h"

/* Write `text` to dir/name; returns a static path (valid until the next call). */
static const char *write_yaml(const char *dir, const char *name, const char *text) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static int has(const char *needle) { return strstr(v3_last_error(), needle) != NULL; }

/* Load `text` from a fresh file over defaults; returns config_load's result and leaves the path in *out. */
static int load_text(const char *name, const char *text, Config *c, char *out, size_t n) {
    char *dir = test_tmpdir("cfg");
    const char *p = write_yaml(dir, name, text);
    int rc = -2;
    if (p) {
        snprintf(out, n, "%s", p);
        config_defaults(c);
        v3_clear_error();
        rc = config_load(out, c);
        remove(out); /* only the path string is needed afterwards, for the message checks */
    }
    rmdir(dir);
    free(dir);
    return rc;
}

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * fmax(1, fabs(b)); }

/* Values shared by all four authors' files. */
static int check_common(const Config *c) {
    CHECK(c->batch_size == 32 && c->epochs == 10000, "batch %d epochs %d", c->batch_size, c->epochs);
    CHECK(c->has_seed == 0, "random_seed is empty in the authors' files");
    CHECK(near(c->lr, 1e-3) && near(c->eps, 1e-8), "lr %g eps %g", c->lr, c->eps);
    CHECK(near(c->w_recon, 1) && near(c->w_content, 1) && near(c->w_style, 1) && near(c->w_sample, 1) &&
              near(c->w_fragment, 1) && near(c->w_commit, 0.1),
          "weights %g %g %g %g %g %g", c->w_recon, c->w_content, c->w_style, c->w_sample, c->w_fragment,
          c->w_commit);
    CHECK(!strcmp(c->method, "V3") && !strcmp(c->optimizer, "AdamW"), "method %s optimizer %s", c->method,
          c->optimizer);
    CHECK(!strcmp(c->scheduler, "exponential_decay"), "scheduler %s", c->scheduler);
    CHECK(near(c->vq_ema_decay, 0.98) && c->d_emb_c == 512 && c->d_emb_s == 512, "vq/emb");
    CHECK(config_validate(c) == 0, "shipped config fails validation: %s", v3_last_error());
    return 0;
}

TEST(config_defaults_are_authors_values) {
    Config c;
    config_defaults(&c);
    CHECK(c.arch == ARCH_PHONENUMS && c.n_channels == 256 && c.n_atoms == 10 && c.n_fragments == 10,
          "arch %d nc %d atoms %d", c.arch, c.n_channels, c.n_atoms);
    CHECK(c.in_channels == 0 && c.kmeans_iters == 10 && c.save_top_k == 3, "ours");
    CHECK(near(c.relativity, 15) && near(c.lr_decay_min_factor, 0.02) && near(c.warmup_factor, 0.1), "floats");
    CHECK(!strcmp(c.name, "v3") && !c.dataloader[0] && !strcmp(c.device, "cuda"), "strings");
    CHECK(config_validate(&c) == 0, "defaults invalid: %s", v3_last_error());
    return 0;
}

TEST(config_loads_insnotes) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/insnotes.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_INSNOTES, "arch %s", arch_name(c.arch));
    CHECK(c.n_atoms == 12 && c.n_fragments == 12 && c.n_channels == 512 && c.n_feature == 512, "model_config");
    CHECK(near(c.relativity, 15) && !c.supersample_content, "loss_config");
    CHECK(!strcmp(c.name, "insnotes_trial") && !strcmp(c.data_dir, "../data/InsNotes"), "name %s", c.name);
    return check_common(&c);
}

TEST(config_loads_phonenums) {
    Config c;
    config_defaults(&c);
    c.arch = ARCH_TINY; /* must be overwritten from the dataloader name */
    CHECK(config_load("configs/phonenums.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_PHONENUMS, "arch %s", arch_name(c.arch));
    CHECK(c.n_atoms == 10 && c.n_fragments == 10 && c.n_channels == 256 && c.n_feature == 48 &&
              c.fragment_len == 32,
          "model_config");
    CHECK(!strcmp(c.dataloader, "phonenums_dataloader"), "dataloader %s", c.dataloader);
    return check_common(&c);
}

/* Saves c to path and loads it back into d (defaults first); 0 on success. */
static int save_reload(const Config *c, const char *path, Config *d) {
    config_defaults(d);
    int rc = config_save(c, path) || config_load(path, d);
    remove(path);
    return rc ? -1 : 0;
}

/* loss_config.term_relativity: a term's own r, 0 (default) for loss_config.relativity; negative or non-finite
 * values are refused with the key's name, and a set value survives the saved run config. */
TEST(config_term_relativity) {
    Config c;
    config_defaults(&c);
    CHECK(c.r_content == 0 && c.r_style == 0 && c.r_sample == 0 && c.r_fragment == 0, "defaults not 0");
    CHECK(config_set(&c, "loss_config.term_relativity.content_loss=60") == 0 &&
              config_set(&c, "loss_config.term_relativity.fragment_loss=4.5") == 0, "%s", v3_last_error());
    CHECK(near(c.r_content, 60) && near(c.r_fragment, 4.5) && c.r_style == 0 && c.r_sample == 0, "values not set");
    CHECK(config_validate(&c) == 0, "valid term relativity refused: %s", v3_last_error());
    Config d;
    CHECK(save_reload(&c, "/tmp/v3_test_term_r.yaml", &d) == 0, "saved config does not load: %s", v3_last_error());
    CHECK(near(d.r_content, 60) && near(d.r_fragment, 4.5) && d.r_style == 0, "term relativity lost in the saved config");
    CHECK(config_set(&c, "model_config.kmeans_reinit_step=1000") == 0 && c.kmeans_reinit_step == 1000, "reinit step");
    CHECK(config_set(&c, "model_config.kmeans_reinit_step=-1") == -1 && has("'model_config.kmeans_reinit_step'"),
          "a negative k-means redraw step accepted: %s", v3_last_error());
    CHECK(config_set(&c, "loss_config.term_relativity.style_loss=-2") == 0 && config_validate(&c) == -1 &&
              has("'loss_config.term_relativity.style_loss'"), "a negative term relativity accepted: %s",
          v3_last_error());
    return 0;
}

/* The loss configuration model_build makes from t (-1 with the error set if it fails). */
/* The model configs/tiny.yaml builds, with one KEY=VALUE override (or none): NULL on any error. */
static Model *tiny_model(const char *kv) {
    Config t;
    config_defaults(&t);
    if (config_load("configs/tiny.yaml", &t) || (kv && config_set(&t, kv)) || config_validate(&t)) return NULL;
    return model_build(&t, 1);
}

static int built_loss(const Config *t, V3LossCfg *out) {
    Model *m = model_build(t, 1);
    if (!m) return -1;
    *out = m->loss;
    model_free(m);
    return 0;
}

/* loss_config.per_sample_hinges (a boolean, default false) and loss_config.content_spread ('means', the default, or
 * 'energy'; not with supersample_content): wrong values refused with the key's name, kept in the saved run config,
 * and carried into the model's loss configuration. */
TEST(config_per_sample_hinges_and_content_spread) {
    Config c;
    config_defaults(&c);
    CHECK(c.per_sample_hinges == 0 && !strcmp(c.content_spread, "means"), "defaults not false / means");
    CHECK(config_set(&c, "loss_config.per_sample_hinges=maybe") == -1 && has("'loss_config.per_sample_hinges'"),
          "a non-boolean accepted: %s", v3_last_error());
    CHECK(config_set(&c, "loss_config.per_sample_hinges=true") == 0 && c.per_sample_hinges == 1, "%s",
          v3_last_error());
    CHECK(config_set(&c, "loss_config.content_spread=medians") == 0 && config_validate(&c) == -1 &&
              has("'loss_config.content_spread'") && has("'means' or 'energy'"), "an unknown spread accepted: %s",
          v3_last_error());
    CHECK(config_set(&c, "loss_config.content_spread=energy") == 0 && config_validate(&c) == 0, "refused: %s",
          v3_last_error());
    Config d;
    CHECK(save_reload(&c, "/tmp/v3_test_per_sample.yaml", &d) == 0, "saved config does not load: %s", v3_last_error());
    CHECK(d.per_sample_hinges == 1 && !strcmp(d.content_spread, "energy"), "lost in the saved config");
    c.supersample_content = 1;
    CHECK(config_validate(&c) == -1 && has("'loss_config.content_spread'") && has("supersample"),
          "energy with supersample_content accepted: %s", v3_last_error());
    Config t;
    config_defaults(&t);
    CHECK(config_load("configs/tiny.yaml", &t) == 0, "%s", v3_last_error());
    t.per_sample_hinges = 1;
    snprintf(t.content_spread, sizeof t.content_spread, "energy");
    V3LossCfg l;
    CHECK(built_loss(&t, &l) == 0, "%s", v3_last_error());
    const int ps = l.per_sample, energy = l.content_energy;
    CHECK(ps == 1 && energy == 1, "the model's loss configuration did not get them (per_sample %d, energy %d)", ps,
          energy);
    return 0;
}

/* loss_config.hinge ('linear', the default, or 'log'): an unknown form refused with the key's name; the log form
 * refuses an r <= 1 (common or a term's own) since it divides by ln r; kept in the saved run config and carried
 * into the model's loss configuration. */
TEST(config_hinge_form) {
    Config c;
    config_defaults(&c);
    CHECK(!strcmp(c.hinge, "linear"), "default not linear: '%s'", c.hinge);
    CHECK(config_set(&c, "loss_config.hinge=cubic") == 0 && config_validate(&c) == -1 && has("'loss_config.hinge'") &&
              has("'linear' or 'log'"), "an unknown hinge accepted: %s", v3_last_error());
    CHECK(config_set(&c, "loss_config.hinge=log") == 0 && config_validate(&c) == 0, "refused: %s", v3_last_error());
    c.r_style = 1.0;
    CHECK(config_validate(&c) == -1 && has("'loss_config.term_relativity.style_loss'") && has("> 1"),
          "a style r of 1 accepted with the log hinge: %s", v3_last_error());
    c.r_style = 0, c.relativity = 0.5;
    CHECK(config_validate(&c) == -1 && has("'loss_config.relativity'") && has("> 1"),
          "r 0.5 accepted with the log hinge: %s", v3_last_error());
    c.relativity = 15, c.r_content = 60;
    Config d;
    CHECK(save_reload(&c, "/tmp/v3_test_hinge.yaml", &d) == 0, "saved config does not load: %s", v3_last_error());
    CHECK(!strcmp(d.hinge, "log"), "lost in the saved config: '%s'", d.hinge);
    Model *m = tiny_model(NULL);
    CHECK(m, "%s", v3_last_error());
    const int before = m->loss.log_hinge;
    model_free(m);
    CHECK((m = tiny_model("loss_config.hinge=log")), "%s", v3_last_error());
    const int after = m->loss.log_hinge;
    model_free(m);
    CHECK(before == 0 && after == 1, "the model's loss configuration: log_hinge %d by default, %d with log", before,
          after);
    return 0;
}

/* model_config.revive_from ('batch', the default, or 'largest'): other values refused with the key's name, kept in
 * the saved run config, and carried into the model's quantiser. */
TEST(config_revive_from) {
    Config c;
    config_defaults(&c);
    CHECK(!strcmp(c.revive_from, "batch"), "default not batch: '%s'", c.revive_from);
    CHECK(config_set(&c, "model_config.revive_from=smallest") == 0 && config_validate(&c) == -1 &&
              has("'model_config.revive_from'") && has("'batch' or 'largest'"),
          "an unknown revive_from accepted: %s", v3_last_error());
    CHECK(config_set(&c, "model_config.revive_from=largest") == 0 && config_validate(&c) == 0, "refused: %s",
          v3_last_error());
    Config d;
    CHECK(save_reload(&c, "/tmp/v3_test_revive.yaml", &d) == 0, "saved config does not load: %s", v3_last_error());
    CHECK(!strcmp(d.revive_from, "largest"), "lost in the saved config: '%s'", d.revive_from);
    Model *m = tiny_model(NULL);
    CHECK(m, "%s", v3_last_error());
    const int before = m->vq.revive_largest;
    model_free(m);
    CHECK((m = tiny_model("model_config.revive_from=largest")), "%s", v3_last_error());
    const int after = m->vq.revive_largest;
    model_free(m);
    CHECK(before == 0 && after == 1, "the model's quantiser: revive_largest %d by default, %d with largest", before,
          after);
    return 0;
}

/* The InsNotes CPU configuration (issue 18): the smallest width the InsNotes architecture allows, K = 12 pitch
 * classes, the demo's loss settings with the style-side terms held back for the first half of the run. */
TEST(config_loads_insnotes_cpu) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/insnotes-cpu.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_INSNOTES && c.n_channels == 128 && c.n_atoms == 12 && c.n_fragments == 12, "model_config");
    CHECK(c.style_from_step > 0 && c.style_from_step < c.epochs * 60, "style_from_step %d", c.style_from_step);
    CHECK(!strcmp(c.data_dir, "data/insnotes"), "data_dir %s", c.data_dir);
    CHECK(config_validate(&c) == 0, "shipped config fails validation: %s", v3_last_error());
    return 0;
}

/* The demo's configuration (make demo): the width-64, K = 10 model on the full set, with the style-side terms held
 * back for the first 500 steps, S_c as an energy distance with the content hinge's r at 60, dead codes restarted
 * inside the largest atom (issue 18). */
TEST(config_loads_phonenums_demo) {
    Config c;
    config_defaults(&c);
    CHECK(c.style_from_step == 0, "default style_from_step %d, want 0 (the authors' schedule)", c.style_from_step);
    CHECK(config_load("configs/phonenums-demo.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_PHONENUMS && c.n_channels == 64 && c.n_atoms == 10, "model_config");
    CHECK(c.style_from_step == 500 && c.style_from_step < c.epochs * 50, "style_from_step %d", c.style_from_step);
    CHECK(!strcmp(c.revive_from, "largest") && near(c.threshold_ema_dead_code, 10), "revive_from %s, threshold %g",
          c.revive_from, c.threshold_ema_dead_code);
    CHECK(!strcmp(c.data_dir, "data/phonenums"), "data_dir %s", c.data_dir);
    CHECK(!strcmp(c.content_spread, "energy") && near(c.r_content, 60) && c.r_style == 0 && c.r_fragment == 0,
          "content_spread %s, content r %g", c.content_spread, c.r_content);
    CHECK(config_set(&c, "loss_config.style_from_step=-1") == -1 && has("'loss_config.style_from_step'"),
          "a negative step accepted: %s", v3_last_error());
    CHECK(config_set(&c, "loss_config.style_from_step=2.5") == -1, "a fractional step accepted");
    CHECK(config_validate(&c) == 0, "shipped config fails validation: %s", v3_last_error());
    return 0;
}

TEST(config_loads_sprites) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/sprites.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_SPRITES, "arch %s", arch_name(c.arch));
    CHECK(c.n_atoms == 18 && c.n_fragments == 9 && c.fragment_len == 64 && c.n_feature == 64, "model_config");
    CHECK(near(c.threshold_ema_dead_code, 8) && !c.supersample_content, "threshold %g", c.threshold_ema_dead_code);
    return check_common(&c);
}

TEST(config_loads_svhn) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/svhn.yaml", &c) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_SVHN, "arch %s", arch_name(c.arch));
    CHECK(c.n_atoms == 20 && c.n_fragments == 2 && c.n_channels == 512, "model_config");
    CHECK(near(c.relativity, 5) && c.supersample_content == 1, "relativity %g supersample %d", c.relativity,
          c.supersample_content);
    CHECK(near(c.threshold_ema_dead_code, 0), "threshold %g", c.threshold_ema_dead_code);
    return check_common(&c);
}

TEST(config_rejects_unknown_keys) {
    Config c;
    char p[1024];
    CHECK(load_text("top.yaml", "batch_size: 8\nbatch_sise: 8\n", &c, p, sizeof p) == -1, "unknown top key");
    CHECK(has(p) && has("'batch_sise'") && has(":2:"), "message: %s", v3_last_error());
    CHECK(load_text("nested.yaml", "model_config:\n  n_atomz: 4\n", &c, p, sizeof p) == -1, "unknown nested key");
    CHECK(has(p) && has("'model_config.n_atomz'") && has("n_atoms"), "message: %s", v3_last_error());
    CHECK(load_text("deep.yaml", "loss_config:\n  weights:\n    recon: 2\n", &c, p, sizeof p) == -1, "deep key");
    CHECK(has(p) && has("'loss_config.weights.recon'"), "message: %s", v3_last_error());
    CHECK(load_text("dup.yaml", "epochs: 3\nepochs: 4\n", &c, p, sizeof p) == -1, "duplicate key accepted");
    CHECK(has(p) && has("'epochs'"), "message: %s", v3_last_error());
    return 0;
}

TEST(config_rejects_wrong_types) {
    Config c;
    char p[1024];
    CHECK(load_text("t1.yaml", "batch_size: abc\n", &c, p, sizeof p) == -1, "abc accepted");
    CHECK(has(p) && has("'batch_size'") && has("positive integer") && has("'abc'"), "msg: %s", v3_last_error());
    CHECK(load_text("t2.yaml", "batch_size: 1.5\n", &c, p, sizeof p) == -1, "1.5 accepted");
    CHECK(has(p) && has("'batch_size'") && has("'1.5'"), "msg: %s", v3_last_error());
    CHECK(load_text("t3.yaml", "loss_config: 3\n", &c, p, sizeof p) == -1, "scalar section accepted");
    CHECK(has(p) && has("'loss_config'") && has("mapping"), "msg: %s", v3_last_error());
    CHECK(load_text("t4.yaml", "model_config:\n  n_atoms:\n    x: 1\n", &c, p, sizeof p) == -1, "map as int");
    CHECK(has(p) && has("'model_config.n_atoms'") && has("got a mapping"), "msg: %s", v3_last_error());
    CHECK(load_text("t5.yaml", "batch_size: \"32\"\n", &c, p, sizeof p) == -1, "quoted string as int");
    CHECK(load_text("t6.yaml", "loss_config:\n  supersample_content: 1\n", &c, p, sizeof p) == -1, "1 as bool");
    CHECK(has("'loss_config.supersample_content'"), "msg: %s", v3_last_error());
    CHECK(load_text("t7.yaml", "optimizer_config:\n  lr: fast\n", &c, p, sizeof p) == -1, "string as float");
    CHECK(has("'optimizer_config.lr'") && has("number"), "msg: %s", v3_last_error());
    CHECK(load_text("t8.yaml", "model_config:\n  n_atoms: 0\n", &c, p, sizeof p) == -1, "0 as positive int");
    CHECK(load_text("t9.yaml", "- 1\n- 2\n", &c, p, sizeof p) == -1, "top-level list accepted");
    CHECK(has(p), "msg: %s", v3_last_error());
    return 0;
}

TEST(config_accepts_yaml_number_and_bool_forms) {
    Config c;
    char p[1024];
    const char *y = "optimizer_config:\n  lr: 1e-3\n  eps: 2\n  weight_decay: 1.0e-2\n"
                    "loss_config:\n  supersample_content: yes\n  relativity: 7\n  widen_style: True\n"
                    "wandb: False\nnum_workers: 4\nload_checkpoint: None\nepochs: 10_000\n";
    CHECK(load_text("forms.yaml", y, &c, p, sizeof p) == 0, "%s", v3_last_error());
    CHECK(near(c.lr, 1e-3) && near(c.eps, 2) && near(c.weight_decay, 0.01), "lr %g eps %g", c.lr, c.eps);
    CHECK(c.supersample_content == 1 && near(c.relativity, 7) && c.epochs == 10000, "bool/int forms");
    CHECK(load_text("off.yaml", "loss_config:\n  supersample_content: False\n", &c, p, sizeof p) == 0, "False");
    CHECK(c.supersample_content == 0, "False read as %d", c.supersample_content);
    return 0;
}

TEST(config_random_seed_empty_or_integer) {
    Config c;
    char p[1024];
    CHECK(load_text("s1.yaml", "random_seed: 1234\n", &c, p, sizeof p) == 0, "%s", v3_last_error());
    CHECK(c.has_seed == 1 && c.random_seed == 1234, "seed %d %llu", c.has_seed, (unsigned long long)c.random_seed);
    CHECK(load_text("s2.yaml", "random_seed:\n", &c, p, sizeof p) == 0, "%s", v3_last_error());
    CHECK(c.has_seed == 0, "empty seed gave has_seed %d", c.has_seed);
    CHECK(load_text("s4.yaml", "random_seed: None\n", &c, p, sizeof p) == 0 && c.has_seed == 0, "None seed");
    CHECK(load_text("s3.yaml", "random_seed: -1\n", &c, p, sizeof p) == -1, "negative seed accepted");
    CHECK(has("'random_seed'"), "msg: %s", v3_last_error());
    return 0;
}

TEST(config_missing_file_and_syntax_error) {
    Config c;
    char p[1024];
    config_defaults(&c);
    CHECK(config_load("/nonexistent/dir/nope.yaml", &c) == -1, "missing file accepted");
    CHECK(has("/nonexistent/dir/nope.yaml") && has("cannot open config") && has("No such file"), "msg: %s",
          v3_last_error());
    CHECK(load_text("bad.yaml", "batch_size: 8\nmodel_config:\n  n_atoms: [1, 2\n", &c, p, sizeof p) == -1,
          "syntax error accepted");
    CHECK(has(p) && has("YAML syntax error"), "msg: %s", v3_last_error());
    CHECK(load_text("bad2.yaml", "a: b: c\n", &c, p, sizeof p) == -1, "syntax error accepted");
    CHECK(has(p) && has(":1:"), "msg: %s", v3_last_error());
    return 0;
}

TEST(config_failed_load_leaves_config_unchanged) {
    Config c, before;
    char p[1024];
    CHECK(load_text("half.yaml", "batch_size: 7\nepochs: x\n", &c, p, sizeof p) == -1, "bad epochs accepted");
    config_defaults(&before);
    CHECK(c.batch_size == before.batch_size && !strcmp(c.path, before.path), "partial load leaked: batch %d",
          c.batch_size);
    return 0;
}

TEST(config_arch_selection) {
    Config c;
    char p[1024];
    CHECK(load_text("a1.yaml", "dataloader: \"svhn_h5_dataloader\"\nmodel_config:\n  arch: tiny\n", &c, p,
                    sizeof p) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_TINY, "explicit arch lost: %s", arch_name(c.arch));
    CHECK(load_text("a2.yaml", "dataloader: \"mnist_dataloader\"\n", &c, p, sizeof p) == -1, "unknown dataloader");
    CHECK(has(p) && has("'dataloader'") && has("model_config.arch"), "msg: %s", v3_last_error());
    CHECK(load_text("a3.yaml", "batch_size: 4\n", &c, p, sizeof p) == 0, "%s", v3_last_error());
    CHECK(c.arch == ARCH_PHONENUMS, "default arch changed to %s", arch_name(c.arch));
    CHECK(load_text("a4.yaml", "model_config:\n  arch: resnet\n", &c, p, sizeof p) == -1, "bad arch");
    CHECK(has("'model_config.arch'") && has("'resnet'"), "msg: %s", v3_last_error());
    ArchKind a;
    for (int i = 0; i < ARCH_COUNT; i++)
        CHECK(arch_from_name(arch_name((ArchKind)i), &a) == 0 && a == (ArchKind)i, "round trip %d", i);
    CHECK(arch_from_name("Tiny", &a) == -1, "case");
    return 0;
}

TEST(config_set_overrides) {
    Config c;
    config_defaults(&c);
    CHECK(config_set(&c, "optimizer_config.lr=5e-4") == 0, "%s", v3_last_error());
    CHECK(near(c.lr, 5e-4), "lr %g", c.lr);
    CHECK(config_set(&c, "batch_size=8") == 0 && c.batch_size == 8, "batch_size");
    CHECK(config_set(&c, "loss_config.weights.commit_loss=0") == 0 && c.w_commit == 0, "commit");
    CHECK(config_set(&c, "loss_config.supersample_content=true") == 0 && c.supersample_content, "bool");
    CHECK(config_set(&c, "model_config.arch=tiny") == 0 && c.arch == ARCH_TINY, "arch");
    CHECK(config_set(&c, "name=\"run 1\"") == 0 && !strcmp(c.name, "run 1"), "name '%s'", c.name);
    CHECK(config_set(&c, "random_seed=42") == 0 && c.has_seed && c.random_seed == 42, "seed");
    CHECK(config_set(&c, "random_seed=") == 0 && !c.has_seed, "empty seed");
    return 0;
}

TEST(config_set_errors) {
    Config c;
    config_defaults(&c);
    CHECK(config_set(&c, "model_config.n_atomz=3") == -1, "unknown key accepted");
    CHECK(has("--set") && has("'model_config.n_atomz'") && has("n_atoms"), "msg: %s", v3_last_error());
    CHECK(config_set(&c, "batch_size=1.5") == -1, "1.5 accepted");
    CHECK(has("--set") && has("'batch_size'") && has("'1.5'"), "msg: %s", v3_last_error());
    CHECK(config_set(&c, "optimizer_config.lr=abc") == -1 && has("'optimizer_config.lr'"), "lr abc");
    CHECK(config_set(&c, "loss_config=3") == -1 && has("'loss_config'"), "section: %s", v3_last_error());
    CHECK(config_set(&c, "batch_size") == -1 && has("KEY=VALUE"), "no '=': %s", v3_last_error());
    CHECK(c.batch_size == 32 && near(c.lr, 1e-3), "failed --set changed the config");
    return 0;
}

/* Found by tests/fuzz/fuzz_config_set.c: a string that is not UTF-8 was accepted, and config_save then wrote a
 * run's config.yaml that config_load (libyaml) refuses. */
TEST(config_set_rejects_non_utf8_strings) {
    static const char *bad[] = {"data_dir=/data/caf\xe9", "name=\xc3", "name=\xc0\xaf", "name=\xed\xa0\x80",
                                "name=\xf4\x90\x80\x80", "name=\xff", "name=\x80"};
    Config c;
    config_defaults(&c);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(config_set(&c, bad[i]) == -1 && has("UTF-8"), "value %zu accepted: %s", i, v3_last_error());
    CHECK(!strcmp(c.name, "v3") && !c.data_dir[0], "a rejected --set changed the config");
    CHECK(config_set(&c, "data_dir=/data/caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf") == 0,
          "UTF-8 refused: %s", v3_last_error());
    return 0;
}

TEST(config_validate_rejects_bad_values) {
    Config c;
    config_defaults(&c);
    snprintf(c.path, sizeof c.path, "my.yaml");
    c.n_channels = 250; /* phonenums needs a multiple of 4 */
    CHECK(config_validate(&c) == -1, "n_channels 250 accepted");
    CHECK(has("my.yaml") && has("'model_config.n_channels'") && has("4"), "msg: %s", v3_last_error());
    c.n_channels = 264;
    c.arch = ARCH_INSNOTES; /* 264 is a multiple of 4 but not of 16 */
    CHECK(config_validate(&c) == -1 && has("16"), "insnotes n_channels 264 accepted");
    c.n_channels = 256;
    CHECK(config_validate(&c) == 0, "%s", v3_last_error());
    c.batch_size = 1;
    CHECK(config_validate(&c) == -1 && has("'batch_size'"), "batch_size 1 accepted");
    c.batch_size = 2;
    c.vq_ema_decay = 1.0;
    CHECK(config_validate(&c) == -1 && has("'model_config.vq_ema_decay'"), "decay 1 accepted");
    c.vq_ema_decay = 0.98;
    snprintf(c.precision, sizeof c.precision, "bfloat16");
    CHECK(config_validate(&c) == -1 && has("'precision'"), "bfloat16 accepted");
    snprintf(c.precision, sizeof c.precision, "float32");
    snprintf(c.scheduler, sizeof c.scheduler, "step");
    CHECK(config_validate(&c) == -1 && has("'optimizer_config.scheduler'"), "scheduler step accepted");
    snprintf(c.scheduler, sizeof c.scheduler, "cosine_annealing");
    c.n_fragments = 1;
    CHECK(config_validate(&c) == -1 && has("'model_config.n_fragments'"), "n_fragments 1 accepted");
    c.n_fragments = 2;
    c.relativity = 0;
    CHECK(config_validate(&c) == -1 && has("'loss_config.relativity'"), "relativity 0 accepted");
    c.relativity = 15;
    CHECK(!strcmp(c.tie_gradient, "pytorch"), "default tie_gradient '%s', want pytorch", c.tie_gradient);
    CHECK(config_set(&c, "loss_config.tie_gradient=zero") == 0 && config_validate(&c) == 0, "%s", v3_last_error());
    CHECK(config_set(&c, "loss_config.tie_gradient=noise") == 0, "%s", v3_last_error());
    CHECK(config_validate(&c) == -1 && has("my.yaml") && has("'loss_config.tie_gradient'") && has("'pytorch' or 'zero'"),
          "tie_gradient noise: %s", v3_last_error());
    return 0;
}

TEST(config_lr_factor_exponential) {
    Config c;
    config_defaults(&c);
    CHECK(near(config_lr_factor(&c, 0), 1.0), "epoch 0: %g", config_lr_factor(&c, 0));
    CHECK(near(config_lr_factor(&c, 20), 0.98), "epoch 20: %g", config_lr_factor(&c, 20));
    CHECK(near(config_lr_factor(&c, 10), pow(0.98, 0.5)), "epoch 10: %g", config_lr_factor(&c, 10));
    CHECK(near(config_lr_factor(&c, 100000), 0.02), "floor: %g", config_lr_factor(&c, 100000));
    c.warmup_epochs = 3;
    CHECK(near(config_lr_factor(&c, 2), 0.1) && near(config_lr_factor(&c, 3), 1.0), "warmup");
    CHECK(near(config_lr_factor(&c, 23), 0.98), "after warmup: %g", config_lr_factor(&c, 23));
    return 0;
}

TEST(config_lr_factor_cosine) {
    Config c;
    config_defaults(&c);
    snprintf(c.scheduler, sizeof c.scheduler, "cosine_annealing");
    CHECK(near(config_lr_factor(&c, 0), 1.0), "epoch 0: %g", config_lr_factor(&c, 0));
    CHECK(near(config_lr_factor(&c, 50), 0.01 + 0.5 * 0.99), "epoch 50: %g", config_lr_factor(&c, 50));
    CHECK(fabs(config_lr_factor(&c, 100) - 0.01) < 1e-12, "epoch 100: %g", config_lr_factor(&c, 100));
    c.warmup_epochs = 5;
    CHECK(near(config_lr_factor(&c, 4), 0.1) && near(config_lr_factor(&c, 5), 1.0), "warmup");
    return 0;
}

TEST(config_print_table) {
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/svhn.yaml", &c) == 0, "%s", v3_last_error());
    FILE *f = tmpfile();
    CHECK(f != NULL, "tmpfile");
    config_print(&c, f);
    rewind(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    CHECK(strstr(text, "| key | value |"), "no header");
    CHECK(strstr(text, "| model_config.n_atoms | 20 |"), "n_atoms row missing:\n%s", text);
    CHECK(strstr(text, "| model_config.arch | svhn |"), "arch row missing");
    CHECK(strstr(text, "| loss_config.supersample_content | true |"), "bool row missing");
    CHECK(strstr(text, "| optimizer_config.lr | 0.001 |"), "lr row missing");
    CHECK(!strstr(text, "wandb"), "ignored key printed");
    return 0;
}
