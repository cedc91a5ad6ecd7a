/* PNG figures with cairo (include/plot.h): heat maps, labelled scatter plots, multi-panel line charts, image
 * grids, and the colour maps they use. Everything is drawn on an opaque white RGB24 surface, so the PNG is plain
 * 8-bit RGB, and filled rectangles sit on whole pixels, so a cell's colour in the file is exactly the colour map's.
 * Without cairo (V3_HAVE_CAIRO unset) the drawing functions return an error naming the Debian package; the colour
 * maps work either way. plot_training_curves (host/plot/plot_curves.c) reads a run's log and calls plot_lines_styled. */
#include "plot.h"
#include "plot_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

#define PI 3.14159265358979323846

/* ---- colour maps ---------------------------------------------------------------------------------------- */
/* 33 evenly spaced samples (t = k/32) of matplotlib's viridis and magma (van der Walt & Smith, CC0), linearly
 * interpolated: within 2/255 of the full 256-entry tables everywhere. */
static const uint8_t VIRIDIS[33][3] = {
    {68, 1, 84},     {71, 13, 96},    {72, 24, 106},   {72, 35, 116},   {71, 45, 123},   {69, 54, 129},
    {66, 64, 134},   {63, 73, 137},   {59, 82, 139},   {55, 90, 141},   {51, 99, 141},   {47, 106, 142},
    {44, 114, 142},  {41, 122, 142},  {38, 129, 142},  {35, 137, 142},  {33, 144, 140},  {31, 152, 139},
    {31, 159, 136},  {33, 166, 133},  {40, 174, 128},  {49, 181, 123},  {62, 188, 116},  {76, 194, 108},
    {93, 201, 99},   {110, 206, 88},  {130, 211, 76},  {150, 216, 63},  {171, 220, 50},  {192, 223, 36},
    {213, 226, 26},  {234, 229, 26},  {253, 231, 37}};
static const uint8_t MAGMA[33][3] = {
    {0, 0, 4},       {3, 3, 17},      {10, 8, 34},     {19, 13, 51},    {29, 17, 70},    {40, 17, 90},
    {54, 16, 106},   {67, 15, 118},   {80, 18, 124},   {93, 23, 127},   {105, 28, 129},  {118, 33, 129},
    {130, 38, 129},  {143, 42, 129},  {156, 46, 127},  {169, 50, 125},  {182, 55, 121},  {195, 59, 117},
    {207, 65, 112},  {219, 72, 106},  {230, 81, 99},   {238, 92, 94},   {245, 105, 92},  {249, 120, 93},
    {251, 135, 97},  {253, 150, 104}, {254, 165, 113}, {254, 180, 123}, {254, 195, 135}, {254, 209, 148},
    {253, 224, 162}, {252, 238, 176}, {252, 253, 191}};

static void cmap(const uint8_t tab[33][3], double t, uint8_t rgb[3]) {
    if (!(t >= 0)) t = 0; /* also NaN */
    if (t > 1) t = 1;
    double x = t * 32;
    int k = (int)x;
    if (k > 31) k = 31;
    double f = x - k;
    for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)lround(tab[k][c] + f * (tab[k + 1][c] - tab[k][c]));
}

void colormap_viridis(double t, uint8_t rgb[3]) { cmap(VIRIDIS, t, rgb); }
void colormap_magma(double t, uint8_t rgb[3]) { cmap(MAGMA, t, rgb); }

/* Qualitative palette: matplotlib's tab10 without its grey (grey marks unlabelled points), then the light tab20
 * partners; further labels get golden-ratio hue steps. */
static const uint8_t PALETTE[18][3] = {
    {31, 119, 180},  {255, 127, 14},  {44, 160, 44},   {214, 39, 40},   {148, 103, 189}, {140, 86, 75},
    {227, 119, 194}, {188, 189, 34},  {23, 190, 207},  {174, 199, 232}, {255, 187, 120}, {152, 223, 138},
    {255, 152, 150}, {197, 176, 213}, {196, 156, 148}, {247, 182, 210}, {219, 219, 141}, {158, 218, 229}};

void plot_palette(int k, double rgb[3]) {
    if (k < 18) {
        for (int c = 0; c < 3; c++) rgb[c] = PALETTE[k][c] / 255.0;
        return;
    }
    /* HSV with s = 0.65, v = 0.8 and hue stepping by the golden ratio: neighbours stay far apart */
    double h = fmod(0.13 + (k - 18) * 0.6180339887, 1.0) * 6, s = 0.65, v = 0.8, f = h - floor(h);
    double p = v * (1 - s), q = v * (1 - s * f), u = v * (1 - s * (1 - f));
    double tab[6][3] = {{v, u, p}, {q, v, p}, {p, v, u}, {p, q, v}, {u, p, v}, {v, p, q}};
    memcpy(rgb, tab[(int)h % 6], sizeof(double) * 3);
}

#ifndef V3_HAVE_CAIRO
/* ---- builds without cairo --------------------------------------------------------------------------------- */
int plot_needs_cairo(const char *path) {
    return v3_error("%s: drawing figures needs cairo: install the Debian package libcairo2-dev (and rebuild)",
                    path ? path : "(figure)");
}
#define NEEDS_CAIRO(path) plot_needs_cairo(path)

int plot_available(void) { return 0; }
int plot_heatmap(const char *path, const char *title, const double *M, const int64_t *counts, int rows, int cols,
                 const char *const *row_names, const char *const *col_names, const char *xlabel, const char *ylabel) {
    return NEEDS_CAIRO(path);
}
int plot_scatter(const char *path, const char *title, const float *Y, int N, const int32_t *label, int n_labels,
                 const char *const *label_names, const uint8_t *label_rgb, const float *extra, int n_extra) {
    (void)label_rgb;
    return NEEDS_CAIRO(path);
}
int plot_lines(const char *path, const char *title, const char *const *panel_titles, const int *log_y, int n_panels,
               const PlotSeries *series, int n_series, const char *xlabel) {
    return NEEDS_CAIRO(path);
}
int plot_lines_styled(const char *path, const char *title, const char *const *panel_titles, const int *log_y,
                      int n_panels, const PlotSeries *series, const int *style, const int *colour, int n_series,
                      const char *xlabel) {
    return NEEDS_CAIRO(path);
}
int plot_image_grid(const char *path, const char *title, const uint8_t *rgb, int rows, int cols, int th, int tw,
                    int scale, const char *const *row_names, const char *const *col_names) {
    return NEEDS_CAIRO(path);
}
#else
#include <cairo.h>

int plot_available(void) { return 1; }
int plot_needs_cairo(const char *path) { return v3_error("%s: (this build has cairo)", path ? path : "(figure)"); }

/* ---- canvas and text ---------------------------------------------------------------------------------------- */
#define MAX_SIDE 32000 /* cairo's image surfaces stop at 32767 pixels a side */
#define FONT "sans-serif"
#define FS_TITLE 20.0
#define FS_LABEL 15.0
#define FS_TICK 12.5
#define FS_LEGEND 13.0

typedef struct {
    cairo_surface_t *s;
    cairo_t *cr;
} Fig;

static int fig_begin(Fig *f, const char *path, int w, int h) {
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE)
        return v3_error("%s: figure of %d x %d pixels is too large (at most %d a side)", path, w, h, MAX_SIDE);
    f->s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    f->cr = cairo_create(f->s);
    if (cairo_status(f->cr) != CAIRO_STATUS_SUCCESS) {
        int rc = v3_error("%s: cannot create a %d x %d figure: %s", path, w, h,
                          cairo_status_to_string(cairo_status(f->cr)));
        cairo_destroy(f->cr);
        cairo_surface_destroy(f->s);
        return rc;
    }
    cairo_set_source_rgb(f->cr, 1, 1, 1);
    cairo_paint(f->cr);
    cairo_select_font_face(f->cr, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    return 0;
}

/* Write the PNG and free the figure; 0 or -1 naming the file. */
static int fig_end(Fig *f, const char *path) {
    cairo_status_t st = cairo_status(f->cr);
    cairo_destroy(f->cr);
    cairo_surface_flush(f->s);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_write_to_png(f->s, path);
    cairo_surface_destroy(f->s);
    if (st != CAIRO_STATUS_SUCCESS) return v3_error("%s: cannot write the PNG: %s", path, cairo_status_to_string(st));
    return 0;
}

static void set_font(cairo_t *cr, double size, int bold) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static double text_w(cairo_t *cr, const char *s) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    return e.x_advance;
}

/* Height of a digit in the current font: what "vertically centred" means for labels. */
static double digit_h(cairo_t *cr) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, "8", &e);
    return e.height;
}

/* Text anchored at (x, y): ax 0 / 0.5 / 1 = left / centre / right; ay 0 / 0.5 / 1 = top / middle / baseline
 * (measured on digit height, so rows of labels line up whatever their letters). */
static void text_at(cairo_t *cr, double x, double y, const char *s, double ax, double ay) {
    double h = digit_h(cr);
    cairo_move_to(cr, x - ax * text_w(cr, s), y + (1 - ay) * h);
    cairo_show_text(cr, s);
}

/* The same, rotated by `angle` radians about (x, y). */
static void text_rot(cairo_t *cr, double x, double y, double angle, const char *s, double ax, double ay) {
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, angle);
    text_at(cr, 0, 0, s, ax, ay);
    cairo_restore(cr);
}

static void rgb255(cairo_t *cr, const uint8_t c[3]) { cairo_set_source_rgb(cr, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0); }
static void grey(cairo_t *cr, double g) { cairo_set_source_rgb(cr, g, g, g); }

static void title_at(cairo_t *cr, double cx, double y, const char *title) {
    if (!title || !*title) return;
    set_font(cr, FS_TITLE, 1);
    grey(cr, 0.1);
    text_at(cr, cx, y, title, 0.5, 0);
}

/* Name i of an optional name list, or its index. */
static const char *name_or_index(const char *const *names, int i, char buf[32]) {
    if (names && names[i]) return names[i];
    snprintf(buf, 32, "%d", i);
    return buf;
}

/* ---- axes ------------------------------------------------------------------------------------------------ */
typedef struct {
    double x0, y0, x1, y1;     /* pixel box: left, top, right, bottom */
    double xlo, xhi, ylo, yhi; /* data range (log10 of it for a log axis) */
    int logy;
} Axes;

static double px(const Axes *a, double x) { return a->x0 + (x - a->xlo) / (a->xhi - a->xlo) * (a->x1 - a->x0); }
static double py(const Axes *a, double y) {
    if (a->logy) y = log10(y);
    return a->y1 - (y - a->ylo) / (a->yhi - a->ylo) * (a->y1 - a->y0);
}

/* At most maxn (and as many as that allows) "nice" ticks, steps of 1, 2 or 5 x 10^k, covering [lo, hi]; returns
 * the count and the step. */
static int nice_ticks(double lo, double hi, int maxn, double *t, double *stepo) {
    double span = hi - lo;
    if (!(span > 0)) span = 1;
    double step = pow(10, floor(log10(span / maxn)) - 1);
    for (int k = 0; k < 12; k++) { /* the smallest nice step that gives no more than maxn ticks */
        double s = step * (k % 3 == 0 ? 1 : k % 3 == 1 ? 2 : 5) * pow(10, k / 3);
        if (floor(hi / s + 1e-9) - ceil(lo / s - 1e-9) + 1 <= maxn) {
            step = s;
            break;
        }
    }
    double k0 = ceil(lo / step - 1e-9);
    int n = 0;
    for (int k = 0; n < 32; k++) {
        double v = (k0 + k) * step;
        if (v > hi + 1e-9 * step) break;
        t[n++] = fabs(v) < 1e-9 * step ? 0 : v; /* no "-0" */
    }
    *stepo = step;
    return n;
}

/* Tick label with as many decimals as the step needs (so neighbouring labels differ). */
static void fmt_tick(double v, double step, char *buf, size_t cap) {
    double m = fabs(v);
    if (m >= 1e6 || (m != 0 && m < 1e-4 && step < 1e-4)) snprintf(buf, cap, "%.3g", v);
    else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        if (dec > 10) dec = 10;
        snprintf(buf, cap, "%.*f", dec, v);
    }
}

/* Ticks for a log axis spanning [lo10, hi10] in log10: decades, or 1-2-5 / 1..9 multiples when the span is
 * short; values (not logs) returned, *step 0. Falls back to linear nice ticks inside the range when even those
 * give < 2 (then *step is their step, for the labels). */
static int log_ticks(double lo10, double hi10, double *t, double *step) {
    *step = 0;
    static const int sets[3][10] = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
    static const int sizes[3] = {1, 3, 9};
    for (int s = 0; s < 3; s++) {
        int n = 0;
        for (int k = (int)floor(lo10) - 1; k <= (int)ceil(hi10) + 1 && n < 32; k++)
            for (int m = 0; m < sizes[s] && n < 32; m++) {
                double v = sets[s][m] * pow(10, k), l = log10(v);
                if (l >= lo10 - 1e-9 && l <= hi10 + 1e-9) t[n++] = v;
            }
        if (n >= 3 || (s == 2 && n >= 2)) {
            if (n > 8) { /* too dense: thin evenly, keeping the first */
                int every = (n + 7) / 8, m = 0;
                for (int i = 0; i < n; i += every) t[m++] = t[i];
                n = m;
            }
            return n;
        }
    }
    return nice_ticks(pow(10, lo10), pow(10, hi10), 5, t, step);
}

/* Frame, gridlines (optional), ticks and tick labels, axis labels. */
static void draw_axes(cairo_t *cr, const Axes *a, int grid, const char *xlabel, const char *ylabel, int xticklabels) {
    double t[32], step;
    char buf[64];
    set_font(cr, FS_TICK, 0);
    cairo_set_line_width(cr, 1);
    /* x */
    int n = nice_ticks(a->xlo, a->xhi, 7, t, &step);
    for (int i = 0; i < n; i++) {
        double x = floor(px(a, t[i])) + 0.5;
        if (grid) {
            grey(cr, 0.9);
            cairo_move_to(cr, x, a->y0);
            cairo_line_to(cr, x, a->y1);
            cairo_stroke(cr);
        }
        grey(cr, 0.25);
        cairo_move_to(cr, x, a->y1);
        cairo_line_to(cr, x, a->y1 + 5);
        cairo_stroke(cr);
        if (xticklabels) {
            fmt_tick(t[i], step, buf, sizeof buf);
            grey(cr, 0.15);
            text_at(cr, x, a->y1 + 9, buf, 0.5, 0);
        }
    }
    /* y */
    double ys[32];
    int m;
    if (a->logy) m = log_ticks(a->ylo, a->yhi, ys, &step);
    else m = nice_ticks(a->ylo, a->yhi, 6, ys, &step);
    double ywidest = 0;
    for (int i = 0; i < m; i++) {
        double y = floor(py(a, ys[i])) + 0.5;
        if (grid) {
            grey(cr, 0.9);
            cairo_move_to(cr, a->x0, y);
            cairo_line_to(cr, a->x1, y);
            cairo_stroke(cr);
        }
        grey(cr, 0.25);
        cairo_move_to(cr, a->x0 - 5, y);
        cairo_line_to(cr, a->x0, y);
        cairo_stroke(cr);
        if (a->logy && step == 0) snprintf(buf, sizeof buf, "%g", ys[i]);
        else fmt_tick(ys[i], step, buf, sizeof buf);
        grey(cr, 0.15);
        text_at(cr, a->x0 - 8, y, buf, 1, 0.5);
        if (text_w(cr, buf) > ywidest) ywidest = text_w(cr, buf);
    }
    grey(cr, 0.25);
    cairo_rectangle(cr, floor(a->x0) + 0.5, floor(a->y0) + 0.5, floor(a->x1) - floor(a->x0),
                    floor(a->y1) - floor(a->y0));
    cairo_stroke(cr);
    set_font(cr, FS_LABEL, 0);
    grey(cr, 0.1);
    if (xlabel && *xlabel) text_at(cr, 0.5 * (a->x0 + a->x1), a->y1 + (xticklabels ? 30 : 10), xlabel, 0.5, 0);
    if (ylabel && *ylabel) text_rot(cr, a->x0 - ywidest - 16, 0.5 * (a->y0 + a->y1), -PI / 2, ylabel, 0.5, 1);
}

/* ---- heat map ------------------------------------------------------------------------------------------ */
int plot_heatmap(const char *path, const char *title, const double *M, const int64_t *counts, int rows, int cols,
                 const char *const *row_names, const char *const *col_names, const char *xlabel, const char *ylabel) {
    if (!path) return v3_error("plot_heatmap: NULL path");
    if (!M || rows < 1 || cols < 1) return v3_error("%s: heat map needs a matrix of at least 1 x 1 (got %d x %d)", path, rows, cols);
    /* cells as large as fit a ~900 x 700 grid, 4..90 px */
    int cell = (int)fmin(900.0 / cols, 700.0 / rows);
    if (cell > 90) cell = 90;
    if (cell < 4) cell = 4;
    int gw = cell * cols, gh = cell * rows;

    /* measure labels on a scratch context */
    cairo_surface_t *ms = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *mc = cairo_create(ms);
    double lab_fs = fmin(FS_TICK, fmax(7.0, cell * 0.8));
    set_font(mc, lab_fs, 0);
    char buf[32];
    int rstep = (int)ceil((lab_fs + 2) / cell), cstep = rstep; /* label every k-th row/column when cells are tiny */
    double rw = 0, cw = 0;
    for (int r = 0; r < rows; r += rstep) rw = fmax(rw, text_w(mc, name_or_index(row_names, r, buf)));
    for (int c = 0; c < cols; c += cstep) cw = fmax(cw, text_w(mc, name_or_index(col_names, c, buf)));
    set_font(mc, FS_TITLE, 1);
    double tw = title ? text_w(mc, title) : 0;
    cairo_destroy(mc);
    cairo_surface_destroy(ms);
    int vertical_cols = cw > cell * cstep - 4; /* column names that do not fit across are written upwards */
    double colband = vertical_cols ? cw : lab_fs;

    int left = 20 + (ylabel && *ylabel ? 26 : 0) + (int)ceil(rw) + 8;
    int top = title && *title ? 56 : 20;
    int bottom = 8 + (int)ceil(colband) + (xlabel && *xlabel ? 38 : 14);
    int right = 30 + 20 + 50; /* gap, colour bar, its labels */
    int W = left + gw + right, H = top + gh + bottom;
    if (W < tw + 40) W = (int)(tw + 40);
    Fig f;
    if (fig_begin(&f, path, W, H)) return -1;
    cairo_t *cr = f.cr;
    title_at(cr, W / 2.0, 16, title);

    /* cells: whole-pixel rectangles without antialiasing, so each is exactly its colour map value */
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            double v = M[(size_t)r * cols + c];
            uint8_t col[3];
            if (isnan(v)) col[0] = col[1] = col[2] = 200; /* missing */
            else colormap_viridis(v, col);
            rgb255(cr, col);
            cairo_rectangle(cr, left + c * cell, top + r * cell, cell, cell);
            cairo_fill(cr);
        }
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
    /* counts in the cells that can hold them: white on dark cells, black on light ones */
    if (counts && cell >= 18) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                snprintf(buf, sizeof buf, "%lld", (long long)counts[(size_t)r * cols + c]);
                double fs = fmin(13.0, cell * 0.4);
                set_font(cr, fs, 0);
                while (fs > 7 && text_w(cr, buf) > cell - 4) set_font(cr, fs -= 1, 0);
                if (text_w(cr, buf) > cell - 4) continue;
                double v = M[(size_t)r * cols + c];
                if (!isnan(v) && v < 0.55) grey(cr, 1);
                else grey(cr, 0);
                text_at(cr, left + (c + 0.5) * cell, top + (r + 0.5) * cell, buf, 0.5, 0.5);
            }
    }
    grey(cr, 0.25);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, left - 0.5, top - 0.5, gw + 1, gh + 1);
    cairo_stroke(cr);
    /* row and column names */
    set_font(cr, lab_fs, 0);
    grey(cr, 0.15);
    for (int r = 0; r < rows; r += rstep) text_at(cr, left - 6, top + (r + 0.5) * cell, name_or_index(row_names, r, buf), 1, 0.5);
    for (int c = 0; c < cols; c += cstep) {
        const char *s = name_or_index(col_names, c, buf);
        if (vertical_cols) text_rot(cr, left + (c + 0.5) * cell, top + gh + 6, -PI / 2, s, 1, 0.5);
        else text_at(cr, left + (c + 0.5) * cell, top + gh + 6, s, 0.5, 0);
    }
    set_font(cr, FS_LABEL, 0);
    grey(cr, 0.1);
    if (xlabel && *xlabel) text_at(cr, left + gw / 2.0, top + gh + 6 + colband + 12, xlabel, 0.5, 0);
    if (ylabel && *ylabel) text_rot(cr, left - rw - 14, top + gh / 2.0, -PI / 2, ylabel, 0.5, 1);
    /* colour bar: one pixel row per step of the map, at least 150 px tall */
    int bx = left + gw + 30, bh = gh < 150 ? 150 : gh, by = top;
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
    for (int y = 0; y < bh; y++) {
        uint8_t col[3];
        colormap_viridis(1.0 - (y + 0.5) / bh, col);
        rgb255(cr, col);
        cairo_rectangle(cr, bx, by + y, 20, 1);
        cairo_fill(cr);
    }
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
    grey(cr, 0.25);
    cairo_rectangle(cr, bx - 0.5, by - 0.5, 21, bh + 1);
    cairo_stroke(cr);
    set_font(cr, FS_TICK, 0);
    for (int k = 0; k <= 5; k++) {
        double y = floor(by + bh - k / 5.0 * bh) + 0.5;
        grey(cr, 0.25);
        cairo_move_to(cr, bx + 20, y);
        cairo_line_to(cr, bx + 25, y);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%.1f", k / 5.0);
        grey(cr, 0.15);
        text_at(cr, bx + 28, y, buf, 0, 0.5);
    }
    return fig_end(&f, path);
}

/* ---- scatter ----------------------------------------------------------------------------------------- */
static void cross(cairo_t *cr, double x, double y, double r) {
    cairo_move_to(cr, x - r, y - r);
    cairo_line_to(cr, x + r, y + r);
    cairo_move_to(cr, x - r, y + r);
    cairo_line_to(cr, x + r, y - r);
}

/* label l's colour: label_rgb's when given, else the palette's */
static void label_colour(const uint8_t *label_rgb, int l, double c[3]) {
    if (!label_rgb) {
        plot_palette(l, c);
        return;
    }
    for (int j = 0; j < 3; j++) c[j] = label_rgb[3 * l + j] / 255.0;
}

int plot_scatter(const char *path, const char *title, const float *Y, int N, const int32_t *label, int n_labels,
                 const char *const *label_names, const uint8_t *label_rgb, const float *extra, int n_extra) {
    if (!path) return v3_error("plot_scatter: NULL path");
    if (N < 0 || n_extra < 0 || n_labels < 0 || (N > 0 && !Y) || (n_extra > 0 && !extra))
        return v3_error("%s: scatter needs N >= 0 points (got %d), n_labels >= 0 and the arrays", path, N);
    int has_grey = 0;
    for (int i = 0; i < N; i++) {
        int l = label ? label[i] : -1;
        if (l >= n_labels) return v3_error("%s: point %d has label %d, outside [0, %d)", path, i, l, n_labels);
        if (l < 0) has_grey = 1;
    }
    /* equal-aspect square box around every finite point (and extra point), 5% margin */
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < 2; s++) {
        const float *P = s ? extra : Y;
        int n = s ? n_extra : N;
        for (int i = 0; i < n; i++) {
            double x = P[2 * i], y = P[2 * i + 1];
            if (!isfinite(x) || !isfinite(y)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    }
    if (!(xlo <= xhi)) xlo = ylo = -1, xhi = yhi = 1; /* nothing to draw: an empty frame */
    double span = fmax(xhi - xlo, yhi - ylo) * 1.1, cx = 0.5 * (xlo + xhi), cy = 0.5 * (ylo + yhi);
    if (!(span > 0)) span = fmax(fabs(cx), fabs(cy)) * 0.2 + 1;

    /* legend entries: the labels, then "unlabelled" and the extra points (codebook atoms) when present */
    int n_entries = n_labels + has_grey + (n_extra > 0);
    const int box = 760, left = 95, top = 60, row_h = 20;
    int per_col = (box - 20) / row_h, max_cols = 3;
    int shown = n_entries, ncols = (n_entries + per_col - 1) / per_col;
    if (ncols > max_cols) { /* too many labels: show what fits and say how many are left out */
        ncols = max_cols;
        shown = max_cols * per_col - 1;
    }
    cairo_surface_t *ms = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *mc = cairo_create(ms);
    set_font(mc, FS_LEGEND, 0);
    char buf[64];
    double colw = 60;
    for (int k = 0; k < n_labels && k < shown; k++) colw = fmax(colw, text_w(mc, name_or_index(label_names, k, buf)));
    if (has_grey) colw = fmax(colw, text_w(mc, "unlabelled"));
    snprintf(buf, sizeof buf, "codebook atoms (%d)", n_extra);
    if (n_extra > 0) colw = fmax(colw, text_w(mc, buf));
    colw = fmin(colw, 240) + 30;
    set_font(mc, FS_TITLE, 1);
    double tw = title ? text_w(mc, title) : 0;
    cairo_destroy(mc);
    cairo_surface_destroy(ms);
    int W = left + box + 30 + (int)(ncols * colw) + 20, H = top + box + 70;
    if (W < tw + 40) W = (int)(tw + 40);
    Fig f;
    if (fig_begin(&f, path, W, H)) return -1;
    cairo_t *cr = f.cr;
    title_at(cr, W / 2.0, 18, title);
    Axes a = {left, top, left + box, top + box, cx - span / 2, cx + span / 2, cy - span / 2, cy + span / 2, 0};
    draw_axes(cr, &a, 0, "dimension 1", "dimension 2", 1);

    /* points: unlabelled (grey) first, then the rest in a fixed pseudo-random order so no class always lies on
     * top; clipped to the box */
    double rad = N <= 300 ? 4.0 : N <= 1000 ? 3.2 : N <= 5000 ? 2.4 : 1.6;
    int *order = xmalloc(sizeof(int) * (N > 0 ? N : 1));
    Rng rng;
    rng_seed(&rng, 0x5CA77E2ull);
    rng_permutation(&rng, N, order);
    cairo_save(cr);
    cairo_rectangle(cr, a.x0 + 1, a.y0 + 1, a.x1 - a.x0 - 1, a.y1 - a.y0 - 1);
    cairo_clip(cr);
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < N; k++) {
            int i = order[k], l = label ? label[i] : -1;
            if ((l < 0) != (pass == 0)) continue;
            double x = Y[2 * i], y = Y[2 * i + 1];
            if (!isfinite(x) || !isfinite(y)) continue;
            double c[3] = {0.62, 0.62, 0.62};
            if (l >= 0) label_colour(label_rgb, l, c);
            cairo_set_source_rgba(cr, c[0], c[1], c[2], 0.8);
            cairo_arc(cr, px(&a, x), py(&a, y), rad, 0, 2 * PI);
            cairo_fill(cr);
        }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1.8);
    for (int i = 0; i < n_extra; i++) {
        double x = extra[2 * i], y = extra[2 * i + 1];
        if (!isfinite(x) || !isfinite(y)) continue;
        cross(cr, px(&a, x), py(&a, y), 5);
    }
    cairo_stroke(cr);
    cairo_restore(cr);
    free(order);

    /* legend */
    set_font(cr, FS_LEGEND, 0);
    double lx = left + box + 30, ly = top + 10;
    for (int e = 0; e < shown; e++) {
        double x = lx + (e / per_col) * colw, y = ly + (e % per_col) * row_h + row_h / 2.0;
        const char *s;
        if (e < n_labels) {
            double c[3];
            label_colour(label_rgb, e, c);
            cairo_set_source_rgb(cr, c[0], c[1], c[2]);
            cairo_arc(cr, x + 6, y, 5, 0, 2 * PI);
            cairo_fill(cr);
            s = name_or_index(label_names, e, buf);
        } else if (e == n_labels && has_grey) {
            grey(cr, 0.62);
            cairo_arc(cr, x + 6, y, 5, 0, 2 * PI);
            cairo_fill(cr);
            s = "unlabelled";
        } else {
            cairo_set_source_rgb(cr, 0, 0, 0);
            cairo_set_line_width(cr, 1.8);
            cross(cr, x + 6, y, 5);
            cairo_stroke(cr);
            snprintf(buf, sizeof buf, "codebook atoms (%d)", n_extra);
            s = buf;
        }
        grey(cr, 0.1);
        /* long names are cut to the column width */
        char cut[256];
        snprintf(cut, sizeof cut, "%s", s);
        while (strlen(cut) > 4 && text_w(cr, cut) > colw - 30) {
            size_t L = strlen(cut);
            while (L > 0 && (cut[L - 1] & 0xC0) == 0x80) L--; /* whole UTF-8 characters */
            cut[L - 1] = 0;
            strcpy(cut + (L > 4 ? L - 4 : 0), "...");
        }
        text_at(cr, x + 18, y, cut, 0, 0.5);
    }
    if (shown < n_entries) {
        snprintf(buf, sizeof buf, "... and %d more", n_entries - shown);
        grey(cr, 0.3);
        text_at(cr, lx + (shown / per_col) * colw, ly + (shown % per_col) * row_h + row_h / 2.0, buf, 0, 0.5);
    }
    return fig_end(&f, path);
}

/* ---- line charts ------------------------------------------------------------------------------------- */
static int usable(double x, double y, int logy) { return isfinite(x) && isfinite(y) && (!logy || y > 0); }

int plot_lines(const char *path, const char *title, const char *const *panel_titles, const int *log_y, int n_panels,
               const PlotSeries *series, int n_series, const char *xlabel) {
    return plot_lines_styled(path, title, panel_titles, log_y, n_panels, series, NULL, NULL, n_series, xlabel);
}

static int n_usable(const PlotSeries *S, int logy) {
    int n = 0;
    for (int i = 0; i < S->n; i++) n += usable(S->x[i], S->y[i], logy);
    return n;
}

/* Series s's palette index: given, or its position among the panel's series. */
static int series_colour(const PlotSeries *series, const int *colour, int s) {
    if (colour) return colour[s];
    int k = 0;
    for (int t = 0; t < s; t++) k += series[t].panel == series[s].panel;
    return k;
}

int plot_lines_styled(const char *path, const char *title, const char *const *panel_titles, const int *log_y,
                      int n_panels, const PlotSeries *series, const int *style, const int *colour, int n_series,
                      const char *xlabel) {
    if (!path) return v3_error("plot_lines: NULL path");
    if (n_panels < 1 || n_series < 0 || (n_series > 0 && !series))
        return v3_error("%s: line chart needs at least one panel (got %d) and n_series >= 0", path, n_panels);
    for (int s = 0; s < n_series; s++) {
        const PlotSeries *S = &series[s];
        if (S->panel < 0 || S->panel >= n_panels)
            return v3_error("%s: series %d (%s) has panel %d, outside [0, %d)", path, s, S->name ? S->name : "",
                            S->panel, n_panels);
        if (S->n < 0 || (S->n > 0 && (!S->x || !S->y)))
            return v3_error("%s: series %d (%s) has %d points but no data", path, s, S->name ? S->name : "", S->n);
    }
    int ncols = n_panels <= 3 ? n_panels : n_panels == 4 ? 2 : n_panels <= 6 ? 3 : 4;
    int nrows = (n_panels + ncols - 1) / ncols;
    int pw = ncols == 1 ? 760 : ncols == 2 ? 560 : ncols == 3 ? 350 : 256;
    int ph = ncols == 1 ? 440 : ncols == 2 ? 340 : ncols == 3 ? 260 : 230;
    int ml = 70, mr = 12, mt = 34, mb = 62; /* per panel: tick labels and y label left, title above, x below */
    int top = title && *title ? 50 : 10;
    int W = ncols * (ml + pw + mr) + 10, H = top + nrows * (mt + ph + mb) + 10;
    Fig f;
    if (fig_begin(&f, path, W, H)) return -1;
    cairo_t *cr = f.cr;
    title_at(cr, W / 2.0, 14, title);

    /* one x range for all panels, so panels line up */
    double xlo = INFINITY, xhi = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++)
            if (isfinite(series[s].x[i])) xlo = fmin(xlo, series[s].x[i]), xhi = fmax(xhi, series[s].x[i]);
    if (!(xlo <= xhi)) xlo = 0, xhi = 1;
    if (xhi == xlo) xlo -= 1, xhi += 1;
    double xpad = 0.02 * (xhi - xlo);

    for (int p = 0; p < n_panels; p++) {
        int lg = log_y && log_y[p];
        double ylo = INFINITY, yhi = -INFINITY;
        for (int s = 0; s < n_series; s++) {
            if (series[s].panel != p) continue;
            for (int i = 0; i < series[s].n; i++) {
                double x = series[s].x[i], y = series[s].y[i];
                if (!usable(x, y, lg)) continue;
                y = lg ? log10(y) : y;
                ylo = fmin(ylo, y), yhi = fmax(yhi, y);
            }
        }
        int empty = !(ylo <= yhi);
        if (empty) ylo = lg ? -1 : 0, yhi = lg ? 1 : 1;
        if (yhi == ylo) {
            double d = lg ? 0.1 : (fabs(ylo) > 0 ? 0.1 * fabs(ylo) : 1);
            ylo -= d, yhi += d;
        }
        double ypad = 0.06 * (yhi - ylo);
        int r = p / ncols, c = p % ncols;
        double bx = c * (ml + pw + mr) + ml + 5, by = top + r * (mt + ph + mb) + mt;
        Axes a = {bx, by, bx + pw, by + ph, xlo - xpad, xhi + xpad, ylo - ypad, yhi + ypad, lg};
        /* the x label under the lowest panel of each column */
        int lowest = p + ncols >= n_panels;
        draw_axes(cr, &a, 1, lowest ? xlabel : NULL, NULL, 1);
        set_font(cr, FS_LABEL, 1);
        grey(cr, 0.1);
        char buf[64];
        const char *pt = panel_titles && panel_titles[p] ? panel_titles[p] : (snprintf(buf, sizeof buf, "panel %d", p), buf);
        text_at(cr, bx + pw / 2.0, by - 8, pt, 0.5, 1);
        if (empty) {
            set_font(cr, FS_LEGEND, 0);
            grey(cr, 0.5);
            text_at(cr, bx + pw / 2.0, by + ph / 2.0, "no data", 0.5, 0.5);
            continue;
        }
        cairo_save(cr);
        cairo_rectangle(cr, a.x0, a.y0, a.x1 - a.x0, a.y1 - a.y0);
        cairo_clip(cr);
        for (int s = 0; s < n_series; s++) {
            const PlotSeries *S = &series[s];
            if (S->panel != p) continue;
            double col[3];
            plot_palette(series_colour(series, colour, s), col);
            int st = style ? style[s] : PLOT_STYLE_LINE;
            cairo_set_source_rgb(cr, col[0], col[1], col[2]);
            /* the line, broken at unusable points */
            cairo_set_line_width(cr, st == PLOT_STYLE_POINTS ? 1.0 : 1.6);
            if (st == PLOT_STYLE_POINTS) cairo_set_dash(cr, (double[]){4, 3}, 2, 0);
            int pen = 0;
            for (int i = 0; i < S->n; i++) {
                if (!usable(S->x[i], S->y[i], lg)) { pen = 0; continue; }
                double X = px(&a, S->x[i]), Yp = py(&a, S->y[i]);
                if (pen) cairo_line_to(cr, X, Yp);
                else cairo_move_to(cr, X, Yp);
                pen = 1;
            }
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
            /* markers: always for point series, and for short lines so single points show */
            if (st == PLOT_STYLE_POINTS || S->n <= 40) {
                double rad = st == PLOT_STYLE_POINTS ? 3.5 : 2.5;
                for (int i = 0; i < S->n; i++) {
                    if (!usable(S->x[i], S->y[i], lg)) continue;
                    cairo_arc(cr, px(&a, S->x[i]), py(&a, S->y[i]), rad, 0, 2 * PI);
                    cairo_fill(cr);
                }
            }
        }
        cairo_restore(cr);
        /* legend of the named series that have something drawn, on a white box, in the corner that covers the
         * fewest data points */
        int nl = 0;
        double lw = 0;
        set_font(cr, FS_TICK, 0);
        for (int s = 0; s < n_series; s++)
            if (series[s].panel == p && series[s].name && n_usable(&series[s], lg))
                nl++, lw = fmax(lw, text_w(cr, series[s].name));
        if (nl) {
            double bw = lw + 40, bh = nl * 18 + 8, lx = 0, ly = 0;
            long best = -1;
            for (int corner = 0; corner < 4; corner++) { /* top-right, top-left, bottom-right, bottom-left */
                double cx = corner & 1 ? a.x0 + 6 : a.x1 - bw - 6, cy = corner & 2 ? a.y1 - bh - 6 : a.y0 + 6;
                long hits = 0;
                for (int s = 0; s < n_series; s++) {
                    if (series[s].panel != p) continue;
                    for (int i = 0; i < series[s].n; i++) {
                        if (!usable(series[s].x[i], series[s].y[i], lg)) continue;
                        double X = px(&a, series[s].x[i]), Yp = py(&a, series[s].y[i]);
                        hits += X >= cx - 4 && X <= cx + bw + 4 && Yp >= cy - 4 && Yp <= cy + bh + 4;
                    }
                }
                if (best < 0 || hits < best) best = hits, lx = cx, ly = cy;
            }
            cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
            cairo_rectangle(cr, lx, ly, bw, bh);
            cairo_fill_preserve(cr);
            grey(cr, 0.8);
            cairo_set_line_width(cr, 1);
            cairo_stroke(cr);
            int e = 0;
            for (int s = 0; s < n_series; s++) {
                if (series[s].panel != p || !series[s].name || !n_usable(&series[s], lg)) continue;
                double col[3], y = ly + 4 + e * 18 + 9;
                plot_palette(series_colour(series, colour, s), col);
                cairo_set_source_rgb(cr, col[0], col[1], col[2]);
                if (style && style[s] == PLOT_STYLE_POINTS) {
                    cairo_arc(cr, lx + 17, y, 3.5, 0, 2 * PI);
                    cairo_fill(cr);
                } else {
                    cairo_set_line_width(cr, 2);
                    cairo_move_to(cr, lx + 6, y);
                    cairo_line_to(cr, lx + 28, y);
                    cairo_stroke(cr);
                }
                grey(cr, 0.1);
                text_at(cr, lx + 34, y, series[s].name, 0, 0.5);
                e++;
            }
        }
    }
    return fig_end(&f, path);
}

/* ---- image grid ------------------------------------------------------------------------------------- */
int plot_image_grid(const char *path, const char *title, const uint8_t *rgb, int rows, int cols, int th, int tw,
                    int scale, const char *const *row_names, const char *const *col_names) {
    if (!path) return v3_error("plot_image_grid: NULL path");
    if (!rgb || rows < 1 || cols < 1 || th < 1 || tw < 1 || scale < 1)
        return v3_error("%s: image grid needs rows, cols, tile size and scale >= 1 (got %d x %d tiles of %d x %d, "
                        "scale %d)", path, rows, cols, th, tw, scale);
    if ((double)tw * scale * cols > MAX_SIDE || (double)th * scale * rows > MAX_SIDE)
        return v3_error("%s: %d x %d tiles of %d x %d at scale %d exceed %d pixels a side", path, rows, cols, th, tw,
                        scale, MAX_SIDE);
    int TW = tw * scale, TH = th * scale, gap = 8;
    cairo_surface_t *ms = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *mc = cairo_create(ms);
    set_font(mc, FS_LEGEND, 0);
    double rw = 0, cw = 0;
    for (int r = 0; r < rows && row_names; r++) if (row_names[r]) rw = fmax(rw, text_w(mc, row_names[r]));
    for (int c = 0; c < cols && col_names; c++) if (col_names[c]) cw = fmax(cw, text_w(mc, col_names[c]));
    set_font(mc, FS_TITLE, 1);
    double titw = title ? text_w(mc, title) : 0;
    cairo_destroy(mc);
    cairo_surface_destroy(ms);
    int vertical_cols = cw > TW + gap - 4;
    int left = 16 + (rw > 0 ? (int)ceil(rw) + 10 : 0);
    int top = (title && *title ? 50 : 12) + (col_names ? (vertical_cols ? (int)ceil(cw) + 10 : 24) : 0);
    int W = left + cols * (TW + gap) - gap + 16, H = top + rows * (TH + gap) - gap + 16;
    if (W < titw + 40) W = (int)(titw + 40);
    Fig f;
    if (fig_begin(&f, path, W, H)) return -1;
    cairo_t *cr = f.cr;
    title_at(cr, W / 2.0, 14, title);
    /* frames first (thin grey, just outside each tile), so tiles that are white at the border stay visible */
    grey(cr, 0.75);
    cairo_set_line_width(cr, 1);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            cairo_rectangle(cr, left + c * (TW + gap) - 0.5, top + r * (TH + gap) - 0.5, TW + 1, TH + 1);
            cairo_stroke(cr);
        }
    set_font(cr, FS_LEGEND, 0);
    grey(cr, 0.1);
    for (int r = 0; r < rows && row_names; r++)
        if (row_names[r]) text_at(cr, left - 10, top + r * (TH + gap) + TH / 2.0, row_names[r], 1, 0.5);
    for (int c = 0; c < cols && col_names; c++) {
        if (!col_names[c]) continue;
        double x = left + c * (TW + gap) + TW / 2.0;
        if (vertical_cols) text_rot(cr, x, top - 8, -PI / 2, col_names[c], 0, 0.5);
        else text_at(cr, x, top - 8, col_names[c], 0.5, 1);
    }
    /* pixels written straight into the surface: nearest-neighbour upscaling, bytes exactly the tiles' */
    cairo_surface_flush(f.s);
    unsigned char *data = cairo_image_surface_get_data(f.s);
    int stride = cairo_image_surface_get_stride(f.s);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const uint8_t *t = rgb + ((size_t)r * cols + c) * th * tw * 3;
            int ox = left + c * (TW + gap), oy = top + r * (TH + gap);
            for (int y = 0; y < TH; y++) {
                uint32_t *row = (uint32_t *)(data + (size_t)(oy + y) * stride) + ox;
                const uint8_t *src = t + (size_t)(y / scale) * tw * 3;
                for (int x = 0; x < TW; x++) {
                    const uint8_t *p = src + (x / scale) * 3;
                    row[x] = 0xFF000000u | (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
                }
            }
        }
    cairo_surface_mark_dirty(f.s);
    return fig_end(&f, path);
}
#endif
