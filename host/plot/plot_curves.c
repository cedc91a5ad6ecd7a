/* plot_training_curves: read a run's log.jsonl (one JSON object a line, written by host/train/train.c) and draw one
 * panel per loss term with the train steps as lines and the validation epochs as points.
 * The reader is a small JSON scanner: objects of key/value pairs whose values we either take (strings for
 * "kind", numbers for "step" and the terms) or skip (nested arrays and objects such as val's "atoms"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "plot.h"
#include "plot_internal.h"

#define N_TERMS 8
static const char *const TERMS[N_TERMS] = {"loss", "recon", "commit", "content", "style", "sample", "fragment", "purity"};
static const char *const TITLES[N_TERMS] = {"loss (total)", "recon", "commit", "content", "style", "sample",
                                            "fragment", "codebook purity"};
static const int LOGY[N_TERMS] = {1, 1, 1, 0, 0, 0, 0, 0};

typedef struct {
    double *x, *y;
    int n, cap;
} Curve;

static void curve_push(Curve *c, double x, double y) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->x = xrealloc(c->x, sizeof(double) * c->cap);
        c->y = xrealloc(c->y, sizeof(double) * c->cap);
    }
    c->x[c->n] = x;
    c->y[c->n++] = y;
}

typedef struct {
    const char *p, *end;
    const char *err; /* what was wrong, for the message */
} Js;

static void ws(Js *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r')) j->p++;
}

/* A string into out (truncated to cap - 1; escapes kept verbatim but skipped correctly). 0 or -1. */
static int js_string(Js *j, char *out, size_t cap) {
    if (j->p >= j->end || *j->p != '"') return j->err = "expected a string", -1;
    j->p++;
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p == '\\') {
            if (j->p + 1 >= j->end) break;
            if (out && n + 1 < cap) out[n++] = *j->p;
            j->p++;
        }
        if (out && n + 1 < cap) out[n++] = *j->p;
        j->p++;
    }
    if (j->p >= j->end) return j->err = "unterminated string", -1;
    j->p++;
    if (out) out[n] = 0;
    return 0;
}

/* A number: JSON's syntax, plus nan / inf / -inf as C's printf writes them (a diverged run's last line). */
static int js_number(Js *j, double *v) {
    char buf[64];
    size_t n = 0;
    while (j->p + n < j->end && n < sizeof buf - 1 && strchr("+-0123456789.eEnaifNAIF", j->p[n])) n++;
    memcpy(buf, j->p, n);
    buf[n] = 0;
    char *e;
    *v = strtod(buf, &e);
    if (n == 0 || e != buf + n) return j->err = "expected a number", -1;
    j->p += n;
    return 0;
}

static int js_skip(Js *j, int depth) {
    ws(j);
    if (j->p >= j->end) return j->err = "unexpected end of line", -1;
    if (depth > 64) return j->err = "nesting too deep", -1;
    char c = *j->p;
    if (c == '"') return js_string(j, NULL, 0);
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) return j->p++, 0;
        for (;;) {
            if (c == '{') {
                ws(j);
                if (js_string(j, NULL, 0)) return -1;
                ws(j);
                if (j->p >= j->end || *j->p != ':') return j->err = "expected ':'", -1;
                j->p++;
            }
            if (js_skip(j, depth + 1)) return -1;
            ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == close) return j->p++, 0;
            return j->err = c == '[' ? "expected ',' or ']'" : "expected ',' or '}'", -1;
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int w = 0; w < 3; w++) {
        size_t L = strlen(words[w]);
        if ((size_t)(j->end - j->p) >= L && !memcmp(j->p, words[w], L)) return j->p += L, 0;
    }
    double v;
    return js_number(j, &v);
}

/* One log line. kind: 0 train, 1 val, -1 other (ignored). vals[t] NAN when absent. 0 or -1 (j->err set). */
static int parse_line(Js *j, int *kind, double *step, double vals[N_TERMS]) {
    *kind = -2; /* no "kind" yet */
    *step = NAN;
    for (int t = 0; t < N_TERMS; t++) vals[t] = NAN;
    ws(j);
    if (j->p >= j->end || *j->p != '{') return j->err = "expected '{'", -1;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == '}') j->p++;
    else
        for (;;) {
            char key[64];
            ws(j);
            if (js_string(j, key, sizeof key)) return -1;
            ws(j);
            if (j->p >= j->end || *j->p != ':') return j->err = "expected ':' after a key", -1;
            j->p++;
            ws(j);
            int t = -1;
            for (int k = 0; k < N_TERMS; k++)
                if (!strcmp(key, TERMS[k])) t = k;
            if (!strcmp(key, "kind")) {
                char v[32];
                if (js_string(j, v, sizeof v)) return -1;
                *kind = !strcmp(v, "train") ? 0 : !strcmp(v, "val") ? 1 : -1;
            } else if (!strcmp(key, "step") || t >= 0) {
                double v;
                if (j->p < j->end && !strncmp(j->p, "null", 4)) j->p += 4, v = NAN; /* a missing value */
                else if (js_number(j, &v)) return -1;
                if (t >= 0) vals[t] = v;
                else *step = v;
            } else if (js_skip(j, 0))
                return -1;
            ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == '}') { j->p++; break; }
            return j->err = "expected ',' or '}'", -1;
        }
    ws(j);
    if (j->p != j->end) return j->err = "text after the object", -1;
    if (*kind == -2) return j->err = "no \"kind\"", -1;
    if (*kind >= 0 && isnan(*step)) return j->err = "no \"step\"", -1;
    return 0;
}

int plot_training_curves(const char *log_path, const char *png_path) {
    if (!log_path || !png_path) return v3_error("plot_training_curves: NULL path");
    if (!plot_available()) return plot_needs_cairo(png_path);
    FILE *f = fopen(log_path, "rb");
    if (!f) return v3_error("%s: cannot open the training log", log_path);
    size_t cap = 1 << 16, len = 0, got;
    char *text = xmalloc(cap);
    while ((got = fread(text + len, 1, cap - len, f)) > 0)
        if ((len += got) == cap) text = xrealloc(text, cap *= 2);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(text);
        return v3_error("%s: read error", log_path);
    }
    Curve cur[2][N_TERMS];
    memset(cur, 0, sizeof cur);
    int rc = 0, line = 0, points = 0;
    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        line++;
        Js j = {p, le, NULL};
        ws(&j);
        if (j.p < le) { /* blank lines are allowed */
            int kind;
            double step, v[N_TERMS];
            if (parse_line(&j, &kind, &step, v)) {
                if (!nl) { /* a last line still being written by a live run */
                    v3_log("%s:%d: ignoring the incomplete last line\n", log_path, line);
                    break;
                }
                rc = v3_error("%s:%d: malformed log line: %s at column %d", log_path, line, j.err,
                              (int)(j.p - p) + 1);
                break;
            }
            if (kind >= 0)
                for (int t = 0; t < N_TERMS; t++)
                    if (!isnan(v[t])) curve_push(&cur[kind][t], step, v[t]), points++;
        }
        p = nl ? nl + 1 : end;
    }
    free(text);
    if (!rc && !points) rc = v3_error("%s: no train or val lines with loss terms", log_path);
    if (!rc) {
        /* panels: every term with data; train as lines, val as points */
        PlotSeries S[2 * N_TERMS];
        int style[2 * N_TERMS], colour[2 * N_TERMS], logy[N_TERMS], ns = 0, np = 0;
        const char *titles[N_TERMS];
        for (int t = 0; t < N_TERMS; t++) {
            if (!cur[0][t].n && !cur[1][t].n) continue;
            for (int k = 0; k < 2; k++)
                if (cur[k][t].n) {
                    S[ns] = (PlotSeries){k ? "val" : "train", np, cur[k][t].n, cur[k][t].x, cur[k][t].y};
                    colour[ns] = k; /* train blue, val orange, in every panel */
                    style[ns++] = k ? PLOT_STYLE_POINTS : PLOT_STYLE_LINE;
                }
            titles[np] = TITLES[t];
            logy[np++] = LOGY[t];
        }
        char title[512];
        snprintf(title, sizeof title, "Training curves: %s", log_path);
        rc = plot_lines_styled(png_path, title, titles, logy, np, S, style, colour, ns, "step");
    }
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < N_TERMS; t++) {
            free(cur[k][t].x);
            free(cur[k][t].y);
        }
    return rc;
}
