/* The verdict of `v3 eval` (include/eval_verdict.h). The thresholds are the targets of issue 18 (a run that
 * visibly separates content from style): one-to-one >= 0.9 when K equals the number of content classes, codebook
 * purity >= 0.95, style label from the style code >= 0.9, content label from the style code <= 0.3, and each
 * embedding retrieving its own label at least 3x as well as the other's (PR-AUC ratios). */
#include "eval_verdict.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* One row: the criterion, its value against the threshold, and (when judged) the line in words, printf-style.
 * NaN is never judged (never a pass). */
static void __attribute__((format(printf, 7, 8)))
row(VerdictRow *r, const char *what, double value, double threshold, int at_least, const char *look, const char *why,
    ...) {
    snprintf(r->what, sizeof r->what, "%s", what);
    r->value = value, r->threshold = threshold, r->at_least = at_least, r->look = look;
    if (!isfinite(value)) {
        r->result = VERDICT_NA;
        snprintf(r->why, sizeof r->why, "not measured");
        return;
    }
    r->result = (at_least ? value >= threshold : value <= threshold) ? VERDICT_PASS : VERDICT_FAIL;
    va_list ap;
    va_start(ap, why);
    vsnprintf(r->why, sizeof r->why, why, ap);
    va_end(ap);
}

/* English plural of a label kind (pitch -> pitches, digit -> digits). */
static const char *plural(const char *k, char *buf, size_t n) {
    size_t l = strlen(k);
    int es = l >= 2 && (!strcmp(k + l - 2, "ch") || !strcmp(k + l - 2, "sh") || k[l - 1] == 's' || k[l - 1] == 'x');
    snprintf(buf, n, "%s%s", k, es ? "es" : "s");
    return buf;
}

int eval_verdict(const VerdictIn *in, VerdictRow *rows) {
    const char *c = in->content, *s = in->style;
    char w[96], cs[48];
    plural(c, cs, sizeof cs);
    /* 1. one code per content class (a bijection exists only when K equals the number of classes) */
    snprintf(w, sizeof w, "one-to-one: atoms <-> %s", cs);
    row(&rows[0], w, in->one_to_one, 0.9, 1, "confusion.png, codebook_sheet.png",
        "%.0f%% of fragments fall on the atom paired with their %s", 100 * in->one_to_one, c);
    if (in->K != in->C) {
        rows[0].result = VERDICT_NA;
        snprintf(rows[0].why, sizeof rows[0].why, "not judged: K = %d atoms for %d %s (a bijection needs K = %d)",
                 in->K, in->C, cs, in->C);
    }
    /* 2. every used atom one content class */
    row(&rows[1], "codebook purity (authors)", in->purity, 0.95, 1, "codebook_sheet.png (one digit per column)",
        "a used atom holds %.0f%% one %s on average", 100 * in->purity, c);
    /* 3, 4. the style code knows the style and not the content */
    snprintf(w, sizeof w, "%s from the style code (probe)", s);
    row(&rows[2], w, in->style_from_style, 0.9, 1, "tsne_style_by_style.png (one cluster per style)",
        "a linear probe reads the %s at %.2f (majority class %.2f)", s, in->style_from_style, in->chance_style);
    snprintf(w, sizeof w, "%s from the style code (probe)", c);
    row(&rows[3], w, in->content_from_style, 0.3, 0, "tsne_style_by_content.png (content mixed)",
        "the %s leaks into the style code at %.2f (majority class %.2f)", c, in->content_from_style,
        in->chance_content);
    /* 5, 6. each embedding retrieves its own label far better than the other's */
    double rs = in->pr_style_by_content > 0 ? in->pr_style_by_style / in->pr_style_by_content : NAN;
    double rc = in->pr_content_by_style > 0 ? in->pr_content_by_content / in->pr_content_by_style : NAN;
    snprintf(w, sizeof w, "style code: PR-AUC by %s / by %s", s, c);
    row(&rows[4], w, rs, 3.0, 1, "tsne_style_by_style.png", "retrieval by %s %.3f against by %s %.3f", s,
        in->pr_style_by_style, c, in->pr_style_by_content);
    snprintf(w, sizeof w, "content code: PR-AUC by %s / by %s", c, s);
    row(&rows[5], w, rc, 3.0, 1, "tsne_content_by_content.png", "retrieval by %s %.3f against by %s %.3f", c,
        in->pr_content_by_content, s, in->pr_content_by_style);
    int failed = 0;
    for (int i = 0; i < VERDICT_ROWS; i++) failed += rows[i].result == VERDICT_FAIL;
    return failed;
}

void eval_verdict_print(FILE *f, const VerdictRow *rows, const char *figdir) {
    int pass = 0, fail = 0;
    fprintf(f, "verdict (thresholds: issue 18's targets)\n");
    for (int i = 0; i < VERDICT_ROWS; i++) {
        const VerdictRow *r = &rows[i];
        const char *res = r->result == VERDICT_PASS ? "PASS" : r->result == VERDICT_FAIL ? "FAIL" : "n/a ";
        pass += r->result == VERDICT_PASS, fail += r->result == VERDICT_FAIL;
        if (isfinite(r->value))
            fprintf(f, "  %s  %-44s %7.3f %s %-5.2f %s\n", res, r->what, r->value, r->at_least ? ">=" : "<=",
                    r->threshold, r->why);
        else
            fprintf(f, "  %s  %-44s %7s %s %-5.2f %s\n", res, r->what, "-", r->at_least ? ">=" : "<=", r->threshold,
                    r->why);
    }
    if (!fail)
        fprintf(f, "  => content and style are separated: all %d judged criteria pass\n", pass);
    else
        fprintf(f, "  => not separated: %d of %d judged criteria fail\n", fail, pass + fail);
    for (int i = 0; i < VERDICT_ROWS && figdir; i++)
        if (rows[i].result == VERDICT_FAIL) fprintf(f, "     where to look (%s): %s/%s\n", rows[i].what, figdir, rows[i].look);
}

void eval_verdict_json(FILE *f, const VerdictRow *rows) {
    fputc('[', f);
    for (int i = 0; i < VERDICT_ROWS; i++) {
        const VerdictRow *r = &rows[i];
        fprintf(f, "%s{\"criterion\": \"%s\", \"value\": ", i ? ", " : "", r->what);
        if (isfinite(r->value)) fprintf(f, "%.6g", r->value);
        else fprintf(f, "null");
        fprintf(f, ", \"threshold\": %.6g, \"at_least\": %s, \"result\": \"%s\"}", r->threshold,
                r->at_least ? "true" : "false",
                r->result == VERDICT_PASS ? "pass" : r->result == VERDICT_FAIL ? "fail" : "not judged");
    }
    fputc(']', f);
}
