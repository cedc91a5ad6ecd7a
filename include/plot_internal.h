/* Shared by host/plot/plot.c and host/plot/plot_curves.c; not part of the plotting API. */
#ifndef V3_PLOT_INTERNAL_H
#define V3_PLOT_INTERNAL_H
#include "plot.h"

/* The error of builds without cairo (-1, naming path and the Debian package). */
int plot_needs_cairo(const char *path);

/* Colour k of the qualitative palette (the scatter's label colours, the line charts' series colours), in [0,1]. */
void plot_palette(int k, double rgb[3]);

enum { PLOT_STYLE_LINE = 0, PLOT_STYLE_POINTS = 1 }; /* points: markers joined by a thin dashed line */
/* plot_lines with a style and a palette index per series (style NULL: all lines; colour NULL: each series' position
 * among its panel's series, as plot_lines does). */
int plot_lines_styled(const char *path, const char *title, const char *const *panel_titles, const int *log_y,
                      int n_panels, const PlotSeries *series, const int *style, const int *colour, int n_series,
                      const char *xlabel);
#endif
