/* `v3 export` and `v3 import` as a user runs them (./v3 from the repository root) on a small trained run:
 * the exported weights and the probe file against the run's model bit for bit, an imported run that
 * `v3 eval` evaluates, usage errors (exit 2) and one-line errors (exit 1). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "dataset.h"
#include "eval.h"
#include "plot.h"
#include "rng.h"
#include "safetensors.h"
#include "testing.h"
#include "weights_io.h"


static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Synthetic data and a tiny config in dir; then a 4-step run (one validated epoch checkpoint + latest). */
static int train_tiny_run(const char *dir, char *run, size_t cap) {
    char data[700], cfg[700];
    snprintf(data, sizeof data, "%s/data", dir);
    SynthParams sp;
    synth_defaults(&sp);
    sp.n_train = 20; sp.n_val = 6; sp.n_test = 6; sp.n_frag = 3; sp.n_content = 4; sp.n_style = 3;
    sp.H = sp.W = 8;
    if (synth_generate(data, &sp)) return -1;
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    FILE *f = fopen(cfg, "w");
    if (!f) return -1;
    fprintf(f, "name: \"t\"\ndata_dir: \"%s\"\nrandom_seed: 3\nbatch_size: 8\nsave_top_k: 2\n"
               "loss_config:\n  relativity: 15\n"
               "model_config:\n  arch: tiny\n  n_channels: 16\n  n_fragments: 3\n  fragment_len: 8\n  n_feature: 8\n"
               "  d_emb_c: 6\n  d_emb_s: 5\n  n_atoms: 4\n  threshold_ema_dead_code: 0.5\n", data);
    if (fclose(f)) return -1;
    snprintf(run, cap, "%s/run", dir);
    return test_train_cpu(cfg, run, 4, 0, NULL, NULL);
}

/* The probe file against the run's model: x is the seeded normal draw, the rest model_encode/model_decode of it. */
static int check_probe(EvalRun *r, const char *path, int N) {
    StFile f;
    CHECK(st_read(path, &f) == 0, "probe: %s", v3_last_error());
    Model *m = r->m;
    const ArchSpec *a = &m->arch;
    size_t frag = (size_t)a->C * a->H * a->W;
    int64_t sx[4] = {N, a->C, a->H, a->W}, sc[2] = {N, m->dc}, ss[2] = {N, m->ds};
    float *x = falloc(frag * N), *want_x = falloc(frag * N), *zc = falloc((size_t)N * m->dc), *q = falloc((size_t)N * m->dc);
    float *zs = falloc((size_t)N * m->ds), *xhat = falloc(frag * N), *want_xhat = falloc(frag * N);
    poison(x, frag * N); poison(zc, (size_t)N * m->dc); poison(q, (size_t)N * m->dc);
    poison(zs, (size_t)N * m->ds); poison(xhat, frag * N);
    Rng g;
    rng_seed(&g, 1234);
    for (size_t i = 0; i < frag * N; i++) want_x[i] = (float)rng_normal(&g);
    const StTensor *ti = st_find(&f, "ind");
    int ok = !st_get_f32(&f, "x", 4, sx, x) && !st_get_f32(&f, "z_c", 2, sc, zc) && !st_get_f32(&f, "q", 2, sc, q) &&
             !st_get_f32(&f, "z_s", 2, ss, zs) && !st_get_f32(&f, "xhat", 4, sx, xhat) && ti && ti->dtype == ST_I64 &&
             ti->ndim == 1 && ti->shape[0] == N && f.n == 6 && st_meta(&f, "format") &&
             !strcmp(st_meta(&f, "format"), "v3-probe");
    int rc = 0;
    if (!ok) { fprintf(stderr, "    probe tensors: %s\n", v3_last_error()); rc = 1; }
    if (!rc && memcmp(x, want_x, sizeof(float) * frag * N)) { fprintf(stderr, "    x is not the seed-1234 draw\n"); rc = 1; }
    if (!rc && model_encode(m, x, N)) { fprintf(stderr, "    encode: %s\n", v3_last_error()); rc = 1; }
    if (!rc) {
        int64_t ind;
        for (int i = 0; i < N && !rc; i++) {
            memcpy(&ind, f.data + ti->begin + 8 * (size_t)i, 8);
            if (ind != m->ind[i]) { fprintf(stderr, "    ind[%d] %lld, model %d\n", i, (long long)ind, m->ind[i]); rc = 1; }
        }
        if (memcmp(zc, m->zc, sizeof(float) * (size_t)N * m->dc) || memcmp(q, m->q, sizeof(float) * (size_t)N * m->dc) ||
            memcmp(zs, m->zs, sizeof(float) * (size_t)N * m->ds)) {
            fprintf(stderr, "    z_c / q / z_s differ from model_encode\n");
            rc = 1;
        }
    }
    if (!rc && model_decode(m, q, zs, N, want_xhat)) { fprintf(stderr, "    decode: %s\n", v3_last_error()); rc = 1; }
    if (!rc && memcmp(xhat, want_xhat, sizeof(float) * frag * N)) { fprintf(stderr, "    xhat differs\n"); rc = 1; }
    st_free(&f);
    ffree(x); ffree(want_x); ffree(zc); ffree(q); ffree(zs); ffree(xhat); ffree(want_xhat);
    return rc;
}

TEST(weights_cli_export_import_eval) {
    NEED_V3();
    char *dir = test_tmpdir("wcli");
    char run[800], w[800], probe[800], imp[800], cmd[4096], out[16384];
    CHECK(train_tiny_run(dir, run, sizeof run) == 0, "train: %s", v3_last_error());
    snprintf(w, sizeof w, "%s/w.safetensors", dir);
    snprintf(probe, sizeof probe, "%s/p.safetensors", dir);
    snprintf(imp, sizeof imp, "%s/imported", dir);
    snprintf(cmd, sizeof cmd, "./v3 export --run %s --out %s --probe-out %s --probe-fragments 5", run, w, probe);
    int rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 0, "export: exit %d: %s", rc, out);
    /* the checkpoint `v3 eval` would choose, named in the output */
    EvalRun r;
    CHECK(eval_run_open(&r, run, NULL, NULL) == 0, "open run: %s", v3_last_error());
    CHECK(strstr(r.ckpt, "/epoch") && strstr(out, r.ckpt), "export did not say it used %s: %s", r.ckpt, out);
    /* the file holds exactly the run's model */
    Model *b = model_build(&r.cfg, 99);
    CHECK(b && memcmp(b->p, r.m->p, sizeof(float) * b->n_params), "fresh model");
    StFile f;
    CHECK(st_read(w, &f) == 0, "read export: %s", v3_last_error());
    int ok = weights_import(b, &f) == 0 && st_meta(&f, "step") && !strcmp(st_meta(&f, "step"), "3");
    st_free(&f);
    CHECK(ok, "import of the export: %s", v3_last_error());
    CHECK(!memcmp(b->p, r.m->p, sizeof(float) * b->n_params) && !memcmp(b->buf, r.m->buf, sizeof(float) * b->n_bufs) &&
          !memcmp(b->vq.embed, r.m->vq.embed, sizeof(float) * (size_t)b->vq.K * b->vq.d),
          "exported weights differ from the run's checkpoint");
    model_free(b);
    CHECK(check_probe(&r, probe, 5) == 0, "probe file");
    /* import into a new run directory, then evaluate it */
    snprintf(cmd, sizeof cmd, "./v3 import %s --config %s/config.yaml --out %s", w, run, imp);
    rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 0 && lines(out) == 1 && strstr(out, "latest.v3ck"), "import: exit %d: %s", rc, out);
    char ck[900];
    snprintf(ck, sizeof ck, "%s/checkpoints/latest.v3ck", imp);
    Model *c = model_build(&r.cfg, 98);
    CkptMeta meta;
    CHECK(c && checkpoint_load(ck, c, &meta) == 0, "load imported checkpoint: %s", v3_last_error());
    int adam_zero = c->adam_t == 0;
    for (size_t i = 0; i < c->n_trainable; i++) adam_zero = adam_zero && c->m[i] == 0 && c->v[i] == 0;
    ok = !memcmp(c->p, r.m->p, sizeof(float) * c->n_params) && !memcmp(c->buf, r.m->buf, sizeof(float) * c->n_bufs) &&
         c->vq.initted == 1.0f && meta.step == 0 && isnan(meta.val_loss) && meta.seed == 3;
    model_free(c);
    eval_run_close(&r);
    CHECK(ok && adam_zero, "imported checkpoint: weights, step 0, seed 3, fresh AdamW expected");
    /* with figures: an imported run has no log.jsonl, so no curves, but everything else */
    snprintf(cmd, sizeof cmd, "./v3 eval --run %s --quiet --tsne-points 0 --no-few-shot --probe-samples -1", imp);
    rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 0, "eval of the imported run: exit %d: %s", rc, out);
    CHECK(access(test_path(imp, "eval/results.json"), R_OK) == 0, "no eval/results.json for the imported run");
    CHECK(!plot_available() || (access(test_path(imp, "eval/confusion.png"), R_OK) == 0 &&
                                access(test_path(imp, "eval/curves.png"), F_OK) != 0),
          "imported run: confusion.png expected, curves.png not");
    /* importing over an existing run, and a config that does not match the file: one-line errors */
    snprintf(cmd, sizeof cmd, "./v3 import %s --config %s/config.yaml --out %s", w, run, imp);
    rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, "already exists"), "import over a run: exit %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./v3 import %s --config %s/config.yaml --set model_config.n_atoms=5 --out %s/other", w,
             run, dir);
    rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 1 && lines(out) == 1 && strstr(out, w) && strstr(out, "vq._codebook.cluster_size") &&
          strstr(out, "expected [1, 5]"), "import with another codebook size: exit %d: %s", rc, out);
    return test_done(0, dir);
}

TEST(weights_cli_usage_and_errors) {
    NEED_V3();
    struct { const char *cmd; int rc; const char *needle; } cases[] = {
        {"./v3 export --help", 0, "usage: v3 export"},
        {"./v3 import --help", 0, "usage: v3 import"},
        {"./v3 export --out x.safetensors", 2, "--run DIR"},
        {"./v3 export --run r", 2, "--out FILE"},
        {"./v3 export --run r --out x --bogus", 2, "--bogus"},
        {"./v3 export --run r --out x --probe-fragments 0", 2, "--probe-fragments"},
        {"./v3 export --run r --out x --probe-fragments 3x", 2, "3x"},
        {"./v3 import", 2, "FILE.safetensors"},
        {"./v3 import a.safetensors --out d", 2, "--config FILE"},
        {"./v3 import a.safetensors --config c", 2, "--out DIR"},
        {"./v3 import a.safetensors b.safetensors --config c --out d", 2, "b.safetensors"},
        {"./v3 import a.safetensors --config c --out d --frob", 2, "--frob"},
        {"./v3 export --run /nonexistent/run --out /tmp/v3_never.safetensors", 1, "config.yaml"},
        {"./v3 import /nonexistent/w.safetensors --config configs/tiny.yaml --out /tmp/v3_never_run", 1,
         "/nonexistent/w.safetensors"},
    };
    char out[8192];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = test_sh(cases[i].cmd, out, sizeof out);
        CHECK(rc == cases[i].rc, "%s: exit %d, want %d: %s", cases[i].cmd, rc, cases[i].rc, out);
        CHECK(strstr(out, cases[i].needle), "%s: output lacks '%s': %s", cases[i].cmd, cases[i].needle, out);
        if (rc) CHECK(lines(out) == 1, "%s: %d lines, want 1: %s", cases[i].cmd, lines(out), out);
    }
    CHECK(access("/tmp/v3_never_run", F_OK) != 0, "a failed import left a run directory behind");
    return 0;
}
