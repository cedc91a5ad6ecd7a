/* The streaming loader (host/train/loader.c) and datasource_open's dispatch: batches are a pure function of
 * (seed, step), a held batch is never overwritten, resume from any step replays, errors surface. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "datasource.h"
#include "loader.h"
#include "rng.h"
#include "testing.h"

/* A fake source: sample i with augmentation a is filled with values derived from (i, a); sample fail_at fails. */
typedef struct { uint64_t fail_at; int calls; } Fake;

static int fake_get(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *x, int32_t *content,
                    int32_t *style) {
    Fake *f = ds->impl;
    f->calls++;
    size_t se = datasource_sample_elems(ds);
    for (int b = 0; b < B; b++) {
        if (idx[b] == f->fail_at) return v3_error("fake: sample %llu is broken", (unsigned long long)idx[b]);
        for (size_t e = 0; e < se; e++) x[b * se + e] = (float)(idx[b] * 1000 + e) + (float)(aug[b] % 997) * 1e-3f;
        for (uint32_t k = 0; k < ds->n_frag; k++) {
            if (content) content[b * ds->n_frag + k] = (int32_t)((idx[b] + k) % ds->n_content);
            if (style) style[b * ds->n_frag + k] = (int32_t)(idx[b] % ds->n_style);
        }
    }
    return 0;
}

static void fake_open(DataSource *ds, Fake *f, uint64_t n, uint64_t fail_at) {
    memset(ds, 0, sizeof *ds);
    f->fail_at = fail_at;
    f->calls = 0;
    ds->impl = f;
    ds->n_samples = n;
    ds->n_frag = 3;
    ds->C = 1;
    ds->H = 2;
    ds->W = 2;
    ds->n_content = 5;
    ds->n_style = 4;
    ds->get_batch = fake_get;
}

/* The batch of `step` computed directly, as the loader documents it. */
static int reference_batch(DataSource *ds, int B, int spe, uint64_t seed, uint64_t step, float *x, int32_t *c) {
    int epoch = (int)(step / spe), pos = (int)(step % spe);
    int *perm = xmalloc(sizeof(int) * ds->n_samples);
    Rng e;
    rng_seed(&e, rng_derive_seed(seed, 0x5eed0000ull + (uint64_t)epoch));
    rng_permutation(&e, (int)ds->n_samples, perm);
    int n = (int)ds->n_samples - pos * B;
    if (n > B) n = B;
    uint64_t idx[64], aug[64];
    for (int i = 0; i < n; i++) {
        idx[i] = (uint64_t)perm[pos * B + i];
        aug[i] = loader_aug_seed(seed, epoch, idx[i]);
    }
    free(perm);
    fake_get(ds, idx, aug, n, x, c, NULL);
    return n;
}

static int same_as_reference(DataSource *ds, const Batch *b, int B, int spe, uint64_t seed) {
    size_t se = datasource_sample_elems(ds);
    float *x = falloc(se * B);
    int32_t c[64 * 3];
    int n = reference_batch(ds, B, spe, seed, b->step, x, c);
    int ok = n == b->B && !memcmp(x, b->x, sizeof(float) * se * n) && !memcmp(c, b->content, sizeof(int32_t) * 3 * n);
    ffree(x);
    return ok;
}

TEST(loader_batches_are_a_function_of_seed_and_step) {
    DataSource ds;
    Fake f;
    fake_open(&ds, &f, 23, (uint64_t)-1);
    int B = 5, spe = 5; /* 23 samples: 4 full batches and one of 3 */
    LoaderOpts o = {&ds, B, spe, 42, 0};
    Loader *l = loader_create(&o);
    CHECK(l && !loader_start(l, 0, 3 * spe), "start: %s", v3_last_error());
    int partial = 0;
    for (uint64_t s = 0; s < 3 * (uint64_t)spe; s++) {
        const Batch *b = loader_next(l);
        CHECK(b, "step %llu: %s", (unsigned long long)s, v3_last_error());
        CHECK(b->step == s && b->epoch == (int)(s / spe), "step %llu got batch of step %llu", (unsigned long long)s,
              (unsigned long long)b->step);
        CHECK(same_as_reference(&ds, b, B, spe, 42), "step %llu differs from the documented batch",
              (unsigned long long)s);
        partial += b->B == 3;
    }
    CHECK(partial == 3, "expected one 3-sample batch per epoch, got %d", partial);
    CHECK(!loader_next(l), "a batch past the last step");
    loader_free(l);
    /* a different seed gives different batches */
    LoaderOpts o2 = {&ds, B, spe, 43, 0};
    l = loader_create(&o2);
    CHECK(!loader_start(l, 0, 1), "start");
    const Batch *b = loader_next(l);
    CHECK(b && !same_as_reference(&ds, b, B, spe, 42), "seed 43 produced seed 42's batch");
    loader_free(l);
    return 0;
}

static int fake_raw_never(DataSource *ds, const uint64_t *idx, const uint64_t *aug, int B, float *raw, int32_t *mask,
                          int32_t *content, int32_t *style) {
    return v3_error("fake: get_raw called by a host loader");
}

/* A source with device features (get_raw) on a host loader: get_batch's batches, use_gpu or not (the device path
 * needs LoaderOpts.cuda); loader_produce gives the thread's batch of a step synchronously. */
TEST(loader_host_path_ignores_get_raw_and_produce_matches) {
    DataSource ds;
    Fake f;
    fake_open(&ds, &f, 23, (uint64_t)-1);
    ds.get_raw = fake_raw_never;
    ds.raw_elems = 7;
    ds.use_gpu = 1;
    LoaderOpts o = {&ds, 5, 5, 42, 0};
    Loader *l = loader_create(&o);
    CHECK(l, "create: %s", v3_last_error());
    for (uint64_t s = 0; s < 7; s++) {
        const Batch *b = loader_produce(l, s);
        CHECK(b && b->x && !b->x_dev, "step %llu: %s", (unsigned long long)s, v3_last_error());
        CHECK(b->step == s && same_as_reference(&ds, b, 5, 5, 42), "produced step %llu differs from the documented batch",
              (unsigned long long)s);
    }
    CHECK(!loader_start(l, 3, 5), "start after produce: %s", v3_last_error());
    for (uint64_t s = 3; s < 5; s++) {
        const Batch *b = loader_next(l);
        CHECK(b && b->step == s && same_as_reference(&ds, b, 5, 5, 42), "step %llu: %s", (unsigned long long)s,
              v3_last_error());
    }
    CHECK(!loader_produce(l, 0) && strstr(v3_last_error(), "started"), "produce on a started loader: '%s'",
          v3_last_error());
    loader_free(l);
    return 0;
}

TEST(loader_resume_from_any_step_replays) {
    DataSource ds;
    Fake f;
    fake_open(&ds, &f, 17, (uint64_t)-1);
    LoaderOpts o = {&ds, 4, 4, 9, 0};
    for (uint64_t first = 0; first < 9; first += 4) {
        Loader *l = loader_create(&o);
        CHECK(!loader_start(l, first, first + 5), "start");
        for (uint64_t s = first; s < first + 5; s++) {
            const Batch *b = loader_next(l);
            CHECK(b && b->step == s && same_as_reference(&ds, b, 4, 4, 9), "from %llu: step %llu differs",
                  (unsigned long long)first, (unsigned long long)s);
        }
        loader_free(l);
    }
    return 0;
}

TEST(loader_never_overwrites_the_held_batch) {
    DataSource ds;
    Fake f;
    fake_open(&ds, &f, 40, (uint64_t)-1);
    LoaderOpts o = {&ds, 8, 5, 3, 0};
    Loader *l = loader_create(&o);
    CHECK(!loader_start(l, 0, 6), "start");
    size_t n = datasource_sample_elems(&ds) * 8;
    float *copy = falloc(n);
    for (int s = 0; s < 6; s++) {
        const Batch *b = loader_next(l);
        CHECK(b, "%s", v3_last_error());
        memcpy(copy, b->x, sizeof(float) * n);
        struct timespec ts = {0, 20 * 1000 * 1000}; /* the thread fills the next batch meanwhile */
        nanosleep(&ts, NULL);
        CHECK(!memcmp(copy, b->x, sizeof(float) * n), "batch of step %d changed while held", s);
        CHECK(f.calls <= s + 2, "thread ran %d batches ahead at step %d (double buffering allows 1)", f.calls - s - 1, s);
    }
    ffree(copy);
    loader_free(l);
    return 0;
}

TEST(loader_reports_a_failing_batch) {
    DataSource ds;
    Fake f;
    fake_open(&ds, &f, 12, 7);
    LoaderOpts o = {&ds, 12, 1, 5, 0};
    Loader *l = loader_create(&o);
    CHECK(!loader_start(l, 0, 3), "start");
    const Batch *b = loader_next(l);
    CHECK(!b && strstr(v3_last_error(), "sample 7 is broken"), "got %p, message '%s'", (const void *)b,
          v3_last_error());
    loader_free(l); /* joins a thread that stopped after the failure */
    return 0;
}

TEST(loader_eval_batches_have_fixed_augmentation) {
    DataSource ds;
    Fake f;
    fake_open(&ds, &f, 10, (uint64_t)-1);
    size_t se = datasource_sample_elems(&ds);
    float *a = falloc(se * 4), *b = falloc(se * 4);
    CHECK(!loader_eval_batch(&ds, 1, 3, 4, a, NULL, NULL) && !loader_eval_batch(&ds, 1, 3, 4, b, NULL, NULL), "eval");
    CHECK(!memcmp(a, b, sizeof(float) * se * 4), "two validation passes saw different data");
    CHECK(a[0] >= 3000.0f && a[0] < 3001.0f, "first sample should be sample 3, got %f", a[0]);
    CHECK(!loader_eval_batch(&ds, 2, 3, 4, b, NULL, NULL) && memcmp(a, b, sizeof(float) * se * 4),
          "the augmentation seed ignores the run seed");
    ffree(a);
    ffree(b);
    return 0;
}

TEST(datasource_open_names_missing_and_unknown_datasets) {
    DataSource ds;
    CHECK(datasource_open("/nonexistent/v3dir", "train", 0, &ds) == -1 && strstr(v3_last_error(), "not found"),
          "missing dir: %s", v3_last_error());
    char *dir = test_tmpdir("dsopen");
    CHECK(datasource_open(dir, "train", 0, &ds) == -1 && strstr(v3_last_error(), "index.tsv"),
          "empty dir: %s", v3_last_error());
    char p[600];
    snprintf(p, sizeof p, "%s/index.tsv", dir);
    FILE *f = fopen(p, "w");
    fputs("# v3-sprites 1\n", f);
    fclose(f);
    CHECK(datasource_open(dir, "train", 0, &ds) == -1 && strstr(v3_last_error(), "unknown dataset kind 'sprites'"),
          "unknown kind: %s", v3_last_error());
    f = fopen(p, "w");
    fputs("hello\n", f);
    fclose(f);
    CHECK(datasource_open(dir, "train", 0, &ds) == -1 && strstr(v3_last_error(), "first line"), "bad header: %s",
          v3_last_error());
    unlink(p);
    rmdir(dir);
    free(dir);
    return 0;
}
