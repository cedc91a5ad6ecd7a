/* V3 statistics against a direct double-precision transcription of the spec, and their gradients against
 * central finite differences (all four hinges active, duplicate codewords, supersample variant). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "testing.h"
#include "v3loss.h"

/* Direct: mpd over the listed rows, ordered pairs. */
static double mpd_direct(const float *X, const int *rows, int m, int d, int avg_groups, int per) {
    /* avg_groups: rows are group starts; each "vector" is the mean of `per` consecutive rows */
    double s = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            if (i == j) continue;
            double acc = 0;
            for (int t = 0; t < d; t++) {
                double a = 0, b = 0;
                for (int k = 0; k < per; k++) {
                    a += X[(size_t)(rows[i] + k) * d + t];
                    b += X[(size_t)(rows[j] + k) * d + t];
                }
                double v = (a - b) / per;
                acc += v * v;
            }
            s += sqrt(acc);
        }
    (void)avg_groups;
    return s / ((double)m * (m - 1));
}

static void direct_stats(int B, int n, int d, const float *zc, const float *q, const float *zs, double *Fc,
                         double *Sc, double *Fs, double *Ss) {
    int *rows = xmalloc(sizeof(int) * (B > n ? B : n));
    *Fc = *Fs = 0;
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < n; k++) rows[k] = b * n + k;
        *Fc += 0.5 * mpd_direct(zc, rows, n, d, 0, 1) + 0.5 * mpd_direct(q, rows, n, d, 0, 1);
        *Fs += mpd_direct(zs, rows, n, d, 0, 1);
    }
    *Fc /= B;
    *Fs /= B;
    for (int b = 0; b < B; b++) rows[b] = b * n;
    *Sc = 0.5 * mpd_direct(zc, rows, B, d, 1, n) + 0.5 * mpd_direct(q, rows, B, d, 1, n);
    *Ss = mpd_direct(zs, rows, B, d, 1, n);
    free(rows);
}

typedef struct {
    V3LossCfg cfg;
    int B, n, d;
    float *zc, *q, *zs, *off;
    int tie_q; /* q = zc + off (straight-through surrogate) */
} LCtx;

static double lctx_loss(void *p) {
    LCtx *c = p;
    size_t N = (size_t)c->B * c->n * c->d;
    for (size_t i = 0; i < N; i++) c->q[i] = c->zc[i] + c->off[i];
    V3Stats st;
    v3_loss(&c->cfg, c->B, c->n, c->d, c->d, c->zc, c->q, c->zs, &st, NULL, NULL);
    return st.weighted;
}

static void lctx_init(LCtx *c, int B, int n, int d, unsigned seed, double r) {
    memset(c, 0, sizeof *c);
    c->cfg = (V3LossCfg){.w_content = 1.0, .w_style = 0.7, .w_sample = 1.3, .w_fragment = 0.9, .relativity = r, .eps = 1e-5};
    c->B = B; c->n = n; c->d = d;
    size_t N = (size_t)B * n * d;
    c->zc = falloc(N); c->q = falloc(N); c->zs = falloc(N); c->off = falloc(N);
    fill_uniform(c->zc, N, seed, -1, 1);
    fill_uniform(c->zs, N, seed + 1, -1, 1);
    fill_uniform(c->off, N, seed + 2, -0.2f, 0.2f);
}

static void lctx_free(LCtx *c) { ffree(c->zc); ffree(c->q); ffree(c->zs); ffree(c->off); }

TEST(v3_stats_match_direct_double) {
    LCtx c;
    lctx_init(&c, 5, 4, 3, 11, 15);
    lctx_loss(&c);
    V3Stats st;
    v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    double Fc, Sc, Fs, Ss;
    direct_stats(5, 4, 3, c.zc, c.q, c.zs, &Fc, &Sc, &Fs, &Ss);
    double r = 15, e = 1e-5;
    double con = fmax(0, r - Fc / (Sc + e)) / r, sty = fmax(0, r - Ss / (Fs + e)) / r;
    double sam = fmax(0, r - Ss / (Sc + e)) / r, fra = fmax(0, r - Fc / (Fs + e)) / r;
    lctx_free(&c);
    CHECK(fabs(st.Fc - Fc) < 1e-12 && fabs(st.Sc - Sc) < 1e-12 && fabs(st.Fs - Fs) < 1e-12 && fabs(st.Ss - Ss) < 1e-12,
          "stats (%.12g %.12g %.12g %.12g) vs direct (%.12g %.12g %.12g %.12g)", st.Fc, st.Sc, st.Fs, st.Ss, Fc, Sc,
          Fs, Ss);
    CHECK(fabs(st.content - con) < 1e-12 && fabs(st.style - sty) < 1e-12 && fabs(st.sample - sam) < 1e-12 &&
              fabs(st.fragment - fra) < 1e-12, "hinge values differ from the direct computation");
    CHECK(fabs(st.weighted - (1.0 * con + 0.7 * sty + 1.3 * sam + 0.9 * fra)) < 1e-12, "weights not applied");
    return 0;
}

static int grad_check(LCtx *c, const char *what) {
    size_t N = (size_t)c->B * c->n * c->d;
    float *gzc = falloc(N), *gzs = falloc(N);
    lctx_loss(c);
    V3Stats st;
    v3_loss(&c->cfg, c->B, c->n, c->d, c->d, c->zc, c->q, c->zs, &st, gzc, gzs);
    double ec = fd_rel_error(lctx_loss, c, c->zc, gzc, N, 400, 1e-3);
    double es = fd_rel_error(lctx_loss, c, c->zs, gzs, N, 400, 1e-3);
    ffree(gzc); ffree(gzs);
    CHECK(ec < 2e-3 && es < 2e-3, "%s: relative FD error z_c %.3g z_s %.3g", what, ec, es);
    return 0;
}

TEST(v3_grad_fd_all_hinges_active) {
    LCtx c;
    lctx_init(&c, 5, 4, 3, 21, 1e3); /* large r keeps every hinge active */
    V3Stats st;
    lctx_loss(&c);
    v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    int ok = st.content > 0 && st.style > 0 && st.sample > 0 && st.fragment > 0;
    int rc = grad_check(&c, "all active");
    lctx_free(&c);
    CHECK(ok, "expected all four hinges active");
    return rc;
}

TEST(v3_grad_fd_some_hinges_inactive) {
    LCtx c;
    lctx_init(&c, 4, 3, 5, 31, 1.0); /* r = 1: some ratios exceed r and their hinges are 0 */
    /* make style constant within samples, so S_s/F_s is huge (style hinge off) */
    for (int b = 0; b < 4; b++)
        for (int k = 0; k < 3; k++)
            for (int t = 0; t < 5; t++) c.zs[(b * 3 + k) * 5 + t] = c.zs[(b * 3) * 5 + t] + 0.01f * k * (t + 1);
    V3Stats st;
    lctx_loss(&c);
    v3_loss(&c.cfg, 4, 3, 5, 5, c.zc, c.q, c.zs, &st, NULL, NULL);
    int rc = grad_check(&c, "mixed");
    lctx_free(&c);
    CHECK(st.style == 0, "style hinge expected inactive (style %.3g)", st.style);
    return rc;
}

/* loss_config.term_relativity: each hinge with its own r, against the direct formula, and the gradient against
 * finite differences with all four hinges active at four different r (and with one of them off). */
TEST(v3_term_relativity_hinges_and_fd) {
    LCtx c;
    lctx_init(&c, 5, 4, 3, 51, 15);
    c.cfg.r_content = 40, c.cfg.r_style = 7, c.cfg.r_sample = 0 /* = relativity */, c.cfg.r_fragment = 3;
    lctx_loss(&c);
    V3Stats st;
    v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    double Fc, Sc, Fs, Ss, e = 1e-5;
    direct_stats(5, 4, 3, c.zc, c.q, c.zs, &Fc, &Sc, &Fs, &Ss);
    double con = fmax(0, 40 - Fc / (Sc + e)) / 40, sty = fmax(0, 7 - Ss / (Fs + e)) / 7;
    double sam = fmax(0, 15 - Ss / (Sc + e)) / 15, fra = fmax(0, 3 - Fc / (Fs + e)) / 3;
    CHECK(fabs(st.content - con) < 1e-12 && fabs(st.style - sty) < 1e-12 && fabs(st.sample - sam) < 1e-12 &&
              fabs(st.fragment - fra) < 1e-12, "hinges (%.9g %.9g %.9g %.9g) vs direct (%.9g %.9g %.9g %.9g)",
          st.content, st.style, st.sample, st.fragment, con, sty, sam, fra);
    /* all active, four different r */
    c.cfg.relativity = 1e3, c.cfg.r_content = 3e3, c.cfg.r_style = 600, c.cfg.r_sample = 0, c.cfg.r_fragment = 1.7e3;
    lctx_loss(&c);
    v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    int active = st.content > 0 && st.style > 0 && st.sample > 0 && st.fragment > 0;
    int rc = grad_check(&c, "term relativity, all active");
    /* the style hinge off by its own r alone (the others keep r = 1e3) */
    c.cfg.r_style = 1e-3;
    lctx_loss(&c);
    v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    int style_off = st.style == 0 && st.content > 0 && st.fragment > 0;
    rc |= grad_check(&c, "term relativity, style off");
    lctx_free(&c);
    CHECK(active, "expected all four hinges active");
    CHECK(style_off, "expected only the style hinge off (style %.3g)", st.style);
    return rc;
}

/* A term relativity equal to loss_config.relativity gives the single-r loss and gradients bit for bit, so the
 * default (0) and an explicit equal value train the same run as before the key existed. */
TEST(v3_term_relativity_equal_r_is_bit_identical) {
    LCtx c;
    lctx_init(&c, 4, 5, 6, 61, 15);
    lctx_loss(&c);
    size_t N = (size_t)4 * 5 * 6;
    float *g0 = falloc(N), *gs0 = falloc(N), *g1 = falloc(N), *gs1 = falloc(N);
    V3Stats s0, s1;
    v3_loss(&c.cfg, 4, 5, 6, 6, c.zc, c.q, c.zs, &s0, g0, gs0);
    V3LossCfg same = c.cfg;
    same.r_content = same.r_style = same.r_sample = same.r_fragment = 15;
    v3_loss(&same, 4, 5, 6, 6, c.zc, c.q, c.zs, &s1, g1, gs1);
    int eq = !memcmp(g0, g1, sizeof(float) * N) && !memcmp(gs0, gs1, sizeof(float) * N) &&
             s0.weighted == s1.weighted && s0.content == s1.content && s0.fragment == s1.fragment;
    int moved = 0; /* and a different r does change them: the comparison can fail */
    same.r_content = 16;
    v3_loss(&same, 4, 5, 6, 6, c.zc, c.q, c.zs, &s1, g1, gs1);
    moved = memcmp(g0, g1, sizeof(float) * N) != 0 && s0.content != s1.content;
    int active = s0.content > 0 && s0.fragment > 0;
    ffree(g0); ffree(gs0); ffree(g1); ffree(gs1);
    lctx_free(&c);
    CHECK(active, "setup: the content and fragment hinges must be active");
    CHECK(eq, "an explicit term relativity equal to r changed the loss or its gradient");
    CHECK(moved, "r_content 16 left the content hinge and the gradient unchanged");
    return 0;
}

/* loss_config.per_sample_hinges: the content, style and fragment hinges per sample, averaged, against a direct
 * computation from each sample's own spreads, and the gradient against finite differences in a mixed state (some
 * samples' hinges active, others not), with term relativities and with supersampling. */
static void direct_ps_hinges(const LCtx *c, double h[4]) {
    const int B = c->B, n = c->n, d = c->d;
    double Fc, Sc, Fs, Ss;
    direct_stats(B, n, d, c->zc, c->q, c->zs, &Fc, &Sc, &Fs, &Ss);
    const double r = c->cfg.relativity, e = c->cfg.eps;
    const double rc = c->cfg.r_content > 0 ? c->cfg.r_content : r, rs = c->cfg.r_style > 0 ? c->cfg.r_style : r;
    const double rf = c->cfg.r_fragment > 0 ? c->cfg.r_fragment : r, ra = c->cfg.r_sample > 0 ? c->cfg.r_sample : r;
    int rows[64];
    h[0] = h[1] = h[3] = 0;
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < n; k++) rows[k] = b * n + k;
        double Fcb = 0.5 * mpd_direct(c->zc, rows, n, d, 0, 1) + 0.5 * mpd_direct(c->q, rows, n, d, 0, 1);
        double Fsb = mpd_direct(c->zs, rows, n, d, 0, 1);
        h[0] += fmax(0, rc - Fcb / (Sc + e)) / rc / B;
        h[1] += fmax(0, rs - Ss / (Fsb + e)) / rs / B;
        h[3] += fmax(0, rf - Fcb / (Fsb + e)) / rf / B;
    }
    h[2] = fmax(0, ra - Ss / (Sc + e)) / ra;
}

/* how many samples have the content hinge active: the test wants a mix */
static int ps_active_content(const LCtx *c) {
    double Fc, Sc, Fs, Ss;
    direct_stats(c->B, c->n, c->d, c->zc, c->q, c->zs, &Fc, &Sc, &Fs, &Ss);
    int rows[64], act = 0;
    for (int b = 0; b < c->B; b++) {
        for (int k = 0; k < c->n; k++) rows[k] = b * c->n + k;
        double Fcb = 0.5 * mpd_direct(c->zc, rows, c->n, c->d, 0, 1) + 0.5 * mpd_direct(c->q, rows, c->n, c->d, 0, 1);
        double rc = c->cfg.r_content > 0 ? c->cfg.r_content : c->cfg.relativity;
        act += Fcb / (Sc + c->cfg.eps) < rc;
    }
    return act;
}

TEST(v3_per_sample_hinges_direct_and_fd) {
    LCtx c;
    lctx_init(&c, 6, 4, 3, 71, 15);
    /* samples 0 and 1: content nearly constant, style spread wide (their hinges active); the rest: content
     * spread wide, style nearly constant (their style and fragment hinges off) */
    float pat[12], mean[3] = {0, 0, 0}; /* one content pattern (sample 0's rows) for the wide samples */
    for (int i = 0; i < 12; i++) pat[i] = 4.0f * c.zc[i], mean[i % 3] += pat[i] / 4;
    for (int b = 0; b < 6; b++)
        for (int k = 0; k < 4; k++)
            for (int t = 0; t < 3; t++) {
                size_t i = ((size_t)b * 4 + k) * 3 + t;
                const float pattern = pat[k * 3 + t];
                if (b < 2) c.zc[i] = mean[t] + 0.02f * c.zc[i], c.zs[i] *= 3.0f; /* at the pattern's mean */
                else c.zc[i] = pattern + 0.05f * c.zc[i], c.zs[i] = 2.0f * (b - 3) + 0.01f * c.zs[i];
                c.off[i] *= 0.1f;
            }
    c.cfg.per_sample = 1;
    c.cfg.relativity = 6, c.cfg.r_style = 40;
    lctx_loss(&c);
    V3Stats st;
    v3_loss(&c.cfg, 6, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    double h[4];
    direct_ps_hinges(&c, h);
    const int act = ps_active_content(&c);
    /* the authors' hinges of the same codes, to show the two forms differ here */
    V3LossCfg mean_form = c.cfg;
    mean_form.per_sample = 0;
    V3Stats sm;
    v3_loss(&mean_form, 6, 4, 3, 3, c.zc, c.q, c.zs, &sm, NULL, NULL);
    int rc = grad_check(&c, "per-sample hinges, mixed");
    c.cfg.supersample_content = 1; /* 24 fragments: supersamples of 4 */
    rc |= grad_check(&c, "per-sample hinges, supersample");
    lctx_free(&c);
    CHECK(act > 0 && act < 6, "setup: want some samples' content hinge active, not all (%d of 6)", act);
    CHECK(fabs(st.content - h[0]) < 1e-12 && fabs(st.style - h[1]) < 1e-12 && fabs(st.sample - h[2]) < 1e-12 &&
              fabs(st.fragment - h[3]) < 1e-12, "hinges (%.9g %.9g %.9g %.9g) vs direct (%.9g %.9g %.9g %.9g)",
          st.content, st.style, st.sample, st.fragment, h[0], h[1], h[2], h[3]);
    CHECK(sm.content == 0 && st.content > 0, "setup: the mean-form content hinge should be 0 (%.3g) and the "
          "per-sample one not (%.3g)", sm.content, st.content);
    return rc;
}

/* loss_config.hinge: log. h(t) = ln(r/t)/ln r for 1 <= t < r, 1 + (1 - t)/ln r below 1, 0 from r on: the four
 * hinges against a direct computation from the statistics, and the gradient against finite differences, at style
 * scales that put the ratios in each of the three pieces; then with per-sample hinges in a mixed state. */
static double log_hinge_direct(double r, double t) {
    return t >= r ? 0 : t >= 1 ? log(r / t) / log(r) : 1 + (1 - t) / log(r);
}

TEST(v3_log_hinge_direct_and_fd) {
    const double scales[] = {0.03, 0.4, 3.0, 30.0};
    int pieces[3] = {0, 0, 0}, rc = 0, bad = 0, at_kink = 0;
    double worst = 0;
    for (int k = 0; k < 4; k++) {
        LCtx c;
        lctx_init(&c, 5, 4, 3, 91, 6);
        c.cfg.log_hinge = 1, c.cfg.r_content = 2.5;
        /* style: page-level offsets plus a small within-page part, scaled, so S_s/F_s > 1 and the cross-space
         * ratios (sample, fragment) move through the pieces with the scale */
        for (int b = 0; b < 5; b++)
            for (int i = 0; i < 12; i++) c.zs[b * 12 + i] = (float)scales[k] * ((float)(b - 2) + 0.3f * c.zs[b * 12 + i]);
        lctx_loss(&c);
        V3Stats st;
        v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
        double Fc, Sc, Fs, Ss;
        direct_stats(5, 4, 3, c.zc, c.q, c.zs, &Fc, &Sc, &Fs, &Ss);
        const double e = c.cfg.eps, t[4] = {Fc / (Sc + e), Ss / (Fs + e), Ss / (Sc + e), Fc / (Fs + e)};
        const double rx[4] = {2.5, 6, 6, 6}, got[4] = {st.content, st.style, st.sample, st.fragment};
        for (int i = 0; i < 4; i++) {
            const double want = log_hinge_direct(rx[i], t[i]), err = fabs(got[i] - want);
            worst = err > worst ? err : worst;
            bad |= !(err < 1e-12);
            pieces[t[i] >= rx[i] ? 2 : t[i] >= 1 ? 1 : 0]++;
            at_kink |= fabs(t[i] - 1) < 1e-2 || fabs(t[i] - rx[i]) < 1e-2 * rx[i];
        }
        char what[64];
        snprintf(what, sizeof what, "log hinge, style scale %g", scales[k]);
        rc |= grad_check(&c, what);
        lctx_free(&c);
    }
    CHECK(!bad, "log hinges differ from the direct computation (worst %.3g)", worst);
    CHECK(!at_kink, "setup: a ratio sits at a kink of the hinge, where finite differences do not apply");
    CHECK(pieces[0] > 0 && pieces[1] > 0 && pieces[2] > 0,
          "setup: want ratios in every piece (below 1: %d, log: %d, off: %d)", pieces[0], pieces[1], pieces[2]);
    /* per sample, in the mixed state of v3_per_sample_hinges_direct_and_fd's kind: two samples' content constant */
    LCtx c;
    lctx_init(&c, 6, 4, 3, 97, 6);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 12; i++) c.zc[b * 12 + i] *= 0.02f, c.zs[b * 12 + i] *= 3.0f;
    c.cfg.log_hinge = 1, c.cfg.per_sample = 1;
    rc |= grad_check(&c, "log hinge, per sample");
    c.cfg.content_energy = 1;
    rc |= grad_check(&c, "log hinge, per sample, energy S_c");
    lctx_free(&c);
    return rc;
}

/* loss_config.content_spread energy: S_c as the mean over ordered sample pairs of the energy distance between the
 * two samples' sets of codes (V-statistic: 2 E|x - y| - E|x - x'| - E|y - y'|, the x' = x terms included), z_c
 * and q halved and added, against a direct computation; the gradient against finite differences (with the
 * per-sample hinges too); and the case it is for: two samples with equal means but different sets. */
static double energy_direct(const float *X, int B, int n, int d) {
    double s = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < B; c++) {
            if (b == c) continue;
            double cross = 0, wb = 0, wc = 0;
            for (int k = 0; k < n; k++)
                for (int l = 0; l < n; l++) {
                    double x = 0, y = 0, z = 0;
                    for (int t = 0; t < d; t++) {
                        double u = (double)X[(b * n + k) * d + t] - X[(c * n + l) * d + t];
                        double v = (double)X[(b * n + k) * d + t] - X[(b * n + l) * d + t];
                        double w = (double)X[(c * n + k) * d + t] - X[(c * n + l) * d + t];
                        x += u * u, y += v * v, z += w * w;
                    }
                    cross += sqrt(x), wb += sqrt(y), wc += sqrt(z);
                }
            s += (2 * cross - wb - wc) / ((double)n * n);
        }
    return s / ((double)B * (B - 1));
}

TEST(v3_content_energy_direct_fd_and_equal_means) {
    LCtx c;
    lctx_init(&c, 5, 4, 3, 81, 1e3); /* large r: every hinge active */
    c.cfg.content_energy = 1;
    lctx_loss(&c);
    V3Stats st;
    v3_loss(&c.cfg, 5, 4, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    const double want = 0.5 * energy_direct(c.zc, 5, 4, 3) + 0.5 * energy_direct(c.q, 5, 4, 3);
    const int active = st.content > 0 && st.sample > 0;
    int rc = grad_check(&c, "content energy");
    c.cfg.per_sample = 1, c.cfg.relativity = 15;
    rc |= grad_check(&c, "content energy, per-sample hinges");
    lctx_free(&c);
    CHECK(fabs(st.Sc - want) < 1e-12 * fabs(want) + 1e-14, "energy S_c %.15g vs direct %.15g", st.Sc, want);
    CHECK(active, "expected the content and sample hinges active");
    /* two samples of two rows: {-1, +1} and {-2, +2} (1-d, q = z_c): equal means (S_c 0 by means), different sets
     * (energy: 2 * mean cross |.| = 2 * (1 + 3 + 3 + 1)/4 = 4, minus the within means 2/4 * 2 = 1 and 4/4 * 2 = 2,
     * so E = 4 - 1 - 2 = 1 for each ordered pair) */
    float z[4] = {-1, 1, -2, 2}, s2[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    V3LossCfg cfg = {.w_content = 1, .w_style = 1, .w_sample = 1, .w_fragment = 1, .relativity = 15, .eps = 1e-5};
    V3Stats sm, se;
    v3_loss(&cfg, 2, 2, 1, 1, z, z, s2, &sm, NULL, NULL);
    cfg.content_energy = 1;
    v3_loss(&cfg, 2, 2, 1, 1, z, z, s2, &se, NULL, NULL);
    CHECK(sm.Sc == 0 && fabs(se.Sc - 1.0) < 1e-15, "equal means: S_c by means %.3g (want 0), energy %.17g (want 1)",
          sm.Sc, se.Sc);
    return rc;
}

TEST(v3_zero_distance_gives_zero_subgradient) {
    /* Two identical fragments in a sample (as when they share a codeword): the pair contributes no gradient,
     * and nothing is NaN. */
    int B = 2, n = 3, d = 4;
    size_t N = (size_t)B * n * d;
    float *zc = falloc(N), *zs = falloc(N), *g = falloc(N), *gs = falloc(N);
    fill_uniform(zc, N, 5, -1, 1);
    fill_uniform(zs, N, 6, -1, 1);
    memcpy(zc + d, zc, sizeof(float) * d); /* fragment 1 == fragment 0 in sample 0 */
    V3LossCfg cfg = {.w_content = 1, .w_style = 1, .w_sample = 1, .w_fragment = 1, .relativity = 1e3, .eps = 1e-5};
    V3Stats st;
    v3_loss(&cfg, B, n, d, d, zc, zc, zs, &st, g, gs);
    int finite = 1;
    for (size_t i = 0; i < N; i++) finite &= isfinite(g[i]) && isfinite(gs[i]);
    /* with u(0) = 0 the gradients on fragments 0 and 1 are equal (their only difference is the zero pair) */
    double diff = 0;
    for (int t = 0; t < d; t++) diff += fabs(g[t] - g[d + t]);
    ffree(zc); ffree(zs); ffree(g); ffree(gs);
    CHECK(finite, "non-finite gradient at zero distance");
    CHECK(diff < 1e-7, "coincident fragments got different gradients (%.3g): zero pair not zero", diff);
    return 0;
}

TEST(v3_supersample_grouping_and_fd) {
    CHECK(v3_supersample_n(64) == 8 && v3_supersample_n(384) == 16 && v3_supersample_n(12) == 3 &&
              v3_supersample_n(7) == 1, "supersample n' wrong: %d %d %d", v3_supersample_n(64),
          v3_supersample_n(384), v3_supersample_n(12));
    LCtx c;
    lctx_init(&c, 8, 2, 3, 41, 1e3); /* 16 fragments -> 4 supersamples of 4 */
    c.cfg.supersample_content = 1;
    V3Stats st;
    lctx_loss(&c);
    v3_loss(&c.cfg, 8, 2, 3, 3, c.zc, c.q, c.zs, &st, NULL, NULL);
    double Fc, Sc, Fs, Ss;
    direct_stats(4, 4, 3, c.zc, c.q, c.zs, &Fc, &Sc, &Fs, &Ss); /* grouped 4 x 4: Sc and Ss_ss */
    int rc = grad_check(&c, "supersample");
    lctx_free(&c);
    CHECK(st.nB == 4 && st.nn == 4, "grouping %d x %d", st.nB, st.nn);
    CHECK(fabs(st.Sc - Sc) < 1e-12 && fabs(st.Ss_ss - Ss) < 1e-12, "supersample Sc %.9g vs %.9g, Ss %.9g vs %.9g",
          st.Sc, Sc, st.Ss_ss, Ss);
    return rc;
}

/* The straight-through value is z + (q - z) with both operations rounded in float32, as PyTorch computes
 * x + (quantize - x).detach(): bit for bit, and different from q in a fair share of coordinates (PyTorch's
 * rounding; about a third at the authors' scales), never by more than an ulp of max(|z|, |q|). */
TEST(v3_ste_value_rounds_as_pytorch) {
    size_t n = 20000;
    float *z = falloc(n), *q = falloc(n), *out = falloc(n);
    fill_uniform(z, n, 21, -3, 3);
    fill_uniform(q, n, 22, -3, 3);
    for (size_t i = 0; i < n; i += 5) q[i] = z[i] + 1e-3f * q[i]; /* codewords near the input as well */
    poison(out, n);
    v3_ste_value(n, z, q, out);
    size_t differ = 0, bad = 0, far = 0;
    for (size_t i = 0; i < n; i++) {
        volatile float d = q[i] - z[i];
        volatile float e = z[i] + d;
        if (memcmp(&out[i], (const void *)&e, sizeof(float))) bad++;
        if (out[i] != q[i]) differ++;
        float big = fmaxf(fabsf(z[i]), fabsf(q[i])); /* both roundings are at most half an ulp of this scale */
        if (!(fabsf(out[i] - q[i]) <= 2 * (nextafterf(big, INFINITY) - big))) far++;
    }
    ffree(z); ffree(q); ffree(out);
    CHECK(bad == 0, "%zu of %zu values differ from float32 z + (q - z)", bad, n);
    CHECK(differ > n / 10, "only %zu of %zu values differ from q: no rounding to reproduce", differ, n);
    CHECK(far == 0, "%zu values further than 2 ulps of max(|z|, |q|) from q", far);
    return 0;
}

/* tie_gradient pytorch, at the level of the statistics: two fragments of a sample on the same codeword. With the
 * codewords themselves (zero) the pair gives nothing; with the straight-through value (pytorch) it gives the two
 * fragments opposite pushes of exactly the pair's full coefficient (a unit vector times 0.5 dL/dF_c / B
 * * 2 / (n(n-1))), as PyTorch's norm gradient does at a rounding-level distance. Everything else changes only by
 * rounding. */
TEST(v3_tie_gradient_pytorch_pushes_tied_pair) {
    int B = 3, n = 4, d = 8;
    size_t N = (size_t)B * n * d;
    float *zc = falloc(N), *zs = falloc(N), *q = falloc(N), *qs = falloc(N);
    float *g0 = falloc(N), *g1 = falloc(N), *gs0 = falloc(N), *gs1 = falloc(N);
    fill_uniform(zc, N, 31, -1, 1);
    fill_uniform(zs, N, 32, -1, 1);
    fill_uniform(q, N, 33, -1, 1);
    memcpy(q + d, q, sizeof(float) * d); /* fragments 0 and 1 of sample 0 share a codeword */
    for (size_t i = 0; i < N; i++) q[i] = zc[i] + 0.3f * (q[i] - zc[i]); /* codewords near their inputs */
    memcpy(q + d, q, sizeof(float) * d);
    v3_ste_value(N, zc, q, qs);
    V3LossCfg cfg = {.w_content = 1, .w_style = 1, .w_sample = 1, .w_fragment = 1, .relativity = 15, .eps = 1e-5};
    V3Stats st0, st1;
    memset(g0, 0, sizeof(float) * N), memset(g1, 0, sizeof(float) * N);
    memset(gs0, 0, sizeof(float) * N), memset(gs1, 0, sizeof(float) * N);
    v3_loss(&cfg, B, n, d, d, zc, q, zs, &st0, g0, gs0);
    v3_loss(&cfg, B, n, d, d, zc, qs, zs, &st1, g1, gs1);
    CHECK(st0.content > 0 && st0.fragment > 0, "setup: the content and fragment hinges must be active");
    double dFc = -(1.0 / (st1.Sc + 1e-5) + 1.0 / (st1.Fs + 1e-5)) / 15; /* both hinges active, weights 1 */
    double coef = fabs(0.5 * dFc / B * 2.0 / (n * (n - 1)));
    double n0 = 0, n1 = 0, sum = 0, rest = 0;
    for (int t = 0; t < d; t++) {
        double a = (double)g1[t] - g0[t], b = (double)g1[d + t] - g0[d + t];
        n0 += a * a, n1 += b * b, sum += (a + b) * (a + b);
    }
    for (size_t i = 2 * (size_t)d; i < N; i++) rest = fmax(rest, fabs((double)g1[i] - g0[i]));
    n0 = sqrt(n0), n1 = sqrt(n1), sum = sqrt(sum);
    ffree(zc); ffree(zs); ffree(q); ffree(qs); ffree(g0); ffree(g1); ffree(gs0); ffree(gs1);
    CHECK(fabs(st1.Fc - st0.Fc) < 1e-6 * st0.Fc && fabs(st1.Sc - st0.Sc) < 1e-6 * st0.Sc,
          "the statistics moved by more than rounding");
    CHECK(fabs(n0 / coef - 1) < 1e-3 && fabs(n1 / coef - 1) < 1e-3,
          "tied pair pushed by %.6g and %.6g, expected the pair coefficient %.6g each", n0, n1, coef);
    CHECK(sum < 1e-3 * coef, "the pushes are not opposite (|sum| %.3g)", sum);
    CHECK(rest < 1e-3 * coef, "untied fragments changed by %.3g (coefficient %.3g)", rest, coef);
    return 0;
}
