/* Figures: every plot function writes an RGB PNG that decodes, has a plausible size and real content; heat map
 * cells carry exactly the viridis colour of their value at the right place; image grid tiles keep their pixels;
 * the training-curve reader takes a small log and names the line of a malformed one. Tests that draw SKIP when
 * the build has no cairo (after checking that the error names the package). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "phonenums.h"
#include "plot.h"
#include "testing.h"

/* SKIP when this build cannot draw, after checking what a caller would be told. */
#define REQUIRE_CAIRO(dir)                                                                                       \
    do {                                                                                                         \
        if (!plot_available()) {                                                                                 \
            int rc_ = plot_heatmap(test_path(dir, "x.png"), "t", (double[]){0.5}, NULL, 1, 1, NULL, NULL, NULL, NULL); \
            CHECK(rc_ == -1 && strstr(v3_last_error(), "libcairo2-dev"), "without cairo: rc %d, error %s", rc_,   \
                  v3_last_error());                                                                              \
            test_rm_tree(dir);                                                                                   \
            SKIP("this build has no cairo (install libcairo2-dev and rebuild)");                                 \
        }                                                                                                        \
    } while (0)

static int distinct_colours(const uint8_t *pix, int w, int h) {
    uint8_t *seen = xcalloc(1 << 21, 1); /* one bit per 24-bit colour */
    int n = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        uint32_t c = (uint32_t)pix[3 * i] << 16 | (uint32_t)pix[3 * i + 1] << 8 | pix[3 * i + 2];
        if (!(seen[c >> 3] & (1 << (c & 7)))) seen[c >> 3] |= 1 << (c & 7), n++;
    }
    free(seen);
    return n;
}

static long count_colour(const uint8_t *pix, int w, int h, const uint8_t c[3], int tol) {
    long n = 0;
    for (size_t i = 0; i < (size_t)w * h; i++)
        if (abs(pix[3 * i] - c[0]) <= tol && abs(pix[3 * i + 1] - c[1]) <= tol && abs(pix[3 * i + 2] - c[2]) <= tol) n++;
    return n;
}

TEST(plot_colormaps_match_reference_values) {
    uint8_t c[3], d[3];
    /* end points and middle of matplotlib's maps (#440154, #21918c, #fde725; #000004, #fcfdbf) within 2/255 */
    const struct { int magma; double t; int rgb[3]; } ref[] = {
        {0, 0, {68, 1, 84}},   {0, 0.5, {33, 145, 140}}, {0, 1, {253, 231, 37}},
        {0, 0.25, {59, 82, 139}}, {0, 0.75, {94, 201, 98}}, {1, 0, {0, 0, 4}}, {1, 1, {252, 253, 191}},
        {1, 0.5, {183, 55, 121}}};
    for (size_t k = 0; k < sizeof ref / sizeof ref[0]; k++) {
        (ref[k].magma ? colormap_magma : colormap_viridis)(ref[k].t, c);
        for (int i = 0; i < 3; i++)
            CHECK(abs(c[i] - ref[k].rgb[i]) <= 2, "%s(%g) = (%d,%d,%d), want (%d,%d,%d)", ref[k].magma ? "magma" : "viridis",
                  ref[k].t, c[0], c[1], c[2], ref[k].rgb[0], ref[k].rgb[1], ref[k].rgb[2]);
    }
    /* clamping, NaN as the low end */
    colormap_viridis(-3, c), colormap_viridis(0, d);
    CHECK(!memcmp(c, d, 3), "viridis(-3) != viridis(0)");
    colormap_viridis(NAN, c);
    CHECK(!memcmp(c, d, 3), "viridis(NaN) != viridis(0)");
    colormap_viridis(7, c), colormap_viridis(1, d);
    CHECK(!memcmp(c, d, 3), "viridis(7) != viridis(1)");
    /* both maps get lighter monotonically (what makes them readable in grey) */
    for (int m = 0; m < 2; m++) {
        double prev = -1;
        for (int k = 0; k <= 40; k++) {
            (m ? colormap_magma : colormap_viridis)(k / 40.0, c);
            double L = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
            CHECK(L > prev, "%s lightness not increasing at t = %g", m ? "magma" : "viridis", k / 40.0);
            prev = L;
        }
    }
    return 0;
}

TEST(plot_heatmap_cells_have_their_viridis_colour) {
    char *dir = test_tmpdir("plot_hm");
    REQUIRE_CAIRO(dir);
    enum { R = 3, C = 4 };
    double M[R * C];
    for (int i = 0; i < R * C; i++) M[i] = (i * 5 % 12) / 11.0; /* distinct values, scrambled order */
    const char *rn[R] = {"alpha", "beta", "gamma"};
    CHECK(!plot_heatmap(test_path(dir, "hm.png"), "Heat map test", M, NULL, R, C, rn, NULL, "column", "row"),
          "plot_heatmap: %s", v3_last_error());
    uint8_t *pix;
    int w, h;
    CHECK(!png_read_rgb(test_path(dir, "hm.png"), 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    CHECK(w >= 400 && w <= 1600 && h >= 300 && h <= 1200, "size %d x %d", w, h);
    CHECK(distinct_colours(pix, w, h) >= 20, "only %d colours", distinct_colours(pix, w, h));
    /* every cell: its exact viridis colour covers a cell-sized block; the block's centre pixel has that colour;
     * the centres form the R x C grid in order (a transposed or shuffled map fails here) */
    double cx[R * C], cy[R * C];
    for (int i = 0; i < R * C; i++) {
        uint8_t col[3];
        colormap_viridis(M[i], col);
        double sx = 0, sy = 0;
        long n = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const uint8_t *p = pix + 3 * ((size_t)y * w + x);
                if (p[0] == col[0] && p[1] == col[1] && p[2] == col[2]) sx += x, sy += y, n++;
            }
        CHECK(n >= 40 * 40, "cell %d (value %.3f, colour %d,%d,%d): only %ld pixels of its colour", i, M[i], col[0],
              col[1], col[2], n);
        cx[i] = sx / n, cy[i] = sy / n;
        const uint8_t *p = pix + 3 * ((size_t)lround(cy[i]) * w + lround(cx[i]));
        CHECK(p[0] == col[0] && p[1] == col[1] && p[2] == col[2], "cell %d centre pixel (%d,%d,%d), want (%d,%d,%d)",
              i, p[0], p[1], p[2], col[0], col[1], col[2]);
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            int i = r * C + c;
            if (c > 0) CHECK(cx[i] > cx[i - 1] + 30 && fabs(cy[i] - cy[i - 1]) < 5, "cell (%d,%d) not right of (%d,%d)", r, c, r, c - 1);
            if (r > 0) CHECK(cy[i] > cy[i - C] + 30 && fabs(cx[i] - cx[i - C]) < 5, "cell (%d,%d) not below (%d,%d)", r, c, r - 1, c);
        }
    free(pix);
    /* with counts in the cells and many columns (rotated column names): still a valid figure */
    enum { R2 = 10, C2 = 30 };
    double M2[R2 * C2];
    int64_t cnt[R2 * C2];
    const char *cn[C2];
    char names[C2][32];
    for (int i = 0; i < R2 * C2; i++) M2[i] = (i % 17) / 16.0, cnt[i] = i * 7;
    for (int c = 0; c < C2; c++) snprintf(names[c], 32, "atom %d", c), cn[c] = names[c];
    CHECK(!plot_heatmap(test_path(dir, "hm2.png"), "Counts", M2, cnt, R2, C2, NULL, cn, "atom", "digit"),
          "plot_heatmap: %s", v3_last_error());
    CHECK(!png_read_rgb(test_path(dir, "hm2.png"), 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    CHECK(w >= 800 && w <= 1400, "width %d", w);
    free(pix);
    CHECK(plot_heatmap(test_path(dir, "bad.png"), "x", M, NULL, 0, 3, NULL, NULL, NULL, NULL) == -1, "0 rows accepted");
    CHECK(plot_heatmap("/nonexistent-dir/x.png", "x", M, NULL, 1, 1, NULL, NULL, NULL, NULL) == -1 &&
              strstr(v3_last_error(), "/nonexistent-dir/x.png"), "unwritable path: %s", v3_last_error());
    return test_done(0, dir);
}

TEST(plot_scatter_draws_labels_legend_and_extras) {
    char *dir = test_tmpdir("plot_sc");
    REQUIRE_CAIRO(dir);
    enum { N = 600, K = 4 };
    float Y[N * 2], E[K * 2];
    int32_t lab[N];
    for (int i = 0; i < N; i++) {
        int k = i % (K + 1) - 1; /* -1 .. K-1: some unlabelled points */
        lab[i] = k;
        double a = 2 * 3.14159265 * (k + 1) / (K + 1), r = 0.3 + 0.7 * ((i * 37) % 101) / 101.0;
        Y[2 * i] = (float)(10 * cos(a) + r * cos(i * 0.7));
        Y[2 * i + 1] = (float)(10 * sin(a) + r * sin(i * 0.7));
    }
    for (int k = 0; k < K; k++) E[2 * k] = (float)(10 * cos(2 * 3.14159265 * (k + 1) / (K + 1))), E[2 * k + 1] = (float)(10 * sin(2 * 3.14159265 * (k + 1) / (K + 1)));
    Y[0] = NAN; /* skipped, not fatal */
    const char *names[K] = {"zero", "one", "two", "three"};
    CHECK(!plot_scatter(test_path(dir, "sc.png"), "Scatter test", Y, N, lab, K, names, NULL, E, K), "plot_scatter: %s",
          v3_last_error());
    uint8_t *pix;
    int w, h;
    CHECK(!png_read_rgb(test_path(dir, "sc.png"), 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    CHECK(w >= 800 && w <= 1400 && h >= 700 && h <= 1200, "size %d x %d", w, h);
    CHECK(distinct_colours(pix, w, h) >= 30, "only %d colours", distinct_colours(pix, w, h));
    /* the legend's swatches are opaque palette colours: tab10 blue and orange; the crosses are black */
    const uint8_t blue[3] = {31, 119, 180}, orange[3] = {255, 127, 14}, black[3] = {0, 0, 0};
    CHECK(count_colour(pix, w, h, blue, 2) >= 20, "no tab10 blue");
    CHECK(count_colour(pix, w, h, orange, 2) >= 20, "no tab10 orange");
    CHECK(count_colour(pix, w, h, black, 10) >= 4 * 10, "no black crosses");
    free(pix);
    /* label names NULL, no labels at all, no extras: fine; an out-of-range label is an error */
    CHECK(!plot_scatter(test_path(dir, "sc2.png"), NULL, Y, N, NULL, 0, NULL, NULL, NULL, 0), "unlabelled: %s", v3_last_error());
    /* labels that are colours: the legend's swatches are those colours, and tab10 blue is gone */
    const uint8_t ink[K * 3] = {200, 30, 40, 20, 160, 60, 90, 40, 150, 240, 170, 0};
    CHECK(!plot_scatter(test_path(dir, "sc4.png"), "ink", Y, N, lab, K, names, ink, NULL, 0), "rgb: %s",
          v3_last_error());
    CHECK(!png_read_rgb(test_path(dir, "sc4.png"), 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    for (int k = 0; k < K; k++)
        CHECK(count_colour(pix, w, h, ink + 3 * k, 2) >= 20, "label %d not drawn in its colour", k);
    CHECK(count_colour(pix, w, h, blue, 2) == 0, "the palette's blue drawn although label colours were given");
    free(pix);
    lab[5] = K;
    CHECK(plot_scatter(test_path(dir, "sc3.png"), "x", Y, N, lab, K, NULL, NULL, NULL, 0) == -1 &&
              strstr(v3_last_error(), "point 5"), "label %d accepted: %s", K, v3_last_error());
    return test_done(0, dir);
}

TEST(plot_lines_panels_log_axis_and_errors) {
    char *dir = test_tmpdir("plot_ln");
    REQUIRE_CAIRO(dir);
    enum { N = 200, M = 12 };
    double x[N], y1[N], y2[N], vx[M], vy[M];
    for (int i = 0; i < N; i++) x[i] = i + 1, y1[i] = 5 * exp(-i / 40.0) + 0.1, y2[i] = 0.5 + 0.3 * sin(i / 15.0);
    y1[50] = 0;  /* skipped on the log panel */
    y2[60] = NAN; /* a gap */
    for (int i = 0; i < M; i++) vx[i] = 16 * (i + 1), vy[i] = 5 * exp(-vx[i] / 45.0) + 0.15;
    PlotSeries S[3] = {{"train", 0, N, x, y1}, {"val", 0, M, vx, vy}, {"accuracy", 1, N, x, y2}};
    const char *pt[3] = {"loss (log)", "accuracy", "empty panel"};
    int logy[3] = {1, 0, 0};
    CHECK(!plot_lines(test_path(dir, "ln.png"), "Line test", pt, logy, 3, S, 3, "step"), "plot_lines: %s",
          v3_last_error());
    uint8_t *pix;
    int w, h;
    CHECK(!png_read_rgb(test_path(dir, "ln.png"), 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    CHECK(w >= 800 && w <= 1400 && h >= 250 && h <= 1000, "size %d x %d", w, h);
    CHECK(distinct_colours(pix, w, h) >= 30, "only %d colours", distinct_colours(pix, w, h));
    const uint8_t blue[3] = {31, 119, 180}, orange[3] = {255, 127, 14};
    CHECK(count_colour(pix, w, h, blue, 0) >= 50, "series 0 (blue) not drawn");
    CHECK(count_colour(pix, w, h, orange, 0) >= 50, "series 1 (orange, markers) not drawn");
    free(pix);
    S[1].panel = 3;
    CHECK(plot_lines(test_path(dir, "bad.png"), "x", pt, logy, 3, S, 3, "step") == -1 &&
              strstr(v3_last_error(), "series 1"), "bad panel accepted: %s", v3_last_error());
    return test_done(0, dir);
}

TEST(plot_image_grid_keeps_tile_pixels) {
    char *dir = test_tmpdir("plot_ig");
    REQUIRE_CAIRO(dir);
    enum { R = 2, C = 3, TH = 8, TW = 12, SC = 6 };
    uint8_t rgb[R * C * TH * TW * 3];
    /* each tile a flat distinct colour with one contrasting pixel at (1, 2) */
    for (int t = 0; t < R * C; t++)
        for (int p = 0; p < TH * TW; p++) {
            uint8_t *q = rgb + ((size_t)t * TH * TW + p) * 3;
            q[0] = (uint8_t)(40 * t + 10), q[1] = (uint8_t)(200 - 30 * t), q[2] = (uint8_t)(t & 1 ? 220 : 60);
            if (p == 1 * TW + 2) q[0] = 255, q[1] = 0, q[2] = 255;
        }
    const char *rn[R] = {"input", "recon"}, *cn[C] = {"a", "b", "c"};
    CHECK(!plot_image_grid(test_path(dir, "ig.png"), "Tiles", rgb, R, C, TH, TW, SC, rn, cn), "plot_image_grid: %s",
          v3_last_error());
    uint8_t *pix;
    int w, h;
    CHECK(!png_read_rgb(test_path(dir, "ig.png"), 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    CHECK(w >= C * TW * SC && w <= C * TW * SC + 400 && h >= R * TH * SC && h <= R * TH * SC + 300, "size %d x %d", w, h);
    for (int t = 0; t < R * C; t++) {
        uint8_t c[3] = {(uint8_t)(40 * t + 10), (uint8_t)(200 - 30 * t), (uint8_t)(t & 1 ? 220 : 60)};
        long n = count_colour(pix, w, h, c, 0);
        CHECK(n == (long)(TH * TW - 1) * SC * SC, "tile %d colour covers %ld pixels, want %d", t, n, (TH * TW - 1) * SC * SC);
    }
    const uint8_t mag[3] = {255, 0, 255};
    CHECK(count_colour(pix, w, h, mag, 0) == (long)R * C * SC * SC, "marked pixels: %ld", count_colour(pix, w, h, mag, 0));
    free(pix);
    CHECK(plot_image_grid(test_path(dir, "bad.png"), "x", rgb, R, C, TH, TW, 0, NULL, NULL) == -1, "scale 0 accepted");
    return test_done(0, dir);
}

static const char *LOG_OK =
    "{\"kind\":\"train\",\"step\":1,\"epoch\":0,\"lr\":1.0e-03,\"loss\":4.75,\"recon\":1.04,\"commit\":1.3e-02,"
    "\"content\":0.85,\"style\":0.97,\"sample\":0.92,\"fragment\":0.94,\"Fc\":0.96,\"Sc\":0.44,\"Fs\":1.17,"
    "\"Ss\":0.47,\"perplexity\":16.0}\n"
    "{\"kind\":\"train\",\"step\":2,\"epoch\":0,\"lr\":1.0e-03,\"loss\":4.5,\"recon\":0.9,\"commit\":1.5e-02,"
    "\"content\":0.84,\"style\":0.96,\"sample\":0.9,\"fragment\":0.93,\"perplexity\":16.1}\n"
    "\n"
    "{\"kind\":\"val\",\"step\":2,\"epoch\":0,\"atoms\":[[3,0,1],[0,2,{\"x\":[]}]],\"loss\":4.6,\"recon\":0.95,"
    "\"commit\":0.000000000e+00,\"content\":0.9,\"style\":0.97,\"sample\":0.95,\"fragment\":0.97,\"purity\":0.41}\n"
    "{\"kind\":\"note\",\"text\":\"resumed \\\"here\\\"\"}\n"
    "{\"kind\":\"train\",\"step\":3,\"epoch\":1,\"lr\":1.0e-03,\"loss\":4.2,\"recon\":0.8,\"commit\":1.2e-02,"
    "\"content\":0.8,\"style\":0.95,\"sample\":0.85,\"fragment\":0.92}\n"
    "{\"kind\":\"val\",\"step\":4,\"epoch\":1,\"atoms\":[],\"loss\":4.4,\"recon\":0.85,\"commit\":0,"
    "\"content\":0.88,\"style\":0.96,\"sample\":0.93,\"fragment\":0.96,\"purity\":0.55}\n";

TEST(plot_training_curves_reads_a_log) {
    char *dir = test_tmpdir("plot_tc");
    REQUIRE_CAIRO(dir);
    char *log = test_path(dir, "log.jsonl"), *png = test_path(dir, "curves.png");
    CHECK(!test_write_all(log, LOG_OK, strlen(LOG_OK)), "write log");
    CHECK(!plot_training_curves(log, png), "plot_training_curves: %s", v3_last_error());
    uint8_t *pix;
    int w, h;
    CHECK(!png_read_rgb(png, 0, 0, &pix, &w, &h), "decode: %s", v3_last_error());
    CHECK(w >= 800 && w <= 1500 && h >= 400 && h <= 1200, "size %d x %d", w, h);
    CHECK(distinct_colours(pix, w, h) >= 30, "only %d colours", distinct_colours(pix, w, h));
    const uint8_t blue[3] = {31, 119, 180}, orange[3] = {255, 127, 14};
    CHECK(count_colour(pix, w, h, blue, 0) >= 8 * 20, "train lines missing");
    CHECK(count_colour(pix, w, h, orange, 0) >= 8 * 20, "val points missing");
    free(pix);
    /* a line still being written (no newline yet) is ignored */
    char *partial = test_path(dir, "partial.jsonl");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s{\"kind\":\"train\",\"step\":5,\"lo", LOG_OK);
    CHECK(!test_write_all(partial, buf, strlen(buf)), "write");
    int keep = v3_verbose;
    v3_verbose = -1;
    int rc = plot_training_curves(partial, png);
    v3_verbose = keep;
    CHECK(rc == 0, "partial last line: %s", v3_last_error());
    /* malformed line 3: named with the file */
    const char *bad = "{\"kind\":\"train\",\"step\":1,\"loss\":1.0}\n"
                      "{\"kind\":\"train\",\"step\":2,\"loss\":0.9}\n"
                      "{\"kind\":\"train\",\"step\":3,\"loss\":}\n"
                      "{\"kind\":\"train\",\"step\":4,\"loss\":0.8}\n";
    char *badp = test_path(dir, "bad.jsonl");
    CHECK(!test_write_all(badp, bad, strlen(bad)), "write");
    CHECK(plot_training_curves(badp, png) == -1, "malformed log accepted");
    snprintf(buf, sizeof buf, "%s:3:", badp);
    CHECK(strstr(v3_last_error(), buf), "error does not name %s: %s", buf, v3_last_error());
    const char *bad2 = "{\"kind\":\"train\",\"step\":1,\"loss\":1.0}\n[1,2]\n";
    CHECK(!test_write_all(badp, bad2, strlen(bad2)), "write");
    CHECK(plot_training_curves(badp, png) == -1 && strstr(v3_last_error(), "bad.jsonl:2:"), "line 2: %s", v3_last_error());
    const char *nostep = "{\"kind\":\"val\",\"loss\":1.0}\n";
    CHECK(!test_write_all(badp, nostep, strlen(nostep)), "write");
    CHECK(plot_training_curves(badp, png) == -1 && strstr(v3_last_error(), "step"), "no step: %s", v3_last_error());
    CHECK(plot_training_curves(test_path(dir, "missing.jsonl"), png) == -1 && strstr(v3_last_error(), "missing.jsonl"),
          "missing file: %s", v3_last_error());
    CHECK(!test_write_all(badp, "\n", 1), "write");
    CHECK(plot_training_curves(badp, png) == -1 && strstr(v3_last_error(), "no train or val"), "empty log: %s",
          v3_last_error());
    return test_done(0, dir);
}
