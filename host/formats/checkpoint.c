/* Atomic, checksummed checkpoints: weights, AdamW state, BN running stats, codebook EMA state, RNG, step. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "config.h"

typedef struct { const float *p; size_t n; } Span;

static int payload_spans(const Model *m, Span *s) {
    int k = 0;
    s[k++] = (Span){m->p, m->n_params};
    s[k++] = (Span){m->m, m->n_trainable};
    s[k++] = (Span){m->v, m->n_trainable};
    s[k++] = (Span){m->buf, m->n_bufs};
    s[k++] = (Span){m->vq.embed, (size_t)m->vq.K * m->vq.d};
    s[k++] = (Span){m->vq.embed_avg, (size_t)m->vq.K * m->vq.d};
    s[k++] = (Span){m->vq.cluster_size, (size_t)m->vq.K};
    s[k++] = (Span){&m->vq.initted, 1};
    return k;
}

static void put32(unsigned char *h, int off, uint32_t v) { memcpy(h + off, &v, 4); }
static void put64(unsigned char *h, int off, uint64_t v) { memcpy(h + off, &v, 8); }
static uint32_t get32(const unsigned char *h, int off) { uint32_t v; memcpy(&v, h + off, 4); return v; }
static uint64_t get64(const unsigned char *h, int off) { uint64_t v; memcpy(&v, h + off, 8); return v; }

static void fill_header(unsigned char *h, const Model *m, const CkptMeta *meta, uint32_t payload_crc) {
    memset(h, 0, V3CK_HEADER_BYTES);
    memcpy(h, V3CK_MAGIC, 8);
    put32(h, 8, V3CK_VERSION);
    put32(h, 12, (uint32_t)m->cfg.arch);
    put64(h, 16, m->n_params);
    put64(h, 24, m->n_trainable);
    put64(h, 32, m->n_bufs);
    put32(h, 40, (uint32_t)m->vq.K);
    put32(h, 44, (uint32_t)m->vq.d);
    put64(h, 48, meta->step);
    put64(h, 56, (uint64_t)m->adam_t);
    put64(h, 64, meta->seed);
    for (int i = 0; i < 4; i++) put64(h, 72 + 8 * i, m->rng.s[i]);
    memcpy(h + 104, &meta->val_loss, 8);
    put32(h, 112, meta->epoch);
    put32(h, 116, payload_crc);
    put32(h, 120, crc32c(0, h, 120));
}

typedef struct { const unsigned char *h; const Span *s; int ns; } CkptWrite;

static int write_ckpt(FILE *f, void *ctx) {
    const CkptWrite *c = ctx;
    if (fwrite(c->h, 1, V3CK_HEADER_BYTES, f) != V3CK_HEADER_BYTES) return -1;
    for (int i = 0; i < c->ns; i++)
        if (fwrite(c->s[i].p, sizeof(float), c->s[i].n, f) != c->s[i].n) return -1;
    return 0;
}

int checkpoint_save(const char *path, const Model *m, const CkptMeta *meta) {
    Span s[8];
    int ns = payload_spans(m, s);
    uint32_t crc = 0;
    for (int i = 0; i < ns; i++) crc = crc32c(crc, s[i].p, s[i].n * sizeof(float));
    unsigned char h[V3CK_HEADER_BYTES];
    fill_header(h, m, meta, crc);
    CkptWrite c = {h, s, ns};
    return write_file_atomic(path, write_ckpt, &c);
}

/* A matching CRC only says the bytes are the ones written: a file written by a buggy or hostile tool can still
 * carry impossible values, which would otherwise "resume" at step 2^64-1 or divide by a zero RNG state. */
static int check_header_ranges(const char *path, const unsigned char *h) {
    uint64_t step = get64(h, 48), adam_t = get64(h, 56);
    double val;
    memcpy(&val, h + 104, 8);
    if (step > (uint64_t)V3_MAX_STEPS)
        return v3_error("%s: checkpoint field step is %llu, over the limit of %lld (V3_MAX_STEPS)", path,
                        (unsigned long long)step, V3_MAX_STEPS);
    if (adam_t > step)
        return v3_error("%s: checkpoint field adam_t is %llu, expected at most step (%llu)", path,
                        (unsigned long long)adam_t, (unsigned long long)step);
    if (get32(h, 112) > step)
        return v3_error("%s: checkpoint field epoch is %u, expected at most step (%llu)", path, get32(h, 112),
                        (unsigned long long)step);
    if (!isnan(val) && !(val >= 0 && isfinite(val)))
        return v3_error("%s: checkpoint field val_loss is %g, expected NaN (none) or a finite number >= 0", path, val);
    if (!(get64(h, 72) | get64(h, 80) | get64(h, 88) | get64(h, 96)))
        return v3_error("%s: checkpoint field rng is all zero, expected a xoshiro256 state (not all zero)", path);
    return 0;
}

/* The payload's values: finite everywhere, AdamW's second moments and the codebook counts >= 0, initted 0 or 1. */
static int check_payload_ranges(const char *path, const float *t, const Span *s, int ns) {
    static const char *names[] = {"params", "adam_m", "adam_v", "bn_buffers", "vq.embed", "vq.embed_avg",
                                  "vq.cluster_size", "vq.initted"};
    size_t off = 0;
    for (int k = 0; k < ns; off += s[k].n, k++)
        for (size_t i = 0; i < s[k].n; i++) {
            float v = t[off + i];
            int nonneg = k == 2 || k == 6;
            if (!isfinite(v) || (nonneg && v < 0) || (k == 7 && v != 0 && v != 1))
                return v3_error("%s: checkpoint payload %s[%zu] is %g, expected %s", path, names[k], i, (double)v,
                                k == 7 ? "0 or 1" : nonneg ? "a finite number >= 0" : "a finite number");
        }
    return 0;
}

static int read_header(const char *path, FILE *f, unsigned char *h) {
    if (fread(h, 1, V3CK_HEADER_BYTES, f) != V3CK_HEADER_BYTES)
        return v3_error("%s: truncated checkpoint: shorter than its %d-byte header", path, V3CK_HEADER_BYTES);
    if (memcmp(h, V3CK_MAGIC, 8) != 0) return v3_error("%s: not a v3 checkpoint (bad magic)", path);
    if (get32(h, 8) != V3CK_VERSION)
        return v3_error("%s: unsupported checkpoint version %u (expected %u)", path, get32(h, 8), V3CK_VERSION);
    if (crc32c(0, h, 120) != get32(h, 120)) return v3_error("%s: checkpoint header checksum mismatch (file corrupt)", path);
    return check_header_ranges(path, h);
}

static void meta_from_header(const unsigned char *h, CkptMeta *meta) {
    meta->step = get64(h, 48);
    meta->seed = get64(h, 64);
    memcpy(&meta->val_loss, h + 104, 8);
    meta->epoch = get32(h, 112);
}

int checkpoint_peek(const char *path, CkptMeta *meta) {
    FILE *f = fopen(path, "rb");
    if (!f) return v3_error("%s: cannot open checkpoint: %s", path, strerror(errno));
    unsigned char h[V3CK_HEADER_BYTES];
    int rc = read_header(path, f, h);
    fclose(f);
    if (rc == 0) meta_from_header(h, meta);
    return rc;
}

/* Check the header describes this model; name the first field that differs. */
static int check_shape(const char *path, const unsigned char *h, const Model *m) {
    struct { const char *what; uint64_t file, model; } f[] = {
        {"architecture", get32(h, 12), (uint64_t)m->cfg.arch}, {"parameter count", get64(h, 16), m->n_params},
        {"trainable parameter count", get64(h, 24), m->n_trainable}, {"BatchNorm buffer count", get64(h, 32), m->n_bufs},
        {"codebook size n_atoms", get32(h, 40), (uint64_t)m->vq.K}, {"code width d_emb_c", get32(h, 44), (uint64_t)m->vq.d},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].file != f[i].model)
            return v3_error("%s: checkpoint does not match the model of the config: %s is %llu in the file, %llu "
                            "expected", path, f[i].what, (unsigned long long)f[i].file,
                            (unsigned long long)f[i].model);
    return 0;
}

int checkpoint_load(const char *path, Model *m, CkptMeta *meta) {
    FILE *f = fopen(path, "rb");
    if (!f) return v3_error("%s: cannot open checkpoint: %s", path, strerror(errno));
    unsigned char h[V3CK_HEADER_BYTES];
    if (read_header(path, f, h) || check_shape(path, h, m)) { fclose(f); return -1; }
    Span s[8];
    int ns = payload_spans(m, s);
    size_t total = 0;
    for (int i = 0; i < ns; i++) total += s[i].n;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long want = V3CK_HEADER_BYTES + (long)(total * sizeof(float));
    if (size != want) {
        fclose(f);
        return v3_error("%s: %s checkpoint: expected %ld bytes for this model, file has %ld", path,
                        size < want ? "truncated" : "oversized", want, size);
    }
    fseek(f, V3CK_HEADER_BYTES, SEEK_SET);
    float *tmp = xmalloc(total * sizeof(float));
    size_t got = fread(tmp, sizeof(float), total, f);
    fclose(f);
    if (got != total || crc32c(0, tmp, total * sizeof(float)) != get32(h, 116)) {
        free(tmp);
        return v3_error("%s: checkpoint payload checksum mismatch (file corrupt)", path);
    }
    if (check_payload_ranges(path, tmp, s, ns)) { free(tmp); return -1; }
    size_t off = 0;
    for (int i = 0; i < ns; i++) { /* spans point into the model: copy back */
        memcpy((float *)s[i].p, tmp + off, s[i].n * sizeof(float));
        off += s[i].n;
    }
    free(tmp);
    m->adam_t = (long)get64(h, 56);
    for (int i = 0; i < 4; i++) m->rng.s[i] = get64(h, 72 + 8 * i);
    meta_from_header(h, meta);
    return 0;
}
