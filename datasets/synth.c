/* Synthetic "coloured strokes" data: each fragment is a 3 x H x W image of one stroke shape (the content)
 * drawn in the sample's colour (the style) on a light background. Content varies within a sample and style
 * across samples, which is exactly the structure V3 is meant to disentangle, so tiny CPU runs can check it. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "dataset.h"
#include "rng.h"

#define SYNTH_MAX_CONTENT 10
#define SYNTH_MAX_STYLE 8
#define SYNTH_BACKGROUND 0.9f
#define SYNTH_JITTER 0.05f
#define SYNTH_MAX_SIDE 1024
#define SYNTH_MAX_SPLIT_BYTES (16ull << 30)

/* Stroke colours as RGB in [-1, 1]: every one has a channel <= -0.5 so it stands out from the background,
 * and pairs are at least ~0.85 apart. */
static const float k_colours[SYNTH_MAX_STYLE][3] = {
    {-0.9f, -0.9f, -0.9f}, /* black */
    {0.9f, -0.8f, -0.8f},  /* red */
    {-0.8f, 0.5f, -0.8f},  /* green */
    {-0.8f, -0.7f, 0.9f},  /* blue */
    {0.9f, 0.2f, -0.9f},   /* orange */
    {0.3f, -0.9f, 0.6f},   /* purple */
    {-0.9f, 0.4f, 0.4f},   /* teal */
    {0.1f, -0.5f, -0.9f},  /* brown */
};

void synth_defaults(SynthParams *p) {
    memset(p, 0, sizeof *p);
    p->seed = 1;
    p->n_train = 256;
    p->n_val = 32;
    p->n_test = 32;
    p->n_frag = 6;
    p->n_content = 6;
    p->n_style = 4;
    p->H = 16;
    p->W = 16;
    p->noise = 0.05f;
}

/* ---- shapes ---- */

/* Geometry of the (H-1) x (W-1) canvas the shapes are drawn on before the 0..1 px shift. */
typedef struct { int Hs, Ws, m, t, cy, cx, sq, L; } Geom;

static Geom make_geom(int H, int W) {
    Geom g;
    int side = H < W ? H : W;
    g.Hs = H - 1;
    g.Ws = W - 1;
    g.m = side / 8 > 1 ? side / 8 : 1;  /* margin */
    g.t = side / 8 > 2 ? side / 8 : 2;  /* stroke thickness: 2 px at 16 x 16 */
    g.cy = g.Hs / 2;
    g.cx = g.Ws / 2;
    g.sq = side * 3 / 8 > 3 ? side * 3 / 8 : 3; /* centre square side */
    g.L = (side - 1) / 2;                       /* L-corner arm length */
    return g;
}

static int in(int v, int lo, int len) { return v >= lo && v < lo + len; }

/* Left edge of a diagonal stroke at row y: x runs from one inner corner to the other. */
static int diag_x(const Geom *g, int y, int flip) {
    int span = g->Ws - 2 * g->m - g->t, rows = g->Hs - 2 * g->m - 1;
    int off = (y - g->m) * span / (rows > 1 ? rows : 1);
    return flip ? g->Ws - g->m - g->t - off : g->m + off;
}

static int on_ring(const Geom *g, int y, int x) {
    double ry = g->Hs / 2.0 - g->m, rx = g->Ws / 2.0 - g->m;
    double dy = (y - (g->Hs - 1) / 2.0) / ry, dx = (x - (g->Ws - 1) / 2.0) / rx;
    double r = sqrt(dy * dy + dx * dx), inner = 1.0 - g->t / (ry < rx ? ry : rx);
    return r < 1.0 && r >= inner;
}

/* Is canvas pixel (y, x) on stroke class c? The 10 classes are visibly different shapes/positions. */
static int on_stroke(const Geom *g, int c, int y, int x) {
    int m = g->m, t = g->t, inner_w = g->Ws - 2 * m, inner_h = g->Hs - 2 * m;
    int rows = in(y, m, inner_h), cols = in(x, m, inner_w);
    int y0 = g->cy - g->L / 2, x0 = g->cx - g->L / 2;
    switch (c) {
    case 0: return in(y, m, t) && cols;                                      /* bar, top */
    case 1: return in(y, g->Hs - m - t, t) && cols;                          /* bar, bottom */
    case 2: return in(x, m, t) && rows;                                      /* bar, left */
    case 3: return in(x, g->Ws - m - t, t) && rows;                          /* bar, right */
    case 4: return rows && in(x, diag_x(g, y, 0), t);                        /* diagonal \ */
    case 5: return rows && in(x, diag_x(g, y, 1), t);                        /* diagonal / */
    case 6: return in(y, g->cy - g->sq / 2, g->sq) && in(x, g->cx - g->sq / 2, g->sq); /* centre square */
    case 7: return (in(y, g->cy - t / 2, t) && cols) || (in(x, g->cx - t / 2, t) && rows); /* plus */
    case 8: return on_ring(g, y, x);                                         /* ring */
    default: return (in(x, x0, t) && in(y, y0, g->L)) || (in(y, y0 + g->L - t, t) && in(x, x0, g->L)); /* L */
    }
}

/* ---- rendering ---- */

/* One fragment: stroke c in colour col (+ jitter), shifted by 0..1 px, plus Gaussian noise, clipped. */
static void render_fragment(Rng *r, const Geom *g, int c, const float *col, float noise, int H, int W, float *out) {
    int dy = (int)rng_below(r, 2), dx = (int)rng_below(r, 2);
    float jit[3];
    for (int ch = 0; ch < 3; ch++) jit[ch] = rng_uniform_range(r, -SYNTH_JITTER, SYNTH_JITTER);
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int cy = y - dy, cx = x - dx;
                int on = cy >= 0 && cx >= 0 && cy < g->Hs && cx < g->Ws && on_stroke(g, c, cy, cx);
                double v = on ? col[ch] + jit[ch] : SYNTH_BACKGROUND;
                if (noise > 0) v += noise * rng_normal(r);
                out[((size_t)ch * H + y) * W + x] = (float)(v < -1 ? -1 : v > 1 ? 1 : v);
            }
}

/* Fill every sample of one split from its own RNG stream. */
static void fill_split(Dataset *d, const SynthParams *p, uint64_t stream_seed) {
    Rng r;
    rng_seed(&r, stream_seed);
    Geom g = make_geom(p->H, p->W);
    int perm[SYNTH_MAX_CONTENT];
    size_t fe = (size_t)dataset_frag_elems(d);
    for (uint64_t i = 0; i < d->n_samples; i++) {
        int s = (int)(i % (uint64_t)p->n_style); /* balanced styles */
        rng_permutation(&r, p->n_content, perm);
        for (int f = 0; f < p->n_frag; f++) {
            size_t k = (size_t)i * p->n_frag + f;
            d->content[k] = perm[f];
            d->style[k] = s;
            render_fragment(&r, &g, perm[f], k_colours[s], p->noise, p->H, p->W, d->x + k * fe);
        }
    }
}

/* ---- parameters, directories, driver ---- */

static int check_range(const char *name, const char *flag, long long v, long long lo, long long hi) {
    if (v >= lo && v <= hi) return 0;
    return v3_error("synth: %s (%s) must be in [%lld, %lld], got %lld", name, flag, lo, hi, v);
}

static int validate_params(const SynthParams *p) {
    if (check_range("n_content", "--contents", p->n_content, 2, SYNTH_MAX_CONTENT) ||
        check_range("n_style", "--styles", p->n_style, 2, SYNTH_MAX_STYLE) ||
        check_range("H", "--size", p->H, 8, SYNTH_MAX_SIDE) || check_range("W", "--size", p->W, 8, SYNTH_MAX_SIDE) ||
        check_range("n_frag", "--frags", p->n_frag, 2, SYNTH_MAX_CONTENT) ||
        check_range("n_train", "--train", p->n_train, 2, INT32_MAX) ||
        check_range("n_val", "--val", p->n_val, 2, INT32_MAX) ||
        check_range("n_test", "--test", p->n_test, 1, INT32_MAX))
        return -1;
    if (p->n_frag > p->n_content)
        return v3_error("synth: n_frag (--frags) = %d exceeds n_content (--contents) = %d: each sample's fragments "
                        "take distinct contents", p->n_frag, p->n_content);
    if (!(p->noise >= 0 && p->noise <= 1)) /* also rejects NaN */
        return v3_error("synth: noise (--noise) must be in [0, 1], got %g", (double)p->noise);
    int most = p->n_train > p->n_val ? p->n_train : p->n_val;
    if (p->n_test > most) most = p->n_test;
    unsigned long long bytes = (unsigned long long)most * p->n_frag * 3 * p->H * p->W * 4;
    if (bytes > SYNTH_MAX_SPLIT_BYTES)
        return v3_error("synth: the largest split would need %llu bytes of float32 data (limit %llu)", bytes,
                        SYNTH_MAX_SPLIT_BYTES);
    return 0;
}

/* mkdir(2) that accepts an existing entry (checked to be a directory at the end of mkdir_p). */
static int mkdir_one(const char *path) {
    if (mkdir(path, 0755) && errno != EEXIST) return v3_error("%s: cannot create directory: %s", path, strerror(errno));
    return 0;
}

/* mkdir -p: create every missing component of dir. */
static int mkdir_p(const char *dir) {
    char *buf = xmalloc(strlen(dir) + 1);
    strcpy(buf, dir);
    int rc = 0;
    for (char *p = buf + 1; *p && !rc; p++)
        if (*p == '/') {
            *p = 0;
            rc = mkdir_one(buf);
            *p = '/';
        }
    if (!rc) rc = mkdir_one(buf);
    struct stat st;
    if (!rc && (stat(buf, &st) || !S_ISDIR(st.st_mode))) rc = v3_error("%s: exists and is not a directory", buf);
    free(buf);
    return rc;
}

static int write_split(const char *dir, const char *name, int n, uint64_t tag, const SynthParams *p) {
    Dataset d;
    if (dataset_alloc(&d, (uint64_t)n, (uint32_t)p->n_frag, 3, (uint32_t)p->H, (uint32_t)p->W,
                      (uint32_t)p->n_content, (uint32_t)p->n_style))
        return -1;
    fill_split(&d, p, rng_derive_seed(p->seed, tag));
    size_t len = strlen(dir) + strlen(name) + 8;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/%s.v3ds", dir, name);
    int rc = dataset_save(path, &d);
    free(path);
    dataset_free(&d);
    return rc;
}

int synth_generate(const char *dir, const SynthParams *p) {
    if (validate_params(p) || mkdir_p(dir)) return -1;
    /* Distinct stream tags so the splits are independent draws from the same distribution. */
    if (write_split(dir, "train", p->n_train, 0x53790001ull, p) ||
        write_split(dir, "val", p->n_val, 0x53790002ull, p) || write_split(dir, "test", p->n_test, 0x53790003ull, p))
        return -1;
    return 0;
}
