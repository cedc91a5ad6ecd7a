/* safetensors files (reader, writer, every malformed case) and the model as the authors' state_dict
 * (export/import round trips, PyTorch names and shapes, strict import errors). The CLI is in test_weights_cli.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "safetensors.h"
#include "testing.h"
#include "weights_io.h"

/* ---------------------------------------------------------------- safetensors */

/* Round trip of every dtype (incl. a scalar and an empty tensor) without metadata; bytes and shapes come back. */
TEST(st_round_trip_all_dtypes) {
    char *dir = test_tmpdir("st_rt");
    const char *path = test_path(dir, "a.safetensors");
    StWriter *w = st_writer_new();
    unsigned char src[10][64];
    int64_t shapes[10][3] = {{2, 3}, {3}, {4}, {2, 2}, {0}, {1, 2, 3}, {5}, {7}, {0, 3}, {6}};
    int ndims[10] = {2, 1, 1, 2, 0, 3, 1, 1, 2, 1};
    StDtype dts[10] = {ST_F32, ST_F64, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL};
    char names[10][16];
    for (int i = 0; i < 10; i++) {
        for (int k = 0; k < 64; k++) src[i][k] = (unsigned char)(i * 31 + k * 7 + 1);
        snprintf(names[i], sizeof names[i], "t%d.%s", i, st_dtype_name(dts[i]));
        CHECK(st_add(w, names[i], dts[i], ndims[i], shapes[i], src[i]) == 0, "st_add %s: %s", names[i], v3_last_error());
    }
    CHECK(st_add(w, names[3], ST_F32, 1, shapes[1], src[0]) == -1 && strstr(v3_last_error(), "twice"), "duplicate add");
    CHECK(st_writer_save(w, path) == 0, "save: %s", v3_last_error());
    st_writer_free(w);
    unsigned char *raw = NULL;
    size_t rawn = 0;
    CHECK(test_read_all(path, &raw, &rawn) == 0, "read back");
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    int aligned = hl % 8 == 0, no_meta = !strstr((char *)raw + 8, "__metadata__");
    free(raw);
    CHECK(aligned, "header length %llu is not a multiple of 8", (unsigned long long)hl);
    CHECK(no_meta, "empty metadata written");
    StFile f;
    CHECK(st_read(path, &f) == 0, "st_read: %s", v3_last_error());
    int rc = 0;
    if (f.n != 10 || f.n_meta != 0) { fprintf(stderr, "    %d tensors, %d meta\n", f.n, f.n_meta); rc = 1; }
    for (int i = 0; i < 10 && !rc; i++) {
        const StTensor *t = &f.t[i];
        size_t nb = (size_t)st_numel(t) * st_dtype_size(dts[i]);
        int ok = !strcmp(t->name, names[i]) && t->dtype == dts[i] && t->ndim == ndims[i] &&
                 !memcmp(t->shape, shapes[i], sizeof(int64_t) * (size_t)ndims[i]) && t->end - t->begin == nb &&
                 !memcmp(f.data + t->begin, src[i], nb) && st_find(&f, names[i]) == t;
        if (!ok) { fprintf(stderr, "    tensor %d (%s) differs after the round trip\n", i, names[i]); rc = 1; }
    }
    CHECK(rc == 0 && st_numel(&f.t[4]) == 1 && st_numel(&f.t[8]) == 0, "round trip failed");
    /* conversions to float32 */
    float out[8];
    int64_t s6 = 6;
    CHECK(st_get_f32(&f, names[9], 1, &s6, out) == 0 && out[0] == 1.0f, "BOOL: %s", v3_last_error());
    CHECK(st_get_f32(&f, names[9], 1, shapes[2], out) == -1 && strstr(v3_last_error(), "expected [4]") &&
          strstr(v3_last_error(), names[9]) && strstr(v3_last_error(), path), "shape mismatch: %s", v3_last_error());
    CHECK(st_get_f32(&f, "nope", 1, &s6, out) == -1 && strstr(v3_last_error(), "nope") &&
          strstr(v3_last_error(), "expected shape [6]"), "missing: %s", v3_last_error());
    st_free(&f);
    return test_done(0, dir);
}

/* Metadata first and in insertion order, with escapes and UTF-8; values converted from every float dtype. */
TEST(st_metadata_and_conversions) {
    char *dir = test_tmpdir("st_meta");
    const char *path = test_path(dir, "m.safetensors");
    StWriter *w = st_writer_new();
    uint16_t h[6] = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x3555, 0x8000};   /* 1, -2, 2^-24, 65504, 0.33325, -0 */
    uint16_t bf[2] = {0x3F80, 0xC0A0};                                   /* 1, -5 */
    double d[2] = {0.1, -3.5};
    int64_t i[2] = {-7, 1LL << 40};
    int64_t s6 = 6, s2 = 2;
    CHECK(st_add_meta(w, "zkey", "q\"uo\\te\nline") == 0 && st_add_meta(w, "akey", "caf\xc3\xa9") == 0, "meta");
    CHECK(st_add_meta(w, "akey", "x") == -1, "duplicate metadata key accepted");
    CHECK(!st_add(w, "half", ST_F16, 1, &s6, h) && !st_add(w, "bf", ST_BF16, 1, &s2, bf) &&
          !st_add(w, "dbl", ST_F64, 1, &s2, d) && !st_add(w, "i64", ST_I64, 1, &s2, i), "add: %s", v3_last_error());
    CHECK(st_writer_save(w, path) == 0, "save: %s", v3_last_error());
    st_writer_free(w);
    unsigned char *raw = NULL;
    size_t rawn = 0;
    CHECK(test_read_all(path, &raw, &rawn) == 0, "read back");
    int first = !memcmp(raw + 8, "{\"__metadata__\":{\"zkey\"", 23);
    free(raw);
    CHECK(first, "__metadata__ is not first with keys in insertion order");
    StFile f;
    CHECK(st_read(path, &f) == 0, "st_read: %s", v3_last_error());
    int meta_ok = f.n_meta == 2 && !strcmp(f.meta_key[0], "zkey") && st_meta(&f, "zkey") &&
                  !strcmp(st_meta(&f, "zkey"), "q\"uo\\te\nline") && !strcmp(st_meta(&f, "akey"), "caf\xc3\xa9") &&
                  st_meta(&f, "other") == NULL;
    float o[6];
    int conv = !st_get_f32(&f, "half", 1, &s6, o) && o[0] == 1.0f && o[1] == -2.0f && o[2] == ldexpf(1, -24) &&
               o[3] == 65504.0f && o[4] == 0.333251953125f && o[5] == 0.0f && signbit(o[5]);
    conv = conv && !st_get_f32(&f, "bf", 1, &s2, o) && o[0] == 1.0f && o[1] == -5.0f;
    conv = conv && !st_get_f32(&f, "dbl", 1, &s2, o) && o[0] == 0.1f && o[1] == -3.5f;
    conv = conv && !st_get_f32(&f, "i64", 1, &s2, o) && o[0] == -7.0f && o[1] == ldexpf(1, 40);
    st_free(&f);
    CHECK(meta_ok, "metadata did not come back");
    CHECK(conv, "conversion to float32 wrong");
    return test_done(0, dir);
}

/* A file the way another writer may make it: tensors out of offset order, an odd-length header padded with
 * spaces and a newline, escapes in names, a surrogate pair, a scalar. */
TEST(st_reads_hand_written_bytes) {
    char *dir = test_tmpdir("st_hand");
    const char *path = test_path(dir, "h.safetensors");
    const char *hdr = "{ \"b\\u00e9\" : {\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[4,12]},\n"
                      " \"a\\/\\ud83d\\ude00\":{\"shape\":[],\"data_offsets\":[0,4],\"dtype\":\"F32\"},"
                      "\"__metadata__\":{\"format\":\"pt\"}}  \n ";
    size_t hn = strlen(hdr);
    unsigned char buf[512];
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(buf + 8, hdr, hn);
    float a = 2.5f;
    int32_t b[2] = {-3, 70000};
    memcpy(buf + 8 + hn, &a, 4);
    memcpy(buf + 8 + hn + 4, b, 8);
    CHECK(test_write_all(path, buf, 8 + hn + 12) == 0, "write");
    StFile f;
    CHECK(st_read(path, &f) == 0, "st_read: %s", v3_last_error());
    const StTensor *tb = st_find(&f, "b\xc3\xa9"), *ta = st_find(&f, "a/\xf0\x9f\x98\x80");
    float va = 0, vb[2] = {0, 0};
    int64_t two = 2;
    int ok = f.n == 2 && tb == &f.t[0] && ta == &f.t[1] && ta->ndim == 0 && ta->dtype == ST_F32 && tb->dtype == ST_I32 &&
             !st_get_f32(&f, ta->name, 0, NULL, &va) && va == 2.5f && !st_get_f32(&f, tb->name, 1, &two, vb) &&
             vb[0] == -3.0f && vb[1] == 70000.0f && st_meta(&f, "format") && !strcmp(st_meta(&f, "format"), "pt");
    st_free(&f);
    CHECK(ok, "hand-written file read wrongly");
    return test_done(0, dir);
}

/* Malformed files: each must fail with one line naming the file, the tensor (if any) and the expected value. */
typedef struct {
    const char *what, *header; /* header JSON (NULL: raw bytes below) */
    size_t data_len;           /* zero bytes after the header */
    const char *raw;           /* whole file when header is NULL */
    size_t raw_len;
    uint64_t force_len;        /* nonzero: the u64 length field */
    const char *want[3];       /* substrings of the message */
} BadCase;

static const BadCase g_bad[] = {
    {"short file", NULL, 0, "abc", 3, 0, {"3 bytes", "expected at least 8"}},
    {"header past the end", "{}", 0, NULL, 0, 1000, {"runs past the end", "expected at most 2"}},
    {"absurd header", "{}", 0, NULL, 0, 200000000, {"absurd", "expected at most 100000000"}},
    {"not an object", "[]", 0, NULL, 0, 0, {"bad JSON at byte 8", "expected '{'"}},
    {"leading space", " {}", 0, NULL, 0, 0, {"expected '{'"}},
    {"trailing comma", "{\"a\":{\"dtype\":\"F32\",}}", 0, NULL, 0, 0, {"bad JSON", "expected a '\"' starting a key"}},
    {"missing colon", "{\"a\" {}}", 0, NULL, 0, 0, {"bad JSON at byte 13", "expected ':'"}},
    {"unterminated string", "{\"a", 0, NULL, 0, 0, {"bad JSON", "expected a closing '\"'"}},
    {"unclosed object", "{\"a\":{}", 0, NULL, 0, 0, {"bad JSON", "expected ',' or '}'"}},
    {"trailing garbage", "{}  x", 0, NULL, 0, 0, {"bad JSON at byte 12", "expected only space padding"}},
    {"two objects", "{}{}", 0, NULL, 0, 0, {"expected only space padding"}},
    {"float dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, NULL, 0, 0,
     {"bad JSON", "expected an integer (no fraction"}},
    {"leading zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, NULL, 0, 0,
     {"expected no leading zero"}},
    {"huge integer", "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4, NULL, 0,
     0, {"expected an integer within 64 bits"}},
    {"literal true", "{\"a\":true}", 0, NULL, 0, 0, {"expected an object, array, string or integer"}},
    {"bad escape", "{\"a\\q\":{}}", 0, NULL, 0, 0, {"expected an escape"}},
    {"lone low surrogate", "{\"a\\udc00\":{}}", 0, NULL, 0, 0, {"expected a high surrogate before a low one"}},
    {"unpaired high surrogate", "{\"a\\ud800x\":{}}", 0, NULL, 0, 0, {"expected \\u followed by a low surrogate"}},
    {"short \\u", "{\"a\\u12\":{}}", 0, NULL, 0, 0, {"expected 4 hex digits"}},
    {"NUL escape", "{\"a\\u0000\":{}}", 0, NULL, 0, 0, {"expected no \\u0000"}},
    {"raw control character", "{\"a\tb\":{}}", 0, NULL, 0, 0, {"expected no raw control character"}},
    {"invalid UTF-8", "{\"a\xc3(\":{}}", 0, NULL, 0, 0, {"invalid UTF-8 at byte 11", "expected UTF-8 JSON"}},
    {"deep nesting", "{\"a\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}", 0, NULL, 0, 0, {"expected nesting of at most 16"}},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL, 0, 0,
     {"tensor 'w' is missing \"dtype\"", "expected {\"dtype\""}},
    {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, NULL, 0, 0,
     {"tensor 'w' is missing \"shape\"", "expected {\"dtype\""}},
    {"missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, NULL, 0, 0,
     {"tensor 'w' is missing \"data_offsets\"", "expected {\"dtype\""}},
    {"unknown field", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, NULL, 0, 0,
     {"tensor 'w' has an unknown field 'x'"}},
    {"repeated field", "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL, 0,
     0, {"tensor 'w' has field 'dtype' twice"}},
    {"tensor not an object", "{\"w\":[1]}", 0, NULL, 0, 0, {"tensor 'w' is not an object", "expected {\"dtype\""}},
    {"unknown dtype", "{\"w\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2, NULL, 0, 0,
     {"tensor 'w' has dtype \"U16\"", "expected one of F32, F64, F16, BF16, I64"}},
    {"negative dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,4]}}", 4, NULL, 0, 0,
     {"tensor 'w' shape[1] is -3", "expected a non-negative integer"}},
    {"string dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, NULL, 0, 0,
     {"tensor 'w' shape[0] is not an integer", "expected a non-negative integer"}},
    {"nine dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, NULL, 0, 0,
     {"tensor 'w' has 9 dims", "expected at most 8"}},
    {"size mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, NULL, 0, 0,
     {"tensor 'w' data_offsets [0, 8] hold 8 bytes", "expected 12 (shape [3] x 4 bytes of F32)"}},
    {"reversed offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, NULL, 0, 0,
     {"tensor 'w' data_offsets is not [begin, end]", "expected two integers 0 <= begin <= end"}},
    {"one offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, NULL, 0, 0,
     {"tensor 'w' data_offsets is not [begin, end]"}},
    {"out of bounds", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, NULL, 0, 0,
     {"tensor 'w' data_offsets [0, 16] run past the 8-byte data buffer", "expected end <= 8"}},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, NULL, 0, 0,
     {"tensor 'b' data_offsets [4, 12] overlap tensor 'a' [0, 8]", "expected begin >= 8"}},
    {"gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, NULL, 0, 0,
     {"tensor 'b' starts at data byte 8, leaving bytes [4, 8) uncovered", "expected begin = 4"}},
    {"gap at the start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, NULL, 0, 0,
     {"tensor 'a' starts at data byte 4", "expected begin = 0"}},
    {"uncovered tail", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, NULL, 0, 0,
     {"data bytes [4, 12) belong to no tensor", "expected the tensors to end at the end of the file"}},
    {"data without tensors", "{}", 4, NULL, 0, 0, {"data bytes [0, 4) belong to no tensor"}},
    {"duplicate name", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, NULL, 0, 0,
     {"tensor 'a' appears twice", "expected unique names"}},
    {"metadata not strings", "{\"__metadata__\":{\"k\":1}}", 0, NULL, 0, 0,
     {"__metadata__ value of 'k' is not a string", "expected a string"}},
    {"metadata not an object", "{\"__metadata__\":\"x\"}", 0, NULL, 0, 0, {"__metadata__ at byte 24 is not an object"}},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, NULL, 0, 0, {"__metadata__ appears twice"}},
};

static int bad_case(const char *dir, const BadCase *c) {
    char name[64];
    snprintf(name, sizeof name, "bad_%d.safetensors", (int)(c - g_bad));
    const char *path = test_path(dir, name);
    unsigned char *buf;
    size_t n;
    if (c->header) {
        size_t hn = strlen(c->header);
        n = 8 + hn + c->data_len;
        buf = xcalloc(n, 1);
        uint64_t L = c->force_len ? c->force_len : hn;
        for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(L >> (8 * i));
        memcpy(buf + 8, c->header, hn);
    } else {
        n = c->raw_len;
        buf = xmalloc(n + 1);
        memcpy(buf, c->raw, n);
    }
    int wr = test_write_all(path, buf, n);
    free(buf);
    CHECK(wr == 0, "write %s", path);
    StFile f;
    memset(&f, 0x5a, sizeof f); /* poisoned: st_read must leave it empty on failure */
    v3_clear_error();
    int rc = st_read(path, &f);
    const char *e = v3_last_error();
    CHECK(rc == -1, "%s: accepted", c->what);
    CHECK(f.n == 0 && f.t == NULL && f.file == NULL && f.path == NULL, "%s: StFile not left empty", c->what);
    CHECK(!strncmp(e, path, strlen(path)), "%s: message does not start with the file name: %s", c->what, e);
    CHECK(!strchr(e, '\n'), "%s: message is not one line: %s", c->what, e);
    for (int k = 0; k < 3 && c->want[k]; k++)
        CHECK(strstr(e, c->want[k]), "%s: message lacks \"%s\": %s", c->what, c->want[k], e);
    CHECK(strstr(e, "expected"), "%s: message names no expected value: %s", c->what, e);
    return 0;
}

TEST(st_rejects_every_malformed_case) {
    char *dir = test_tmpdir("st_bad");
    int rc = 0;
    for (size_t i = 0; i < sizeof g_bad / sizeof g_bad[0] && !rc; i++) rc = bad_case(dir, &g_bad[i]);
    /* and a file that is not there */
    StFile f;
    if (!rc && (st_read(test_path(dir, "none.safetensors"), &f) != -1 || !strstr(v3_last_error(), "none.safetensors"))) {
        fprintf(stderr, "    missing file: %s\n", v3_last_error());
        rc = 1;
    }
    return test_done(rc, dir);
}

/* The well-formed neighbours of the malformed cases are accepted (the checks are not simply too strict). */
TEST(st_accepts_edge_cases) {
    char *dir = test_tmpdir("st_edge");
    const BadCase good[] = {
        {"empty header", "{}", 0, NULL, 0, 0, {0}},
        {"only metadata", "{\"__metadata__\":{}}", 0, NULL, 0, 0, {0}},
        {"empty tensors at one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                                        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                        "\"c\":{\"dtype\":\"I8\",\"shape\":[2,0],\"data_offsets\":[4,4]}}", 4, NULL, 0, 0, {0}},
        {"padding of every JSON space", "{\"a\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}} \t\r\n", 1, NULL,
         0, 0, {0}},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *path = test_path(dir, "g.safetensors");
        size_t hn = strlen(good[i].header), n = 8 + hn + good[i].data_len;
        unsigned char *buf = xcalloc(n, 1);
        for (int k = 0; k < 8; k++) buf[k] = (unsigned char)((uint64_t)hn >> (8 * k));
        memcpy(buf + 8, good[i].header, hn);
        int wr = test_write_all(path, buf, n);
        free(buf);
        CHECK(wr == 0, "write");
        StFile f;
        CHECK(st_read(path, &f) == 0, "%s rejected: %s", good[i].what, v3_last_error());
        st_free(&f);
    }
    return test_done(0, dir);
}

/* ---------------------------------------------------------------- weights */

static void small_config(Config *c, ArchKind arch) {
    config_defaults(c);
    snprintf(c->path, sizeof c->path, "(test)");
    c->arch = arch;
    c->n_channels = 16;
    c->n_fragments = 3;
    c->n_feature = arch == ARCH_TINY ? 8 : 48;
    c->fragment_len = arch == ARCH_TINY ? 8 : 32;
    c->d_emb_c = 6;
    c->d_emb_s = 5;
    c->n_atoms = 4;
    c->threshold_ema_dead_code = 0.5;
}

/* A model with non-trivial BN statistics and codebook: two training steps from seed `seed`. */
static Model *trained_model(const Config *c, uint64_t seed, float **x_out) {
    Model *m = model_build(c, seed);
    if (!m) return NULL;
    int B = 2, N = B * c->n_fragments;
    size_t nx = (size_t)N * m->arch.C * m->arch.H * m->arch.W;
    float *x = falloc(nx);
    fill_uniform(x, nx, seed + 100, -1, 1);
    for (int s = 0; s < 2; s++) {
        LossTerms L;
        model_forward(m, x, B, 1, &L);
        model_backward(m);
        model_adamw(m, 1e-3f);
    }
    *x_out = x;
    return m;
}

static int export_to(const Model *m, const char *path, long nbt) {
    StWriter *w = st_writer_new();
    int rc = weights_export(m, w, nbt) || st_writer_save(w, path) ? -1 : 0;
    st_writer_free(w);
    return rc;
}

static int same_bits(const void *a, const void *b, size_t n) { return !memcmp(a, b, n); }

/* export -> import into a model from another seed: every parameter, BN statistic and codebook buffer bit-identical,
 * and the encoder's outputs identical. */
static int round_trip(ArchKind arch, const char *tag) {
    char *dir = test_tmpdir(tag);
    const char *path = test_path(dir, "w.safetensors");
    Config c;
    small_config(&c, arch);
    float *x;
    Model *a = trained_model(&c, 1, &x), *b = model_build(&c, 2);
    CHECK(a && b, "build: %s", v3_last_error());
    CHECK(a->vq.initted == 1.0f && b->vq.initted == 0.0f, "codebook state");
    CHECK(!same_bits(a->p, b->p, sizeof(float) * a->n_params) && !same_bits(a->buf, b->buf, sizeof(float) * a->n_bufs) &&
          !same_bits(a->vq.embed, b->vq.embed, sizeof(float) * (size_t)a->vq.K * a->vq.d),
          "the two models already agree (the test could not fail)");
    CHECK(export_to(a, path, 2) == 0, "export: %s", v3_last_error());
    StFile f;
    CHECK(st_read(path, &f) == 0, "read: %s", v3_last_error());
    int rc = weights_import(b, &f);
    st_free(&f);
    CHECK(rc == 0, "import: %s", v3_last_error());
    size_t kd = (size_t)a->vq.K * a->vq.d;
    CHECK(same_bits(a->p, b->p, sizeof(float) * a->n_params), "parameters differ after the round trip");
    CHECK(same_bits(a->buf, b->buf, sizeof(float) * a->n_bufs), "BN statistics differ after the round trip");
    CHECK(same_bits(a->vq.embed, b->vq.embed, sizeof(float) * kd) &&
          same_bits(a->vq.embed_avg, b->vq.embed_avg, sizeof(float) * kd) &&
          same_bits(a->vq.cluster_size, b->vq.cluster_size, sizeof(float) * a->vq.K) && b->vq.initted == 1.0f,
          "codebook differs after the round trip");
    int N = 2 * c.n_fragments;
    CHECK(model_encode(a, x, N) == 0 && model_encode(b, x, N) == 0, "encode: %s", v3_last_error());
    CHECK(same_bits(a->zc, b->zc, sizeof(float) * (size_t)N * a->dc) &&
          same_bits(a->zs, b->zs, sizeof(float) * (size_t)N * a->ds) &&
          same_bits(a->q, b->q, sizeof(float) * (size_t)N * a->dc) && same_bits(a->ind, b->ind, sizeof(int) * (size_t)N),
          "model_encode outputs differ after the round trip");
    ffree(x);
    model_free(a);
    model_free(b);
    return test_done(0, dir);
}

TEST(weights_round_trip_tiny) { return round_trip(ARCH_TINY, "wrt_tiny"); }
TEST(weights_round_trip_phonenums_small) { return round_trip(ARCH_PHONENUMS, "wrt_pn"); }

/* The full PhoneNums model: a few known state_dict keys with the shapes PyTorch gives them, the module order,
 * num_batches_tracked values, metadata, and the parameter total of `./v3 info`. */
typedef struct { const char *name; StDtype dt; int ndim; int64_t shape[4]; } Known;

static long info_total(const char *cfg) {
    char cmd[256], out[4096];
    snprintf(cmd, sizeof cmd, "./v3 info --config %s", cfg);
    if (test_sh(cmd, out, sizeof out) != 0) return -1;
    const char *t = strstr(out, "total params");
    return t ? strtol(t + strlen("total params"), NULL, 10) : -1;
}

TEST(weights_phonenums_names_and_shapes) {
    char *dir = test_tmpdir("wnames");
    const char *path = test_path(dir, "pn.safetensors");
    Config c;
    config_defaults(&c);
    CHECK(config_load("configs/phonenums.yaml", &c) == 0, "config: %s", v3_last_error());
    Model *m = model_build(&c, 0);
    CHECK(m, "build: %s", v3_last_error());
    CHECK(export_to(m, path, 7) == 0, "export: %s", v3_last_error());
    int n_params_t = m->n_params_t, n_bn = m->n_bufs_t / 2;
    size_t n_params = m->n_params;
    model_free(m);
    StFile f;
    CHECK(st_read(path, &f) == 0, "read: %s", v3_last_error());
    const Known known[] = {
        {"encoder.cnn_1.0.weight", ST_F32, 4, {16, 3, 5, 5}},        /* Conv2d(3, 16, 5x5): [out, in, kh, kw] */
        {"encoder.cnn_1.1.running_var", ST_F32, 1, {16}},
        {"encoder.cnn_1.resblock_0_0.shortcut.0.weight", ST_F32, 4, {32, 16, 1, 1}},
        {"encoder.cnn_1.resblock_0_0.shortcut.1.num_batches_tracked", ST_I64, 0, {0}},
        {"encoder.cnn_2.resblock_1_1.conv_1.weight", ST_F32, 4, {256, 256, 5, 5}},
        {"encoder.linear_1.weight", ST_F32, 2, {1024, 1536}},        /* Linear(1536, 1024): [out, in] */
        {"encoder.bn_c.running_var", ST_F32, 1, {512}},
        {"encoder.bn_s.num_batches_tracked", ST_I64, 0, {0}},
        {"vq._codebook.initted", ST_F32, 1, {1}},
        {"vq._codebook.cluster_size", ST_F32, 2, {1, 10}},
        {"vq._codebook.embed_avg", ST_F32, 3, {1, 10, 512}},
        {"vq._codebook.embed", ST_F32, 3, {1, 10, 512}},
        {"decoder.linear_0.weight", ST_F32, 2, {1536, 1024}},
        {"decoder.cnn_transpose_2.resblock_0_1.shortcut.0.weight", ST_F32, 4, {256, 128, 1, 1}}, /* ConvT: [in, out, ..] */
        {"decoder.cnn_transpose_1.output_conv.weight", ST_F32, 4, {16, 3, 5, 5}},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0] && !rc; i++) {
        const StTensor *t = st_find(&f, known[i].name);
        int ok = t && t->dtype == known[i].dt && t->ndim == known[i].ndim;
        for (int k = 0; ok && k < known[i].ndim; k++) ok = t->shape[k] == known[i].shape[k];
        if (!ok) { fprintf(stderr, "    %s: missing or wrong dtype/shape\n", known[i].name); rc = 1; }
    }
    /* PyTorch's order: ... encoder.bn_s, then vq._codebook, then the decoder */
    const StTensor *bns = st_find(&f, "encoder.bn_s.num_batches_tracked"), *emb = st_find(&f, "vq._codebook.embed");
    int order = !strcmp(f.t[0].name, "encoder.cnn_1.0.weight") && bns && !strcmp(bns[1].name, "vq._codebook.initted") &&
                emb && !strcmp(emb[1].name, "decoder.linear_c.weight") &&
                !strcmp(f.t[f.n - 1].name, "decoder.cnn_transpose_1.output_conv.bias") &&
                !strcmp(f.t[4].name, "encoder.cnn_1.1.running_mean") &&
                !strcmp(f.t[6].name, "encoder.cnn_1.1.num_batches_tracked");
    int64_t nbt = -1, nbt_c = -1;
    const StTensor *t1 = st_find(&f, "encoder.cnn_1.1.num_batches_tracked"), *tc = st_find(&f, "encoder.bn_c.num_batches_tracked");
    if (t1) memcpy(&nbt, f.data + t1->begin, 8);
    if (tc) memcpy(&nbt_c, f.data + tc->begin, 8);
    size_t total = 0;
    for (int i = 0; i < f.n; i++) {
        size_t L = strlen(f.t[i].name);
        if ((L > 7 && !strcmp(f.t[i].name + L - 7, ".weight")) || (L > 5 && !strcmp(f.t[i].name + L - 5, ".bias")))
            total += (size_t)st_numel(&f.t[i]);
    }
    int meta = st_meta(&f, "format") && !strcmp(st_meta(&f, "format"), "v3-state-dict") && st_meta(&f, "arch") &&
               !strcmp(st_meta(&f, "arch"), "phonenums") && st_meta(&f, "n_atoms") && !strcmp(st_meta(&f, "n_atoms"), "10");
    int count = f.n;
    st_free(&f);
    CHECK(rc == 0, "known keys");
    CHECK(order, "tensors not in PyTorch's state_dict order");
    CHECK(nbt == 7 && nbt_c == 0, "num_batches_tracked %lld (want 7) and unused bn_c's %lld (want 0)", (long long)nbt,
          (long long)nbt_c);
    CHECK(meta, "metadata");
    /* parameters, + running_mean/var/num_batches_tracked per BatchNorm (incl. bn_c, bn_s), + 4 codebook buffers */
    CHECK(count == n_params_t + 3 * (n_bn + 2) + 4 && count == 436, "%d tensors (the authors' PhoneNums state_dict has 436)", count);
    CHECK(total == n_params && total == 20612787, "weights and biases hold %zu values, the model %zu", total, n_params);
    if (access("./v3", X_OK) == 0) {
        long info = info_total("configs/phonenums.yaml");
        CHECK(info == (long)total, "./v3 info says %ld parameters, the file holds %zu", info, total);
    }
    return test_done(0, dir);
}

/* ---- strict import ---- */
typedef enum { M_DROP, M_FLATTEN, M_GROW, M_TO_I64, M_TO_F32, M_NAN, M_EXTRA, M_ALL_F64 } Mod;

/* Copy src into path with one modification of tensor `target` (metadata is not copied: import must not need it). */
static int rewrite(const StFile *src, const char *path, Mod mod, const char *target) {
    StWriter *w = st_writer_new();
    int rc = 0;
    for (int i = 0; i < src->n && !rc; i++) {
        const StTensor *t = &src->t[i];
        const unsigned char *d = src->data + t->begin;
        size_t n = (size_t)st_numel(t);
        int hit = target && !strcmp(t->name, target);
        if (hit && mod == M_DROP) continue;
        if ((hit && (mod == M_TO_I64 || mod == M_TO_F32 || mod == M_NAN || mod == M_GROW)) ||
            (mod == M_ALL_F64 && t->dtype == ST_F32)) {
            float *v = falloc(n + 1);
            rc = st_get_f32(src, t->name, t->ndim, t->shape, v);
            if (mod == M_NAN) v[n / 2] = NAN;
            if (rc) { /* (reported by st_get_f32) */
            } else if (mod == M_GROW) { /* one element more: [n + 1] */
                int64_t s = (int64_t)n + 1;
                rc = st_add(w, t->name, ST_F32, 1, &s, v);
            } else if (mod == M_TO_I64) {
                int64_t *iv = xmalloc(8 * (n + 1));
                for (size_t k = 0; k < n; k++) iv[k] = (int64_t)v[k];
                rc = st_add(w, t->name, ST_I64, t->ndim, t->shape, iv);
                free(iv);
            } else if (mod == M_ALL_F64) {
                double *dv = xmalloc(8 * (n + 1));
                for (size_t k = 0; k < n; k++) dv[k] = v[k];
                rc = st_add(w, t->name, ST_F64, t->ndim, t->shape, dv);
                free(dv);
            } else {
                rc = st_add(w, t->name, ST_F32, t->ndim, t->shape, v);
            }
            ffree(v);
            continue;
        }
        if (hit && mod == M_FLATTEN) {
            int64_t s = (int64_t)n;
            rc = st_add(w, t->name, t->dtype, 1, &s, d);
            continue;
        }
        rc = st_add(w, t->name, t->dtype, t->ndim, t->shape, d);
    }
    if (!rc && mod == M_EXTRA) {
        float v[2] = {1, 2};
        int64_t s = 2;
        rc = st_add(w, target, ST_F32, 1, &s, v);
    }
    if (!rc) rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

typedef struct { const char *what; Mod mod; const char *target; const char *want[2]; } ImportCase;

TEST(weights_import_is_strict) {
    char *dir = test_tmpdir("wstrict");
    const char *good = test_path(dir, "good.safetensors");
    Config c;
    small_config(&c, ARCH_TINY);
    float *x;
    Model *a = trained_model(&c, 3, &x), *b = model_build(&c, 4);
    CHECK(a && b, "build: %s", v3_last_error());
    CHECK(export_to(a, good, 2) == 0, "export: %s", v3_last_error());
    StFile src;
    CHECK(st_read(good, &src) == 0, "read: %s", v3_last_error());
    char lin0[64], w1[64], n_expected[64];
    snprintf(n_expected, sizeof n_expected, "expected only the %d state_dict tensors", src.n);
    const TensorInfo *l0 = NULL, *c1 = NULL;
    for (int i = 0; i < b->n_params_t; i++) {
        if (!strcmp(b->params[i].name, "decoder.linear_0.weight")) l0 = &b->params[i];
        if (!strcmp(b->params[i].name, "encoder.cnn_1.0.weight")) c1 = &b->params[i];
    }
    CHECK(l0 && c1 && l0->ndim == 2 && c1->ndim == 4, "tensor table");
    snprintf(lin0, sizeof lin0, "expected [%lld, %lld]", (long long)l0->shape[0], (long long)l0->shape[1]);
    snprintf(w1, sizeof w1, "expected F32 [%lld, %lld, %lld, %lld]", (long long)c1->shape[0], (long long)c1->shape[1],
             (long long)c1->shape[2], (long long)c1->shape[3]);
    const ImportCase cases[] = {
        {"missing weight", M_DROP, "encoder.cnn_1.0.weight", {"tensor 'encoder.cnn_1.0.weight' is missing", w1}},
        {"missing BN statistic", M_DROP, "encoder.cnn_2.1.running_var", {"'encoder.cnn_2.1.running_var' is missing"}},
        {"missing codebook", M_DROP, "vq._codebook.embed", {"'vq._codebook.embed' is missing", "expected F32 [1, 4, 6]"}},
        {"missing unused bn_c statistic", M_DROP, "encoder.bn_c.running_mean", {"'encoder.bn_c.running_mean' is missing"}},
        {"missing num_batches_tracked", M_DROP, "encoder.cnn_1.1.num_batches_tracked", {"is missing; expected I64 []"}},
        {"wrong shape", M_FLATTEN, "decoder.linear_0.weight", {"tensor 'decoder.linear_0.weight' has shape [", lin0}},
        {"codebook without the codebook dim", M_FLATTEN, "vq._codebook.cluster_size",
         {"'vq._codebook.cluster_size' has shape [4]", "expected [1, 4]"}},
        {"unused bn_s statistic misshaped", M_GROW, "encoder.bn_s.running_var",
         {"'encoder.bn_s.running_var' has shape [6]", "expected [5]"}},
        {"unexpected tensor", M_EXTRA, "encoder.extra.weight", {"unexpected tensor 'encoder.extra.weight'", n_expected}},
        {"integer weight", M_TO_I64, "encoder.linear_c.weight",
         {"tensor 'encoder.linear_c.weight' has dtype I64", "expected F32 (or F64, F16, BF16)"}},
        {"float num_batches_tracked", M_TO_F32, "encoder.cnn_1.1.num_batches_tracked",
         {"'encoder.cnn_1.1.num_batches_tracked' is F32 []", "expected I64 []"}},
        {"NaN weight", M_NAN, "decoder.linear_s.weight", {"tensor 'decoder.linear_s.weight' element", "expected finite values"}},
    };
    float *keep = falloc(b->n_params);
    memcpy(keep, b->p, sizeof(float) * b->n_params);
    int rc = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] && !rc; i++) {
        const ImportCase *k = &cases[i];
        const char *path = test_path(dir, "bad.safetensors");
        CHECK(rewrite(&src, path, k->mod, k->target) == 0, "%s: rewrite: %s", k->what, v3_last_error());
        StFile f;
        CHECK(st_read(path, &f) == 0, "%s: read: %s", k->what, v3_last_error());
        int got = weights_import(b, &f);
        st_free(&f);
        const char *e = v3_last_error();
        CHECK(got == -1, "%s: accepted", k->what);
        CHECK(strstr(e, path) && !strchr(e, '\n'), "%s: message does not name the file in one line: %s", k->what, e);
        for (int w = 0; w < 2 && k->want[w]; w++) CHECK(strstr(e, k->want[w]), "%s: lacks \"%s\": %s", k->what, k->want[w], e);
        CHECK(!memcmp(keep, b->p, sizeof(float) * b->n_params), "%s: a failed import changed the model", k->what);
    }
    /* no metadata and F64 tensors (a file from another writer): accepted, values exact */
    const char *f64 = test_path(dir, "f64.safetensors");
    CHECK(rewrite(&src, f64, M_ALL_F64, NULL) == 0, "rewrite f64: %s", v3_last_error());
    StFile f;
    CHECK(st_read(f64, &f) == 0 && f.n_meta == 0 && f.t[0].dtype == ST_F64, "read f64: %s", v3_last_error());
    int imp = weights_import(b, &f);
    st_free(&f);
    st_free(&src);
    CHECK(imp == 0, "F64 file without metadata: %s", v3_last_error());
    CHECK(!memcmp(a->p, b->p, sizeof(float) * a->n_params) && !memcmp(a->buf, b->buf, sizeof(float) * a->n_bufs),
          "F64 import differs");
    ffree(keep);
    ffree(x);
    model_free(a);
    model_free(b);
    return test_done(rc, dir);
}

/* ---- the reference reader: the `safetensors` package (CI installs it and sets V3_ST_PYTHON) ---- */

/* The expectation tools/st_check.py compares against: our reader's view of the file (names, dtypes, shapes,
 * element sums), so the two independent readers must agree on header and data. */
static int write_expectation(const StFile *f, const char *path) {
    FILE *o = fopen(path, "w");
    if (!o) return -1;
    fprintf(o, "{\"metadata\": ");
    if (!f->n_meta) fprintf(o, "null");
    for (int i = 0; i < f->n_meta; i++)
        fprintf(o, "%s\"%s\": \"%s\"%s", i ? ", " : "{", f->meta_key[i], f->meta_val[i], i == f->n_meta - 1 ? "}" : "");
    fprintf(o, ", \"tensors\": [");
    for (int i = 0; i < f->n; i++) {
        const StTensor *t = &f->t[i];
        size_t n = (size_t)st_numel(t);
        float *v = falloc(n + 1);
        double s = 0, sa = 0;
        if (st_get_f32(f, t->name, t->ndim, t->shape, v)) { ffree(v); fclose(o); return -1; }
        for (size_t k = 0; k < n; k++) { s += v[k]; sa += fabs(v[k]); }
        ffree(v);
        fprintf(o, "%s[\"%s\", \"%s\", [", i ? ", " : "", t->name, st_dtype_name(t->dtype));
        for (int k = 0; k < t->ndim; k++) fprintf(o, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
        fprintf(o, "], %.17g, %.17g]", s, sa);
    }
    fprintf(o, "]}\n");
    return fclose(o) == 0 ? 0 : -1;
}

static int st_check(const char *py, const char *file, const char *expect, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tools/st_check.py %s %s", py, file, expect);
    return test_sh(cmd, out, cap);
}

TEST(weights_read_by_the_safetensors_package) {
    const char *py = getenv("V3_ST_PYTHON");
    if (!py || !*py) SKIP("V3_ST_PYTHON not set: the safetensors package did NOT check our files (`make test` sets it)");
    char *dir = test_tmpdir("stpy");
    char model[600], dtypes[600], expect[600], out[4096];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(dtypes, sizeof dtypes, "%s/dtypes.safetensors", dir);
    snprintf(expect, sizeof expect, "%s/expect.json", dir);
    /* a trained PhoneNums-architecture model (BN statistics, codebook, I64 scalars, metadata) */
    Config c;
    small_config(&c, ARCH_PHONENUMS);
    float *x;
    Model *m = trained_model(&c, 5, &x);
    CHECK(m, "build: %s", v3_last_error());
    int rc = export_to(m, model, 2);
    ffree(x);
    model_free(m);
    CHECK(rc == 0, "export: %s", v3_last_error());
    /* every dtype numpy has (no BF16), a scalar and an empty tensor, no metadata */
    StWriter *w = st_writer_new();
    float f32[3] = {1.5f, -2, 3};
    double f64[2] = {0.25, -8};
    uint16_t f16[2] = {0x3C00, 0xC400};
    int64_t i64 = -5, s2 = 2, s3 = 3, s0[2] = {0, 4};
    int32_t i32[2] = {7, -9};
    int16_t i16[2] = {300, -2};
    int8_t i8[2] = {-100, 5};
    uint8_t u8[2] = {200, 1}, b[3] = {1, 0, 1};
    rc = st_add(w, "f32", ST_F32, 1, &s3, f32) || st_add(w, "f64", ST_F64, 1, &s2, f64) ||
         st_add(w, "f16", ST_F16, 1, &s2, f16) || st_add(w, "i64_scalar", ST_I64, 0, NULL, &i64) ||
         st_add(w, "i32", ST_I32, 1, &s2, i32) || st_add(w, "i16", ST_I16, 1, &s2, i16) ||
         st_add(w, "i8", ST_I8, 1, &s2, i8) || st_add(w, "u8", ST_U8, 1, &s2, u8) ||
         st_add(w, "bool", ST_BOOL, 1, &s3, b) || st_add(w, "empty", ST_F32, 2, s0, f32) || st_writer_save(w, dtypes);
    st_writer_free(w);
    CHECK(rc == 0, "write dtypes: %s", v3_last_error());
    const char *files[2] = {model, dtypes};
    for (int i = 0; i < 2; i++) {
        StFile f;
        CHECK(st_read(files[i], &f) == 0, "read: %s", v3_last_error());
        int n = f.n;
        rc = write_expectation(&f, expect);
        st_free(&f);
        CHECK(rc == 0, "expectation");
        int st = st_check(py, files[i], expect, out, sizeof out);
        CHECK(st == 0, "%s: st_check.py exited with %d: %s", files[i], st, out);
        char ok[32];
        snprintf(ok, sizeof ok, "OK %d tensors", n);
        CHECK(strstr(out, ok), "%s: st_check.py said: %s", files[i], out);
    }
    /* and it does fail on a mismatch (a wrong expectation) */
    FILE *o = fopen(expect, "w");
    CHECK(o, "open");
    fprintf(o, "{\"metadata\": null, \"tensors\": [[\"f32\", \"F32\", [3], 2.5, 6.5]]}\n");
    fclose(o);
    CHECK(st_check(py, dtypes, expect, out, sizeof out) != 0, "st_check.py accepted a wrong expectation: %s", out);
    return test_done(0, dir);
}
