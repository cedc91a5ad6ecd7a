/* tools/replay (the step-for-step comparison with the authors' code, NOTES.md "Ties in the quantised codes"): on a
 * recorded batch stream it must run exactly our training step, and a malformed stream is a one-line error. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "safetensors.h"
#include "testing.h"
#include "weights_io.h"

#define REPLAY_CFG "tests/golden/tiny_golden.yaml"
#define REPLAY_W "tests/golden/tiny_model.safetensors"

/* Write a stream of `steps` batches (B 3, n 4, 3 x 48 x 32, the golden config's shape) with learning rate lr. */
static int write_stream(const char *path, int steps, float lr, const char *magic, float **xs) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int32_t ver = 1, shp[5] = {3, 4, 3, 48, 32};
    fwrite(magic, 1, 4, f);
    fwrite(&ver, 4, 1, f);
    size_t nx = (size_t)3 * 4 * 3 * 48 * 32;
    for (int s = 0; s < steps; s++) {
        fill_uniform(xs[s], nx, 70 + s, -1, 1);
        fwrite(&lr, 4, 1, f);
        fwrite(shp, 4, 5, f);
        fwrite(xs[s], sizeof(float), nx, f);
    }
    return fclose(f);
}

TEST(replay_runs_our_training_step) {
    if (access("tools/replay", X_OK)) SKIP("tools/replay not built (make tools/replay)");
    char *dir = test_tmpdir("replay"), stream[600], cmd[1500];
    static char out[1 << 16];
    snprintf(stream, sizeof stream, "%s/b.bin", dir);
    size_t nx = (size_t)3 * 4 * 3 * 48 * 32;
    float *xs[2] = {falloc(nx), falloc(nx)};
    CHECK(write_stream(stream, 2, 1e-3f, "V3RB", xs) == 0, "write stream");
    snprintf(cmd, sizeof cmd, "tools/replay --config %s --weights %s --batches %s", REPLAY_CFG, REPLAY_W, stream);
    CHECK(test_sh(cmd, out, sizeof out) == 0, "replay failed: %s", out);
    /* the same two steps in-process */
    Config c;
    config_defaults(&c);
    CHECK(config_load(REPLAY_CFG, &c) == 0, "%s", v3_last_error());
    Model *m = model_build(&c, 0);
    StFile w;
    CHECK(m && st_read(REPLAY_W, &w) == 0 && weights_import(m, &w) == 0, "%s", v3_last_error());
    st_free(&w);
    const char *line = out;
    for (int s = 0; s < 2; s++) {
        LossTerms L;
        CHECK(model_forward(m, xs[s], 3, 1, &L) == 0, "%s", v3_last_error());
        model_backward(m);
        model_adamw(m, 1e-3f);
        line = strstr(line, "{\"step\"");
        CHECK(line, "step %d missing from the replay output:\n%s", s + 1, out);
        double t = test_json_number(line, NULL, "total"), sc = test_json_number(line, NULL, "Sc");
        CHECK(t == (double)(float)L.total || fabs(t - L.total) <= 1e-8 * fabs(L.total),
              "step %d: replay total %.9g, in-process %.9g", s + 1, t, L.total);
        CHECK(fabs(sc - L.Sc) <= 1e-8 * fabs(L.Sc), "step %d: replay S_c %.9g, in-process %.9g", s + 1, sc, L.Sc);
        line++;
    }
    model_free(m);
    /* malformed streams: wrong magic, a shape that does not fit the config, a truncated batch */
    CHECK(write_stream(stream, 1, 1e-3f, "XXXX", xs) == 0, "write stream");
    CHECK(test_sh(cmd, out, sizeof out) == 1 && strstr(out, "not a batches file"), "bad magic: %s", out);
    FILE *f = fopen(stream, "wb");
    int32_t ver = 1, shp[5] = {3, 5, 3, 48, 32};
    float lr = 1e-3f;
    fwrite("V3RB", 1, 4, f), fwrite(&ver, 4, 1, f), fwrite(&lr, 4, 1, f), fwrite(shp, 4, 5, f), fclose(f);
    CHECK(test_sh(cmd, out, sizeof out) == 1 && strstr(out, "does not fit the config"), "bad shape: %s", out);
    shp[1] = 4;
    f = fopen(stream, "wb");
    fwrite("V3RB", 1, 4, f), fwrite(&ver, 4, 1, f), fwrite(&lr, 4, 1, f), fwrite(shp, 4, 5, f), fwrite(xs[0], 4, 100, f);
    fclose(f);
    CHECK(test_sh(cmd, out, sizeof out) == 1 && strstr(out, "truncated"), "truncated: %s", out);
    ffree(xs[0]), ffree(xs[1]);
    free(dir);
    return 0;
}
