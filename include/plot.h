/* PNG figures drawn with cairo (Debian libcairo2-dev): heat maps, labelled scatter plots, line charts, image
 * grids. Built only when cairo is found (V3_HAVE_CAIRO); otherwise every function returns -1 with an error that
 * names the package. All functions return 0, or -1 with v3_last_error() naming the file. */
#ifndef V3_PLOT_H
#define V3_PLOT_H
#include <stdint.h>

/* 1 when this build can draw figures. */
int plot_available(void);

/* Heat map of M [rows, cols] (values in [0,1] coloured with viridis; the count is written in each cell when
 * counts != NULL and the cell is large enough). row_names / col_names may be NULL (then indices). */
int plot_heatmap(const char *path, const char *title, const double *M, const int64_t *counts, int rows, int cols,
                 const char *const *row_names, const char *const *col_names, const char *xlabel, const char *ylabel);

/* Scatter of Y [N, 2] coloured by label (n_labels distinct colours from a fixed qualitative palette, or label_rgb
 * [n_labels x 3] when the labels ARE colours, e.g. PhoneNums' ink; label < 0 grey), with a legend of label_names
 * (may be NULL: then the numbers). extra != NULL marks n_extra extra points with black crosses, listed in the
 * legend as "codebook atoms" (what eval draws with them). */
int plot_scatter(const char *path, const char *title, const float *Y, int N, const int32_t *label, int n_labels,
                 const char *const *label_names, const uint8_t *label_rgb, const float *extra, int n_extra);

/* Line chart: panel p of n_panels (laid out in a grid) shows its series; series s has n[s] points (x[s], y[s]),
 * a name and a panel index. log_y[p] != 0 draws panel p with a log y axis (non-positive values skipped). */
typedef struct {
    const char *name;
    int panel;
    int n;
    const double *x, *y;
} PlotSeries;
int plot_lines(const char *path, const char *title, const char *const *panel_titles, const int *log_y, int n_panels,
               const PlotSeries *series, int n_series, const char *xlabel);

/* Grid of RGB tiles: tile (r, c) is rgb + ((r*cols + c) * th * tw * 3), 8-bit, row-major HWC; each tile is
 * drawn `scale` times larger with nearest-neighbour sampling; row_names / col_names label the rows / columns
 * (may be NULL). */
int plot_image_grid(const char *path, const char *title, const uint8_t *rgb, int rows, int cols, int th, int tw,
                    int scale, const char *const *row_names, const char *const *col_names);

/* Colour maps for turning values into tiles. t in [0,1] (clamped). */
void colormap_viridis(double t, uint8_t rgb[3]);
void colormap_magma(double t, uint8_t rgb[3]);

/* Training curves from a run's log.jsonl: one panel per loss term (loss, recon, commit, content, style, sample,
 * fragment, and val purity when present), train lines and val points; log y for loss, recon and commit. */
int plot_training_curves(const char *log_path, const char *png_path);
#endif
