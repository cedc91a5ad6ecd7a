/* Figures and sounds of `v3 eval`: the confusion heat map, t-SNE maps, training curves and the codebook sheet
 * (every atom decoded in several styles), with Griffin-Lim audio of the sheet for InsNotes. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "eval_parts.h"
#include "fragment_tiles.h"
#include "griffinlim.h"
#include "insnotes.h"
#include "phonenums.h"
#include "plot.h"
#include "progress.h"
#include "rng.h"
#include "tsne.h"

static void list_file(FILE *files, int *first, const char *name) {
    fprintf(files, "%s\"%s\"", *first ? "" : ", ", name);
    *first = 0;
}

int eval_fig_confusion(const char *dir, const DataSource *ds, const int64_t *M, int K, int C, FILE *files, int *first) {
    /* rows sorted by their majority class, as the authors plot it; rows normalised by their counts */
    int *order = xmalloc(sizeof(int) * K), *major = xmalloc(sizeof(int) * K);
    atom_majority(M, K, C, major);
    int n = 0;
    for (int c = -1; c < C; c++)
        for (int a = 0; a < K; a++)
            if (major[a] == c) order[n++] = a;
    double *P = xmalloc(sizeof(double) * K * C);
    int64_t *cnt = xmalloc(sizeof(int64_t) * K * C);
    char **rn = xmalloc(sizeof(char *) * K), **cn = xmalloc(sizeof(char *) * C);
    for (int i = 0; i < K; i++) {
        int a = order[i];
        int64_t s = 0;
        for (int c = 0; c < C; c++) s += M[(size_t)a * C + c];
        for (int c = 0; c < C; c++) {
            cnt[(size_t)i * C + c] = M[(size_t)a * C + c];
            P[(size_t)i * C + c] = s ? (double)M[(size_t)a * C + c] / s : 0;
        }
        rn[i] = xmalloc(24);
        snprintf(rn[i], 24, "atom %d", a);
    }
    for (int c = 0; c < C; c++) {
        cn[c] = xmalloc(24);
        eval_content_name(ds, c, cn[c], 24);
    }
    char path[1300];
    snprintf(path, sizeof path, "%s/confusion.png", dir);
    int rc = plot_heatmap(path, "Codebook atoms x content labels (row-normalised; counts in cells)", P, cnt, K, C,
                          (const char *const *)rn, (const char *const *)cn, "content label", "atom (sorted by majority class)");
    if (!rc) list_file(files, first, "confusion.png");
    for (int i = 0; i < K; i++) free(rn[i]);
    for (int c = 0; c < C; c++) free(cn[c]);
    free(rn);
    free(cn);
    free(P);
    free(cnt);
    free(order);
    free(major);
    return rc;
}

static void tsne_progress(int it, int iters, double kl, void *ctx) {
    progress_update(it == iters, "t-SNE %s: iteration %d/%d  KL %.4f", (const char *)ctx, it, iters, kl);
}

static char **names_of(const DataSource *ds, int n, int style) {
    char **v = xmalloc(sizeof(char *) * n);
    for (int i = 0; i < n; i++) {
        v[i] = xmalloc(40);
        if (style) eval_style_name(ds, i, v[i], 40);
        else eval_content_name(ds, i, v[i], 40);
    }
    return v;
}

static void free_names(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

int eval_fig_tsne(const char *dir, const DataSource *ds, const Encoded *e, const float *codebook, int K, int points,
                  uint64_t seed, FILE *files, int *first) {
    /* a seeded subsample shared by both maps, so the same fragments appear in each */
    int n = e->N < points ? e->N : points;
    int *pick = xmalloc(sizeof(int) * e->N);
    Rng g;
    rng_seed(&g, rng_derive_seed(seed, 0x75e0e000ull));
    rng_permutation(&g, e->N, pick);
    int d = e->dc > e->ds ? e->dc : e->ds;
    float *X = falloc((size_t)(n + K) * d), *Y = falloc((size_t)(n + K) * 2);
    int32_t *lc = xmalloc(sizeof(int32_t) * n), *ls = xmalloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) {
        lc[i] = e->content[pick[i]];
        ls[i] = e->style[pick[i]];
    }
    char **cn = names_of(ds, (int)ds->n_content, 0), **sn = names_of(ds, (int)ds->n_style, 1);
    /* PhoneNums' styles are ink colours: plot each in its own colour, so "blue" is blue */
    uint8_t inkbuf[8 * 3], *ink = NULL;
    if (!strcmp(ds->kind, "phonenums") && ds->n_style <= 8) {
        for (int s = 0; s < (int)ds->n_style; s++) phonenums_colour_rgb(ds->ood, s, inkbuf + 3 * s);
        ink = inkbuf;
    }
    TsneOpts to;
    tsne_defaults(&to);
    to.seed = seed;
    int rc = 0;
    char path[1300];
    for (int map = 0; map < 2 && !rc; map++) {
        /* content map: z_c with the codebook rows appended (as the authors do), atoms drawn as crosses */
        int dd = map == 0 ? e->dc : e->ds, extra = map == 0 ? K : 0;
        const float *src = map == 0 ? e->zc : e->zs;
        for (int i = 0; i < n; i++) memcpy(X + (size_t)i * dd, src + (size_t)pick[i] * dd, sizeof(float) * dd);
        if (extra) memcpy(X + (size_t)n * dd, codebook, sizeof(float) * (size_t)K * dd);
        if ((rc = tsne_2d(X, n + extra, dd, &to, Y, tsne_progress, map == 0 ? "content" : "style"))) break;
        progress_break();
        const char *what = map == 0 ? "content" : "style";
        for (int by = 0; by < 2 && !rc; by++) {
            char title[200];
            snprintf(title, sizeof title, "t-SNE of %d %s embeddings, coloured by %s label", n, what,
                     by == 0 ? "content" : "style");
            snprintf(path, sizeof path, "%s/tsne_%s_by_%s.png", dir, what, by == 0 ? "content" : "style");
            rc = plot_scatter(path, title, Y, n, by == 0 ? lc : ls, by == 0 ? (int)ds->n_content : (int)ds->n_style,
                              (const char *const *)(by == 0 ? cn : sn), by == 1 ? ink : NULL,
                              extra ? Y + (size_t)n * 2 : NULL, extra);
            if (!rc) list_file(files, first, strrchr(path, '/') + 1);
        }
    }
    free_names(cn, (int)ds->n_content);
    free_names(sn, (int)ds->n_style);
    free(lc);
    free(ls);
    ffree(X);
    ffree(Y);
    free(pick);
    return rc;
}

int eval_fig_curves(const char *run_dir, const char *dir, FILE *files, int *first) {
    char lp[1200], pp[1300];
    snprintf(lp, sizeof lp, "%s/log.jsonl", run_dir);
    snprintf(pp, sizeof pp, "%s/curves.png", dir);
    if (access(lp, F_OK) != 0 && errno == ENOENT) { /* a run made by `v3 import` was never trained here */
        v3_log("v3 eval: %s: no training log (an imported run?): curves.png not drawn\n", lp);
        return 0;
    }
    if (plot_training_curves(lp, pp)) return -1;
    list_file(files, first, "curves.png");
    return 0;
}

int eval_codebook_sheet(EvalRun *r, const DataSource *ds, const Encoded *e, const char *dir, int max_styles,
                        int figures, int audio, int gl_iters, int use_gpu, FILE *files, int *first, FILE *audio_json,
                        int *audio_first) {
    Model *m = r->m;
    const ArchSpec *a = &m->arch;
    int K = m->vq.K, C = a->C, H = a->H, W = a->W, rc = 0;
    size_t frag = (size_t)C * H * W;
    CodebookSheet sh;
    if (codebook_sheet_make(m, e->x, e->zs, e->style, e->N, max_styles, &sh)) return -1;
    int ns = sh.ns;
    const int *src = sh.src;
    const float *xh = sh.xhat;
    if (figures) {
        int cols = K + 1;
        char **rn = xmalloc(sizeof(char *) * ns), **cn = xmalloc(sizeof(char *) * cols);
        for (int s = 0; s < ns; s++) {
            rn[s] = xmalloc(48);
            eval_style_name(ds, e->style[src[s]], rn[s], 48);
        }
        for (int c = 0; c < cols; c++) {
            cn[c] = xmalloc(24);
            if (c == 0) snprintf(cn[c], 24, "source");
            else snprintf(cn[c], 24, "%d", c - 1);
        }
        int scale = (int)(1500 / ((double)cols * sh.tw));
        if (scale < 1) scale = 1;
        if (scale > 4) scale = 4;
        char path[1300];
        snprintf(path, sizeof path, "%s/codebook_sheet.png", dir);
        rc = plot_image_grid(path, "Codebook sheet: every atom (columns) decoded with the style of a test fragment (rows)",
                             sh.tiles, ns, cols, sh.th, sh.tw, scale, (const char *const *)rn, (const char *const *)cn);
        if (!rc) list_file(files, first, "codebook_sheet.png");
        for (int s = 0; s < ns; s++) free(rn[s]);
        for (int c = 0; c < cols; c++) free(cn[c]);
        free(rn);
        free(cn);
        if (rc) goto done;
    }
    if (audio && C == 1 && H == INSNOTES_BINS) {
        float *mag = falloc((size_t)W * GL_BINS), *wav = falloc((size_t)GL_HOP * (W - 1));
        double t0 = now_seconds();
        for (int s = 0; s < ns && !rc; s++)
            for (int k = 0; k < K && !rc; k++) {
                gl_features_to_mag(xh + ((size_t)s * K + k) * frag, W, mag);
                uint64_t seed = rng_derive_seed(r->seed, 0x61a00000ull + (uint64_t)s * K + k);
                rc = use_gpu ? griffinlim_gpu(mag, W, gl_iters, seed, wav) : griffinlim_cpu(mag, W, gl_iters, seed, wav);
                char name[64], path[1400];
                snprintf(name, sizeof name, "audio/atom%02d_style%02d.wav", k, s);
                snprintf(path, sizeof path, "%s/%s", dir, name);
                if (!rc) rc = wav_write_mono(path, wav, GL_HOP * (W - 1), INSNOTES_SR);
                if (!rc) {
                    char sn[48];
                    fprintf(audio_json, "%s\n    {\"file\": \"%s\", \"atom\": %d, \"style_label\": %d, \"style\": \"%s\", "
                            "\"spectral_convergence\": %.4f}", *audio_first ? "" : ",", name, k, e->style[src[s]],
                            eval_style_name(ds, e->style[src[s]], sn, sizeof sn),
                            gl_spectral_convergence(mag, W, wav));
                    *audio_first = 0;
                }
                progress_update(s == ns - 1 && k == K - 1, "Griffin-Lim (%s, %d iterations): %d/%d clips  %.1f s",
                                use_gpu ? "cuFFT" : "FFTW", gl_iters, s * K + k + 1, ns * K, now_seconds() - t0);
            }
        progress_break();
        ffree(mag);
        ffree(wav);
    }
done:
    codebook_sheet_free(&sh);
    return rc;
}
