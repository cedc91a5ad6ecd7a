/* Stated limits and bounds checked before allocation (issue 15): absurd but legal-looking sizes, step counts and
 * checkpoint fields are refused with a message naming the limit, before anything big is allocated. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "dataset.h"
#include "memory_limit.h"
#include "model.h"
#include "testing.h"

static void tiny_config(Config *c) {
    config_defaults(c);
    c->arch = ARCH_TINY;
    c->n_channels = 16;
    c->n_fragments = 3;
    c->n_feature = c->fragment_len = 8;
    c->d_emb_c = 6;
    c->d_emb_s = 5;
    c->n_atoms = 4;
}

TEST(limits_config_sizes_name_the_limit) {
    struct { const char *key; long long v; const char *limit; } bad[] = {
        {"model_config.n_atoms", 100000000, "V3_MAX_ATOMS"},   {"model_config.d_emb_c", 1 << 20, "V3_MAX_WIDTH"},
        {"model_config.n_fragments", 5000, "V3_MAX_FRAGMENTS"}, {"batch_size", 100000, "V3_MAX_BATCH"},
        {"epochs", 2000000, "V3_MAX_EPOCHS"},                   {"model_config.n_channels", 1 << 20, "V3_MAX_WIDTH"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Config c;
        tiny_config(&c);
        char set[96];
        snprintf(set, sizeof set, "%s=%lld", bad[i].key, bad[i].v);
        CHECK(config_set(&c, set) == 0, "%s: %s", set, v3_last_error());
        CHECK(config_validate(&c) != 0, "%s accepted", set);
        CHECK(strstr(v3_last_error(), bad[i].limit) && strstr(v3_last_error(), bad[i].key), "%s: %s", set,
              v3_last_error());
    }
    return 0;
}

/* The estimate is checked before the weights are allocated: over --max-memory (or over the machine for a width
 * no machine holds) model_build fails at once with the estimate; a small model passes. */
TEST(limits_memory_estimate_before_allocation) {
    Config c;
    tiny_config(&c);
    Model *m = model_build(&c, 1);
    CHECK(m, "tiny model: %s", v3_last_error());
    model_free(m);
    size_t keep = v3_max_memory;
    v3_max_memory = 64 * 1024; /* 64 KiB: less than the tiny model's activations at batch_size 32 */
    m = model_build(&c, 1);
    v3_max_memory = keep;
    CHECK(!m, "64 KiB limit: tiny model built");
    const char *e = v3_last_error();
    CHECK(strstr(e, "needs about") && strstr(e, "--max-memory") && strstr(e, "activations"), "message: %s", e);
    /* 32768 channels x 65536 atoms x 65536-wide codes: petabytes; must be refused, not attempted */
    c.n_channels = 32768;
    c.n_atoms = V3_MAX_ATOMS;
    c.d_emb_c = V3_MAX_WIDTH;
    double t0 = now_seconds();
    m = model_build(&c, 1);
    CHECK(!m, "a petabyte model was built");
    CHECK(strstr(v3_last_error(), "this machine's memory"), "message: %s", v3_last_error());
    CHECK(now_seconds() - t0 < 5, "refusal took %.1f s (allocated first?)", now_seconds() - t0);
    /* sizes: the --max-memory parser */
    size_t b;
    CHECK(v3_parse_size("512M", &b) == 0 && b == 512ull << 20, "512M");
    CHECK(v3_parse_size("1.5GiB", &b) == 0 && b == 3ull << 29, "1.5GiB");
    CHECK(v3_parse_size("8G", &b) == 0 && b == 8ull << 30, "8G");
    CHECK(v3_parse_size("-1G", &b) && v3_parse_size("", &b) && v3_parse_size("12X", &b) && v3_parse_size("0", &b),
          "bad sizes accepted");
    return 0;
}

TEST(limits_cli_steps_and_max_memory) {
    NEED_V3();
    char out[4096];
    int rc = test_sh("./v3 train --config configs/tiny.yaml --out /nonexistent/x --steps 1000000000000", out,
                     sizeof out);
    CHECK(rc == 2 && strstr(out, "V3_MAX_STEPS"), "--steps 1e12: exit %d: %s", rc, out);
    rc = test_sh("./v3 train --config configs/tiny.yaml --out /nonexistent/x --steps 99999999999999999999999", out,
                 sizeof out);
    CHECK(rc == 2, "--steps overflowing long: exit %d: %s", rc, out);
    rc = test_sh("./v3 train --config configs/tiny.yaml --out /nonexistent/x --max-memory lots", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--max-memory"), "--max-memory lots: exit %d: %s", rc, out);
    char *dir = test_tmpdir("limits_cli");
    SynthParams sp;
    synth_defaults(&sp);
    sp.n_train = sp.n_val = sp.n_test = 4;
    CHECK(synth_generate(test_path(dir, "data"), &sp) == 0, "synth: %s", v3_last_error());
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./v3 train --config configs/tiny.yaml --data %s/data --out %s/r --max-memory 64K "
                              "--device cpu --quiet", dir, dir);
    rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "needs about") && strstr(out, "--max-memory"), "64K: exit %d: %s", rc, out);
    return test_done(0, dir);
}

/* Rewrite a checkpoint's header field and its header CRC, as a buggy tool would: the CRC then matches. */
static void patch_header(unsigned char *h, int off, const void *v, int n) {
    memcpy(h + off, v, (size_t)n);
    uint32_t crc = crc32c(0, h, 120);
    memcpy(h + 120, &crc, 4);
}

TEST(limits_checkpoint_fields_range_checked) {
    Config c;
    tiny_config(&c);
    Model *m = model_build(&c, 2);
    CHECK(m, "%s", v3_last_error());
    char *dir = test_tmpdir("limits_ckpt");
    const char *p = test_path(dir, "a.v3ck");
    CkptMeta meta = {40, 2, 4, 0.5};
    m->adam_t = 40;
    CHECK(checkpoint_save(p, m, &meta) == 0, "save: %s", v3_last_error());
    unsigned char *orig;
    size_t n;
    CHECK(test_read_all(p, &orig, &n) == 0, "read");
    uint64_t huge = UINT64_MAX, zero = 0;
    double negval = -1.0;
    uint32_t bigepoch = 1000;
    struct { int off; const void *v; int n; const char *field; } cases[] = {
        {48, &huge, 8, "step"}, {56, &huge, 8, "adam_t"}, {112, &bigepoch, 4, "epoch"},
        {104, &negval, 8, "val_loss"}, {-1, &zero, 8, "rng"},
    };
    int rc = 0;
    unsigned char *b = xmalloc(n);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] && !rc; i++) {
        memcpy(b, orig, n);
        if (cases[i].off < 0)
            for (int k = 0; k < 4; k++) patch_header(b, 72 + 8 * k, &zero, 8);
        else
            patch_header(b, cases[i].off, cases[i].v, cases[i].n);
        test_write_all(p, b, n);
        CkptMeta got;
        if (checkpoint_load(p, m, &got) == 0 || !strstr(v3_last_error(), cases[i].field)) {
            fprintf(stderr, "    field %s: %s\n", cases[i].field, checkpoint_load(p, m, &got) ? v3_last_error()
                                                                                         : "accepted");
            rc = 1;
        }
    }
    /* a NaN weight and a negative AdamW second moment, payload CRC recomputed */
    for (int k = 0; k < 2 && !rc; k++) {
        memcpy(b, orig, n);
        float bad = k == 0 ? NAN : -1.0f;
        size_t off = V3CK_HEADER_BYTES + 4 * (k == 0 ? 3 : m->n_params + m->n_trainable + 1);
        memcpy(b + off, &bad, 4);
        uint32_t crc = crc32c(0, b + V3CK_HEADER_BYTES, n - V3CK_HEADER_BYTES);
        patch_header(b, 116, &crc, 4);
        test_write_all(p, b, n);
        CkptMeta got;
        const char *want = k == 0 ? "params[3]" : "adam_v[1]";
        if (checkpoint_load(p, m, &got) == 0 || !strstr(v3_last_error(), want)) {
            fprintf(stderr, "    %s: %s\n", want, v3_last_error());
            rc = 1;
        }
    }
    /* the untouched file still loads */
    test_write_all(p, orig, n);
    CkptMeta got;
    if (!rc && checkpoint_load(p, m, &got)) { fprintf(stderr, "    original: %s\n", v3_last_error()); rc = 1; }
    free(b);
    free(orig);
    model_free(m);
    return test_done(rc, dir);
}
