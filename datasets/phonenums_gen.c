/* PhoneNums page generator (include/phonenums.h; recipe: v3.md section 1, the authors' typography.py and
 * number_office.py). A page is 10 digits (a permutation of 0..9), each drawn in a 32 x 48 patch with FreeType,
 * then a column-varying vertical Gaussian blur and Gaussian noise. Page i uses palette[i % 8] and its own random
 * stream rng_derive_seed(seed, i) (OOD sets: tag i + 2^40), so any page can be regenerated alone and the set does
 * not depend on generation order. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "phonenums.h"
#include "rng.h"
#include "splits.h"

#ifdef V3_HAVE_FREETYPE
#include <ft2build.h>
#include FT_FREETYPE_H
#endif

#define PN_DEFAULT_FONT "/usr/share/fonts/opentype/comic-neue/ComicNeue-Bold.otf"

/* The palettes of number_office.py as matplotlib/CSS colours; rendered value = int(c / 255 * 240 + 8) per
 * channel, computed exactly in integers (c * 240 is a multiple of 255 only for c = 0 and 255, where float and
 * integer agree). */
static const struct {
    const char *name;
    uint32_t hex;
} PALETTE[2][PHONENUMS_N_COLOURS] = {
    {{"black", 0x000000}, {"blue", 0x0000FF}, {"green", 0x008000}, {"red", 0xFF0000}, {"teal", 0x008080},
     {"purple", 0x800080}, {"orange", 0xFFA500}, {"brown", 0xA52A2A}},
    {{"pink", 0xFFC0CB}, {"salmon", 0xFA8072}, {"gold", 0xFFD700}, {"lime", 0x00FF00}, {"cyan", 0x00FFFF},
     {"magenta", 0xFF00FF}, {"gray", 0x808080}, {"peru", 0xCD853F}},
};

const char *phonenums_colour_name(int ood, int c) {
    return c >= 0 && c < PHONENUMS_N_COLOURS ? PALETTE[ood ? 1 : 0][c].name : NULL;
}

void phonenums_colour_rgb(int ood, int c, uint8_t rgb[3]) {
    uint32_t h = PALETTE[ood ? 1 : 0][c < 0 || c >= PHONENUMS_N_COLOURS ? 0 : c].hex;
    for (int k = 0; k < 3; k++) rgb[k] = (uint8_t)(((h >> (16 - 8 * k)) & 0xFF) * 240 / 255 + 8);
}

void phonenums_defaults(PhonenumsParams *p) {
    memset(p, 0, sizeof *p);
    p->font = NULL;
    p->pages = 1000;
    p->ood = 0;
    p->seed = 1;
    p->noise_sigma = -1;
}

#ifndef V3_HAVE_FREETYPE
int phonenums_generate(const char *dir, const PhonenumsParams *p) {
    (void)dir, (void)p;
    return v3_error("phonenums: rendering the pages needs FreeType, which this build lacks; install the Debian "
                    "package libfreetype-dev (and rebuild)");
}
#else

/* mkdir -p for the output directory. */
static int make_dirs(const char *path) {
    char buf[1024];
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return v3_error("%s: path too long", path);
    for (char *s = buf + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return v3_error("%s: cannot create directory (%s)", buf,
                                                                     strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    return 0;
}

/* ---- gradual blur (typography.py random_gradual_blur) ---- */

/* OpenCV GaussianBlur(ksize, sigma=0) on uint8 takes its kernel from getGaussianKernelBitExact: fixed binomial
 * tables for n = 5, 7, 9 and otherwise a sampled Gaussian with sigma = 0.3*((n-1)*0.5-1)+0.8 (= 0.15 n + 0.35).
 * We do the same (the sizes here are 5..13), so k = 5/7/9 match OpenCV's weights, not the sigma rule. */
static void gauss_kernel(int n, double *k) {
    static const double t5[] = {1, 4, 6, 4, 1}, t7[] = {2, 7, 14, 18, 14, 7, 2},
                        t9[] = {4, 13, 30, 51, 60, 51, 30, 13, 4};
    const double *t = n == 5 ? t5 : n == 7 ? t7 : n == 9 ? t9 : NULL;
    double s = 0;
    for (int i = 0; i < n; i++) {
        double x = i - (n - 1) * 0.5, sig = 0.15 * n + 0.35;
        k[i] = t ? t[i] : exp(-x * x / (2 * sig * sig));
        s += k[i];
    }
    for (int i = 0; i < n; i++) k[i] /= s;
}

/* Per-column kernel sizes: 10 strips of 32 columns; strip size 4*r+1 with r = randint(1, randint(2, 5)) (so 5, 9
 * or 13 with probabilities 11/18, 5/18, 2/18), then int(linspace(k_i, k_{i+1}, 32)[j]), +1 when even; the last
 * strip is constant. linspace's values are a + (b-a) j / 31 > 0, so int() is a floor, done here exactly. */
static void blur_sizes(Rng *r, int *ksize) {
    int lev[PHONENUMS_DIGITS];
    for (int i = 0; i < PHONENUMS_DIGITS; i++) {
        int hi = 2 + (int)rng_below(r, 3);        /* np.random.randint(2, 5) */
        int m = 1 + (int)rng_below(r, (uint32_t)(hi - 1)); /* np.random.randint(1, hi) */
        lev[i] = 2 * (m * 2) + 1;
    }
    const int sw = PHONENUMS_PATCH_W;
    for (int i = 0; i < PHONENUMS_DIGITS; i++)
        for (int j = 0; j < sw; j++) {
            int k = lev[i];
            if (i < PHONENUMS_DIGITS - 1) k = (lev[i] * (sw - 1) + (lev[i + 1] - lev[i]) * j) / (sw - 1);
            ksize[i * sw + j] = k | 1;
        }
}

/* Blur every column vertically with its own kernel (on a 1-px-wide column OpenCV's 2-D blur is exactly this),
 * rows outside the page mirrored without repeating the edge (reflect-101, OpenCV's default border). */
static void gradual_blur(const uint8_t *in, float *out, const int *ksize) {
    enum { H = PHONENUMS_H, W = PHONENUMS_W, PAD = 6 };
    double kern[14][16];
    for (int n = 5; n <= 13; n += 2) gauss_kernel(n, kern[n]);
    int refl[H + 2 * PAD]; /* row index for y in [-PAD, H + PAD) */
    for (int y = -PAD; y < H + PAD; y++) refl[y + PAD] = y < 0 ? -y : y >= H ? 2 * (H - 1) - y : y;
    for (int x = 0; x < W; x++) {
        int n = ksize[x], h2 = n / 2;
        const double *k = kern[n];
        for (int y = 0; y < H; y++) {
            double s0 = 0, s1 = 0, s2 = 0;
            for (int t = 0; t < n; t++) {
                const uint8_t *p = in + ((size_t)refl[y + t - h2 + PAD] * W + x) * 3;
                s0 += k[t] * p[0], s1 += k[t] * p[1], s2 += k[t] * p[2];
            }
            float *o = out + ((size_t)y * W + x) * 3;
            o[0] = (float)s0, o[1] = (float)s1, o[2] = (float)s2;
        }
    }
}

/* ---- glyphs ---- */

typedef struct {
    FT_Library lib;
    FT_Face face;
    double adv[10];   /* advance in pixels (PIL's textlength) */
    int baseline;     /* integer baseline row in the patch before the U(0,1) sub-pixel offset */
} Font;

static int font_open(Font *f, const char *path) {
    memset(f, 0, sizeof *f);
    FILE *t = fopen(path, "rb");
    if (!t) return v3_error("font %s: cannot open (%s); the default needs the Debian package fonts-comic-neue",
                            path, strerror(errno));
    fclose(t);
    if (FT_Init_FreeType(&f->lib)) return v3_error("FreeType initialisation failed");
    int e = FT_New_Face(f->lib, path, 0, &f->face);
    if (!e) e = FT_Set_Pixel_Sizes(f->face, 0, PHONENUMS_H); /* PIL ImageFont.truetype(font, 48): 48-px em */
    if (e) {
        FT_Done_FreeType(f->lib);
        return v3_error("font %s: FreeType cannot load it as a scalable font (error %d)", path, e);
    }
    /* PIL draws text at (x, y) with the ascender line at y: baseline = y + ascender; the authors use
     * y = U(0,1) - 8. Their Kristen ITC fits the patch with that; for another font we keep the rule but shift
     * the baseline just enough that every digit (plus the 1-px sub-pixel offset) lies inside the 48 rows. */
    int asc = (int)((f->face->size->metrics.ascender + 32) >> 6), top = 0, below = 0;
    for (int d = 0; d < 10; d++) {
        /* a font without digits would silently draw its .notdef box: refuse it */
        if (!FT_Get_Char_Index(f->face, (FT_ULong)('0' + d)) ||
            FT_Load_Char(f->face, (FT_ULong)('0' + d), FT_LOAD_RENDER | FT_LOAD_NO_BITMAP)) {
            FT_Done_Face(f->face);
            FT_Done_FreeType(f->lib);
            return v3_error("font %s: has no glyph for digit %d", path, d);
        }
        FT_GlyphSlot g = f->face->glyph;
        f->adv[d] = g->advance.x / 64.0;
        if (g->bitmap_top > top) top = g->bitmap_top;
        if ((int)g->bitmap.rows - g->bitmap_top > below) below = (int)g->bitmap.rows - g->bitmap_top;
    }
    f->baseline = asc - 8;
    if (f->baseline + below + 1 > PHONENUMS_H) f->baseline = PHONENUMS_H - 1 - below;
    if (f->baseline < top) f->baseline = top;
    return 0;
}

static void font_close(Font *f) {
    FT_Done_Face(f->face);
    FT_Done_FreeType(f->lib);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Draw digit d with colour fg into the 32 x 48 patch at column x0 of the page (PIL's draw.text: the coverage
 * blends fg over what is there). Pen at ((32 - advance) // 2 + U(0,1), baseline + U(0,1)) with sub-pixel
 * rendering through FreeType's translation. */
static int draw_digit(Font *f, uint8_t *page, int x0, int d, const int fg[3], double ux, double uy) {
    double px = floor((PHONENUMS_PATCH_W - f->adv[d]) / 2) + ux;
    int ix = (int)floor(px), iy = f->baseline;
    FT_Vector delta = {(FT_Pos)lround((px - ix) * 64), (FT_Pos)-lround(uy * 64)}; /* FreeType's y points up */
    FT_Set_Transform(f->face, NULL, &delta);
    /* NO_BITMAP: always the anti-aliased outline, never an embedded (possibly 1-bit) strike */
    int e = FT_Load_Char(f->face, (FT_ULong)('0' + d), FT_LOAD_RENDER | FT_LOAD_NO_BITMAP);
    FT_Set_Transform(f->face, NULL, NULL);
    FT_Bitmap *bm = &f->face->glyph->bitmap;
    if (!e && bm->pixel_mode != FT_PIXEL_MODE_GRAY) e = -1;
    if (e) return v3_error("FreeType cannot render digit %d as 8-bit coverage (error %d)", d, e);
    int left = ix + f->face->glyph->bitmap_left, top = iy - f->face->glyph->bitmap_top;
    for (int r = 0; r < (int)bm->rows; r++) {
        int y = top + r;
        if (y < 0 || y >= PHONENUMS_H) continue;
        for (int c = 0; c < (int)bm->width; c++) {
            int x = left + c;
            int a = bm->buffer[r * bm->pitch + c];
            if (x < 0 || x >= PHONENUMS_PATCH_W || !a) continue;
            uint8_t *p = page + ((size_t)y * PHONENUMS_W + x0 + x) * 3;
            for (int ch = 0; ch < 3; ch++) p[ch] = (uint8_t)((fg[ch] * a + p[ch] * (255 - a) + 127) / 255);
        }
    }
    return 0;
}

/* Two independent standard normals from one Box-Muller draw (rng_normal keeps only one: noise is most of the
 * generator's time). */
static void normal_pair(Rng *r, double z[2]) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    double m = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
    z[0] = m * cos(a);
    z[1] = m * sin(a);
}

/* Render page i into rgb (48 x 320 x 3). Random draws in the authors' order: digits, page fg and bg jitter,
 * per glyph (fg jitter, x offset, y offset), blur sizes, noise sigma, noise. */
static int render_page(Font *f, uint64_t seed, int ood, int i, const uint8_t colour[3], int digits[10],
                       float noise_sigma, uint8_t *canvas, float *tmp, uint8_t *rgb) {
    /* OOD pages get their own tags, so an OOD set made with the training set's seed does not repeat its digit
     * orders, blur and noise. */
    Rng r;
    rng_seed(&r, rng_derive_seed(seed, (ood ? 1ull << 40 : 0) | (uint64_t)i));
    rng_permutation(&r, PHONENUMS_DIGITS, digits);
    int fg[3], bg[3];
    for (int c = 0; c < 3; c++) fg[c] = clampi(colour[c] + (int)rng_below(&r, 5) - 2, 0, 255);
    for (int c = 0; c < 3; c++) bg[c] = clampi(245 + (int)rng_below(&r, 5) - 2, 0, 255);
    for (size_t k = 0; k < (size_t)PHONENUMS_H * PHONENUMS_W; k++)
        for (int c = 0; c < 3; c++) canvas[k * 3 + c] = (uint8_t)bg[c];
    for (int g = 0; g < PHONENUMS_DIGITS; g++) {
        int gfg[3];
        for (int c = 0; c < 3; c++) gfg[c] = clampi(fg[c] + (int)rng_below(&r, 5) - 2, 0, 255);
        double ux = rng_uniform(&r), uy = rng_uniform(&r);
        if (draw_digit(f, canvas, g * PHONENUMS_PATCH_W, digits[g], gfg, ux, uy)) return -1;
    }
    int ksize[PHONENUMS_W];
    blur_sizes(&r, ksize);
    gradual_blur(canvas, tmp, ksize);
    /* Noise N(0, sigma), sigma = 10 U(0,1) per page, added in float and CLIPPED to [0, 255]. Deliberately not the
     * authors' uint8 wrap-around (canvas += np.uint8(noise)), which turns dark pixels with negative noise into
     * ~255 and bright ones into ~0 (v3.md section 8 item 11). */
    double sigma = 10 * rng_uniform(&r); /* drawn either way, so the other draws stay the same */
    if (noise_sigma >= 0) sigma = noise_sigma;
    for (size_t k = 0; k < (size_t)PHONENUMS_H * PHONENUMS_W * 3; k += 2) { /* even count: pairs */
        double z[2];
        normal_pair(&r, z);
        for (int j = 0; j < 2; j++) {
            double v = tmp[k + j] + sigma * z[j];
            rgb[k + j] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : (int)(v + 0.5));
        }
    }
    return 0;
}

int phonenums_generate(const char *dir, const PhonenumsParams *p) {
    const char *font = p->font ? p->font : PN_DEFAULT_FONT;
    if (p->pages < 1 || p->pages > 1000000)
        return v3_error("phonenums: pages %d: expected 1..1000000", p->pages);
    if (strchr(font, '\n') || strchr(font, '\t')) return v3_error("font path %s: contains a tab or newline", font);
    Font f;
    if (font_open(&f, font)) return -1;
    char pages_dir[1024], path[1200], idx_path[1100], tmp_path[1200];
    if ((size_t)snprintf(pages_dir, sizeof pages_dir, "%s/pages", dir) >= sizeof pages_dir) {
        font_close(&f);
        return v3_error("%s: path too long", dir);
    }
    snprintf(idx_path, sizeof idx_path, "%s/index.tsv", dir);
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp.%ld", idx_path, (long)getpid());
    if (make_dirs(pages_dir)) {
        font_close(&f);
        return -1;
    }
    FILE *idx = fopen(tmp_path, "w");
    if (!idx) {
        font_close(&f);
        return v3_error("%s: cannot create (%s)", tmp_path, strerror(errno));
    }
    fprintf(idx, "# v3-phonenums 1\n# seed %llu\n# font %s\n# ood %d\n# n_pages %d\n",
            (unsigned long long)p->seed, font, p->ood ? 1 : 0, p->pages);
    if (p->noise_sigma >= 0) fprintf(idx, "# noise_sigma %g\n", (double)p->noise_sigma);
    fprintf(idx, "# file\tsplit\tdigits\tcolour_index\tcolour_name\n");
    int8_t *split = xmalloc((size_t)p->pages);
    if (!p->ood) splits_assign(p->pages, p->seed, split);
    uint8_t *canvas = xmalloc((size_t)PHONENUMS_H * PHONENUMS_W * 3);
    uint8_t *rgb = xmalloc((size_t)PHONENUMS_H * PHONENUMS_W * 3);
    float *tmp = xmalloc(sizeof(float) * PHONENUMS_H * PHONENUMS_W * 3);
    double t0 = now_seconds();
    int rc = 0;
    v3_log("phonenums: rendering %d pages (%s palette, font %s) into %s\n", p->pages, p->ood ? "OOD" : "training",
           font, dir);
    for (int i = 0; i < p->pages && !rc; i++) {
        int digits[10], ci = i % PHONENUMS_N_COLOURS;
        char ds[11], token[16];
        const char *cname = phonenums_colour_name(p->ood, ci);
        uint8_t colour[3];
        phonenums_colour_rgb(p->ood, ci, colour);
        if (render_page(&f, p->seed, p->ood ? 1 : 0, i, colour, digits, p->noise_sigma, canvas, tmp, rgb)) {
            rc = -1;
            break;
        }
        for (int k = 0; k < 10; k++) ds[k] = (char)('0' + digits[k]);
        ds[10] = 0;
        char name[128];
        snprintf(name, sizeof name, "%05d_%s_%s.png", i, ds, cname);
        snprintf(path, sizeof path, "%s/%s", pages_dir, name);
        if (png_write_rgb(path, rgb, PHONENUMS_W, PHONENUMS_H)) {
            rc = -1;
            break;
        }
        if (p->ood) split_token_ood(i / PHONENUMS_N_COLOURS, token, sizeof token); /* rank within its colour */
        else snprintf(token, sizeof token, "%s", split_name(split[i]));
        fprintf(idx, "%s\t%s\t%s\t%d\t%s\n", name, token, ds, ci, cname);
        if ((i + 1) % 100 == 0 || i + 1 == p->pages)
            v3_log("phonenums: %d/%d pages (%.1f s)\n", i + 1, p->pages, now_seconds() - t0);
    }
    free(split);
    free(canvas);
    free(rgb);
    free(tmp);
    font_close(&f);
    int bad = fflush(idx) != 0 || fsync(fileno(idx)) != 0;
    bad |= fclose(idx) != 0;
    if (rc || bad) {
        remove(tmp_path);
        return rc ? -1 : v3_error("%s: write failed (disk full?)", idx_path);
    }
    if (rename(tmp_path, idx_path)) {
        remove(tmp_path);
        return v3_error("%s: cannot rename %s into place (%s)", idx_path, tmp_path, strerror(errno));
    }
    return 0;
}
#endif
