/* The verdict of `v3 eval` (include/eval_verdict.h). The thresholds are the targets of issue 18 (a run that
 * visibly separates content from style): one-to-one >= 0.9 when K equals the number of content classes, codebook
 * purity >= 0.95, style label from the style code >= 0.9, content label from the style code <= 0.3, and each
 * embedding retrieving its own label at least 3x as well as the other's (PR-AUC ratios). */
#include "eval_verdict.h"

#include <math.h>
#include <string.h>

static void set(VerdictRow *r, const char *what, double value, double threshold, int at_least, const char *look) {
    snprintf(r->what, sizeof r->what, "%s", what);
    r->value = value, r->threshold = threshold, r->at_least = at_least, r->look = look;
    if (!isfinite(value)) {
        r->result = VERDICT_NA;
        snprintf(r->why, sizeof r->why, "not measured");
        return;
    }
    r->result = (at_least ? value >= threshold : value <= threshold) ? VERDICT_PASS : VERDICT_FAIL;
}

int eval_verdict(const VerdictIn *in, VerdictRow *rows) {
    char w[96];
    VerdictRow *r = rows;
    /* 1. one code per content class */
    snprintf(w, sizeof w, "one-to-one: atoms <-> %ss", in->content);
    set(r, w, in->one_to_one, 0.9, 1, "confusion.png, codebook_sheet.png");
    if (in->K != in->C) {
        r->result = VERDICT_NA;
        snprintf(r->why, sizeof r->why, "not judged: K = %d atoms for %d %ss (a bijection needs K = %d)", in->K, in->C,
                 in->content, in->C);
    } else if (r->result != VERDICT_NA) {
        snprintf(r->why, sizeof r->why, "%.0f%% of fragments fall on the atom paired with their %s", 100 * in->one_to_one,
                 in->content);
    }
    r++;
    /* 2. every used atom one content class */
    set(r, "codebook purity (authors)", in->purity, 0.95, 1, "codebook_sheet.png (one digit per column)");
    if (r->result != VERDICT_NA)
        snprintf(r->why, sizeof r->why, "a used atom holds %.0f%% one %s on average", 100 * in->purity, in->content);
    r++;
    /* 3. style code knows the style */
    snprintf(w, sizeof w, "%s from the style code (probe)", in->style);
    set(r, w, in->style_from_style, 0.9, 1, "tsne_style_by_style.png (one cluster per style)");
    if (r->result != VERDICT_NA)
        snprintf(r->why, sizeof r->why, "a linear probe reads the %s at %.2f (majority class %.2f)", in->style,
                 in->style_from_style, in->chance_style);
    r++;
    /* 4. style code does not know the content */
    snprintf(w, sizeof w, "%s from the style code (probe)", in->content);
    set(r, w, in->content_from_style, 0.3, 0, "tsne_style_by_content.png (content mixed)");
    if (r->result != VERDICT_NA)
        snprintf(r->why, sizeof r->why, "the %s leaks into the style code at %.2f (majority class %.2f)", in->content,
                 in->content_from_style, in->chance_content);
    r++;
    /* 5, 6. each embedding retrieves its own label far better than the other's */
    double rs = in->pr_style_by_content > 0 ? in->pr_style_by_style / in->pr_style_by_content : NAN;
    double rc = in->pr_content_by_style > 0 ? in->pr_content_by_content / in->pr_content_by_style : NAN;
    snprintf(w, sizeof w, "style code: PR-AUC by %s / by %s", in->style, in->content);
    set(r, w, rs, 3.0, 1, "tsne_style_by_style.png");
    if (r->result != VERDICT_NA)
        snprintf(r->why, sizeof r->why, "retrieval by %s %.3f against by %s %.3f", in->style, in->pr_style_by_style,
                 in->content, in->pr_style_by_content);
    r++;
    snprintf(w, sizeof w, "content code: PR-AUC by %s / by %s", in->content, in->style);
    set(r, w, rc, 3.0, 1, "tsne_content_by_content.png");
    if (r->result != VERDICT_NA)
        snprintf(r->why, sizeof r->why, "retrieval by %s %.3f against by %s %.3f", in->content,
                 in->pr_content_by_content, in->style, in->pr_content_by_style);
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
