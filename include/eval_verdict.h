/* The verdict `v3 eval` ends with: did the run separate content from style? Each criterion of the "demo that
 * disentangles" issue (18) with its value, threshold, pass or fail in plain words, and where to look.
 * (host/eval/eval_verdict.c) */
#ifndef V3_EVAL_VERDICT_H
#define V3_EVAL_VERDICT_H
#include <stdio.h>

/* What the verdict reads: the metrics of one evaluation. NAN where not measured (probes skipped). */
typedef struct {
    int K, C;                      /* atoms, content classes */
    const char *content, *style;   /* label names: "digit"/"colour", "pitch"/"instrument", or "content"/"style" */
    double one_to_one, purity;     /* codebook: Hungarian one-to-one accuracy, authors' purity */
    double style_from_style;       /* linear probe: style label from the style embedding */
    double content_from_style;     /* ... content label from the style embedding */
    double chance_style, chance_content;
    double pr_style_by_style, pr_style_by_content;     /* PR-AUC of the style embedding */
    double pr_content_by_content, pr_content_by_style; /* PR-AUC of the content embedding */
} VerdictIn;

enum { VERDICT_PASS = 1, VERDICT_FAIL = 0, VERDICT_NA = -1 };

typedef struct {
    char what[96];   /* the criterion in words */
    double value, threshold;
    int at_least;    /* 1: value >= threshold passes; 0: value <= threshold passes */
    int result;      /* VERDICT_PASS, VERDICT_FAIL, or VERDICT_NA (not measured or not applicable) */
    char why[160];   /* one line: what the value means, or why the row is not judged */
    const char *look; /* the figure to look at */
} VerdictRow;

#define VERDICT_ROWS 6
/* Fills rows[VERDICT_ROWS]; returns the number of failed rows (rows not judged count neither way). */
int eval_verdict(const VerdictIn *in, VerdictRow *rows);
/* The verdict block of the eval table (a header line, one line per row, a summary line, and for each failed row
 * the figure in figdir to look at; figdir NULL: no figures were drawn). */
void eval_verdict_print(FILE *f, const VerdictRow *rows, const char *figdir);
/* The rows as a JSON array (results.json's "verdict"). */
void eval_verdict_json(FILE *f, const VerdictRow *rows);
#endif
