/* `v3 eval` and `v3 transfer` end to end on small generated datasets, and their errors. The metrics themselves are
 * tested on hand-made embeddings in test_eval_metrics.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "eval.h"
#include "insnotes.h"
#include "phonenums.h"
#include "plot.h"
#include "testing.h"
#include "train.h"

static void write_cfg(const char *path, const char *data, const char *arch, int frags, int H, int W, int K, int batch) {
    FILE *f = fopen(path, "w");
    int insnotes = !strcmp(arch, "insnotes");
    fprintf(f, "name: \"t\"\ndata_dir: \"%s\"\nrandom_seed: 3\nbatch_size: %d\nsave_top_k: 1\n"
               "loss_config:\n  relativity: 15\n"
               "model_config:\n  arch: %s\n  n_channels: %d\n  n_fragments: %d\n  fragment_len: %d\n  n_feature: %d\n"
               "  d_emb_c: 8\n  d_emb_s: 8\n  n_atoms: %d\n  threshold_ema_dead_code: 0.5\n",
            data, batch, arch, insnotes ? 128 : 16, frags, W, H, K);
    fclose(f);
}

static int gen_phonenums(const char *dir, int pages, int ood) {
    PhonenumsParams p;
    phonenums_defaults(&p);
    p.pages = pages;
    p.ood = ood;
    p.seed = 9;
    return phonenums_generate(dir, &p);
}

/* A CPU transfer with few Griffin-Lim iterations. */
static TransferOpts transfer_opts(const char *run, const char *content, const char *style, const char *out) {
    TransferOpts o;
    memset(&o, 0, sizeof o);
    o.run_dir = run;
    o.content = content;
    o.style = style;
    o.out = out;
    o.device = "cpu";
    o.gl_iters = 4;
    return o;
}

static int png_ok(const char *path, int w, int h) {
    uint8_t *pix = NULL;
    int gw, gh;
    if (png_read_rgb(path, w, h, &pix, &gw, &gh)) return 0;
    free(pix);
    return gw > 0 && gh > 0;
}

TEST(eval_phonenums_end_to_end) {
    char *dir = test_tmpdir("evalpn"), data[600], ood[600], cfg[700], run[700];
    snprintf(data, sizeof data, "%s/pn", dir);
    snprintf(ood, sizeof ood, "%s/pn-ood", dir);
    if (gen_phonenums(data, 40, 0)) {
        if (strstr(v3_last_error(), "install")) { free(dir); SKIP("%s", v3_last_error()); }
        CHECK(0, "generate: %s", v3_last_error());
    }
    CHECK(gen_phonenums(ood, 96, 1) == 0, "generate OOD: %s", v3_last_error()); /* 12 pages per colour */
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    write_cfg(cfg, data, "phonenums", 10, 48, 32, 10, 8);
    snprintf(run, sizeof run, "%s/run", dir);
    CHECK(test_train_cpu(cfg, run, 4, 0, NULL, NULL) == 0, "train: %s", v3_last_error()); /* 32 train pages: 1 epoch */
    EvalOpts o;
    eval_opts_defaults(&o);
    o.run_dir = run;
    o.tsne_points = 120;
    o.sheet_styles = 3;
    CHECK(eval_run(&o) == 0, "eval: %s", v3_last_error());
    unsigned char *js = NULL;
    size_t n = 0;
    CHECK(test_read_all(test_path(run, "eval/results.json"), &js, &n) == 0, "no results.json");
    const char *t = (const char *)js;
    /* every section present and every rate a rate */
    const char *keys[] = {"purity_authors", "purity_weighted", "one_to_one_accuracy", "content_from_content",
                          "style_from_content", "style_from_quantised", "content_from_style", "style_from_style"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        double v = test_json_number(t, NULL, keys[i]);
        CHECK(v >= 0 && v <= 1, "%s = %g in\n%s", keys[i], v, t);
    }
    const char *pr[] = {"\"content_by_content\"", "\"content_by_style\"", "\"quantised_by_content\"",
                        "\"quantised_by_style\"", "\"style_by_style\"", "\"style_by_content\""};
    for (size_t i = 0; i < 6; i++) {
        double v = test_json_number(t, pr[i], "auc");
        CHECK(v > 0 && v <= 1, "%s auc = %g", pr[i], v);
    }
    CHECK(test_json_number(t, "\"zero_shot\"", "accuracy_authors") >= 0, "no zero-shot accuracy:\n%s", t);
    CHECK(test_json_number(t, "\"10_shot\"", "steps") >= 1, "no 10-shot adaptation:\n%s", t);
    CHECK(test_json_number(t, NULL, "fragments") == 40, "4 test pages x 10 fragments expected:\n%s", t);
    free(js);
    if (plot_available()) {
        const char *figs[] = {"confusion.png", "tsne_content_by_content.png", "tsne_content_by_style.png",
                              "tsne_style_by_style.png", "tsne_style_by_content.png", "curves.png",
                              "codebook_sheet.png"};
        char p[800];
        for (size_t i = 0; i < sizeof figs / sizeof *figs; i++) {
            snprintf(p, sizeof p, "%s/eval/%s", run, figs[i]);
            CHECK(png_ok(p, 0, 0), "%s: %s", p, v3_last_error());
        }
    }
    /* the OOD test split: results beside, not over, the test split's */
    o.split = "ood";
    o.few_shot = 0;
    o.probe_samples = -1;
    CHECK(eval_run(&o) == 0, "eval --split ood: %s", v3_last_error());
    CHECK(test_read_all(test_path(run, "eval-ood/results.json"), &js, &n) == 0, "no eval-ood/results.json");
    CHECK(strstr((char *)js, "\"split\": \"ood\"") && test_json_number((char *)js, NULL, "fragments") == 160,
          "16 OOD test pages expected:\n%s", (char *)js);
    free(js);
    CHECK(test_read_all(test_path(run, "eval/results.json"), &js, &n) == 0 && strstr((char *)js, "\"split\": \"test\""),
          "the test split's results were overwritten");
    free(js);
    /* transfer: the content of test sample 0 in the style of test sample 1, a 320 x 48 page */
    TransferOpts to = transfer_opts(run, "test:0", "1", test_path(dir, "t.png"));
    CHECK(transfer_run(&to) == 0, "transfer: %s", v3_last_error());
    CHECK(png_ok(to.out, 320, 48), "transfer PNG: %s", v3_last_error());
    to.style = "test:99";
    CHECK(transfer_run(&to) == -1 && strstr(v3_last_error(), "out of range"), "sample 99: %s", v3_last_error());
    to.style = "test:x";
    CHECK(transfer_run(&to) == -1 && strstr(v3_last_error(), "SPLIT:INDEX"), "bad sample: %s", v3_last_error());
    to.style = "1";
    to.out = test_path(dir, "t.wav");
    CHECK(transfer_run(&to) == -1 && strstr(v3_last_error(), "InsNotes"), "wav from images: %s", v3_last_error());
    return test_done(0, dir);
}

TEST(eval_insnotes_writes_audio) {
    const char *sf = "/usr/share/sounds/sf2/TimGM6mb.sf2";
    if (access(sf, R_OK)) SKIP("%s not installed (Debian timgm6mb-soundfont)", sf);
    char *dir = test_tmpdir("evalin"), data[600], cfg[700], run[700];
    snprintf(data, sizeof data, "%s/in", dir);
    InsnotesParams p;
    insnotes_defaults(&p);
    p.soundfont = sf;
    p.files_per_instrument = 2; /* 24 files: 2 val, 2 test */
    p.velocity_layers = 1;
    p.seed = 2;
    if (insnotes_generate(data, &p)) {
        if (strstr(v3_last_error(), "install")) { free(dir); SKIP("%s", v3_last_error()); }
        CHECK(0, "generate: %s", v3_last_error());
    }
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    write_cfg(cfg, data, "insnotes", 3, 512, 32, 4, 4);
    snprintf(run, sizeof run, "%s/run", dir);
    CHECK(test_train_cpu(cfg, run, 1, 0, NULL, NULL) == 0, "train: %s", v3_last_error());
    EvalOpts o;
    eval_opts_defaults(&o);
    o.run_dir = run;
    o.tsne_points = 0;
    o.sheet_styles = 2;
    o.gl_iters = 4;
    o.probe_samples = -1;
    o.device = "cpu";
    int rc = eval_run(&o);
    if (rc && strstr(v3_last_error(), "libsndfile")) { test_rm_tree(dir); SKIP("%s", v3_last_error()); }
    CHECK(rc == 0, "eval: %s", v3_last_error());
    unsigned char *js = NULL;
    size_t n = 0;
    CHECK(test_read_all(test_path(run, "eval/results.json"), &js, &n) == 0, "no results.json");
    CHECK(strstr((char *)js, "\"linear_probe\": null"), "probes were asked off");
    /* 4 atoms x 2 styles, each a listed, non-empty WAV of 31 hops */
    for (int k = 0; k < 4; k++)
        for (int s = 0; s < 2; s++) {
            char name[64], *path;
            snprintf(name, sizeof name, "audio/atom%02d_style%02d.wav", k, s);
            CHECK(strstr((char *)js, name), "%s not in results.json", name);
            path = test_path(run, "eval");
            path = test_path(path, name);
            unsigned char *w = NULL;
            size_t wn = 0;
            CHECK(test_read_all(path, &w, &wn) == 0 && wn == 44 + 2 * 512 * 31 && !memcmp(w, "RIFF", 4),
                  "%s: %zu bytes", path, wn);
            free(w);
        }
    free(js);
    TransferOpts to = transfer_opts(run, "test:0", "test:1", test_path(dir, "t.wav"));
    CHECK(transfer_run(&to) == 0, "transfer: %s", v3_last_error());
    unsigned char *w = NULL;
    size_t wn = 0;
    CHECK(test_read_all(to.out, &w, &wn) == 0 && wn == 44 + 2 * 512 * (3 * 32 - 1), "transfer wav %zu bytes", wn);
    free(w);
    return test_done(0, dir);
}

TEST(eval_rejects_missing_and_mismatched_checkpoints) {
    char *dir = test_tmpdir("evalerr"), data[600], cfg[700], run[700], other[700];
    snprintf(data, sizeof data, "%s/pn", dir);
    if (gen_phonenums(data, 20, 0)) {
        if (strstr(v3_last_error(), "install")) { free(dir); SKIP("%s", v3_last_error()); }
        CHECK(0, "generate: %s", v3_last_error());
    }
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    EvalOpts o;
    eval_opts_defaults(&o);
    o.run_dir = run;
    CHECK(eval_run(&o) == -1 && strstr(v3_last_error(), "config.yaml"), "no run: %s", v3_last_error());
    write_cfg(cfg, data, "phonenums", 10, 48, 32, 10, 8);
    CHECK(test_train_cpu(cfg, run, 1, 0, NULL, NULL) == 0, "train: %s", v3_last_error());
    write_cfg(cfg, data, "phonenums", 10, 48, 32, 7, 8); /* another codebook size */
    CHECK(test_train_cpu(cfg, other, 1, 0, NULL, NULL) == 0, "train other: %s", v3_last_error());
    o.checkpoint = test_path(run, "checkpoints/nope.v3ck");
    CHECK(eval_run(&o) == -1 && strstr(v3_last_error(), "nope.v3ck"), "missing checkpoint: %s", v3_last_error());
    char ck[800];
    snprintf(ck, sizeof ck, "%s/checkpoints/latest.v3ck", other);
    o.checkpoint = ck;
    CHECK(eval_run(&o) == -1 && strstr(v3_last_error(), ck), "K=7 checkpoint on a K=10 config: %s", v3_last_error());
    o.checkpoint = NULL;
    char lp[800];
    snprintf(lp, sizeof lp, "%s/checkpoints/latest.v3ck", run);
    unlink(lp);
    CHECK(eval_run(&o) == -1 && strstr(v3_last_error(), "no checkpoint"), "empty checkpoints: %s", v3_last_error());
    o.run_dir = other;
    o.split = "ood";
    CHECK(eval_run(&o) == -1 && strstr(v3_last_error(), "--ood-data"), "no OOD set: %s", v3_last_error());
    return test_done(0, dir);
}

TEST(config_save_round_trips) {
    const char *cfgs[] = {"configs/phonenums.yaml", "configs/insnotes.yaml", "configs/tiny.yaml", "configs/svhn.yaml"};
    char *dir = test_tmpdir("cfgsave");
    for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
        Config a, b;
        config_defaults(&a);
        CHECK(config_load(cfgs[i], &a) == 0, "%s: %s", cfgs[i], v3_last_error());
        CHECK(config_set(&a, "optimizer_config.lr=3.3e-4") == 0 && config_set(&a, "name=a \"quoted\" name") == 0,
              "set: %s", v3_last_error());
        CHECK(config_save(&a, test_path(dir, "c.yaml")) == 0, "save: %s", v3_last_error());
        config_defaults(&b);
        CHECK(config_load(test_path(dir, "c.yaml"), &b) == 0, "reload of %s: %s", cfgs[i], v3_last_error());
        memcpy(b.path, a.path, sizeof a.path);
        CHECK(!memcmp(&a, &b, sizeof a), "%s: the reloaded config differs", cfgs[i]);
    }
    return test_done(0, dir);
}

/* Found by tests/fuzz/fuzz_config.c: strings holding line breaks or control characters (YAML escapes or a multi-line
 * quoted scalar in the file) were written raw, so the reload folded the line break into a space or refused the file. */
TEST(config_save_escapes_line_breaks_and_controls) {
    static const char *vals[] = {"a\nb", "tab\there", "cr\r", "\x01\x1f\x7f", "nel\xc2\x85 c1\xc2\x9f",
                                 "ls\xe2\x80\xa8ps\xe2\x80\xa9", "nc\xef\xbf\xbe\xef\xbf\xbf",
                                 "\\ \" \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"};
    char *dir = test_tmpdir("cfgesc");
    const char *src = test_path(dir, "src.yaml");
    FILE *f = fopen(src, "w");
    CHECK(f, "cannot write %s", src);
    fputs("name: \"two\n\n  lines \\x01\\t\\u2028\"\ndata_dir: \"folded\n  line\"\n", f);
    fclose(f);
    for (size_t i = 0; i <= sizeof vals / sizeof *vals; i++) {
        Config a, b;
        config_defaults(&a);
        if (i == 0) CHECK(config_load(src, &a) == 0, "%s: %s", src, v3_last_error());
        else snprintf(a.data_dir, sizeof a.data_dir, "%s", vals[i - 1]);
        CHECK(config_save(&a, test_path(dir, "c.yaml")) == 0, "save: %s", v3_last_error());
        config_defaults(&b);
        CHECK(config_load(test_path(dir, "c.yaml"), &b) == 0, "reload of string %zu: %s", i, v3_last_error());
        memcpy(b.path, a.path, sizeof a.path);
        CHECK(!strcmp(a.name, b.name) && !strcmp(a.data_dir, b.data_dir) && !memcmp(&a, &b, sizeof a),
              "string %zu: '%s' '%s' reloaded as '%s' '%s'", i, a.name, a.data_dir, b.name, b.data_dir);
    }
    return test_done(0, dir);
}
