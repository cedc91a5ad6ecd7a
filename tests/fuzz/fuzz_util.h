/* Shared by the libFuzzer harnesses tests/fuzz/fuzz_*.c (built and run by `make fuzz`): a silent library, one
 * temporary directory per process for the parsers that only take a path, CRC fix-ups so mutations reach the
 * checks behind a checksum, and the small model that checkpoints and state_dicts are loaded into. */
#ifndef V3_FUZZ_UTIL_H
#define V3_FUZZ_UTIL_H
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "model.h"

#define FZ_MAX_FILES 8
static char fz_dir[256];
static char fz_files[FZ_MAX_FILES][320];
static int fz_nfiles;

static inline void fz_cleanup(void) {
    for (int i = 0; i < fz_nfiles; i++) unlink(fz_files[i]);
    if (fz_dir[0]) rmdir(fz_dir);
}

/* Path of `name` in this process's temporary directory (created, and the library silenced, on first use). */
static inline const char *fz_path(const char *name) {
    if (!fz_dir[0]) {
        v3_verbose = -1;
        const char *t = getenv("TMPDIR"); /* else /dev/shm when there is one: the files are rewritten every run */
        if (!t || !*t) t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fz_dir, sizeof fz_dir, "%s/v3fuzz-XXXXXX", t);
        if (!mkdtemp(fz_dir)) { perror("fuzz: mkdtemp"); abort(); }
        atexit(fz_cleanup);
    }
    for (int i = 0; i < fz_nfiles; i++)
        if (!strcmp(strrchr(fz_files[i], '/') + 1, name)) return fz_files[i];
    if (fz_nfiles == FZ_MAX_FILES) abort();
    snprintf(fz_files[fz_nfiles], sizeof fz_files[0], "%s/%s", fz_dir, name);
    return fz_files[fz_nfiles++];
}

static inline void fz_write(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f)) { perror(path); abort(); }
}

static inline void fz_put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }

/* A copy of d[0..n) whose header CRC (bytes [0, hcrc) at offset hcrc) and payload CRC (bytes [payload, n) at
 * offset pcrc) are right; NULL when the input is too short or already right. free() the copy. */
static inline uint8_t *fz_fix_crcs(const uint8_t *d, size_t n, size_t hcrc, size_t pcrc, size_t payload) {
    if (n < payload) return NULL;
    uint8_t *c = malloc(n);
    memcpy(c, d, n);
    fz_put32(c + pcrc, crc32c(0, c + payload, n - payload));
    fz_put32(c + hcrc, crc32c(0, c, hcrc));
    if (!memcmp(c, d, n)) { free(c); return NULL; }
    return c;
}

/* config_save then config_load must give back the same configuration (compared as config_print tables: a byte
 * comparison would trip over stale bytes after a string's NUL when --set gave a key twice). */
static inline void fz_config_round_trip(const char *who, const Config *c) {
    const char *saved = fz_path("saved.yaml");
    Config back;
    config_defaults(&back);
    if (config_save(c, saved) || config_load(saved, &back)) {
        fprintf(stderr, "%s: config_save wrote a file config_load rejects: %s\n", who, v3_last_error());
        abort();
    }
    memcpy(back.path, c->path, sizeof c->path);
    char *t[2];
    size_t n[2];
    for (int i = 0; i < 2; i++) {
        FILE *f = open_memstream(&t[i], &n[i]);
        config_print(i ? &back : c, f);
        fclose(f);
    }
    if (strcmp(t[0], t[1])) {
        fprintf(stderr, "%s: the config reloaded from config_save's file differs:\n%s---\n%s", who, t[0], t[1]);
        abort();
    }
    free(t[0]);
    free(t[1]);
}

/* The model of configs/tiny.yaml at 8 channels, 4 atoms of width 4, 2 fragments, built once: the corpus's
 * checkpoint and state_dict are of this model (tests/fuzz/make_corpus.py trains it with the same overrides). */
static inline Model *fz_model(void) {
    static Model *m;
    static const char *sets[] = {"model_config.arch=tiny", "model_config.n_channels=8", "model_config.n_fragments=2",
                                 "model_config.fragment_len=16", "model_config.n_feature=16", "model_config.d_emb_c=4",
                                 "model_config.d_emb_s=4", "model_config.n_atoms=4", "batch_size=4",
                                 "model_config.threshold_ema_dead_code=0", "model_config.vq_ema_decay=0.98"};
    if (m) return m;
    v3_verbose = -1;
    Config c;
    config_defaults(&c);
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (config_set(&c, sets[i])) { fprintf(stderr, "fuzz: %s\n", v3_last_error()); abort(); }
    if (config_validate(&c) || !(m = model_build(&c, 1))) { fprintf(stderr, "fuzz: %s\n", v3_last_error()); abort(); }
    return m;
}
#endif
