/* Codebook confusion and the atom -> class maps built from it (spec v3.md §6): the authors' purity ("codebook
 * accuracy"), the fragment-weighted purity, a one-to-one accuracy through the Hungarian algorithm, and the
 * authors' zero-shot OOD rule. Everything here is exact integer counting or small O(n^3) work. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval_metrics.h"

void confusion_counts(const int *atom, const int32_t *label, int N, int K, int C, int64_t *M) {
    memset(M, 0, sizeof(int64_t) * (size_t)(K > 0 ? K : 0) * (size_t)(C > 0 ? C : 0));
    for (int i = 0; i < N; i++) {
        int a = atom[i], c = label[i];
        if (a < 0 || a >= K || c < 0 || c >= C) continue; /* no atom or no usable label: not counted */
        M[(size_t)a * C + c]++;
    }
}

double purity_authors(const int64_t *M, int K, int C) {
    /* Literal transcription: normalise each row by (sum + 1e-7), then sum of row maxima over sum of all entries.
     * A used row contributes ~1 to the denominator, an unused row 0, hence "mean purity of the used atoms". */
    double num = 0, den = 0;
    for (int a = 0; a < K; a++) {
        const int64_t *r = M + (size_t)a * C;
        int64_t s = 0, mx = 0;
        for (int c = 0; c < C; c++) {
            s += r[c];
            if (r[c] > mx) mx = r[c];
        }
        double z = (double)s + 1e-7;
        num += (double)mx / z;
        den += (double)s / z;
    }
    return den > 0 ? num / den : 0.0;
}

double purity_weighted(const int64_t *M, int K, int C) {
    int64_t num = 0, den = 0;
    for (int a = 0; a < K; a++) {
        const int64_t *r = M + (size_t)a * C;
        int64_t mx = 0;
        for (int c = 0; c < C; c++) {
            den += r[c];
            if (r[c] > mx) mx = r[c];
        }
        num += mx;
    }
    return den > 0 ? (double)num / (double)den : 0.0;
}

/* Kuhn-Munkres with row/column potentials (shortest augmenting paths), minimising cost on an n x n matrix.
 * Rows are added one at a time; each addition grows a Dijkstra-like tree over columns until a free column is
 * reached, then flips the path. Column 0 is a virtual start column (1-based arrays). O(n^3). */
static void hungarian_min(const double *cost, int n, int *row_of_col /* [n+1], 1-based rows, 0 = free */) {
    double *u = xcalloc((size_t)n + 1, sizeof(double)), *v = xcalloc((size_t)n + 1, sizeof(double));
    double *minv = xmalloc(sizeof(double) * ((size_t)n + 1));
    int *way = xcalloc((size_t)n + 1, sizeof(int));
    char *used = xmalloc((size_t)n + 1);
    for (int j = 0; j <= n; j++) row_of_col[j] = 0;
    for (int i = 1; i <= n; i++) {
        row_of_col[0] = i;
        int j0 = 0;
        for (int j = 0; j <= n; j++) { minv[j] = INFINITY; used[j] = 0; }
        do {
            used[j0] = 1;
            int i0 = row_of_col[j0], j1 = 0;
            double delta = INFINITY;
            for (int j = 1; j <= n; j++) {
                if (used[j]) continue;
                double cur = cost[(size_t)(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
                if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
                if (minv[j] < delta) { delta = minv[j]; j1 = j; }
            }
            if (j1 == 0) { /* cannot happen with finite costs; guard against NaN input */
                for (int j = 1; j <= n; j++) if (!used[j]) { j1 = j; break; }
                delta = 0;
            }
            for (int j = 0; j <= n; j++) {
                if (used[j]) { u[row_of_col[j]] += delta; v[j] -= delta; }
                else minv[j] -= delta;
            }
            j0 = j1;
        } while (row_of_col[j0] != 0);
        do { /* flip the augmenting path */
            int j1 = way[j0];
            row_of_col[j0] = row_of_col[j1];
            j0 = j1;
        } while (j0);
    }
    free(u); free(v); free(minv); free(way); free(used);
}

double hungarian_max(const double *w, int rows, int cols, int *assign) {
    for (int r = 0; r < rows; r++) assign[r] = -1;
    if (rows <= 0 || cols <= 0) return 0.0;
    /* Pad to n x n with zero-weight dummies; minimise (max - w) so all costs are >= 0. A real row matched to a
     * dummy column (or a dummy row to a real column) is "left over". */
    int n = rows > cols ? rows : cols;
    double mx = -INFINITY;
    for (size_t t = 0; t < (size_t)rows * cols; t++) if (w[t] > mx) mx = w[t];
    double *cost = xmalloc(sizeof(double) * (size_t)n * n);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++)
            cost[(size_t)r * n + c] = (r < rows && c < cols) ? mx - w[(size_t)r * cols + c] : 0.0;
    /* Dummy entries must not be preferred over real ones in a way that changes the real optimum: with a padded
     * square matrix exactly min(rows, cols) real pairs are matched whatever the dummy cost, so any constant
     * works; 0 keeps the potentials small. */
    int *row_of_col = xmalloc(sizeof(int) * ((size_t)n + 1));
    hungarian_min(cost, n, row_of_col);
    double total = 0;
    for (int c = 1; c <= n; c++) {
        int r = row_of_col[c] - 1;
        if (r >= 0 && r < rows && c - 1 < cols) {
            assign[r] = c - 1;
            total += w[(size_t)r * cols + (c - 1)];
        }
    }
    free(cost);
    free(row_of_col);
    return total;
}

double one_to_one_accuracy(const int64_t *M, int K, int C, int *atom_class) {
    for (int a = 0; a < K; a++) atom_class[a] = -1;
    if (K <= 0 || C <= 0) return 0.0;
    double *w = xmalloc(sizeof(double) * (size_t)K * C);
    int64_t tot = 0;
    for (size_t t = 0; t < (size_t)K * C; t++) { w[t] = (double)M[t]; tot += M[t]; }
    hungarian_max(w, K, C, atom_class);
    free(w);
    if (tot == 0) return 0.0;
    int64_t hit = 0; /* recount in integers: exact whatever the potentials did */
    for (int a = 0; a < K; a++)
        if (atom_class[a] >= 0) hit += M[(size_t)a * C + atom_class[a]];
    return (double)hit / (double)tot;
}

double one_to_one_within_styles(const int *atom, const int32_t *content, const int32_t *style, int N, int K, int C,
                                int S, double *per_style) {
    if (K <= 0 || C <= 0 || S <= 0) return 0.0;
    int64_t *M = xmalloc(sizeof(int64_t) * (size_t)K * C);
    int *ac = xmalloc(sizeof(int) * (size_t)K), *sub = xmalloc(sizeof(int) * (size_t)(N > 0 ? N : 1));
    int32_t *lab = xmalloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    double hit = 0;
    int64_t tot = 0;
    for (int s = 0; s < S; s++) {
        int n = 0;
        for (int i = 0; i < N; i++)
            if (style[i] == s && atom[i] >= 0 && atom[i] < K && content[i] >= 0 && content[i] < C)
                sub[n] = atom[i], lab[n] = content[i], n++;
        if (per_style) per_style[s] = NAN;
        if (n == 0) continue;
        confusion_counts(sub, lab, n, K, C, M);
        double acc = one_to_one_accuracy(M, K, C, ac); /* every one of the n fragments is counted in M */
        if (per_style) per_style[s] = acc;
        hit += acc * n, tot += n;
    }
    free(M), free(ac), free(sub), free(lab);
    return tot ? hit / (double)tot : 0.0;
}

void atom_majority(const int64_t *M, int K, int C, int *atom_class) {
    for (int a = 0; a < K; a++) {
        const int64_t *r = M + (size_t)a * C;
        int best = -1;
        int64_t mx = 0;
        for (int c = 0; c < C; c++)
            if (r[c] > mx) { mx = r[c]; best = c; } /* strict >: lowest class wins ties; all-zero row stays -1 */
        atom_class[a] = best;
    }
}

void zero_shot_perm(const int *atom_class, int K, int *rank_of_atom) {
    /* Stable sort of atoms by class (-1 first), done as a counting pass: position = #atoms with a smaller class
     * + #earlier atoms with the same class. O(K^2), K is a codebook size. */
    for (int a = 0; a < K; a++) {
        int pos = 0;
        for (int b = 0; b < K; b++)
            if (atom_class[b] < atom_class[a] || (atom_class[b] == atom_class[a] && b < a)) pos++;
        rank_of_atom[a] = pos;
    }
}

/* Fragments with label < 0 (no label) are left out of both accuracies; a fragment with atom < 0 counts wrong. */
double zero_shot_accuracy(const int *atom, const int32_t *label, int N, const int *rank_of_atom) {
    int64_t hit = 0, den = 0;
    for (int i = 0; i < N; i++) {
        if (label[i] < 0) continue;
        den++;
        if (atom[i] >= 0 && rank_of_atom[atom[i]] == label[i]) hit++;
    }
    return den ? (double)hit / (double)den : 0.0;
}

double mapped_accuracy(const int *atom, const int32_t *label, int N, const int *atom_class) {
    int64_t hit = 0, den = 0;
    for (int i = 0; i < N; i++) {
        if (label[i] < 0) continue;
        den++;
        if (atom[i] >= 0 && atom_class[atom[i]] == label[i]) hit++;
    }
    return den ? (double)hit / (double)den : 0.0;
}
