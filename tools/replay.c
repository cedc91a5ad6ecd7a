/* tools/replay: our CPU training step run on a recorded batch stream from a given initial state, to compare our
 * training with the authors' code step for step (tools/authors_run.py train --dump writes the two inputs).
 *
 *   make tools/replay
 *   tools/replay --config CFG --weights OUT/init.safetensors --batches OUT/batches.bin [--steps N]
 *                [--set section.key=value ...] > ours.jsonl
 *
 * Prints one JSON line per step: the loss terms, F_c S_c F_s S_s, the pairs of fragments of a sample on the same
 * code and the codes used (the fields tools/authors_run.py writes), then `tools/authors_run.py compare`. The
 * batches file: "V3RB", int32 version 1, then per step float32 lr, int32 B, n, C, H, W and B*n*C*H*W float32. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "safetensors.h"
#include "weights_io.h"

static int usage(void) {
    fprintf(stderr, "usage: tools/replay --config CFG --weights INIT.safetensors --batches BATCHES.bin [--steps N] "
                    "[--set section.key=value ...]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *cfg = NULL, *weights = NULL, *batches = NULL;
    long steps = -1;
    Config c;
    config_defaults(&c);
    for (int i = 1; i < argc; i++) {
        int has = i + 1 < argc;
        if (!strcmp(argv[i], "--config") && has) cfg = argv[++i];
        else if (!strcmp(argv[i], "--weights") && has) weights = argv[++i];
        else if (!strcmp(argv[i], "--batches") && has) batches = argv[++i];
        else if (!strcmp(argv[i], "--steps") && has) steps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--set") && has) i++; /* applied after the file, below */
        else return usage();
    }
    if (!cfg || !weights || !batches) return usage();
    if (config_load(cfg, &c)) { fprintf(stderr, "replay: %s\n", v3_last_error()); return 1; }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--set") && i + 1 < argc && config_set(&c, argv[++i])) {
            fprintf(stderr, "replay: %s\n", v3_last_error());
            return 1;
        }
    if (config_validate(&c)) { fprintf(stderr, "replay: %s\n", v3_last_error()); return 1; }
    Model *m = model_build(&c, 0);
    StFile w;
    if (!m || st_read(weights, &w) || weights_import(m, &w)) { fprintf(stderr, "replay: %s\n", v3_last_error()); return 1; }
    st_free(&w);
    FILE *f = fopen(batches, "rb");
    char magic[4];
    int32_t version;
    if (!f || fread(magic, 1, 4, f) != 4 || memcmp(magic, "V3RB", 4) || fread(&version, 4, 1, f) != 1 || version != 1) {
        fprintf(stderr, "replay: %s: not a batches file (expected \"V3RB\", version 1)\n", batches);
        return 1;
    }
    const ArchSpec *a = &m->arch;
    for (long s = 1; steps < 0 || s <= steps; s++) {
        float lr;
        int32_t shp[5];
        if (fread(&lr, 4, 1, f) != 1) break;
        if (fread(shp, 4, 5, f) != 5 || shp[1] != c.n_fragments || shp[2] != a->C || shp[3] != a->H ||
            shp[4] != a->W || shp[0] < 2) {
            fprintf(stderr, "replay: %s: step %ld: batch shape does not fit the config\n", batches, s);
            return 1;
        }
        int B = shp[0], n = shp[1], N = B * n;
        size_t nx = (size_t)N * a->C * a->H * a->W;
        float *x = falloc(nx);
        if (fread(x, sizeof(float), nx, f) != nx) { fprintf(stderr, "replay: %s: truncated\n", batches); return 1; }
        LossTerms L;
        if (model_forward(m, x, B, 1, &L)) { fprintf(stderr, "replay: step %ld: %s\n", s, v3_last_error()); return 1; }
        model_backward(m);
        model_adamw(m, lr);
        int used = 0, fq = 0;
        for (int i = 0; i < N; i++) {
            int seen = 0;
            for (int j = 0; j < i && !seen; j++) seen = m->ind[j] == m->ind[i];
            used += !seen;
            for (int j = i + 1; j < N && j / n == i / n; j++) fq += m->ind[i] == m->ind[j];
        }
        printf("{\"step\": %ld, \"lr\": %.9g, \"total\": %.9g, \"recon\": %.9g, \"commit\": %.9g, \"content\": %.9g, "
               "\"style\": %.9g, \"sample\": %.9g, \"fragment\": %.9g, \"Fc\": %.9g, \"Sc\": %.9g, \"Fs\": %.9g, "
               "\"Ss\": %.9g, \"fq_ties\": %d, \"used\": %d}\n",
               s, lr, L.total, L.recon, L.commit, L.content, L.style, L.sample, L.fragment, L.Fc, L.Sc, L.Fs, L.Ss,
               fq, used);
        fflush(stdout);
        ffree(x);
    }
    fclose(f);
    model_free(m);
    return 0;
}
