/* `v3 export` and `v3 import`: a run's weights to and from the authors' PyTorch state_dict in safetensors files
 * (include/weights_io.h). Exit codes as the rest of v3: 0 ok, 1 error (one line), 2 usage error. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "common.h"
#include "eval.h"
#include "rng.h"
#include "safetensors.h"
#include "weights_io.h"

#define PROBE_SEED 1234

static void export_usage(FILE *f) {
    fprintf(f,
            "usage: v3 export --run DIR --out FILE.safetensors [options]\n"
            "  writes a run's weights as the authors' PyTorch state_dict (CSAE: encoder.*, vq._codebook.*, decoder.*;\n"
            "  load with model.load_state_dict(safetensors.torch.load_file(FILE)))\n"
            "  --run DIR            a `v3 train --out` (or `v3 import --out`) directory                    required\n"
            "  --out FILE           the safetensors file to write                                         required\n"
            "  --checkpoint FILE    checkpoint to export               default: as v3 eval (lowest validation loss, else latest)\n"
            "  --probe-out FILE     also write eval-mode outputs on seeded normal inputs (x, z_c, z_s, q, ind, xhat)\n"
            "                       for numeric checks in PyTorch                                         default: none\n"
            "  --probe-fragments N  fragments in the probe file                                           default: 8\n"
            "exit codes: 0 ok, 1 error, 2 usage error\n");
}

static void import_usage(FILE *f) {
    fprintf(f,
            "usage: v3 import FILE.safetensors --config FILE --out DIR [--set KEY=VALUE ...]\n"
            "  builds the model of the config, loads a state_dict (every tensor required, exact shapes; F32, F64, F16\n"
            "  or BF16) and writes a run directory: DIR/config.yaml and DIR/checkpoints/latest.v3ck (step 0, fresh\n"
            "  AdamW state), which `v3 eval --run DIR` and `v3 train --out DIR --resume` use\n"
            "  --config FILE        YAML config describing the model in the file                          required\n"
            "  --out DIR            new run directory (an existing run there is an error)                 required\n"
            "  --set KEY=VALUE      override a config key (repeatable)\n"
            "exit codes: 0 ok, 1 error, 2 usage error\n");
}

/* Eval-mode outputs of the model on N seeded standard-normal fragments, for comparing with PyTorch. */
static int write_probe(Model *m, int N, const char *path) {
    const ArchSpec *a = &m->arch;
    size_t frag = (size_t)a->C * a->H * a->W;
    float *x = falloc(frag * N), *zc = falloc((size_t)N * m->dc), *q = falloc((size_t)N * m->dc);
    float *zs = falloc((size_t)N * m->ds), *xhat = falloc(frag * N);
    int64_t *ind = xmalloc(sizeof(int64_t) * (size_t)N);
    Rng g;
    rng_seed(&g, PROBE_SEED);
    for (size_t i = 0; i < frag * N; i++) x[i] = (float)rng_normal(&g);
    int rc = model_encode(m, x, N);
    if (!rc) { /* copies: model_decode may reallocate the model's activations */
        memcpy(zc, m->zc, sizeof(float) * (size_t)N * m->dc);
        memcpy(q, m->q, sizeof(float) * (size_t)N * m->dc);
        memcpy(zs, m->zs, sizeof(float) * (size_t)N * m->ds);
        for (int i = 0; i < N; i++) ind[i] = m->ind[i];
        rc = model_decode(m, q, zs, N, xhat);
    }
    StWriter *w = st_writer_new();
    int64_t sx[4] = {N, a->C, a->H, a->W}, sc[2] = {N, m->dc}, ss[2] = {N, m->ds}, si[1] = {N};
    char seed[32];
    snprintf(seed, sizeof seed, "%d", PROBE_SEED);
    if (!rc)
        rc = st_add_meta(w, "format", "v3-probe") || st_add_meta(w, "seed", seed) ||
             st_add_meta(w, "mode", "eval: BatchNorm running statistics, codebook frozen; xhat = decode(q, z_s)") ||
             st_add(w, "x", ST_F32, 4, sx, x) || st_add(w, "z_c", ST_F32, 2, sc, zc) ||
             st_add(w, "z_s", ST_F32, 2, ss, zs) || st_add(w, "q", ST_F32, 2, sc, q) ||
             st_add(w, "ind", ST_I64, 1, si, ind) || st_add(w, "xhat", ST_F32, 4, sx, xhat) ||
             st_writer_save(w, path) ? -1 : 0;
    st_writer_free(w);
    ffree(x); ffree(zc); ffree(q); ffree(zs); ffree(xhat);
    free(ind);
    return rc;
}

static int do_export(const char *run, const char *ckpt, const char *out, const char *probe, int probe_n) {
    EvalRun r;
    if (eval_run_open(&r, run, ckpt, NULL)) { eval_run_close(&r); return -1; }
    Model *m = r.m;
    char step[32];
    snprintf(step, sizeof step, "%llu", (unsigned long long)r.meta.step);
    printf("v3 export: checkpoint %s (step %llu, %s)\n", r.ckpt, (unsigned long long)r.meta.step,
           ckpt ? "given" : isnan(r.meta.val_loss) ? "latest: no validated epoch checkpoint" : "lowest validation loss");
    StWriter *w = st_writer_new();
    /* every training forward runs each BatchNorm once in train mode: PyTorch's num_batches_tracked is the step */
    int rc = weights_export(m, w, (long)r.meta.step) || st_add_meta(w, "step", step) ||
             st_add_meta(w, "checkpoint", r.ckpt) || st_writer_save(w, out) ? -1 : 0;
    st_writer_free(w);
    if (!rc)
        printf("v3 export: wrote %s: %zu parameters, %zu BatchNorm statistics, codebook %d x %d\n", out, m->n_params,
               m->n_bufs, m->vq.K, m->vq.d);
    if (!rc && probe) {
        rc = write_probe(m, probe_n, probe);
        if (!rc) printf("v3 export: wrote %s: probe of %d fragments (seed %d)\n", probe, probe_n, PROBE_SEED);
    }
    eval_run_close(&r);
    return rc;
}

int cmd_export(int argc, char **argv) {
    const char *run = NULL, *out = NULL, *ckpt = NULL, *probe = NULL;
    int probe_n = 8;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--run") && has) run = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--checkpoint") && has) ckpt = argv[++i];
        else if (!strcmp(a, "--probe-out") && has) probe = argv[++i];
        else if (!strcmp(a, "--probe-fragments") && has) {
            char *end;
            errno = 0;
            long v = strtol(argv[++i], &end, 10);
            if (errno || end == argv[i] || *end || v < 1 || v > 100000)
                return cli_usage_error("export", "--probe-fragments expects an integer from 1 to 100000, got", argv[i]);
            probe_n = (int)v;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { export_usage(stdout); return 0; }
        else return cli_usage_error("export", "unknown or incomplete option", a);
    }
    if (!run) return cli_usage_error("export", "missing required option", "--run DIR");
    if (!out) return cli_usage_error("export", "missing required option", "--out FILE");
    return do_export(run, ckpt, out, probe, probe_n) ? cli_fail() : 0;
}

/* mkdir -p (the run directory and its checkpoints/). */
static int make_dirs(const char *path) {
    char buf[1100];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return v3_error("%s: path too long", path);
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p) continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return v3_error("%s: cannot create directory: %s", buf, strerror(errno));
        *p = c;
        if (!c) return 0;
    }
}

static int do_import(const char *file, const char *cfg_path, const char *const *sets, int n_sets, const char *out) {
    Config c;
    config_defaults(&c);
    if (config_load(cfg_path, &c)) return -1;
    for (int i = 0; i < n_sets; i++)
        if (config_set(&c, sets[i])) return -1;
    uint64_t seed = c.has_seed ? c.random_seed : 0; /* as `v3 train`, so --resume accepts the checkpoint */
    Model *m = model_build(&c, seed);
    if (!m) return -1;
    StFile f;
    if (st_read(file, &f)) { model_free(m); return -1; }
    int rc = weights_import(m, &f), nt = f.n;
    st_free(&f);
    char ckdir[1100], latest[1200], cfg_out[1200];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", out);
    snprintf(latest, sizeof latest, "%s/latest.v3ck", ckdir);
    snprintf(cfg_out, sizeof cfg_out, "%s/config.yaml", out);
    if (!rc && access(latest, F_OK) == 0)
        rc = v3_error("%s: a run already exists here; expected a new --out directory", latest);
    /* latest.v3ck: what `v3 eval` falls back to without validated epoch checkpoints, and what --resume loads */
    CkptMeta meta = {0, seed, 0, NAN};
    if (!rc) rc = make_dirs(ckdir) || config_save(&m->cfg, cfg_out) || checkpoint_save(latest, m, &meta) ? -1 : 0;
    if (!rc)
        printf("v3 import: %s -> %s: %d tensors, %zu parameters, codebook %d x %d%s; evaluate with v3 eval --run %s\n",
               file, latest, nt, m->n_params, m->vq.K, m->vq.d,
               m->vq.initted ? "" : " (not initialised: k-means runs on the first training batch)", out);
    model_free(m);
    return rc;
}

int cmd_import(int argc, char **argv) {
    const char *file = NULL, *cfg = NULL, *out = NULL, *sets[64];
    int ns = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--config") && has) cfg = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--set") && has) {
            if (ns == 64) return cli_usage_error("import", "too many --set options at", argv[i + 1]);
            sets[ns++] = argv[++i];
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { import_usage(stdout); return 0; }
        else if (a[0] == '-' || file) return cli_usage_error("import", a[0] == '-' ? "unknown or incomplete option" : "more than one input file at", a);
        else file = a;
    }
    if (!file) return cli_usage_error("import", "missing the input file", "FILE.safetensors");
    if (!cfg) return cli_usage_error("import", "missing required option", "--config FILE");
    if (!out) return cli_usage_error("import", "missing required option", "--out DIR");
    return do_import(file, cfg, sets, ns, out) ? cli_fail() : 0;
}
