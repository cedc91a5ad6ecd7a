/* Tests for the .v3ds container (round trip, gather, validation of every kind of bad file, atomic save),
 * the synthetic coloured-strokes generator (determinism, shapes, balance, separability) and `v3 data`. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "data_cli.h"
#include "dataset.h"
#include "rng.h"
#include "testing.h"

/* ---- helpers ---- */

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

/* A small dataset with random x and labels covering every class plus one "unknown" (-1). */
static void make_small(Dataset *d, uint64_t seed) {
    if (dataset_alloc(d, 5, 3, 2, 3, 4, 4, 3)) V3_FATAL("dataset_alloc: %s", v3_last_error());
    fill_uniform(d->x, 5 * dataset_sample_elems(d), seed, -1, 1);
    for (int i = 0; i < 15; i++) {
        d->content[i] = i % 4;
        d->style[i] = (i / 3) % 3;
    }
    d->content[7] = -1;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* Re-seal a hand-edited file so only the intended defect remains. */
static void fix_header_crc(unsigned char *b) { put32(b + 48, crc32c(0, b, 48)); }
static void fix_payload_crc(unsigned char *b, size_t n) { put32(b + 52, crc32c(0, b + 64, n - 64)); }

/* Save the small dataset to dir/name; returns the path and the file bytes for editing. */
static char *saved_small(const char *dir, const char *name, unsigned char **buf, size_t *n) {
    Dataset d;
    make_small(&d, 42);
    char *p = test_path(dir, name);
    if (dataset_save(p, &d) || test_read_all(p, buf, n)) V3_FATAL("save %s: %s", p, v3_last_error());
    dataset_free(&d);
    return p;
}

/* Load must fail, leave d empty, and the message must name the file and contain every needle. */
static int expect_load_error(const char *path, const char *needle1, const char *needle2) {
    Dataset d;
    v3_clear_error();
    int rc = dataset_load(path, &d);
    const char *e = v3_last_error();
    CHECK(rc == -1, "load of %s should fail (%s)", path, needle1);
    CHECK(d.x == NULL && d.content == NULL && d.n_samples == 0, "failed load left a half-filled dataset");
    CHECK(strstr(e, path) != NULL, "error should name the file: %s", e);
    CHECK(strstr(e, needle1) != NULL, "error should contain '%s': %s", needle1, e);
    CHECK(!needle2 || strstr(e, needle2) != NULL, "error should contain '%s': %s", needle2, e);
    CHECK(strchr(e, '\n') == NULL, "error should be one line: %s", e);
    return 0;
}

/* End of a test: free the edit buffer and, when it passed, remove its directory. */
static int done(int rc, char *dir, void *buf) {
    free(buf);
    if (rc == 0) test_rm_tree(dir);
    else free(dir);
    return rc;
}

/* Small synth run used by several tests. */
static void small_params(SynthParams *p, uint64_t seed) {
    synth_defaults(p);
    p->seed = seed;
    p->n_train = 24;
    p->n_val = 8;
    p->n_test = 4;
}

/* ---- container ---- */

TEST(dataset_roundtrip_bit_identical) {
    char *dir = test_tmpdir("ds");
    Dataset a, b;
    make_small(&a, 7);
    char *p = test_path(dir, "rt.v3ds");
    CHECK(dataset_save(p, &a) == 0, "save: %s", v3_last_error());
    CHECK(!file_exists(test_path(dir, "rt.v3ds.tmp")), "temp file left behind");
    CHECK(dataset_load(p, &b) == 0, "load: %s", v3_last_error());
    CHECK(b.n_samples == 5 && b.n_frag == 3 && b.C == 2 && b.H == 3 && b.W == 4, "shape changed");
    CHECK(b.n_content == 4 && b.n_style == 3, "class counts changed");
    CHECK(memcmp(a.x, b.x, 5 * 3 * 24 * sizeof(float)) == 0, "x differs after round trip");
    CHECK(memcmp(a.content, b.content, 15 * 4) == 0 && memcmp(a.style, b.style, 15 * 4) == 0, "labels differ");
    CHECK(strcmp(b.path, p) == 0, "path not recorded: '%s'", b.path);
    unsigned char *buf;
    size_t n;
    CHECK(test_read_all(p, &buf, &n) == 0, "read back");
    CHECK(n == 64 + 5 * 3 * 24 * 4 + 2 * 15 * 4, "file size %zu", n);
    CHECK(memcmp(buf, V3DS_MAGIC, 8) == 0 && get32(buf + 8) == 1 && get32(buf + 16) == 5 && get32(buf + 24) == 3,
          "little-endian header fields not where the format says");
    CHECK(get32(buf + 48) == crc32c(0, buf, 48) && get32(buf + 52) == crc32c(0, buf + 64, n - 64), "CRCs");
    dataset_free(&a);
    dataset_free(&b);
    return done(0, dir, buf);
}

TEST(dataset_gather_copies_samples) {
    Dataset d;
    make_small(&d, 3);
    size_t se = (size_t)dataset_sample_elems(&d);
    int idx[3] = {3, 0, 3};
    float *x = falloc(3 * se);
    int32_t c[9], s[9];
    dataset_gather(&d, idx, 3, x, c, s);
    for (int b = 0; b < 3; b++) {
        CHECK(memcmp(x + b * se, d.x + idx[b] * se, se * sizeof(float)) == 0, "x of batch row %d", b);
        CHECK(memcmp(c + b * 3, d.content + idx[b] * 3, 12) == 0, "content of batch row %d", b);
        CHECK(memcmp(s + b * 3, d.style + idx[b] * 3, 12) == 0, "style of batch row %d", b);
    }
    int one = 4;
    poison(x, 3 * se);
    dataset_gather(&d, &one, 1, x, NULL, NULL); /* labels skipped */
    CHECK(memcmp(x, d.x + 4 * se, se * sizeof(float)) == 0, "x of sample 4");
    CHECK(isnan(x[se]), "gather wrote past B rows");
    ffree(x);
    dataset_free(&d);
    return 0;
}

TEST(dataset_load_missing_file) {
    char *dir = test_tmpdir("ds");
    char *p = test_path(dir, "nope.v3ds");
    if (expect_load_error(p, "cannot open dataset: No such file or directory", NULL)) return 1;
    Dataset d;
    CHECK(dataset_load_split(dir, "train", &d) == -1, "missing split should fail");
    CHECK(strstr(v3_last_error(), "train.v3ds: cannot open dataset") && strstr(v3_last_error(), "v3 data synth"),
          "split error should name the file and say how to make it: %s", v3_last_error());
    return done(0, dir, NULL);
}

TEST(dataset_load_bad_magic) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "m.v3ds", &b, &n);
    b[0] = 'X';
    CHECK(test_write_all(p, b, n) == 0, "write");
    if (expect_load_error(p, "not a v3 dataset (bad magic)", NULL)) return 1;
    CHECK(test_write_all(p, "hello", 5) == 0, "write");
    if (expect_load_error(p, "not a v3 dataset", NULL)) return 1;
    CHECK(test_write_all(p, "", 0) == 0, "write");
    if (expect_load_error(p, "not a v3 dataset (empty file)", NULL)) return 1;
    return done(0, dir, b);
}

TEST(dataset_load_wrong_version) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "v.v3ds", &b, &n);
    put32(b + 8, 7);
    fix_header_crc(b); /* a genuine version-7 header, not a corrupt one */
    CHECK(test_write_all(p, b, n) == 0, "write");
    if (expect_load_error(p, "unsupported version 7 (expected 1)", NULL)) return 1;
    put32(b + 8, 1);
    put32(b + 12, 1); /* dtype int16 is reserved, not supported */
    fix_header_crc(b);
    CHECK(test_write_all(p, b, n) == 0, "write");
    return done(expect_load_error(p, "unsupported dtype 1", NULL), dir, b);
}

TEST(dataset_load_truncated) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "t.v3ds", &b, &n);
    CHECK(test_write_all(p, b, n - 100) == 0, "write");
    char want[128], has[64];
    snprintf(want, sizeof want, "truncated dataset: expected %zu bytes (header 64 + payload %zu", n, n - 64);
    snprintf(has, sizeof has, "file has %zu", n - 100);
    if (expect_load_error(p, want, has)) return 1;
    CHECK(test_write_all(p, b, 30) == 0, "write"); /* shorter than the header */
    return done(expect_load_error(p, "truncated dataset", "64-byte header"), dir, b);
}

TEST(dataset_load_oversized) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "o.v3ds", &b, &n);
    b = xrealloc(b, n + 3);
    memset(b + n, 0, 3);
    CHECK(test_write_all(p, b, n + 3) == 0, "write");
    char has[64];
    snprintf(has, sizeof has, "file has %zu", n + 3);
    return done(expect_load_error(p, "oversized dataset: expected", has), dir, b);
}

TEST(dataset_load_payload_checksum) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "p.v3ds", &b, &n);
    b[64 + 123] ^= 0x10; /* one bit in x: still a finite float, so only the CRC can notice */
    CHECK(test_write_all(p, b, n) == 0, "write");
    if (expect_load_error(p, "payload checksum mismatch (file corrupt)", NULL)) return 1;
    b[64 + 123] ^= 0x10;
    b[n - 1] ^= 0x01; /* and one in the labels */
    CHECK(test_write_all(p, b, n) == 0, "write");
    return done(expect_load_error(p, "payload checksum mismatch", NULL), dir, b);
}

TEST(dataset_load_header_checksum) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "h.v3ds", &b, &n);
    b[32] = 9; /* H = 9 without resealing: must be called corruption, not a size mismatch */
    CHECK(test_write_all(p, b, n) == 0, "write");
    return done(expect_load_error(p, "header checksum mismatch (file corrupt)", NULL), dir, b);
}

TEST(dataset_load_bad_shape) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "s.v3ds", &b, &n);
    put32(b + 32, 0); /* H = 0 */
    fix_header_crc(b);
    CHECK(test_write_all(p, b, n) == 0, "write");
    if (expect_load_error(p, "zero-sized shape: H is 0", NULL)) return 1;
    put32(b + 32, 0x40000000u); /* H * W * C * n_frag * n_samples * 4 wraps 64 bits */
    put32(b + 36, 0x40000000u);
    fix_header_crc(b);
    CHECK(test_write_all(p, b, n) == 0, "write");
    return done(expect_load_error(p, "overflow", NULL), dir, b);
}

TEST(dataset_load_label_out_of_range) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "l.v3ds", &b, &n);
    size_t content_off = n - 2 * 15 * 4, style_off = n - 15 * 4;
    unsigned char *orig = xmalloc(n);
    memcpy(orig, b, n);
    put32(b + content_off + 4 * (3 * 3 + 1), 12); /* sample 3 fragment 1 */
    fix_payload_crc(b, n);
    CHECK(test_write_all(p, b, n) == 0, "write");
    if (expect_load_error(p, "content label 12 at sample 3 fragment 1 out of range [0, 4)", NULL)) return 1;
    memcpy(b, orig, n);
    put32(b + style_off + 4 * 2, (uint32_t)-2); /* -1 means unknown; -2 is invalid */
    fix_payload_crc(b, n);
    CHECK(test_write_all(p, b, n) == 0, "write");
    free(orig);
    return done(expect_load_error(p, "style label -2 at sample 0 fragment 2 out of range [0, 3)", NULL), dir, b);
}

TEST(dataset_load_nonfinite_value) {
    char *dir = test_tmpdir("ds");
    unsigned char *b;
    size_t n;
    char *p = saved_small(dir, "nan.v3ds", &b, &n);
    float bad[2] = {NAN, INFINITY};
    const char *name[2] = {"non-finite value (NaN)", "non-finite value (Inf)"};
    for (int k = 0; k < 2; k++) {
        unsigned char *c = xmalloc(n);
        memcpy(c, b, n);
        memcpy(c + 64 + 4 * (2 * 72 + 1 * 24 + 5), &bad[k], 4); /* sample 2, fragment 1, element 5 */
        fix_payload_crc(c, n);
        CHECK(test_write_all(p, c, n) == 0, "write");
        if (expect_load_error(p, name[k], "sample 2 fragment 1 element 5")) return 1;
        free(c);
    }
    return done(0, dir, b);
}

TEST(dataset_save_failure_leaves_no_file) {
    char *dir = test_tmpdir("ds");
    Dataset d;
    make_small(&d, 1);
    char *missing = test_path(dir, "no/such/dir/x.v3ds");
    CHECK(dataset_save(missing, &d) == -1, "save into a missing directory must fail");
    CHECK(strstr(v3_last_error(), "x.v3ds") != NULL, "error should name the file: %s", v3_last_error());
    CHECK(!file_exists(missing), "partial file at destination");
    /* Destination is a directory: the temp file is written but the rename fails; the temp must go. */
    char *isdir = test_path(dir, "adir");
    CHECK(mkdir(isdir, 0755) == 0, "mkdir");
    CHECK(dataset_save(isdir, &d) == -1, "rename onto a directory must fail");
    CHECK(!file_exists(test_path(dir, "adir.tmp")), "temp file left after a failed rename");
    /* Data that load would reject is refused before anything is written. */
    char *p = test_path(dir, "nan.v3ds");
    d.x[3] = NAN;
    CHECK(dataset_save(p, &d) == -1 && strstr(v3_last_error(), "non-finite"), "NaN save: %s", v3_last_error());
    CHECK(!file_exists(p) && !file_exists(test_path(dir, "nan.v3ds.tmp")), "file written for rejected data");
    dataset_free(&d);
    return done(0, dir, NULL);
}

/* ---- synthetic data ---- */

TEST(dataset_synth_deterministic) {
    char *d1 = test_tmpdir("ds"), *d2 = test_tmpdir("ds"), *d3 = test_tmpdir("ds");
    SynthParams p;
    small_params(&p, 5);
    CHECK(synth_generate(d1, &p) == 0 && synth_generate(d2, &p) == 0, "generate: %s", v3_last_error());
    p.seed = 6;
    CHECK(synth_generate(d3, &p) == 0, "generate: %s", v3_last_error());
    const char *split[3] = {"train.v3ds", "val.v3ds", "test.v3ds"};
    unsigned char *a[3], *b, *c;
    size_t na[3], nb, nc;
    for (int k = 0; k < 3; k++) {
        CHECK(test_read_all(test_path(d1, split[k]), &a[k], &na[k]) == 0, "read %s", split[k]);
        CHECK(test_read_all(test_path(d2, split[k]), &b, &nb) == 0, "read %s", split[k]);
        CHECK(test_read_all(test_path(d3, split[k]), &c, &nc) == 0, "read %s", split[k]);
        CHECK(na[k] == nb && memcmp(a[k], b, nb) == 0, "%s differs between two runs with the same seed", split[k]);
        CHECK(na[k] == nc && memcmp(a[k] + 64, c + 64, nc - 64) != 0, "%s identical for seeds 5 and 6", split[k]);
        free(b);
        free(c);
    }
    /* Splits use their own streams: val's first sample is not train's first sample. */
    CHECK(memcmp(a[0] + 64, a[1] + 64, 6 * 3 * 16 * 16 * 4) != 0, "train and val start with the same sample");
    for (int k = 0; k < 3; k++) free(a[k]);
    test_rm_tree(d2);
    test_rm_tree(d3);
    return done(0, d1, NULL);
}

TEST(dataset_synth_shapes_and_labels) {
    char *dir = test_tmpdir("ds");
    SynthParams p;
    synth_defaults(&p);
    CHECK(p.seed == 1 && p.n_train == 256 && p.n_val == 32 && p.n_test == 32 && p.n_frag == 6 && p.n_content == 6 &&
              p.n_style == 4 && p.H == 16 && p.W == 16 && fabsf(p.noise - 0.05f) < 1e-7f,
          "synth_defaults changed");
    p.n_frag = 4; /* fewer fragments than contents: contents must still be distinct within a sample */
    CHECK(synth_generate(dir, &p) == 0, "generate: %s", v3_last_error());
    const char *split[3] = {"train", "val", "test"};
    const uint64_t want_n[3] = {256, 32, 32};
    for (int k = 0; k < 3; k++) {
        Dataset d;
        CHECK(dataset_load_split(dir, split[k], &d) == 0, "load %s: %s", split[k], v3_last_error());
        CHECK(d.n_samples == want_n[k] && d.n_frag == 4 && d.C == 3 && d.H == 16 && d.W == 16 && d.n_content == 6 &&
                  d.n_style == 4, "%s shape", split[k]);
        int per_style[4] = {0};
        for (uint64_t i = 0; i < d.n_samples; i++) {
            int32_t *c = d.content + i * 4, *s = d.style + i * 4;
            for (int f = 0; f < 4; f++) {
                CHECK(s[f] == s[0] && s[0] == (int32_t)(i % 4), "%s sample %d: style %d", split[k], (int)i, s[f]);
                for (int g = 0; g < f; g++)
                    CHECK(c[f] != c[g], "%s sample %d repeats content %d", split[k], (int)i, c[f]);
            }
            per_style[s[0]]++;
        }
        for (int s = 0; s < 4; s++) CHECK(per_style[s] == (int)want_n[k] / 4, "%s: style %d unbalanced", split[k], s);
        uint64_t n = d.n_samples * dataset_sample_elems(&d), light = 0;
        for (uint64_t i = 0; i < n; i++) {
            CHECK(d.x[i] >= -1 && d.x[i] <= 1, "value %g outside [-1, 1]", d.x[i]);
            light += d.x[i] > 0.7f;
        }
        CHECK(light > n / 2, "background should be light: only %llu of %llu values > 0.7", (unsigned long long)light,
              (unsigned long long)n);
        dataset_free(&d);
    }
    return done(0, dir, NULL);
}

/* Stroke pixels are the ones far from the light background in some channel. */
static int is_stroke(const float *frag, int hw, int i) {
    for (int ch = 0; ch < 3; ch++)
        if (fabsf(frag[ch * hw + i] - 0.9f) > 0.4f) return 1;
    return 0;
}

/* All 10 contents and 8 styles, for the separability tests. */
static int load_full_synth(Dataset *d) {
    char *dir = test_tmpdir("ds");
    SynthParams p;
    small_params(&p, 11);
    p.n_content = p.n_frag = 10;
    p.n_style = 8;
    p.n_train = 48;
    CHECK(synth_generate(dir, &p) == 0, "generate: %s", v3_last_error());
    CHECK(dataset_load_split(dir, "train", d) == 0, "load: %s", v3_last_error());
    return done(0, dir, NULL); /* the data is in memory now */
}

TEST(dataset_synth_styles_separable) {
    Dataset d;
    if (load_full_synth(&d)) return 1;
    int hw = 16 * 16, nf = (int)(d.n_samples * d.n_frag);
    double (*frag_col)[3] = xcalloc((size_t)nf, sizeof *frag_col), mean[8][3] = {{0}};
    int cnt[8] = {0};
    for (int k = 0; k < nf; k++) { /* mean stroke colour of each fragment */
        const float *fr = d.x + (size_t)k * 3 * hw;
        int on = 0;
        for (int i = 0; i < hw; i++)
            if (is_stroke(fr, hw, i)) {
                on++;
                for (int ch = 0; ch < 3; ch++) frag_col[k][ch] += fr[ch * hw + i];
            }
        CHECK(on >= 6, "fragment %d has only %d stroke pixels", k, on);
        for (int ch = 0; ch < 3; ch++) mean[d.style[k]][ch] += frag_col[k][ch] /= on;
        cnt[d.style[k]]++;
    }
    for (int s = 0; s < 8; s++)
        for (int ch = 0; ch < 3; ch++) mean[s][ch] /= cnt[s];
    for (int s = 0; s < 8; s++)
        for (int t = 0; t < s; t++) {
            double dist = 0;
            for (int ch = 0; ch < 3; ch++) dist += (mean[s][ch] - mean[t][ch]) * (mean[s][ch] - mean[t][ch]);
            CHECK(sqrt(dist) > 0.5, "styles %d and %d have close colours (distance %.3f)", s, t, sqrt(dist));
        }
    for (int k = 0; k < nf; k++) { /* every fragment's colour is nearest its own style's mean */
        int best = -1;
        double bd = 1e9;
        for (int s = 0; s < 8; s++) {
            double dist = 0;
            for (int ch = 0; ch < 3; ch++) dist += pow(frag_col[k][ch] - mean[s][ch], 2);
            if (dist < bd) { bd = dist; best = s; }
        }
        CHECK(best == d.style[k], "fragment %d (style %d) looks like style %d", k, d.style[k], best);
    }
    free(frag_col);
    dataset_free(&d);
    return 0;
}

TEST(dataset_synth_contents_differ) {
    Dataset d;
    if (load_full_synth(&d)) return 1;
    int hw = 16 * 16, nf = (int)(d.n_samples * d.n_frag);
    double (*mean)[256] = xcalloc(10, sizeof *mean);
    int cnt[10] = {0};
    for (int k = 0; k < nf; k++) { /* per-class stroke-probability image, whatever the colour */
        for (int i = 0; i < hw; i++) mean[d.content[k]][i] += is_stroke(d.x + (size_t)k * 3 * hw, hw, i);
        cnt[d.content[k]]++;
    }
    for (int c = 0; c < 10; c++)
        for (int i = 0; i < hw; i++) mean[c][i] /= cnt[c];
    for (int c = 0; c < 10; c++)
        for (int e = 0; e < c; e++) {
            double diff = 0;
            for (int i = 0; i < hw; i++) diff += fabs(mean[c][i] - mean[e][i]);
            CHECK(diff / hw > 0.05, "contents %d and %d look alike (mean |diff| %.3f)", c, e, diff / hw);
        }
    for (int k = 0; k < nf; k++) { /* nearest class-mean shape recovers every fragment's content */
        int best = -1;
        double bd = 1e18;
        for (int c = 0; c < 10; c++) {
            double dist = 0;
            for (int i = 0; i < hw; i++) dist += pow(is_stroke(d.x + (size_t)k * 3 * hw, hw, i) - mean[c][i], 2);
            if (dist < bd) { bd = dist; best = c; }
        }
        CHECK(best == d.content[k], "fragment %d (content %d) looks like content %d", k, d.content[k], best);
    }
    free(mean);
    dataset_free(&d);
    return 0;
}

static int expect_param_error(const SynthParams *p, const char *needle) {
    char *dir = test_tmpdir("ds"), *sub = test_path(dir, "out");
    v3_clear_error();
    CHECK(synth_generate(sub, p) == -1, "params should be rejected (%s)", needle);
    CHECK(strstr(v3_last_error(), needle) != NULL, "error should contain '%s': %s", needle, v3_last_error());
    CHECK(!file_exists(sub), "output directory created for rejected params");
    return done(0, dir, NULL);
}

TEST(dataset_synth_rejects_bad_params) {
    SynthParams p;
    synth_defaults(&p);
    p.n_frag = 7;
    if (expect_param_error(&p, "n_frag (--frags) = 7 exceeds n_content (--contents) = 6")) return 1;
    synth_defaults(&p);
    p.n_content = 11;
    if (expect_param_error(&p, "n_content (--contents) must be in [2, 10], got 11")) return 1;
    synth_defaults(&p);
    p.n_style = 9;
    if (expect_param_error(&p, "n_style (--styles) must be in [2, 8], got 9")) return 1;
    synth_defaults(&p);
    p.W = 7;
    if (expect_param_error(&p, "W (--size) must be in [8,")) return 1;
    synth_defaults(&p);
    p.n_train = 1;
    if (expect_param_error(&p, "n_train (--train)")) return 1;
    synth_defaults(&p);
    p.noise = NAN;
    return expect_param_error(&p, "noise (--noise) must be in [0, 1]");
}

/* ---- the `v3 data` subcommand ---- */

/* Run cmd_data with stdout/stderr silenced so the test report stays readable. */
static int run_data(int argc, const char **argv) {
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    FILE *null = fopen("/dev/null", "w");
    dup2(fileno(null), 1);
    dup2(fileno(null), 2);
    int rc = cmd_data(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    fclose(null);
    return rc;
}

TEST(dataset_cli_synth_and_info) {
    char *dir = test_tmpdir("ds"), *out = test_path(dir, "a/b");
    const char *synth[] = {"data", "synth", "--out", out, "--seed", "3", "--train", "8", "--val", "4", "--test", "2",
                           "--frags", "3", "--contents", "5", "--styles", "2", "--size", "12", "--noise", "0.1"};
    CHECK(run_data(22, synth) == 0, "synth via CLI: %s", v3_last_error());
    Dataset d;
    CHECK(dataset_load_split(out, "val", &d) == 0, "load: %s", v3_last_error());
    CHECK(d.n_samples == 4 && d.n_frag == 3 && d.H == 12 && d.W == 12 && d.n_content == 5 && d.n_style == 2, "shape");
    dataset_free(&d);
    char *train = test_path(out, "train.v3ds");
    const char *info[] = {"data", "info", train};
    CHECK(run_data(3, info) == 0, "info on a good file");
    const char *unknown[] = {"data", "synth", "--out", out, "--x"};
    CHECK(run_data(5, unknown) == 2, "unknown option should be a usage error");
    const char *bad_num[] = {"data", "synth", "--out", out, "--train", "ten"};
    CHECK(run_data(6, bad_num) == 2, "non-numeric value should be a usage error");
    const char *no_out[] = {"data", "synth"};
    CHECK(run_data(2, no_out) == 2, "missing --out should be a usage error");
    const char *later[] = {"data", "phonenums"};
    CHECK(run_data(2, later) == 2, "phonenums is not implemented yet");
    const char *bad_val[] = {"data", "synth", "--out", out, "--frags", "9"};
    CHECK(run_data(6, bad_val) == 1, "invalid parameters are a runtime error");
    unsigned char *b;
    size_t n;
    CHECK(test_read_all(train, &b, &n) == 0, "read");
    CHECK(test_write_all(train, b, n - 1) == 0, "write");
    CHECK(run_data(3, info) == 1 && strstr(v3_last_error(), "truncated"), "info on a bad file: %s", v3_last_error());
    return done(0, dir, b);
}
