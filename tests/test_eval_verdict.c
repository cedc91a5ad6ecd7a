/* The verdict of `v3 eval` (include/eval_verdict.h): thresholds applied on both sides of each, rows not judged
 * (K != classes, probes skipped, a zero PR-AUC denominator), and the JSON it writes. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_verdict.h"
#include "testing.h"

/* a run that meets every target */
static VerdictIn good(void) {
    VerdictIn v = {.K = 10, .C = 10, .content = "digit", .style = "colour", .one_to_one = 0.93, .purity = 0.97,
                   .style_from_style = 0.95, .content_from_style = 0.2, .chance_style = 0.125, .chance_content = 0.1,
                   .pr_style_by_style = 0.6, .pr_style_by_content = 0.15, .pr_content_by_content = 0.7,
                   .pr_content_by_style = 0.1};
    return v;
}

TEST(eval_verdict_passes_a_good_run_and_fails_each_criterion_alone) {
    VerdictRow r[VERDICT_ROWS];
    VerdictIn v = good();
    CHECK(eval_verdict(&v, r) == 0, "a run meeting every target fails");
    for (int i = 0; i < VERDICT_ROWS; i++) CHECK(r[i].result == VERDICT_PASS, "row %d (%s) not passed", i, r[i].what);
    /* each criterion just past its threshold fails that row only */
    for (int i = 0; i < VERDICT_ROWS; i++) {
        v = good();
        switch (i) {
        case 0: v.one_to_one = 0.8999; break;
        case 1: v.purity = 0.9499; break;
        case 2: v.style_from_style = 0.8999; break;
        case 3: v.content_from_style = 0.3001; break;
        case 4: v.pr_style_by_content = v.pr_style_by_style / 2.999; break;
        case 5: v.pr_content_by_style = v.pr_content_by_content / 2.999; break;
        }
        CHECK(eval_verdict(&v, r) == 1, "criterion %d past its threshold: not exactly one failure", i);
        CHECK(r[i].result == VERDICT_FAIL, "criterion %d (%s) past its threshold passed", i, r[i].what);
    }
    /* exactly at the threshold passes */
    v = good();
    v.purity = 0.95, v.content_from_style = 0.3, v.pr_style_by_style = 0.75, v.pr_style_by_content = 0.25; /* 3 */
    CHECK(eval_verdict(&v, r) == 0, "values at their thresholds fail");
    return 0;
}

TEST(eval_verdict_does_not_judge_what_it_cannot) {
    VerdictRow r[VERDICT_ROWS];
    VerdictIn v = good();
    v.K = 20;                                              /* no bijection possible */
    v.style_from_style = v.content_from_style = NAN;       /* probes skipped */
    v.pr_content_by_style = 0;                             /* ratio undefined */
    v.purity = 0.5;                                        /* the one real failure */
    CHECK(eval_verdict(&v, r) == 1, "expected one failure (purity)");
    CHECK(r[0].result == VERDICT_NA && strstr(r[0].why, "K = 20"), "one-to-one at K = 20 judged: %s", r[0].why);
    CHECK(r[2].result == VERDICT_NA && r[3].result == VERDICT_NA, "skipped probes judged");
    CHECK(r[5].result == VERDICT_NA, "a zero denominator judged");
    CHECK(r[1].result == VERDICT_FAIL, "purity 0.5 not failed");
    /* NaN never passes */
    v = good();
    v.purity = NAN;
    eval_verdict(&v, r);
    CHECK(r[1].result != VERDICT_PASS, "NaN purity passed");
    /* the rows name the dataset's labels, in the plural where needed */
    v = good();
    v.content = "pitch", v.style = "instrument", v.K = 24, v.C = 12;
    eval_verdict(&v, r);
    CHECK(strstr(r[0].what, "atoms <-> pitches") && strstr(r[0].why, "12 pitches"), "InsNotes row: '%s' / '%s'",
          r[0].what, r[0].why);
    v = good();
    eval_verdict(&v, r);
    CHECK(strstr(r[0].what, "atoms <-> digits"), "PhoneNums row: '%s'", r[0].what);
    return 0;
}

TEST(eval_verdict_json_and_text) {
    VerdictRow r[VERDICT_ROWS];
    VerdictIn v = good();
    v.K = 20, v.purity = 0.5;
    eval_verdict(&v, r);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    eval_verdict_json(f, r);
    fclose(f);
    CHECK(buf[0] == '[' && buf[n - 1] == ']', "not a JSON array: %s", buf);
    CHECK(strstr(buf, "\"result\": \"fail\"") && strstr(buf, "\"result\": \"not judged\"") &&
              strstr(buf, "\"result\": \"pass\""),
          "results missing: %s", buf);
    free(buf);
    buf = NULL;
    f = open_memstream(&buf, &n);
    eval_verdict_print(f, r, "runs/x/eval");
    fclose(f);
    CHECK(strstr(buf, "FAIL  codebook purity") && strstr(buf, "not separated: 1 of 5") &&
              strstr(buf, "runs/x/eval/codebook_sheet.png"),
          "text: %s", buf);
    free(buf);
    return 0;
}
