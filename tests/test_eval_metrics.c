/* Evaluation metrics (include/eval_metrics.h): retrieval P/R against hand-computed values and a brute-force
 * reference (with exact ties), the authors' purity vs the weighted purity, the Hungarian algorithm against
 * brute force, one-to-one / zero-shot / mapped accuracies on hand examples, and the linear probe on separable,
 * label-independent and degenerate data. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval_metrics.h"
#include "rng.h"
#include "testing.h"

static double f1of(double P, double R) { return 2 * P * R / (P + R + 1e-8); }
static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol; }

/* ---------------------------------------------------------------- retrieval: hand example ------------------ */
/* Six 1-D points (second coordinate 0): x = 0,1,3,7,15,31, labels A,B,A,B,A,B; all distances in each row are
 * distinct. Rankings (others only):
 *   q0: 1B 2A 3B 4A 5B   q1: 0A 2A 3B 4A 5B   q2: 1B 0A 3B 4A 5B
 *   q3: 2A 1B 0A 4A 5B   q4: 3B 2A 1B 0A 5B   q5: 4A 3B 2A 1B 0A
 * Positives per query: 2. Hits at k=1: all 0; k=2: 1,0,1,1,1,1; k=5: all 2. */
static const float HX[6 * 2] = {0, 0, 1, 0, 3, 0, 7, 0, 15, 0, 31, 0};
static const int32_t HL[6] = {0, 1, 0, 1, 0, 1};

TEST(eval_pr_upstream_hand_example) {
    PrResult r;
    CHECK(retrieval_pr(HX, 6, 2, HL, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    /* M = 2: fractions give {0,1,2} -> clipped to >= 1; base {1,2,5,...} clipped to N-1 = 5 -> k = {1,2,5}. */
    CHECK(r.n_k == 3 && r.k[0] == 1 && r.k[1] == 2 && r.k[2] == 5, "k list n=%d %d %d %d", r.n_k, r.k[0], r.k[1], r.k[2]);
    CHECK(r.n_queries == 6, "n_queries %d", r.n_queries);
    const double P[3] = {0, 5.0 / 12, 2.0 / 5}, R[3] = {0, 5.0 / 12, 1};
    const double F[3] = {0, (5.0 / 6) * f1of(.5, .5), f1of(.4, 1)};
    for (int t = 0; t < 3; t++) {
        CHECK(close_to(r.P[t], P[t], 1e-12), "P[%d] %.15g vs %.15g", t, r.P[t], P[t]);
        CHECK(close_to(r.R[t], R[t], 1e-12), "R[%d] %.15g vs %.15g", t, r.R[t], R[t]);
        CHECK(close_to(r.F1[t], F[t], 1e-12), "F1[%d] %.15g vs %.15g", t, r.F1[t], F[t]);
    }
    /* AUC = (R2-R1) P2 + (R5-R2) P5 = 25/144 + 7/30 = 293/720 (no segment from R = 0). */
    CHECK(close_to(r.auc, 293.0 / 720, 1e-12), "auc %.15g vs %.15g", r.auc, 293.0 / 720);
    CHECK(r.f1_min == r.F1[0] && r.f1_max == r.F1[2], "f1 range %g %g", r.f1_min, r.f1_max);
    return 0;
}

TEST(eval_pr_paper_era_hand_example) {
    /* Self ranked first (distance 0): k=1 hits 0; k=2 the nearest other is never a positive -> 0;
     * k=5 (self + 4 nearest): hits 2,1,2,1,2,2; k >= 6 all: 2 each, P = 2/k. */
    PrResult r;
    CHECK(retrieval_pr(HX, 6, 2, HL, PR_PAPER_ERA, &r) == 0, "%s", v3_last_error());
    static const int ks[18] = {1, 2, 5, 10, 20, 50, 75, 100, 200, 300, 400, 500, 750, 1000, 1500, 2000, 2500, 3000};
    CHECK(r.n_k == 18, "n_k %d", r.n_k);
    for (int t = 0; t < 18; t++) CHECK(r.k[t] == ks[t], "k[%d] = %d", t, r.k[t]);
    CHECK(r.P[0] == 0 && r.P[1] == 0 && r.R[1] == 0, "P@1 %g P@2 %g", r.P[0], r.P[1]);
    CHECK(close_to(r.P[2], 1.0 / 3, 1e-12) && close_to(r.R[2], 5.0 / 6, 1e-12), "k=5: P %g R %g", r.P[2], r.R[2]);
    CHECK(close_to(r.F1[2], (4 * f1of(.4, 1) + 2 * f1of(.2, .5)) / 6, 1e-12), "F1@5 %.15g", r.F1[2]);
    for (int t = 3; t < 18; t++) {
        CHECK(close_to(r.P[t], 2.0 / ks[t], 1e-12) && r.R[t] == 1, "k=%d: P %g R %g", ks[t], r.P[t], r.R[t]);
        CHECK(close_to(r.F1[t], f1of(2.0 / ks[t], 1), 1e-12), "F1@%d %g", ks[t], r.F1[t]);
    }
    /* AUC = (5/6)(1/3) + (1/6)(1/5) = 14/45. */
    CHECK(close_to(r.auc, 14.0 / 45, 1e-12), "auc %.15g", r.auc);
    CHECK(r.f1_min == r.F1[0] && r.f1_min == 0, "f1_min %g", r.f1_min);
    return 0;
}

/* --------------------------------------------------- retrieval: separated clusters and chance level -------- */
TEST(eval_pr_separated_clusters) {
    enum { C = 3, PER = 50, N = C * PER, D = 8 };
    float *x = falloc((size_t)N * D);
    int32_t lab[N];
    Rng g;
    rng_seed(&g, 11);
    for (int i = 0; i < N; i++) {
        int c = (i * 7) % C; /* interleaved classes */
        lab[i] = c;
        for (int t = 0; t < D; t++) x[(size_t)i * D + t] = (t == c ? 100.0f : 0.0f) + rng_uniform_range(&g, -1, 1);
    }
    PrResult r;
    CHECK(retrieval_pr(x, N, D, lab, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    CHECK(r.P[0] == 1.0, "P@1 %g", r.P[0]);
    /* P = 1 until R = 1 at k = M = 49 (in the list: f = 1); after that R stays 1, so AUC = 1 - R@1 = 1 - 1/49. */
    CHECK(close_to(r.auc, 1.0 - 1.0 / 49, 1e-12), "auc %.15g vs %.15g", r.auc, 1.0 - 1.0 / 49);
    int found = 0;
    for (int t = 0; t < r.n_k; t++) {
        if (r.k[t] <= 49) CHECK(r.P[t] == 1.0, "P@%d %g", r.k[t], r.P[t]);
        if (r.k[t] == 49) { found = 1; CHECK(r.R[t] == 1.0, "R@49 %g", r.R[t]); }
    }
    CHECK(found, "k = 49 missing from the list");
    CHECK(retrieval_pr(x, N, D, lab, PR_PAPER_ERA, &r) == 0, "%s", v3_last_error());
    CHECK(r.P[0] == 0.0 && r.P[1] == 0.5 && close_to(r.R[1], 1.0 / 49, 1e-15), "paper era: P@1 %g P@2 %g", r.P[0], r.P[1]);
    ffree(x);
    return 0;
}

TEST(eval_pr_random_is_chance) {
    enum { C = 5, N = 600, D = 16 };
    float *x = falloc((size_t)N * D);
    int32_t lab[N];
    Rng g;
    rng_seed(&g, 5);
    for (int i = 0; i < N; i++) lab[i] = i % C;
    for (size_t t = 0; t < (size_t)N * D; t++) x[t] = (float)rng_normal(&g);
    PrResult r;
    CHECK(retrieval_pr(x, N, D, lab, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    /* Chance: P@k = p = 119/599 for every k, R@k = k p / 119, so AUC = p^2 (k_last - k_first) / 119 with the
     * k list running 1..500 here (~0.1655; roughly 1/C times the recall range covered). */
    double p = 119.0 / 599, chance = p * p * (500 - 1) / 119;
    CHECK(r.k[0] == 1 && r.k[r.n_k - 1] == 500, "k range %d..%d", r.k[0], r.k[r.n_k - 1]);
    CHECK(fabs(r.auc - chance) < 0.01, "auc %g vs chance %g", r.auc, chance);
    for (int t = 0; t < r.n_k; t++)
        if (r.k[t] >= 20) CHECK(fabs(r.P[t] - p) < 0.015, "P@%d %g vs %g", r.k[t], r.P[t], p);
    ffree(x);
    return 0;
}

TEST(eval_pr_k_list_rounding) {
    /* Largest class 6 -> M = 5: .3*5 = 1.5 -> 2, .5*5 = 2.5 -> 2 (half to even, as Python), .75*5 -> 4, 1 -> 5;
     * base list clipped to N-1 = 29. Expected {1,2,4,5,10,20,29}: a 3 would mean half-away rounding. */
    enum { N = 30 };
    float x[N];
    int32_t lab[N];
    for (int i = 0; i < N; i++) { x[i] = (float)i; lab[i] = i / 6; }
    PrResult r;
    CHECK(retrieval_pr(x, N, 1, lab, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    static const int want[] = {1, 2, 4, 5, 10, 20, 29};
    CHECK(r.n_k == 7, "n_k %d", r.n_k);
    for (int t = 0; t < 7; t++) CHECK(r.k[t] == want[t], "k[%d] = %d, want %d", t, r.k[t], want[t]);
    /* Largest class 201 (M = 200), N = 1000 -> {1,2,4,5,10,15,20,40,50,60,80,100,150,200,500}. */
    enum { N2 = 1000 };
    float *x2 = falloc(N2);
    int32_t *l2 = xmalloc(sizeof(int32_t) * N2);
    for (int i = 0; i < N2; i++) { x2[i] = (float)i; l2[i] = i < 201 ? 0 : 1 + (i % 7); }
    CHECK(retrieval_pr(x2, N2, 1, l2, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    static const int want2[] = {1, 2, 4, 5, 10, 15, 20, 40, 50, 60, 80, 100, 150, 200, 500};
    CHECK(r.n_k == 15, "n_k %d", r.n_k);
    for (int t = 0; t < 15; t++) CHECK(r.k[t] == want2[t], "k[%d] = %d, want %d", t, r.k[t], want2[t]);
    ffree(x2);
    free(l2);
    return 0;
}

TEST(eval_pr_ties_lower_index_and_unlabelled) {
    /* 1-D: idx0 x=0, idx1 x=1, idx2 x=1 (duplicate of idx1), idx3 x=5. One of idx1/idx2 is unlabelled (-1): it is
     * ranked but is neither query nor positive. Whichever of the duplicates has the lower index comes first. */
    const float x[4] = {0, 1, 1, 5};
    PrResult r;
    /* (a) idx1 unlabelled: q0 ranks 1(-),2(A),3 -> hit@1 0; q2 ranks 1(d0),0,3 -> 0; q3 ranks 1,2,0 -> 0. */
    const int32_t la[4] = {0, -1, 0, 0};
    CHECK(retrieval_pr(x, 4, 1, la, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    CHECK(r.n_queries == 3, "n_queries %d", r.n_queries);
    CHECK(r.n_k == 3 && r.k[2] == 3, "k list n=%d", r.n_k);
    CHECK(r.P[0] == 0.0, "P@1 %g (ties must go to the lower index)", r.P[0]);
    CHECK(close_to(r.P[1], 0.5, 1e-15) && close_to(r.R[2], 1.0, 1e-15), "P@2 %g R@3 %g", r.P[1], r.R[2]);
    /* (b) idx2 unlabelled: q0 ranks 1(A) first -> 1; q1 ranks 2(d0),0 -> 0; q3 ranks 1(A),2 -> 1: P@1 = 2/3. */
    const int32_t lb[4] = {0, 0, -1, 0};
    CHECK(retrieval_pr(x, 4, 1, lb, PR_UPSTREAM, &r) == 0, "%s", v3_last_error());
    CHECK(close_to(r.P[0], 2.0 / 3, 1e-15), "P@1 %g", r.P[0]);
    /* Paper era with an exact duplicate of the query at a lower index: it ranks before the query itself. */
    const float y[3] = {2, 2, 9};
    const int32_t ly[3] = {0, 0, 1};
    CHECK(retrieval_pr(y, 3, 1, ly, PR_PAPER_ERA, &r) == 0, "%s", v3_last_error());
    /* q0: 0(self),1 -> hit@1 0; q1: 0(dup, lower index),1 -> hit@1 1; q2: self, no positive -> 0. */
    CHECK(close_to(r.P[0], 1.0 / 3, 1e-15), "paper era P@1 %g", r.P[0]);
    /* Errors: N < 2, no query with a positive. */
    CHECK(retrieval_pr(x, 1, 1, la, PR_UPSTREAM, &r) == -1, "N = 1 accepted");
    const int32_t lc[4] = {0, 1, 2, -1};
    CHECK(retrieval_pr(x, 4, 1, lc, PR_UPSTREAM, &r) == -1, "no positives accepted");
    return 0;
}

/* Brute-force reference: full sort by (double distance, index) of every fragment's row. Integer coordinates
 * make every distance exact in float, so ties (many) must be resolved identically. */
static int cmp_pair(const void *a, const void *b) {
    const double *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

static int pr_reference_check(const float *x, int N, int d, const int32_t *lab, PrVariant v) {
    PrResult r;
    CHECK(retrieval_pr(x, N, d, lab, v, &r) == 0, "%s", v3_last_error());
    double *row = xmalloc(sizeof(double) * 2 * N);
    double sp[PR_MAX_K] = {0}, sr[PR_MAX_K] = {0}, sf[PR_MAX_K] = {0};
    int nq = 0;
    for (int i = 0; i < N; i++) {
        if (lab[i] < 0) continue;
        nq++;
        int m = 0, np = 0;
        for (int j = 0; j < N; j++) {
            if (j != i && lab[j] == lab[i]) np++;
            if (v == PR_UPSTREAM && j == i) continue;
            double s = 0;
            for (int t = 0; t < d; t++) {
                double df = (double)x[i * d + t] - x[j * d + t];
                s += df * df;
            }
            row[2 * m] = s;
            row[2 * m + 1] = j;
            m++;
        }
        qsort(row, (size_t)m, 2 * sizeof(double), cmp_pair);
        if (np < 1) np = 1;
        for (int t = 0; t < r.n_k; t++) {
            int h = 0;
            for (int q = 0; q < r.k[t] && q < m; q++) {
                int j = (int)row[2 * q + 1];
                h += j != i && lab[j] == lab[i];
            }
            double P = (double)h / r.k[t], R = (double)h / np;
            sp[t] += P; sr[t] += R; sf[t] += f1of(P, R);
        }
    }
    free(row);
    CHECK(r.n_queries == nq, "n_queries %d vs %d", r.n_queries, nq);
    double auc = 0;
    for (int t = 0; t < r.n_k; t++) {
        CHECK(close_to(r.P[t], sp[t] / nq, 1e-12), "variant %d P@%d %.15g vs %.15g", v, r.k[t], r.P[t], sp[t] / nq);
        CHECK(close_to(r.R[t], sr[t] / nq, 1e-12), "variant %d R@%d %.15g vs %.15g", v, r.k[t], r.R[t], sr[t] / nq);
        CHECK(close_to(r.F1[t], sf[t] / nq, 1e-12), "variant %d F1@%d", v, r.k[t]);
        if (t) auc += (sr[t] - sr[t - 1]) / nq * (sp[t] / nq);
    }
    CHECK(close_to(r.auc, auc, 1e-12), "variant %d auc %.15g vs %.15g", v, r.auc, auc);
    return 0;
}

TEST(eval_pr_matches_bruteforce_with_ties) {
    Rng g;
    rng_seed(&g, 99);
    const int sizes[3][2] = {{7, 2}, {41, 3}, {203, 4}}; /* N not a multiple of the query block */
    for (int s = 0; s < 3; s++) {
        int N = sizes[s][0], d = sizes[s][1];
        float *x = falloc((size_t)N * d);
        int32_t *lab = xmalloc(sizeof(int32_t) * N);
        for (int i = 0; i < N * d; i++) x[i] = (float)rng_below(&g, 3); /* few distinct points: many ties */
        for (int i = 0; i < N; i++) lab[i] = (int32_t)rng_below(&g, 5) - 1;
        lab[0] = lab[1] = 2;
        if (pr_reference_check(x, N, d, lab, PR_UPSTREAM)) return 1;
        if (pr_reference_check(x, N, d, lab, PR_PAPER_ERA)) return 1;
        ffree(x);
        free(lab);
    }
    return 0;
}

/* ---------------------------------------------------------------- confusion, purity ------------------------ */
TEST(eval_purity_authors_vs_weighted) {
    /* K = 4 atoms, C = 3 classes; atom 1 unused; atom 2 has a tie between classes 0 and 1. */
    const int atom[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 1, 5, -1};
    const int32_t lab[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 2, 1, 1, 1, 1, 1, 3, 0, 0};
    /* the last three are skipped: label 3 >= C, atom 5 >= K, atom -1 */
    int64_t M[12];
    confusion_counts(atom, lab, 23, 4, 3, M);
    const int64_t want[12] = {8, 2, 0, 0, 0, 0, 2, 2, 1, 0, 5, 0};
    for (int t = 0; t < 12; t++) CHECK(M[t] == want[t], "M[%d] = %lld", t, (long long)M[t]);
    double pw = purity_weighted(M, 4, 3), pa = purity_authors(M, 4, 3);
    CHECK(close_to(pw, 15.0 / 20, 1e-15), "weighted %.15g", pw);
    /* mean purity over used atoms: (0.8 + 0.4 + 1) / 3, exactly with the 1e-7 row offsets: */
    double num = 8 / (10 + 1e-7) + 2 / (5 + 1e-7) + 5 / (5 + 1e-7);
    double den = 10 / (10 + 1e-7) + 5 / (5 + 1e-7) + 5 / (5 + 1e-7);
    CHECK(close_to(pa, num / den, 1e-15), "authors %.15g vs %.15g", pa, num / den);
    CHECK(close_to(pa, 2.2 / 3, 1e-7), "authors %.15g", pa);
    int maj[4];
    atom_majority(M, 4, 3, maj);
    CHECK(maj[0] == 0 && maj[1] == -1 && maj[2] == 0 && maj[3] == 1, "majority %d %d %d %d", maj[0], maj[1], maj[2], maj[3]);
    int ac[4];
    double oa = one_to_one_accuracy(M, 4, 3, ac);
    /* best one-to-one: atom0->0 (8), atom3->1 (5), atom2->2 (1) = 14 of 20; atom1 left over */
    CHECK(close_to(oa, 14.0 / 20, 1e-15), "one-to-one %.15g", oa);
    CHECK(ac[0] == 0 && ac[1] == -1 && ac[2] == 2 && ac[3] == 1, "assign %d %d %d %d", ac[0], ac[1], ac[2], ac[3]);
    int64_t Z[12] = {0};
    CHECK(purity_authors(Z, 4, 3) == 0 && purity_weighted(Z, 4, 3) == 0 && one_to_one_accuracy(Z, 4, 3, ac) == 0,
          "empty matrix not 0");
    return 0;
}

/* ---------------------------------------------------------------- Hungarian vs brute force ------------------ */
static double brute_best;
static void brute(const double *w, int rows, int cols, int r, int *usedc, double acc, int need) {
    /* assign rows r.. ; each row may be skipped only as often as rows exceed cols (need = rows still to match) */
    if (need == 0 || r == rows) {
        if (need == 0 && acc > brute_best) brute_best = acc;
        return;
    }
    if (rows - r > need) brute(w, rows, cols, r + 1, usedc, acc, need); /* leave row r over */
    for (int c = 0; c < cols; c++) {
        if (usedc[c]) continue;
        usedc[c] = 1;
        brute(w, rows, cols, r + 1, usedc, acc + w[r * cols + c], need - 1);
        usedc[c] = 0;
    }
}

TEST(eval_hungarian_matches_bruteforce) {
    Rng g;
    rng_seed(&g, 2024);
    double w[36];
    int assign[6], usedc[6];
    for (int trial = 0; trial < 3000; trial++) {
        int rows = 1 + (int)rng_below(&g, 6), cols = 1 + (int)rng_below(&g, 6), integer = trial % 2;
        for (int t = 0; t < rows * cols; t++)
            w[t] = integer ? (double)((int)rng_below(&g, 16) - 5) : (rng_uniform(&g) * 2 - 1) * 100;
        int need = rows < cols ? rows : cols;
        memset(usedc, 0, sizeof usedc);
        brute_best = -INFINITY;
        brute(w, rows, cols, 0, usedc, 0.0, need);
        for (int r = 0; r < 6; r++) assign[r] = 1234;
        double got = hungarian_max(w, rows, cols, assign);
        CHECK(close_to(got, brute_best, 1e-9 * (1 + fabs(brute_best))), "trial %d (%dx%d): %.12g vs brute %.12g", trial,
              rows, cols, got, brute_best);
        memset(usedc, 0, sizeof usedc);
        int nas = 0;
        double sum = 0;
        for (int r = 0; r < rows; r++) {
            if (assign[r] == -1) continue;
            CHECK(assign[r] >= 0 && assign[r] < cols, "trial %d: assign[%d] = %d", trial, r, assign[r]);
            CHECK(!usedc[assign[r]], "trial %d: column %d used twice", trial, assign[r]);
            usedc[assign[r]] = 1;
            nas++;
            sum += w[r * cols + assign[r]];
        }
        CHECK(nas == need, "trial %d: %d rows assigned, want %d", trial, nas, need);
        CHECK(close_to(sum, got, 1e-9 * (1 + fabs(got))), "trial %d: assignment sums to %g, returned %g", trial, sum, got);
    }
    CHECK(hungarian_max(w, 0, 3, assign) == 0, "empty");
    return 0;
}

/* ---------------------------------------------------------------- one-to-one accuracy --------------------- */
TEST(eval_one_to_one_accuracy) {
    enum { C = 4 };
    /* K = 2C, atoms 2c and 2c+1 both pure class c (10 fragments each): purities 1, one-to-one 1/2. */
    int64_t M[2 * C * C];
    memset(M, 0, sizeof M);
    for (int a = 0; a < 2 * C; a++) M[a * C + a / 2] = 10;
    int ac[2 * C];
    double oa = one_to_one_accuracy(M, 2 * C, C, ac);
    CHECK(close_to(oa, 0.5, 1e-15), "K=2C one-to-one %g", oa);
    CHECK(purity_authors(M, 2 * C, C) > 0.999999 && purity_weighted(M, 2 * C, C) == 1.0, "purities");
    int per[C] = {0};
    for (int a = 0; a < 2 * C; a++) {
        CHECK(ac[a] == -1 || ac[a] == a / 2, "atom %d -> %d", a, ac[a]);
        if (ac[a] >= 0) per[ac[a]]++;
    }
    for (int c = 0; c < C; c++) CHECK(per[c] == 1, "class %d got %d atoms", c, per[c]);
    /* Unequal duplicates: 12 vs 8 in class 0 -> the larger atom is kept: (12 + 3*10) / (20 + 60). */
    M[0 * C + 0] = 12; M[1 * C + 0] = 8;
    oa = one_to_one_accuracy(M, 2 * C, C, ac);
    CHECK(close_to(oa, 42.0 / 80, 1e-15) && ac[0] == 0 && ac[1] == -1, "unequal duplicates %g (%d %d)", oa, ac[0], ac[1]);
    /* K = C, atom a holds class perm[a] (with some noise off the diagonal): one-to-one recovers perm. */
    const int perm[C] = {2, 0, 3, 1};
    int64_t P[C * C];
    for (int a = 0; a < C; a++)
        for (int c = 0; c < C; c++) P[a * C + c] = c == perm[a] ? 20 : 0;
    oa = one_to_one_accuracy(P, C, C, ac);
    CHECK(oa == 1.0, "permutation one-to-one %g", oa);
    for (int a = 0; a < C; a++) CHECK(ac[a] == perm[a], "atom %d -> %d, want %d", a, ac[a], perm[a]);
    P[0 * C + 1] = 5; /* noise */
    oa = one_to_one_accuracy(P, C, C, ac);
    CHECK(close_to(oa, 80.0 / 85, 1e-15), "noisy permutation %g", oa);
    return 0;
}

/* Within-style one-to-one: two styles with their own permutations of 4 atoms are each a bijection (1.0) while the
 * global map gets only half; a third style whose classes all fall on one atom scores 1/4; labels or atoms out of
 * range are skipped, and an absent style is NAN. */
TEST(eval_one_to_one_within_styles) {
    enum { C = 4, S = 4, PER = 5 };
    const int perm[2][C] = {{0, 1, 2, 3}, {1, 0, 3, 2}};
    int atom[3 * C * PER + 2];
    int32_t content[3 * C * PER + 2], style[3 * C * PER + 2];
    int N = 0;
    for (int s = 0; s < 3; s++)
        for (int c = 0; c < C; c++)
            for (int k = 0; k < PER; k++, N++) {
                content[N] = c, style[N] = s;
                atom[N] = s < 2 ? perm[s][c] : 3; /* style 2: every class on atom 3 */
            }
    atom[N] = 0, content[N] = -1, style[N] = 0, N++;  /* no content label: skipped */
    atom[N] = -1, content[N] = 0, style[N] = 1, N++;  /* no atom: skipped */
    double per[S];
    double w = one_to_one_within_styles(atom, content, style, N, C, C, S, per);
    CHECK(per[0] == 1.0 && per[1] == 1.0, "bijective styles %g %g", per[0], per[1]);
    CHECK(close_to(per[2], 0.25, 1e-15), "collapsed style %g, want 1/4", per[2]);
    CHECK(isnan(per[3]), "absent style %g, want NAN", per[3]);
    CHECK(close_to(w, (20 + 20 + 5) / 60.0, 1e-15), "weighted mean %g", w);
    /* the global map of the same fragments: 0.5 on styles 0 and 1, ... far below the within-style value */
    int64_t M[C * C];
    int ac[C];
    confusion_counts(atom, content, N, C, C, M);
    double g = one_to_one_accuracy(M, C, C, ac);
    CHECK(g < w - 0.2, "global one-to-one %g not below the within-style %g", g, w);
    return 0;
}

/* ---------------------------------------------------------------- zero-shot / mapped ---------------------- */
TEST(eval_zero_shot_and_mapped) {
    /* majority classes of 5 atoms: {0, -1, 0, 1, -1}: stable sort -> atoms 1, 4 (unused), 0, 2 (class 0), 3 */
    const int cls[5] = {0, -1, 0, 1, -1};
    int rank[5];
    zero_shot_perm(cls, 5, rank);
    const int want[5] = {2, 0, 3, 4, 1};
    for (int a = 0; a < 5; a++) CHECK(rank[a] == want[a], "rank_of_atom[%d] = %d, want %d", a, rank[a], want[a]);
    /* fragments: correct iff label == rank[atom]; label -1 skipped; atom -1 wrong */
    const int atom[9] = {0, 1, 2, 3, 0, 2, 3, 1, -1};
    const int32_t lab[9] = {2, 0, 3, 4, 0, 0, 4, -1, 0};
    /* zero-shot: frag0 ok, frag1 ok, frag2 ok, frag3 ok, frag4 no, frag5 no, frag6 ok, frag7 skipped,
     * frag8 no -> 5/8 */
    double z = zero_shot_accuracy(atom, lab, 9, rank);
    CHECK(close_to(z, 5.0 / 8, 1e-15), "zero-shot %g", z);
    /* mapped with the majority map: only frag4 (atom0->0) and frag5 (atom2->0) -> 2/8 */
    double m = mapped_accuracy(atom, lab, 9, cls);
    CHECK(close_to(m, 2.0 / 8, 1e-15), "mapped %g", m);
    /* K = C bijection: the zero-shot rule and the mapped rule agree when classes are ordered 0..C-1 */
    const int bij[3] = {2, 0, 1};
    int rk[3];
    zero_shot_perm(bij, 3, rk);
    for (int a = 0; a < 3; a++) CHECK(rk[a] == bij[a], "bijection rank %d = %d", a, rk[a]);
    const int32_t nolab[2] = {-1, -1};
    CHECK(zero_shot_accuracy(atom, nolab, 2, rank) == 0 && mapped_accuracy(atom, nolab, 2, cls) == 0, "no labels");
    return 0;
}

/* ---------------------------------------------------------------- linear probe ---------------------------- */
static void blobs(Rng *g, float *X, int32_t *y, int n, int d, int C, const float *centres, float noise) {
    for (int i = 0; i < n; i++) {
        int c = (int)rng_below(g, (uint32_t)C);
        y[i] = c;
        for (int t = 0; t < d; t++) X[(size_t)i * d + t] = centres[c * d + t] + noise * (float)rng_normal(g);
    }
}

/* Exactly linearly separable data that a few gradient steps do not solve: latent z with very unequal scales,
 * mixed by a random matrix into correlated features, label = argmax of a random linear map of z (so a linear
 * function of x). Measured: 2 iterations ~0.89, 8 ~0.956, 300 ~0.974 test accuracy. */
static void linear_rule_data(Rng *g, float *X, int32_t *y, int n, int d, int C, const double *A, const double *V) {
    double z[64];
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < d; t++) z[t] = rng_normal(g) * (t < 5 ? 10.0 : 0.3);
        for (int u = 0; u < d; u++) {
            double s = 0;
            for (int t = 0; t < d; t++) s += z[t] * A[t * d + u];
            X[(size_t)i * d + u] = (float)s;
        }
        int best = 0;
        double bv = -INFINITY;
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int t = 0; t < d; t++) s += z[t] * V[t * C + c];
            if (s > bv) { bv = s; best = c; }
        }
        y[i] = best;
    }
}

TEST(eval_probe_separable) {
    enum { C = 4, D = 20, NTR = 2000, NTE = 1000 };
    Rng g;
    rng_seed(&g, 7);
    double A[D * D], V[D * C];
    for (int t = 0; t < D * D; t++) A[t] = rng_normal(&g) * (t % (D + 1) == 0 ? 3.0 : 1.0);
    for (int t = 0; t < D * C; t++) V[t] = rng_normal(&g);
    float *Xtr = falloc((size_t)NTR * D), *Xte = falloc((size_t)NTE * D);
    int32_t *ytr = xmalloc(sizeof(int32_t) * NTR), *yte = xmalloc(sizeof(int32_t) * NTE);
    linear_rule_data(&g, Xtr, ytr, NTR, D, C, A, V);
    linear_rule_data(&g, Xte, yte, NTE, D, C, A, V);
    /* Rows with labels outside [0,C) (huge values in training, arbitrary in test) must be skipped. */
    for (int i = 0; i < 20; i++) {
        ytr[i * 7] = i % 2 ? -1 : C;
        for (int t = 0; t < D; t++) Xtr[(size_t)(i * 7) * D + t] = 1e6f;
        yte[i * 5] = -3;
    }
    double at, atr;
    CHECK(linear_probe(Xtr, ytr, NTR, Xte, yte, NTE, D, C, 1e-4, 300, &at, &atr) == 0, "%s", v3_last_error());
    CHECK(at >= 0.95 && atr >= 0.96, "test %g train %g", at, atr);
    /* iters = 0: zero weights, every score tied, class 0 predicted: accuracy = share of class 0. */
    double a0;
    CHECK(linear_probe(Xtr, ytr, NTR, Xte, yte, NTE, D, C, 1e-4, 0, &a0, NULL) == 0, "%s", v3_last_error());
    int n0 = 0, nv = 0;
    for (int i = 0; i < NTE; i++) if (yte[i] >= 0) { nv++; n0 += yte[i] == 0; }
    CHECK(close_to(a0, (double)n0 / nv, 1e-15), "iters 0: %g vs %g", a0, (double)n0 / nv);
    CHECK(linear_probe(Xtr, ytr, NTR, Xte, yte, NTE, D, 1, 1e-4, 10, &a0, NULL) == -1, "1 class accepted");
    ffree(Xtr);
    ffree(Xte);
    free(ytr);
    free(yte);
    return 0;
}

TEST(eval_probe_random_labels_is_chance) {
    enum { C = 4, D = 10, N = 2000 };
    Rng g;
    rng_seed(&g, 8);
    float *Xtr = falloc((size_t)N * D), *Xte = falloc((size_t)N * D);
    int32_t ytr[N], yte[N];
    for (size_t t = 0; t < (size_t)N * D; t++) { Xtr[t] = (float)rng_normal(&g); Xte[t] = (float)rng_normal(&g); }
    for (int i = 0; i < N; i++) { ytr[i] = (int32_t)rng_below(&g, C); yte[i] = (int32_t)rng_below(&g, C); }
    double at, atr;
    CHECK(linear_probe(Xtr, ytr, N, Xte, yte, N, D, C, 1e-4, 300, &at, &atr) == 0, "%s", v3_last_error());
    /* sd of a chance accuracy over 2000 samples ~ 0.01; allow 0.04 */
    CHECK(fabs(at - 0.25) < 0.04, "test accuracy %g, chance 0.25", at);
    CHECK(atr < 0.35, "train accuracy %g (d = 10 cannot memorise 2000 random labels)", atr);
    /* determinism: here the accuracies depend on the exact weights (no margin), so compare them bitwise */
    double at2, atr2;
    CHECK(linear_probe(Xtr, ytr, N, Xte, yte, N, D, C, 1e-4, 300, &at2, &atr2) == 0, "%s", v3_last_error());
    CHECK(memcmp(&at, &at2, sizeof at) == 0 && memcmp(&atr, &atr2, sizeof atr) == 0, "refit differs: %.17g/%.17g vs "
          "%.17g/%.17g", at, atr, at2, atr2);
    ffree(Xtr);
    ffree(Xte);
    return 0;
}

TEST(eval_probe_constant_columns_deterministic) {
    enum { C = 3, D = 12, NTR = 600, NTE = 300 };
    Rng g;
    rng_seed(&g, 9);
    float cen[C * D];
    for (int t = 0; t < C * D; t++) cen[t] = 2.0f * (float)rng_normal(&g);
    float *Xtr = falloc((size_t)NTR * D), *Xte = falloc((size_t)NTE * D);
    int32_t ytr[NTR], yte[NTE];
    blobs(&g, Xtr, ytr, NTR, D, C, cen, 1.0f);
    blobs(&g, Xte, yte, NTE, D, C, cen, 1.0f);
    /* columns 0..2 constant in training (0, 0.1, 3.7e5); in the test set column 1 differs (still ignored) */
    for (int i = 0; i < NTR; i++) { Xtr[i * D + 0] = 0; Xtr[i * D + 1] = 0.1f; Xtr[i * D + 2] = 3.7e5f; }
    for (int i = 0; i < NTE; i++) { Xte[i * D + 0] = 0; Xte[i * D + 1] = 50.0f; Xte[i * D + 2] = 3.7e5f; }
    double a1, t1, a2, t2;
    CHECK(linear_probe(Xtr, ytr, NTR, Xte, yte, NTE, D, C, 1e-4, 300, &a1, &t1) == 0, "%s", v3_last_error());
    CHECK(isfinite(a1) && isfinite(t1) && a1 > 0.9, "accuracy %g train %g", a1, t1);
    CHECK(linear_probe(Xtr, ytr, NTR, Xte, yte, NTE, D, C, 1e-4, 300, &a2, &t2) == 0, "%s", v3_last_error());
    CHECK(memcmp(&a1, &a2, sizeof a1) == 0 && memcmp(&t1, &t2, sizeof t1) == 0,
          "not deterministic: %.17g/%.17g vs %.17g/%.17g", a1, t1, a2, t2);
    /* all columns constant: every feature standardises to 0, only the bias is learnt, so every row gets the
     * majority class of the training set */
    for (int i = 0; i < NTR * D; i++) Xtr[i] = 1.5f;
    CHECK(linear_probe(Xtr, ytr, NTR, Xte, yte, NTE, D, C, 1e-4, 50, &a1, &t1) == 0, "%s", v3_last_error());
    int cnt[C] = {0};
    for (int i = 0; i < NTR; i++) cnt[ytr[i]]++;
    int maj = 0;
    for (int c = 1; c < C; c++) if (cnt[c] > cnt[maj]) maj = c;
    CHECK(close_to(t1, (double)cnt[maj] / NTR, 1e-15), "all-constant train accuracy %g vs majority share %g", t1,
          (double)cnt[maj] / NTR);
    ffree(Xtr);
    ffree(Xte);
    return 0;
}
