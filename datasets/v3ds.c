/* The .v3ds dataset container (format in include/dataset.h): allocation, fully validating load, atomic save,
 * and batch gathering. Header fields are encoded byte by byte (little-endian) so the file layout does not
 * depend on struct padding or host byte order. */
#define _POSIX_C_SOURCE 200809L
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

/* Header field offsets (see dataset.h). header_crc covers bytes [0, 48). */
enum {
    OFF_MAGIC = 0, OFF_VERSION = 8, OFF_DTYPE = 12, OFF_NSAMPLES = 16, OFF_NFRAG = 24, OFF_C = 28, OFF_H = 32,
    OFF_W = 36, OFF_NCONTENT = 40, OFF_NSTYLE = 44, OFF_HCRC = 48, OFF_PCRC = 52, OFF_RESERVED = 56
};

/* ---- little-endian helpers ---- */

static int host_is_le(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Reverse the bytes of n 4-byte words in place (only needed on big-endian hosts). */
static void swap32_array(void *data, size_t n) {
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char t0 = p[0], t1 = p[1];
        p[0] = p[3]; p[1] = p[2]; p[2] = t1; p[3] = t0;
    }
}

/* ---- sizes ---- */

/* Payload byte counts with overflow checks; -1 (with the reason in *why) when a product overflows 64 bits
 * or the element count would not fit size_t / the int sample indices used by dataset_gather. */
typedef struct { uint64_t x_elems, labels, x_bytes, payload; } Sizes;

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int compute_sizes(uint64_t n, uint32_t f, uint32_t C, uint32_t H, uint32_t W, Sizes *s, const char **why) {
    uint64_t fe, se, lb;
    *why = NULL;
    if (!mul_ok((uint64_t)C * H, W, &fe) || !mul_ok(fe, f, &se) || !mul_ok(se, n, &s->x_elems) ||
        !mul_ok(s->x_elems, 4, &s->x_bytes) || !mul_ok(n, f, &s->labels) || !mul_ok(s->labels, 8, &lb) ||
        lb > UINT64_MAX - V3DS_HEADER_BYTES || s->x_bytes > UINT64_MAX - V3DS_HEADER_BYTES - lb)
        *why = "shape product overflows 64 bits";
    else if (n > INT32_MAX)
        *why = "n_samples exceeds 2147483647 (sample indices are int)";
    else if (s->x_bytes + lb > (uint64_t)SIZE_MAX / 2)
        *why = "payload too large for this platform";
    if (*why) return -1;
    s->payload = s->x_bytes + lb;
    return 0;
}

/* Zero-sized dimensions and label class counts are rejected in every entry point. */
static const char *zero_dim(uint64_t n, uint32_t f, uint32_t C, uint32_t H, uint32_t W, uint32_t nc, uint32_t ns) {
    if (!n) return "n_samples";
    if (!f) return "n_frag";
    if (!C) return "C";
    if (!H) return "H";
    if (!W) return "W";
    if (!nc) return "n_content";
    if (!ns) return "n_style";
    return NULL;
}

/* ---- allocation ---- */

int dataset_alloc(Dataset *d, uint64_t n_samples, uint32_t n_frag, uint32_t C, uint32_t H, uint32_t W,
                  uint32_t n_content, uint32_t n_style) {
    memset(d, 0, sizeof *d);
    const char *z = zero_dim(n_samples, n_frag, C, H, W, n_content, n_style), *why;
    if (z) return v3_error("dataset_alloc: %s is 0 (every dimension and class count must be positive)", z);
    Sizes s;
    if (compute_sizes(n_samples, n_frag, C, H, W, &s, &why))
        return v3_error("dataset_alloc: %llu x %u x [%u, %u, %u]: %s", (unsigned long long)n_samples, n_frag, C, H,
                        W, why);
    d->n_samples = n_samples;
    d->n_frag = n_frag;
    d->C = C;
    d->H = H;
    d->W = W;
    d->n_content = n_content;
    d->n_style = n_style;
    d->x = falloc((size_t)s.x_elems);
    d->content = xcalloc((size_t)s.labels, sizeof(int32_t));
    d->style = xcalloc((size_t)s.labels, sizeof(int32_t));
    return 0;
}

void dataset_free(Dataset *d) {
    if (!d) return;
    ffree(d->x);
    free(d->content);
    free(d->style);
    memset(d, 0, sizeof *d);
}

/* ---- content validation (shared by load and save so save never writes a file load would reject) ---- */

static int check_labels(const char *path, const char *what, const int32_t *lab, uint64_t n_lab, uint32_t n_frag,
                        uint32_t n_classes) {
    for (uint64_t i = 0; i < n_lab; i++)
        if (lab[i] < -1 || lab[i] >= (int64_t)n_classes)
            return v3_error("%s: %s label %d at sample %llu fragment %llu out of range [0, %u) (-1 = unknown)", path,
                            what, (int)lab[i], (unsigned long long)(i / n_frag), (unsigned long long)(i % n_frag),
                            n_classes);
    return 0;
}

static int check_contents(const char *path, const Dataset *d) {
    uint64_t fe = dataset_frag_elems(d), se = dataset_sample_elems(d), n = d->n_samples * se;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(d->x[i]))
            return v3_error("%s: non-finite value (%s) in x at sample %llu fragment %llu element %llu", path,
                            isnan(d->x[i]) ? "NaN" : "Inf", (unsigned long long)(i / se),
                            (unsigned long long)(i % se / fe), (unsigned long long)(i % fe));
    uint64_t nl = d->n_samples * d->n_frag;
    if (check_labels(path, "content", d->content, nl, d->n_frag, d->n_content)) return -1;
    return check_labels(path, "style", d->style, nl, d->n_frag, d->n_style);
}

/* ---- load ---- */

/* Check magic, version, header CRC, dtype, reserved bytes and shape; fill the shape fields of d. */
static int parse_header(const char *path, const unsigned char *h, Dataset *d, Sizes *s) {
    if (memcmp(h + OFF_MAGIC, V3DS_MAGIC, 8)) return v3_error("%s: not a v3 dataset (bad magic)", path);
    uint32_t ver = get_u32(h + OFF_VERSION);
    if (ver != V3DS_VERSION) return v3_error("%s: unsupported version %u (expected %u)", path, ver, V3DS_VERSION);
    if (crc32c(0, h, OFF_HCRC) != get_u32(h + OFF_HCRC))
        return v3_error("%s: header checksum mismatch (file corrupt)", path);
    uint32_t dtype = get_u32(h + OFF_DTYPE);
    if (dtype != 0) return v3_error("%s: unsupported dtype %u (expected 0 = float32)", path, dtype);
    for (int i = OFF_RESERVED; i < V3DS_HEADER_BYTES; i++)
        if (h[i]) return v3_error("%s: reserved header byte %d is %u (expected 0)", path, i, h[i]);
    d->n_samples = get_u64(h + OFF_NSAMPLES);
    d->n_frag = get_u32(h + OFF_NFRAG);
    d->C = get_u32(h + OFF_C);
    d->H = get_u32(h + OFF_H);
    d->W = get_u32(h + OFF_W);
    d->n_content = get_u32(h + OFF_NCONTENT);
    d->n_style = get_u32(h + OFF_NSTYLE);
    const char *z = zero_dim(d->n_samples, d->n_frag, d->C, d->H, d->W, d->n_content, d->n_style), *why;
    if (z) return v3_error("%s: zero-sized shape: %s is 0 (expected > 0)", path, z);
    if (compute_sizes(d->n_samples, d->n_frag, d->C, d->H, d->W, s, &why))
        return v3_error("%s: bad shape %llu x %u x [%u, %u, %u]: %s", path, (unsigned long long)d->n_samples,
                        d->n_frag, d->C, d->H, d->W, why);
    return 0;
}

/* The file size must be exactly header + payload. */
static int check_size(const char *path, FILE *f, const Dataset *d, const Sizes *s) {
    struct stat st;
    if (fstat(fileno(f), &st)) return v3_error("%s: cannot stat dataset: %s", path, strerror(errno));
    uint64_t want = V3DS_HEADER_BYTES + s->payload, have = (uint64_t)st.st_size;
    if (have == want) return 0;
    return v3_error("%s: %s dataset: expected %llu bytes (header %d + payload %llu for %llu samples x %u fragments "
                    "x [%u, %u, %u] float32 + int32 labels), file has %llu",
                    path, have < want ? "truncated" : "oversized", (unsigned long long)want, V3DS_HEADER_BYTES,
                    (unsigned long long)s->payload, (unsigned long long)d->n_samples, d->n_frag, d->C, d->H, d->W,
                    (unsigned long long)have);
}

/* Read x, then content, then style in one pass, checking the payload CRC over the raw file bytes. */
static int read_payload(const char *path, FILE *f, Dataset *d, const Sizes *s, uint32_t want_crc) {
    struct { void *p; size_t n; } part[3] = {
        {d->x, (size_t)s->x_elems}, {d->content, (size_t)s->labels}, {d->style, (size_t)s->labels}};
    uint32_t crc = 0;
    for (int k = 0; k < 3; k++) {
        if (fread(part[k].p, 4, part[k].n, f) != part[k].n)
            return v3_error("%s: read error in payload (file changed while reading?)", path);
        crc = crc32c(crc, part[k].p, part[k].n * 4);
        if (!host_is_le()) swap32_array(part[k].p, part[k].n);
    }
    if (crc != want_crc) return v3_error("%s: payload checksum mismatch (file corrupt)", path);
    return 0;
}

static int load_open(const char *path, FILE *f, Dataset *d) {
    unsigned char h[V3DS_HEADER_BYTES];
    size_t got = fread(h, 1, sizeof h, f);
    if (got == 0) return v3_error("%s: not a v3 dataset (empty file)", path);
    if (got < 8 || memcmp(h, V3DS_MAGIC, 8)) return v3_error("%s: not a v3 dataset (bad magic)", path);
    if (got < sizeof h)
        return v3_error("%s: truncated dataset: expected at least the %d-byte header, file has %zu bytes", path,
                        V3DS_HEADER_BYTES, got);
    Dataset shape;
    Sizes s;
    memset(&shape, 0, sizeof shape);
    if (parse_header(path, h, &shape, &s) || check_size(path, f, &shape, &s)) return -1;
    if (dataset_alloc(d, shape.n_samples, shape.n_frag, shape.C, shape.H, shape.W, shape.n_content, shape.n_style))
        return -1; /* unreachable: parse_header already checked the shape */
    snprintf(d->path, sizeof d->path, "%s", path);
    if (read_payload(path, f, d, &s, get_u32(h + OFF_PCRC))) return -1;
    return check_contents(path, d);
}

int dataset_load(const char *path, Dataset *d) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f) return v3_error("%s: cannot open dataset: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && !S_ISREG(st.st_mode)) { /* a directory would read as "empty" otherwise */
        fclose(f);
        return v3_error("%s: cannot open dataset: %s", path,
                        S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
    }
    int rc = load_open(path, f, d);
    fclose(f);
    if (rc) dataset_free(d); /* never hand back a half-filled dataset */
    return rc;
}

int dataset_load_split(const char *dir, const char *split, Dataset *d) {
    size_t n = strlen(dir) + strlen(split) + 8;
    char *path = xmalloc(n);
    snprintf(path, n, "%s/%s.v3ds", dir, split);
    int rc = dataset_load(path, d);
    if (rc && access(path, F_OK) != 0) {
        /* A missing split usually means the data was never generated: say how to make it. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", v3_last_error());
        v3_error("%s (generate one with: v3 data synth --out %s)", msg, dir);
    }
    free(path);
    return rc;
}

/* ---- save ---- */

/* Write n 4-byte words as little-endian, converting through a bounce buffer on big-endian hosts. */
static int write_words(FILE *f, const void *data, size_t n) {
    if (host_is_le()) return fwrite(data, 4, n, f) == n ? 0 : -1;
    unsigned char buf[4096];
    const unsigned char *p = data;
    while (n) {
        size_t k = n < sizeof buf / 4 ? n : sizeof buf / 4;
        memcpy(buf, p, k * 4);
        swap32_array(buf, k);
        if (fwrite(buf, 4, k, f) != k) return -1;
        p += k * 4;
        n -= k;
    }
    return 0;
}

/* CRC of the payload as it will appear on disk (little-endian words). */
static uint32_t payload_crc(const Dataset *d, const Sizes *s) {
    struct { const void *p; size_t n; } part[3] = {
        {d->x, (size_t)s->x_elems}, {d->content, (size_t)s->labels}, {d->style, (size_t)s->labels}};
    uint32_t crc = 0;
    for (int k = 0; k < 3; k++) {
        if (host_is_le()) { crc = crc32c(crc, part[k].p, part[k].n * 4); continue; }
        unsigned char buf[4096];
        for (size_t i = 0; i < part[k].n; i += sizeof buf / 4) {
            size_t m = part[k].n - i < sizeof buf / 4 ? part[k].n - i : sizeof buf / 4;
            memcpy(buf, (const unsigned char *)part[k].p + i * 4, m * 4);
            swap32_array(buf, m);
            crc = crc32c(crc, buf, m * 4);
        }
    }
    return crc;
}

static void build_header(unsigned char *h, const Dataset *d, uint32_t pcrc) {
    memset(h, 0, V3DS_HEADER_BYTES);
    memcpy(h + OFF_MAGIC, V3DS_MAGIC, 8);
    put_u32(h + OFF_VERSION, V3DS_VERSION);
    put_u32(h + OFF_DTYPE, 0);
    put_u64(h + OFF_NSAMPLES, d->n_samples);
    put_u32(h + OFF_NFRAG, d->n_frag);
    put_u32(h + OFF_C, d->C);
    put_u32(h + OFF_H, d->H);
    put_u32(h + OFF_W, d->W);
    put_u32(h + OFF_NCONTENT, d->n_content);
    put_u32(h + OFF_NSTYLE, d->n_style);
    put_u32(h + OFF_HCRC, crc32c(0, h, OFF_HCRC));
    put_u32(h + OFF_PCRC, pcrc);
}

/* Write header + payload to an already-open temp file and make it durable; -1 with errno set on failure. */
typedef struct { const Dataset *d; const Sizes *s; } SaveCtx;

static int write_body(FILE *f, void *ctx) {
    const SaveCtx *c = ctx;
    unsigned char h[V3DS_HEADER_BYTES];
    build_header(h, c->d, payload_crc(c->d, c->s));
    return fwrite(h, 1, sizeof h, f) != sizeof h || write_words(f, c->d->x, (size_t)c->s->x_elems) ||
           write_words(f, c->d->content, (size_t)c->s->labels) || write_words(f, c->d->style, (size_t)c->s->labels);
}

int dataset_save(const char *path, const Dataset *d) {
    const char *z = zero_dim(d->n_samples, d->n_frag, d->C, d->H, d->W, d->n_content, d->n_style), *why;
    if (z) return v3_error("%s: refusing to save: %s is 0", path, z);
    Sizes s;
    if (compute_sizes(d->n_samples, d->n_frag, d->C, d->H, d->W, &s, &why))
        return v3_error("%s: refusing to save: %s", path, why);
    if (check_contents(path, d)) return -1; /* never write a file that load would reject */
    SaveCtx c = {d, &s};
    return write_file_atomic(path, write_body, &c);
}

/* ---- batching ---- */

void dataset_gather(const Dataset *d, const int *idx, int B, float *x_out, int32_t *content_out,
                    int32_t *style_out) {
    size_t se = (size_t)dataset_sample_elems(d), nf = d->n_frag;
    for (int b = 0; b < B; b++) {
        if (idx[b] < 0 || (uint64_t)idx[b] >= d->n_samples)
            V3_FATAL("dataset_gather: index %d out of range [0, %llu) for %s", idx[b],
                     (unsigned long long)d->n_samples, d->path);
        size_t i = (size_t)idx[b];
        if (x_out) memcpy(x_out + b * se, d->x + i * se, se * sizeof(float));
        if (content_out) memcpy(content_out + b * nf, d->content + i * nf, nf * sizeof(int32_t));
        if (style_out) memcpy(style_out + b * nf, d->style + i * nf, nf * sizeof(int32_t));
    }
}
