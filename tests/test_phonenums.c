/* Tests for PhoneNums: PNG I/O (round trip, every kind of bad file), the page generator (determinism, splits,
 * labels checked against the pixels with an independent template matcher) and the DataSource (value range,
 * fragment offsets, validation of bad directories). Generator tests skip without FreeType or the font. */
#define _XOPEN_SOURCE 700 /* symlink */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "datasource.h"
#include "phonenums.h"
#include "rng.h"
#include "splits.h"
#include "testing.h"

#ifdef V3_HAVE_FREETYPE
#include <ft2build.h>
#include FT_FREETYPE_H
#endif

static const char *FONT = "/usr/share/fonts/opentype/comic-neue/ComicNeue-Bold.otf";

#ifdef V3_HAVE_FREETYPE
#define NEED_GENERATOR()                                                                                    \
    do {                                                                                                    \
        if (access(FONT, R_OK)) SKIP("font %s absent (install the Debian package fonts-comic-neue)", FONT); \
    } while (0)
#else
#define NEED_GENERATOR() SKIP("built without FreeType (install libfreetype-dev and rebuild)")
#endif

/* ---- helpers (the style of tests/test_dataset.c) ---- */

/* dir/name into a caller's buffer, for paths that must outlive the path_in ring. */
static char *sub(char out[1024], const char *dir, const char *name) {
    snprintf(out, 1024, "%s", test_path(dir, name));
    return out;
}

static void random_image(uint8_t *pix, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) pix[i] = (uint8_t)rng_below(&r, 256);
}

/* Generate `pages` pages (seed, ood) into dir with progress silenced. */
static int gen(const char *dir, int pages, int ood, uint64_t seed) {
    PhonenumsParams p;
    phonenums_defaults(&p);
    p.pages = pages;
    p.ood = ood;
    p.seed = seed;
    int rc = phonenums_generate(dir, &p);
    if (rc) fprintf(stderr, "    generate %s: %s\n", dir, v3_last_error());
    return rc;
}

/* A PNG with libpng directly (for colour types and depths png_write_rgb never writes). */
static int write_png_raw(const char *path, int w, int h, int depth, int ctype) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) V3_FATAL("libpng failed writing the test file %s", path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, 0, 0, 0);
    png_write_info(png, info);
    int ch = ctype == PNG_COLOR_TYPE_GRAY ? 1 : ctype == PNG_COLOR_TYPE_RGB ? 3 : 4;
    size_t stride = (size_t)w * ch * depth / 8;
    uint8_t *row = xcalloc(stride, 1);
    for (int y = 0; y < h; y++) png_write_row(png, row);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    return fclose(f);
}

/* png_read_rgb must fail on path, leave *pix NULL, and name the file (plus needle) in one line. */
static int expect_png_error(const char *path, int ew, int eh, const char *needle) {
    uint8_t *pix = (uint8_t *)1;
    int w, h;
    v3_clear_error();
    int rc = png_read_rgb(path, ew, eh, &pix, &w, &h);
    const char *e = v3_last_error();
    CHECK(rc == -1, "reading %s should fail (%s)", path, needle);
    CHECK(pix == NULL, "failed read left a pixel pointer");
    CHECK(strstr(e, path) != NULL, "error should name the file: %s", e);
    CHECK(!needle || strstr(e, needle) != NULL, "error should contain '%s': %s", needle, e);
    CHECK(strchr(e, '\n') == NULL, "error should be one line: %s", e);
    return 0;
}

/* Open must fail with a one-line error containing both needles (NULL = not checked); ds left empty. */
static int expect_open_error(const char *dir, const char *split, int n_frag, const char *n1, const char *n2) {
    DataSource ds;
    v3_clear_error();
    int rc = phonenums_open(dir, split, n_frag, &ds);
    const char *e = v3_last_error();
    CHECK(rc == -1, "open %s split %s n_frag %d should fail (%s)", dir, split, n_frag, n1 ? n1 : "");
    CHECK(ds.impl == NULL && ds.n_samples == 0, "failed open left a half-filled DataSource");
    CHECK(!n1 || strstr(e, n1) != NULL, "error should contain '%s': %s", n1, e);
    CHECK(!n2 || strstr(e, n2) != NULL, "error should contain '%s': %s", n2, e);
    CHECK(strchr(e, '\n') == NULL, "error should be one line: %s", e);
    return 0;
}

/* ---- PNG I/O ---- */

TEST(phonenums_png_round_trip) {
    char *dir = test_tmpdir("pn_png");
    const int w = 37, h = 23;
    uint8_t *pix = xmalloc((size_t)w * h * 3), *back = NULL;
    random_image(pix, (size_t)w * h * 3, 5);
    char *p = test_path(dir, "a.png");
    CHECK(png_write_rgb(p, pix, w, h) == 0, "write: %s", v3_last_error());
    int rw = 0, rh = 0;
    CHECK(png_read_rgb(p, w, h, &back, &rw, &rh) == 0, "read: %s", v3_last_error());
    CHECK(rw == w && rh == h, "size %dx%d", rw, rh);
    CHECK(memcmp(pix, back, (size_t)w * h * 3) == 0, "pixels differ after a round trip");
    free(back);
    CHECK(png_read_rgb(p, 0, 0, &back, &rw, &rh) == 0 && rw == w && rh == h, "read with any size: %s",
          v3_last_error());
    free(back);
    /* atomic write: only the final file is left in the directory */
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));) entries += e->d_name[0] != '.';
    closedir(d);
    CHECK(entries == 1, "%d files in %s after one write (temporary file left?)", entries, dir);
    CHECK(png_write_rgb(test_path(dir, "no/such/dir.png"), pix, w, h) == -1, "write into a missing directory");
    free(pix);
    return test_done(0, dir);
}

TEST(phonenums_png_bad_files) {
    char *dir = test_tmpdir("pn_pngbad");
    const int w = 40, h = 30;
    uint8_t *pix = xmalloc((size_t)w * h * 3);
    random_image(pix, (size_t)w * h * 3, 9);
    char *good = test_path(dir, "good.png");
    CHECK(png_write_rgb(good, pix, w, h) == 0, "write: %s", v3_last_error());
    free(pix);
    unsigned char *b;
    size_t n;
    CHECK(test_read_all(good, &b, &n) == 0 && n > 200, "read back %s", good);
    int rc = 0;
    /* truncated in the image data, and cut just before IEND (caught by reading to the end) */
    char *t1 = test_path(dir, "trunc_half.png"), *t2 = test_path(dir, "trunc_end.png");
    CHECK(test_write_all(t1, b, n / 2) == 0 && test_write_all(t2, b, n - 12) == 0, "write truncated copies");
    rc |= expect_png_error(t1, w, h, "expected an 8-bit RGB PNG");
    rc |= expect_png_error(t2, w, h, "expected an 8-bit RGB PNG");
    /* flipped bytes in the compressed data: CRC error */
    unsigned char *f = xmalloc(n);
    memcpy(f, b, n);
    for (size_t i = n / 2; i < n / 2 + 8; i++) f[i] ^= 0x5a;
    char *t3 = test_path(dir, "flipped.png");
    CHECK(test_write_all(t3, f, n) == 0, "write flipped copy");
    rc |= expect_png_error(t3, w, h, "corrupt");
    /* flipped byte in the header (IHDR CRC) */
    memcpy(f, b, n);
    f[18] ^= 0x01;
    char *t4 = test_path(dir, "flipped_hdr.png");
    CHECK(test_write_all(t4, f, n) == 0, "write flipped header copy");
    rc |= expect_png_error(t4, w, h, NULL);
    free(f);
    free(b);
    /* a text file named .png, an empty file, a missing file */
    char *t5 = test_path(dir, "text.png"), *t6 = test_path(dir, "empty.png");
    const char *txt = "this is not an image, just text pretending to be one\n";
    CHECK(test_write_all(t5, txt, strlen(txt)) == 0 && test_write_all(t6, "", 0) == 0, "write text files");
    rc |= expect_png_error(t5, w, h, "not a PNG");
    rc |= expect_png_error(t6, 0, 0, "not a PNG");
    rc |= expect_png_error(test_path(dir, "missing.png"), 0, 0, "cannot open");
    /* valid PNGs of the wrong size or kind */
    rc |= expect_png_error(good, 320, 48, "expected 320x48");
    rc |= expect_png_error(good, w, h + 1, "expected");
    char *g8 = test_path(dir, "grey.png"), *rgba = test_path(dir, "rgba.png"), *d16 = test_path(dir, "rgb16.png");
    CHECK(write_png_raw(g8, w, h, 8, PNG_COLOR_TYPE_GRAY) == 0, "write grey");
    CHECK(write_png_raw(rgba, w, h, 8, PNG_COLOR_TYPE_RGB_ALPHA) == 0, "write rgba");
    CHECK(write_png_raw(d16, w, h, 16, PNG_COLOR_TYPE_RGB) == 0, "write 16-bit");
    rc |= expect_png_error(g8, w, h, "8-bit grey, expected 8-bit RGB");
    rc |= expect_png_error(rgba, 0, 0, "RGBA");
    rc |= expect_png_error(d16, w, h, "16-bit RGB");
    return test_done(rc, dir);
}

/* Found by tests/fuzz/fuzz_png.c: an 89-byte file whose tEXt chunk claims 1.8 GB made libpng allocate and zero
 * that much before finding the file short (seconds, and 2 GB of memory, per corrupt page). */
TEST(phonenums_png_forged_chunk_length) {
    char *dir = test_tmpdir("pn_pngchunk");
    uint8_t pix[8 * 8 * 3] = {0};
    char *good = test_path(dir, "good.png"), *forged = test_path(dir, "forged.png");
    CHECK(png_write_rgb(good, pix, 8, 8) == 0, "write: %s", v3_last_error());
    unsigned char *b;
    size_t n;
    CHECK(test_read_all(good, &b, &n) == 0 && n > 33, "read back %s", good);
    /* after the signature and IHDR (33 bytes): a tEXt chunk of length 0x6d290005 holding 9 bytes, then the rest */
    static const unsigned char text[] = {0x6d, 0x29, 0x00, 0x05, 't', 'E', 'X', 't', 'a', 'b', 0, 'c', 'd', 1, 2, 3, 4};
    unsigned char *f = xmalloc(n + sizeof text);
    memcpy(f, b, 33);
    memcpy(f + 33, text, sizeof text);
    memcpy(f + 33 + sizeof text, b + 33, n - 33);
    CHECK(test_write_all(forged, f, n + sizeof text) == 0, "write %s", forged);
    free(f);
    free(b);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int rc = expect_png_error(forged, 0, 0, "corrupt");
    getrusage(RUSAGE_SELF, &r1);
    CHECK(r1.ru_maxrss - r0.ru_maxrss < 256 * 1024, "reading the 106-byte file raised the peak RSS by %ld MB",
          (r1.ru_maxrss - r0.ru_maxrss) / 1024);
    return test_done(rc, dir);
}

/* ---- generator ---- */

/* Index lines as (digits, token, colour) for checks. */
typedef struct {
    char digits[11], token[16];
    int colour;
} IdxLine;

static int read_index(const char *dir, IdxLine *out, int cap) {
    FILE *f = fopen(test_path(dir, "index.tsv"), "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        if (line[0] == '#') continue;
        char name[128], cname[32];
        if (sscanf(line, "%127s %15s %10s %d %31s", name, out[n].token, out[n].digits, &out[n].colour, cname) != 5)
            break;
        n++;
    }
    fclose(f);
    return n;
}

TEST(phonenums_generate_deterministic) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_det");
    char ba[1024], bb[1024], bc[1024], bs[1024];
    char *a = sub(ba, dir, "a"), *b = sub(bb, dir, "b"), *c = sub(bc, dir, "c"), *s = sub(bs, dir, "short");
    CHECK(gen(a, 24, 0, 7) == 0 && gen(b, 24, 0, 7) == 0 && gen(c, 24, 0, 8) == 0 && gen(s, 12, 0, 7) == 0,
          "generate");
    unsigned char *ia, *ib, *ic;
    size_t na, nb, nc;
    CHECK(test_read_all(test_path(a, "index.tsv"), &ia, &na) == 0 && test_read_all(test_path(b, "index.tsv"), &ib, &nb) == 0 &&
              test_read_all(test_path(c, "index.tsv"), &ic, &nc) == 0,
          "read indexes");
    CHECK(na == nb && memcmp(ia, ib, na) == 0, "same seed, different index.tsv");
    CHECK(!(na == nc && memcmp(ia, ic, na) == 0), "different seeds gave the same index.tsv");
    CHECK(strncmp((char *)ia, "# v3-phonenums 1\n# seed 7\n", 26) == 0, "header: %.40s", ia);
    CHECK(strstr((char *)ia, FONT) && strstr((char *)ia, "# ood 0\n") && strstr((char *)ia, "# n_pages 24\n"),
          "header lacks font, ood or n_pages");
    /* every page byte-identical; the first 12 also equal the 12-page set's (per-page streams) */
    int lines = 0, differ_c = 0;
    for (char *line = strtok((char *)ia, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char name[128];
        CHECK(sscanf(line, "%127[^\t]", name) == 1, "line %s", line);
        int page = atoi(name);
        CHECK(page == lines, "page %d on data line %d", page, lines);
        CHECK(strlen(name) == 5 + 1 + 10 + 1 + strlen(phonenums_colour_name(0, page % 8)) + 4, "name %s", name);
        char rel[200];
        snprintf(rel, sizeof rel, "pages/%s", name);
        unsigned char *pa, *pb, *ps;
        size_t la, lb, ls;
        CHECK(test_read_all(test_path(a, rel), &pa, &la) == 0 && test_read_all(test_path(b, rel), &pb, &lb) == 0, "read %s",
              rel);
        CHECK(la == lb && memcmp(pa, pb, la) == 0, "%s differs between two runs", rel);
        if (page < 12) {
            CHECK(test_read_all(test_path(s, rel), &ps, &ls) == 0, "12-page set lacks %s", rel);
            CHECK(ls == la && memcmp(pa, ps, la) == 0, "%s differs in the 12-page set", rel);
            free(ps);
        }
        char rc_[200];
        snprintf(rc_, sizeof rc_, "%s", test_path(c, rel));
        differ_c += access(rc_, F_OK) != 0;
        free(pa);
        free(pb);
        lines++;
    }
    CHECK(lines == 24, "%d page lines", lines);
    /* an OOD set with the same seed has its own streams: other digit orders */
    IdxLine la[8], lo[8];
    char bo[1024];
    CHECK(gen(sub(bo, dir, "ood"), 8, 1, 7) == 0, "generate OOD");
    CHECK(read_index(a, la, 8) == 8 && read_index(bo, lo, 8) == 8, "read indexes");
    int same = 0;
    for (int i = 0; i < 8; i++) same += !strcmp(la[i].digits, lo[i].digits);
    CHECK(same == 0, "%d of 8 OOD pages repeat the training set's digit order", same);
    CHECK(differ_c > 20, "seed 8 reproduced seed 7's pages (%d of 24 differ)", differ_c);
    free(ia);
    free(ib);
    free(ic);
    return test_done(0, dir);
}

/* Digit strings of every sample of a split (whole pages), as 10-char strings in out[n][11]; returns n or -1. */
static int split_digits(const char *dir, const char *split, char (*out)[11], int cap, int32_t *styles) {
    DataSource ds;
    if (phonenums_open(dir, split, 10, &ds)) return -1;
    int n = (int)ds.n_samples;
    if (n > cap) n = -1;
    for (int i = 0; i >= 0 && i < n; i++) {
        uint64_t idx = (uint64_t)i, aug = 99;
        int32_t c[10], s[10];
        if (ds.get_batch(&ds, &idx, &aug, 1, NULL, c, s)) {
            n = -1;
            break;
        }
        for (int k = 0; k < 10; k++) out[i][k] = (char)('0' + c[k]);
        out[i][10] = 0;
        if (styles) styles[i] = s[0];
    }
    ds.close(&ds);
    return n;
}

static int find_str(char (*set)[11], int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(set[i], s)) return i;
    return -1;
}

TEST(phonenums_splits_in_distribution) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_split");
    CHECK(gen(dir, 80, 0, 3) == 0, "generate");
    IdxLine idx[80];
    CHECK(read_index(dir, idx, 80) == 80, "index has 80 lines");
    int8_t want[80];
    splits_assign(80, 3, want);
    for (int i = 0; i < 80; i++) {
        CHECK(!strcmp(idx[i].token, split_name(want[i])), "page %d token %s, expected %s", i, idx[i].token,
              split_name(want[i]));
        CHECK(idx[i].colour == i % 8, "page %d colour %d", i, idx[i].colour);
    }
    static const char *names[3] = {"train", "val", "test"};
    static const int counts[3] = {64, 8, 8};
    char got[3][80][11];
    int32_t styles[80];
    int seen[80] = {0};
    for (int s = 0; s < 3; s++) {
        int n = split_digits(dir, names[s], got[s], 80, styles);
        CHECK(n == counts[s], "split %s has %d pages, expected %d (%s)", names[s], n, counts[s], v3_last_error());
        for (int i = 0; i < n; i++) {
            int j = -1;
            for (int k = 0; k < 80; k++)
                if (!strcmp(idx[k].digits, got[s][i])) j = k;
            CHECK(j >= 0, "split %s sample %d (%s) is not in the index", names[s], i, got[s][i]);
            CHECK(!strcmp(idx[j].token, names[s]), "page %d (%s) is in split %s", j, idx[j].token, names[s]);
            CHECK(styles[i] == idx[j].colour, "page %d style %d, index says %d", j, styles[i], idx[j].colour);
            CHECK(!seen[j]++, "page %d appears twice", j);
        }
    }
    for (int k = 0; k < 80; k++) CHECK(seen[k] == 1, "page %d in no split", k);
    return test_done(0, dir);
}

TEST(phonenums_ood_shots_nested) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_ood");
    CHECK(gen(dir, 96, 1, 4) == 0, "generate"); /* ranks 0..11 per colour */
    IdxLine idx[96];
    CHECK(read_index(dir, idx, 96) == 96, "index has 96 lines");
    for (int i = 0; i < 96; i++) {
        char want[16];
        split_token_ood(i / 8, want, sizeof want);
        CHECK(!strcmp(idx[i].token, want), "page %d token %s, expected %s", i, idx[i].token, want);
    }
    static const char *names[4] = {"1_shot", "5_shot", "10_shot", "test"};
    static const int counts[4] = {8, 40, 80, 16};
    static char got[4][96][11];
    int32_t styles[96];
    for (int s = 0; s < 4; s++) {
        int n = split_digits(dir, names[s], got[s], 96, styles);
        CHECK(n == counts[s], "split %s has %d pages, expected %d (%s)", names[s], n, counts[s], v3_last_error());
        int per_colour[8] = {0};
        for (int i = 0; i < n; i++) per_colour[styles[i]]++;
        for (int c = 0; c < 8; c++) CHECK(per_colour[c] == n / 8, "split %s colour %d: %d pages", names[s], c,
                                          per_colour[c]);
        for (int i = 0; i < n; i++) {
            int j = -1;
            for (int k = 0; k < 96; k++)
                if (!strcmp(idx[k].digits, got[s][i])) j = k;
            CHECK(j >= 0, "sample not in the index");
            int rank = j / 8;
            CHECK(s == 3 ? rank >= 10 : rank < counts[s] / 8, "split %s holds page %d of rank %d", names[s], j, rank);
        }
    }
    for (int i = 0; i < 8; i++) CHECK(find_str(got[1], 40, got[0][i]) >= 0, "1_shot not inside 5_shot");
    for (int i = 0; i < 40; i++) CHECK(find_str(got[2], 80, got[1][i]) >= 0, "5_shot not inside 10_shot");
    for (int i = 0; i < 16; i++) CHECK(find_str(got[2], 80, got[3][i]) < 0, "test overlaps 10_shot");
    return test_done(0, dir);
}

/* ---- labels against pixels ---- */

#ifdef V3_HAVE_FREETYPE
enum { TH = PHONENUMS_H, TW = PHONENUMS_PATCH_W };

/* Clean templates: each digit's FreeType coverage at 48 px, ink box centred in a 48 x 32 patch. Independent of
 * the generator's placement; the matcher searches shifts around the ink centroids. */
static int make_templates(float tpl[10][TH * TW]) {
    FT_Library lib;
    FT_Face face;
    if (FT_Init_FreeType(&lib) || FT_New_Face(lib, FONT, 0, &face)) return -1;
    FT_Set_Pixel_Sizes(face, 0, PHONENUMS_H);
    for (int d = 0; d < 10; d++) {
        if (FT_Load_Char(face, (FT_ULong)('0' + d), FT_LOAD_RENDER)) return -1;
        FT_Bitmap *bm = &face->glyph->bitmap;
        int oy = (TH - (int)bm->rows) / 2, ox = (TW - (int)bm->width) / 2;
        memset(tpl[d], 0, sizeof tpl[d]);
        for (int r = 0; r < (int)bm->rows; r++)
            for (int c = 0; c < (int)bm->width; c++)
                if (r + oy >= 0 && r + oy < TH && c + ox >= 0 && c + ox < TW)
                    tpl[d][(r + oy) * TW + c + ox] = bm->buffer[r * bm->pitch + c] / 255.0f;
    }
    FT_Done_Face(face);
    FT_Done_FreeType(lib);
    return 0;
}

static void centroid(const float *a, double *cy, double *cx) {
    double s = 0, y = 0, x = 0;
    for (int i = 0; i < TH; i++)
        for (int j = 0; j < TW; j++) {
            double v = a[i * TW + j] > 0 ? a[i * TW + j] : 0;
            s += v, y += v * i, x += v * j;
        }
    *cy = s > 0 ? y / s : TH / 2.0;
    *cx = s > 0 ? x / s : TW / 2.0;
}

/* Best normalised correlation of ink (48 x 32) with template t over shifts within 1 px of centroid alignment. */
static double match(const float *ink, const float *t) {
    double fy, fx, ty, tx, best = -2;
    centroid(ink, &fy, &fx);
    centroid(t, &ty, &tx);
    int by = (int)lround(fy - ty), bx = (int)lround(fx - tx);
    for (int dy = by - 1; dy <= by + 1; dy++)
        for (int dx = bx - 1; dx <= bx + 1; dx++) {
            double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
            for (int y = 0; y < TH; y++)
                for (int x = 0; x < TW; x++) {
                    int ys = y - dy, xs = x - dx;
                    double a = ink[y * TW + x], b = ys >= 0 && ys < TH && xs >= 0 && xs < TW ? t[ys * TW + xs] : 0;
                    sa += a, sb += b, saa += a * a, sbb += b * b, sab += a * b;
                }
            double n = TH * TW, cov = sab - sa * sb / n, va = saa - sa * sa / n, vb = sbb - sb * sb / n;
            double r = va > 0 && vb > 0 ? cov / sqrt(va * vb) : -1;
            if (r > best) best = r;
        }
    return best;
}

/* Per-channel median of a page (uint8 HWC): the background. */
static void page_bg(const uint8_t *p, int npix, double bg[3]) {
    for (int c = 0; c < 3; c++) {
        int hist[256] = {0}, acc = 0, v = 0;
        for (int i = 0; i < npix; i++) hist[p[i * 3 + c]]++;
        while (acc + hist[v] < npix / 2) acc += hist[v++];
        bg[c] = v;
    }
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Check every fragment's digit (template matching) and every page's colour (mean of its 3% most-inked pixels,
 * nearest palette entry) on split `split`; both must be >= 95% right, and the ink colour close to the palette. */
static int check_pixels(const char *dir, const char *split, int ood, float tpl[10][TH * TW], int *pages_out) {
    DataSource ds;
    CHECK(phonenums_open(dir, split, 10, &ds) == 0, "open %s: %s", split, v3_last_error());
    const int np = PHONENUMS_H * PHONENUMS_W, n = (int)ds.n_samples;
    float *x = xmalloc(sizeof(float) * datasource_sample_elems(&ds));
    uint8_t *page = xmalloc((size_t)np * 3);
    double *dist = xmalloc(sizeof(double) * np), *sorted = xmalloc(sizeof(double) * np);
    int digit_ok = 0, colour_ok = 0, colour_close = 0;
    double worst_dev = 0;
    for (int s = 0; s < n; s++) {
        uint64_t idx = (uint64_t)s, aug = (uint64_t)s;
        int32_t content[10], style[10];
        CHECK(ds.get_batch(&ds, &idx, &aug, 1, x, content, style) == 0, "get_batch: %s", v3_last_error());
        for (int k = 0; k < 10; k++) /* back to an HWC uint8 page */
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < TH; y++)
                    for (int xx = 0; xx < TW; xx++)
                        page[((size_t)y * PHONENUMS_W + k * TW + xx) * 3 + c] =
                            (uint8_t)lround((x[((size_t)(k * 3 + c) * TH + y) * TW + xx] * 0.5 + 0.5) * 255);
        double bg[3];
        page_bg(page, np, bg);
        for (int i = 0; i < np; i++) {
            double d2 = 0;
            for (int c = 0; c < 3; c++) d2 += (page[i * 3 + c] - bg[c]) * (page[i * 3 + c] - bg[c]);
            dist[i] = sqrt(d2);
        }
        for (int k = 0; k < 10; k++) {
            float ink[TH * TW];
            for (int y = 0; y < TH; y++)
                for (int xx = 0; xx < TW; xx++) ink[y * TW + xx] = (float)dist[y * PHONENUMS_W + k * TW + xx];
            int best = -1;
            double bs = -3;
            for (int d = 0; d < 10; d++) {
                double m = match(ink, tpl[d]);
                if (m > bs) bs = m, best = d;
            }
            digit_ok += best == content[k];
        }
        /* colour: mean of the pixels at or above the 97th percentile of distance from the background */
        memcpy(sorted, dist, sizeof(double) * np);
        qsort(sorted, (size_t)np, sizeof(double), cmp_desc);
        double thr = sorted[np * 3 / 100], m[3] = {0, 0, 0};
        int cnt = 0;
        for (int i = 0; i < np; i++)
            if (dist[i] >= thr) {
                for (int c = 0; c < 3; c++) m[c] += page[i * 3 + c];
                cnt++;
            }
        int bestc = -1;
        double bd = 1e9, dev = 0;
        for (int c = 0; c < 8; c++) {
            uint8_t rgb[3];
            phonenums_colour_rgb(ood, c, rgb);
            double d2 = 0;
            for (int ch = 0; ch < 3; ch++) d2 += (m[ch] / cnt - rgb[ch]) * (m[ch] / cnt - rgb[ch]);
            if (d2 < bd) bd = d2, bestc = c;
            if (c == style[0])
                for (int ch = 0; ch < 3; ch++) dev = fmax(dev, fabs(m[ch] / cnt - rgb[ch]));
        }
        colour_ok += bestc == style[0];
        colour_close += dev <= 14; /* jitter 4 + the blur's pull towards the background (measured <= 8) */
        worst_dev = fmax(worst_dev, dev);
        for (int k = 1; k < 10; k++) CHECK(style[k] == style[0], "styles differ within a page");
    }
    CHECK(digit_ok >= 0.95 * 10 * n, "digit labels: only %d of %d fragments match their template", digit_ok, 10 * n);
    CHECK(colour_ok >= 0.95 * n, "colour labels: only %d of %d pages have the nearest palette colour", colour_ok, n);
    CHECK(colour_close >= 0.95 * n, "colour values: only %d of %d pages within 14 levels (worst %.1f)", colour_close,
          n, worst_dev);
    free(x);
    free(page);
    free(dist);
    free(sorted);
    ds.close(&ds);
    *pages_out = n;
    return 0;
}
#endif

TEST(phonenums_labels_match_pixels) {
    NEED_GENERATOR();
#ifdef V3_HAVE_FREETYPE
    static float tpl[10][TH * TW];
    CHECK(make_templates(tpl) == 0, "render templates with %s", FONT);
    char *dir = test_tmpdir("pn_labels");
    char ba[1024], bo[1024];
    char *a = sub(ba, dir, "in"), *o = sub(bo, dir, "ood");
    CHECK(gen(a, 80, 0, 11) == 0 && gen(o, 40, 1, 12) == 0, "generate");
    int n = 0, total = 0;
    static const char *splits[3] = {"train", "val", "test"};
    for (int s = 0; s < 3; s++) {
        CHECK(check_pixels(a, splits[s], 0, tpl, &n) == 0, "in-distribution %s", splits[s]);
        total += n;
    }
    CHECK(total == 80, "checked %d pages", total);
    CHECK(check_pixels(o, "10_shot", 1, tpl, &n) == 0 && n == 40, "OOD pages");
    return test_done(0, dir);
#endif
}

/* ---- the DataSource ---- */

TEST(phonenums_values_and_layout) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_vals");
    CHECK(gen(dir, 16, 0, 5) == 0, "generate");
    DataSource ds;
    CHECK(phonenums_open(dir, "train", 10, &ds) == 0, "open: %s", v3_last_error());
    CHECK(!strcmp(ds.kind, "phonenums") && ds.C == 3 && ds.H == 48 && ds.W == 32 && ds.n_frag == 10 &&
              ds.n_content == 10 && ds.n_style == 8 && ds.n_samples == 14,
          "shape %s C%u H%u W%u n_frag %u content %u style %u n %llu", ds.kind, ds.C, ds.H, ds.W, ds.n_frag,
          ds.n_content, ds.n_style, (unsigned long long)ds.n_samples);
    const int B = (int)ds.n_samples;
    size_t per = datasource_sample_elems(&ds);
    float *x = xmalloc(sizeof(float) * per * B);
    poison(x, per * B);
    uint64_t idx[14], aug[14];
    for (int b = 0; b < B; b++) idx[b] = (uint64_t)(B - 1 - b), aug[b] = (uint64_t)b * 77;
    int32_t content[140], style[140];
    CHECK(ds.get_batch(&ds, idx, aug, B, x, content, style) == 0, "get_batch: %s", v3_last_error());
    float lo = 1e9f, hi = -1e9f;
    for (size_t i = 0; i < per * B; i++) {
        CHECK(x[i] >= -1.0f && x[i] <= 1.0f, "x[%zu] = %g outside [-1, 1]", i, x[i]);
        lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
    }
    CHECK(lo < -0.8f && hi > 0.85f, "range [%g, %g] too narrow for dark digits on a light page", lo, hi);
    /* sample 0 of the batch = page idx[0]: compare with the PNG decoded here, CHW, (v / 255 - 0.5) / 0.5 */
    IdxLine lines[16];
    CHECK(read_index(dir, lines, 16) == 16, "index");
    int seen = -1;
    for (int i = 0; i < 16; i++) {
        if (strcmp(lines[i].token, "train")) continue;
        if (++seen != (int)idx[0]) continue;
        char rel[600];
        snprintf(rel, sizeof rel, "pages/%05d_%s_%s.png", i, lines[i].digits, phonenums_colour_name(0, i % 8));
        uint8_t *pix;
        int w, h;
        CHECK(png_read_rgb(test_path(dir, rel), 320, 48, &pix, &w, &h) == 0, "read %s: %s", rel, v3_last_error());
        for (int k = 0; k < 10; k++) {
            CHECK(content[k] == lines[i].digits[k] - '0', "content[%d] %d, page digit %c", k, content[k],
                  lines[i].digits[k]);
            CHECK(style[k] == i % 8, "style %d, expected %d", style[k], i % 8);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 48; y++)
                    for (int xx = 0; xx < 32; xx++) {
                        float want = ((float)pix[(y * 320 + 32 * k + xx) * 3 + c] / 255.0f - 0.5f) / 0.5f;
                        float got = x[((size_t)(k * 3 + c) * 48 + y) * 32 + xx];
                        CHECK(got == want, "fragment %d c%d y%d x%d: %g, expected %g", k, c, y, xx, got, want);
                    }
        }
        free(pix);
    }
    CHECK(seen >= (int)idx[0], "page %llu of the train split not found", (unsigned long long)idx[0]);
    /* labels only (x NULL) and an index out of range */
    CHECK(ds.get_batch(&ds, idx, aug, 1, NULL, content, NULL) == 0, "labels only: %s", v3_last_error());
    uint64_t bad = ds.n_samples;
    CHECK(ds.get_batch(&ds, &bad, aug, 1, x, content, style) == -1, "index n_samples accepted");
    free(x);
    ds.close(&ds);
    return test_done(0, dir);
}

TEST(phonenums_fragment_offsets) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_frag");
    CHECK(gen(dir, 16, 0, 6) == 0, "generate");
    DataSource whole, part, one;
    CHECK(phonenums_open(dir, "train", 10, &whole) == 0 && phonenums_open(dir, "train", 4, &part) == 0 &&
              phonenums_open(dir, "train", 1, &one) == 0,
          "open: %s", v3_last_error());
    CHECK(part.n_frag == 4 && part.n_samples == whole.n_samples, "n_frag %u", part.n_frag);
    const size_t fe = 3 * 48 * 32;
    float *xw = xmalloc(sizeof(float) * fe * 10), *xp = xmalloc(sizeof(float) * fe * 4);
    float *x1 = xmalloc(sizeof(float) * fe);
    float *xw2 = xmalloc(sizeof(float) * fe * 10);
    int32_t cw[10], sw[10], cp[4], sp[4], c1, s1;
    int starts[7] = {0}, starts1[10] = {0};
    for (uint64_t a = 0; a < 300; a++) {
        uint64_t idx = a % part.n_samples;
        CHECK(whole.get_batch(&whole, &idx, &a, 1, xw, cw, sw) == 0, "%s", v3_last_error());
        CHECK(part.get_batch(&part, &idx, &a, 1, xp, cp, sp) == 0, "%s", v3_last_error());
        CHECK(one.get_batch(&one, &idx, &a, 1, x1, &c1, &s1) == 0, "%s", v3_last_error());
        Rng r;
        rng_seed(&r, a);
        int st = (int)rng_below(&r, 7);
        starts[st]++;
        CHECK(memcmp(xp, xw + st * fe, sizeof(float) * fe * 4) == 0, "aug %llu: fragments are not page columns "
              "[%d, %d)", (unsigned long long)a, 32 * st, 32 * (st + 4));
        for (int i = 0; i < 4; i++)
            CHECK(cp[i] == cw[st + i] && sp[i] == sw[st + i], "aug %llu: labels do not follow the start %d",
                  (unsigned long long)a, st);
        /* n_frag 1: start in 0..9, the fragment equals its page column and its digit */
        rng_seed(&r, a);
        int s1t = (int)rng_below(&r, 10);
        starts1[s1t]++;
        CHECK(c1 == cw[s1t] && memcmp(x1, xw + s1t * fe, sizeof(float) * fe) == 0, "n_frag 1, aug %llu",
              (unsigned long long)a);
        /* whole pages do not depend on the augmentation seed */
        uint64_t a2 = a * 1000003 + 17;
        CHECK(whole.get_batch(&whole, &idx, &a2, 1, xw2, NULL, NULL) == 0 &&
                  memcmp(xw, xw2, sizeof(float) * fe * 10) == 0,
              "n_frag 10 output depends on aug");
    }
    for (int s = 0; s < 7; s++) CHECK(starts[s] > 10, "start %d drawn %d times in 300", s, starts[s]);
    for (int s = 0; s < 10; s++) CHECK(starts1[s] > 5, "n_frag 1 start %d drawn %d times", s, starts1[s]);
    free(xw), free(xw2), free(xp), free(x1);
    whole.close(&whole), part.close(&part), one.close(&one);
    return test_done(0, dir);
}

/* Copy dir's index to a fresh directory (pages linked) with line `line` (1-based) replaced by `repl`. */
static char *edited_copy(const char *src, const char *name, int line, const char *repl) {
    static char store[16][1024];
    static int next;
    char *dst = sub(store[next++ % 16], src, name);
    unsigned char *b;
    size_t n;
    if (mkdir(dst, 0777) || test_read_all(test_path(src, "index.tsv"), &b, &n)) V3_FATAL("copy %s", dst);
    char abs_pages[1024];
    snprintf(abs_pages, sizeof abs_pages, "%s", test_path(src, "pages"));
    if (symlink(abs_pages, test_path(dst, "pages"))) V3_FATAL("symlink %s", dst);
    FILE *f = fopen(test_path(dst, "index.tsv"), "w");
    int ln = 1;
    for (char *s = (char *)b; *s; ln++) {
        char *e = strchr(s, '\n');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (ln == line) fprintf(f, "%s\n", repl);
        else fprintf(f, "%.*s\n", (int)len, s);
        s += len + (e ? 1 : 0);
    }
    fclose(f);
    free(b);
    return dst;
}

TEST(phonenums_bad_inputs) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_bad");
    char bi[1024], bo[1024];
    char *in = sub(bi, dir, "in"), *ood = sub(bo, dir, "ood");
    CHECK(gen(in, 20, 0, 2) == 0 && gen(ood, 16, 1, 2) == 0, "generate");
    int rc = 0;
    /* generator: missing font, a file that is not a font */
    PhonenumsParams p;
    phonenums_defaults(&p);
    CHECK(p.pages == 1000 && p.seed == 1 && p.font == NULL && p.ood == 0, "defaults");
    p.pages = 2;
    p.font = "/nonexistent/NoSuchFont.otf";
    v3_clear_error();
    CHECK(phonenums_generate(test_path(dir, "g1"), &p) == -1, "missing font accepted");
    CHECK(strstr(v3_last_error(), "NoSuchFont.otf") && strstr(v3_last_error(), "fonts-comic-neue"), "error: %s",
          v3_last_error());
    char *notfont = test_path(dir, "notfont.ttf");
    CHECK(test_write_all(notfont, "hello", 5) == 0, "write");
    p.font = notfont;
    CHECK(phonenums_generate(test_path(dir, "g2"), &p) == -1 && strstr(v3_last_error(), "notfont.ttf"),
          "non-font accepted: %s", v3_last_error());
    CHECK(access(test_path(dir, "g2/index.tsv"), F_OK) != 0, "failed generation left an index");
    /* opener arguments */
    rc |= expect_open_error(in, "train", 0, "n_frag 0", "1..10");
    rc |= expect_open_error(in, "train", 11, "n_frag 11", "1..10");
    rc |= expect_open_error(in, "bogus", 10, "bogus", "index.tsv");
    rc |= expect_open_error(in, "5_shot", 10, "5_shot", NULL);
    rc |= expect_open_error(ood, "train", 10, "train", "OOD");
    rc |= expect_open_error(ood, "test", 10, "empty", NULL); /* 16 pages: ranks 0, 1 only */
    rc |= expect_open_error(test_path(dir, "nowhere"), "train", 10, "index.tsv", "cannot open");
    /* malformed index lines (line 7 = the first page, a black one of the train split? use its real fields) */
    IdxLine l[20];
    CHECK(read_index(in, l, 20) == 20, "index");
    char good[256], bad[256];
    snprintf(good, sizeof good, "00000_%s_black.png\t%s\t%s\t0\tblack", l[0].digits, l[0].token, l[0].digits);
    char *d;
    d = edited_copy(in, "e0", 7, good); /* unchanged line: must open */
    DataSource ds;
    CHECK(phonenums_open(d, l[0].token, 10, &ds) == 0, "unchanged copy: %s", v3_last_error());
    ds.close(&ds);
    snprintf(bad, sizeof bad, "00000_%s_black.png\t%s\t%s\t0", l[0].digits, l[0].token, l[0].digits);
    rc |= expect_open_error(edited_copy(in, "e1", 7, bad), "train", 10, "index.tsv:7", "5 tab-separated");
    snprintf(bad, sizeof bad, "00000_0123456788_black.png\t%s\t0123456788\t0\tblack", l[0].token);
    rc |= expect_open_error(edited_copy(in, "e2", 7, bad), "train", 10, "index.tsv:7", "permutation");
    snprintf(bad, sizeof bad, "00000_%s_black.png\t%s\t%s\t9\tblack", l[0].digits, l[0].token, l[0].digits);
    rc |= expect_open_error(edited_copy(in, "e3", 7, bad), "train", 10, "index.tsv:7", "colour index");
    snprintf(bad, sizeof bad, "00000_%s_black.png\t%s\t%s\t1\tblack", l[0].digits, l[0].token, l[0].digits);
    rc |= expect_open_error(edited_copy(in, "e4", 7, bad), "train", 10, "index.tsv:7", "disagrees");
    snprintf(bad, sizeof bad, "00000_%s_pink.png\t%s\t%s\t0\tpink", l[0].digits, l[0].token, l[0].digits);
    rc |= expect_open_error(edited_copy(in, "e5", 7, bad), "train", 10, "index.tsv:7", "ood 0");
    snprintf(bad, sizeof bad, "00000_%s_black.png\ttrian\t%s\t0\tblack", l[0].digits, l[0].digits);
    rc |= expect_open_error(edited_copy(in, "e6", 7, bad), "train", 10, "index.tsv:7", "field 2");
    rc |= expect_open_error(edited_copy(in, "e7", 1, "# v3-phonenums 2"), "train", 10, "index.tsv:1", "header");
    rc |= expect_open_error(edited_copy(in, "e8", 5, "# n_pages 21"), "train", 10, "n_pages 21", "20 page lines");
    /* the file name disagrees with the line's labels (digits of page 1 in page 0's name) */
    snprintf(bad, sizeof bad, "00000_%s_black.png\t%s\t%s\t0\tblack", l[1].digits, l[0].token, l[0].digits);
    rc |= expect_open_error(edited_copy(in, "e9", 7, bad), "train", 10, "index.tsv:7", "field 1 (file)");
    /* a consistent line whose page file is missing */
    char *miss = edited_copy(in, "e10", 7, good);
    unlink(test_path(miss, "pages"));
    CHECK(mkdir(test_path(miss, "pages"), 0777) == 0, "mkdir");
    rc |= expect_open_error(miss, l[0].token, 10, "00000_", "cannot open");
    /* a page replaced by a PNG of the wrong size */
    char *wrong = edited_copy(in, "e11", 7, good);
    unlink(test_path(wrong, "pages"));
    CHECK(mkdir(test_path(wrong, "pages"), 0777) == 0, "mkdir");
    uint8_t small[30 * 20 * 3] = {0};
    char rel[200];
    snprintf(rel, sizeof rel, "pages/00000_%s_black.png", l[0].digits);
    CHECK(png_write_rgb(test_path(wrong, rel), small, 30, 20) == 0, "write small page");
    rc |= expect_open_error(wrong, l[0].token, 10, rel, "expected 320x48");
    return test_done(rc, dir);
}

#ifndef V3_HAVE_FREETYPE
TEST(phonenums_generate_needs_freetype) {
    PhonenumsParams p;
    phonenums_defaults(&p);
    char *dir = test_tmpdir("pn_noft");
    CHECK(phonenums_generate(dir, &p) == -1, "generation without FreeType should fail");
    CHECK(strstr(v3_last_error(), "libfreetype-dev"), "error should name the package: %s", v3_last_error());
    return test_done(0, dir);
}
#endif

/* --noise-sigma: a fixed noise level on every page. At 0 the page background is exactly the jittered flat colour
 * (no noise), the header records it, and the page's digits and colour are those of the default set (the per-page
 * sigma is still drawn, so every other draw is unchanged). */
TEST(phonenums_fixed_noise_sigma) {
    NEED_GENERATOR();
    char *dir = test_tmpdir("pn_noise");
    char bd[1024], bz[1024];
    char *d = sub(bd, dir, "default"), *z = sub(bz, dir, "zero");
    PhonenumsParams p;
    phonenums_defaults(&p);
    p.pages = 10, p.seed = 3, p.noise_sigma = 0;
    CHECK(gen(d, 10, 0, 3) == 0 && phonenums_generate(z, &p) == 0, "generate: %s", v3_last_error());
    IdxLine ld[10], lz[10];
    CHECK(read_index(d, ld, 10) == 10 && read_index(z, lz, 10) == 10, "read indexes");
    unsigned char *iz;
    size_t nz;
    CHECK(test_read_all(test_path(z, "index.tsv"), &iz, &nz) == 0 && strstr((char *)iz, "# noise_sigma 0\n"),
          "header lacks '# noise_sigma 0'");
    free(iz);
    int flat = 0, noisy = 0;
    for (int i = 0; i < 10; i++) {
        CHECK(!strcmp(ld[i].digits, lz[i].digits), "page %d: digits %s vs %s", i, ld[i].digits, lz[i].digits);
        char rel[400], pz[1200], pd[1200];
        snprintf(rel, sizeof rel, "pages/%05d_%s_%s.png", i, lz[i].digits, phonenums_colour_name(0, lz[i].colour));
        snprintf(pz, sizeof pz, "%s", test_path(z, rel));
        snprintf(pd, sizeof pd, "%s", test_path(d, rel));
        uint8_t *a, *b;
        int w, h;
        CHECK(png_read_rgb(pz, PHONENUMS_W, PHONENUMS_H, &a, &w, &h) == 0 &&
                  png_read_rgb(pd, PHONENUMS_W, PHONENUMS_H, &b, &w, &h) == 0,
              "read page %d: %s", i, v3_last_error());
        /* background dominates a page: without noise most horizontally adjacent pixels are identical */
        int eq_z = 0, eq_d = 0, pairs = PHONENUMS_H * (PHONENUMS_W - 1);
        for (int y = 0; y < PHONENUMS_H; y++)
            for (int x = 0; x + 1 < PHONENUMS_W; x++) {
                const uint8_t *pa = a + 3 * ((size_t)y * PHONENUMS_W + x), *pb = b + 3 * ((size_t)y * PHONENUMS_W + x);
                eq_z += !memcmp(pa, pa + 3, 3), eq_d += !memcmp(pb, pb + 3, 3);
            }
        flat += eq_z > pairs / 2, noisy += eq_d < pairs / 2;
        free(a), free(b);
    }
    CHECK(flat == 10, "%d of 10 noise-free pages have a flat background", flat);
    CHECK(noisy >= 8, "only %d of 10 default pages have background noise", noisy);
    return test_done(0, dir);
}
