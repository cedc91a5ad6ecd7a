/* Disentanglement measurements on collected embeddings (spec v3.md §6): retrieval precision/recall, codebook
 * confusion, the authors' purity, a one-to-one (Hungarian) accuracy, linear probes and the zero-shot OOD rule.
 * Pure C on host arrays; everything deterministic. */
#ifndef V3_EVAL_METRICS_H
#define V3_EVAL_METRICS_H
#include <stdint.h>

/* ---- retrieval precision/recall (Euclidean nearest neighbours) ----
 * PR_UPSTREAM (default; the authors' Apr-2026 eval_utils): the query is excluded from its own ranking;
 *   k list = {1,2,5,10,20,50,100,200,500} U {round(f*M) : f in .001,.002,.005,.01,.02,.05,.075,.1,.2,.3,.4,.5,
 *   .75,1}, M = (largest class size) - 1; every k clipped to <= N-1, k >= 1, duplicates removed, ascending;
 *   #positives clamped to >= 1.
 * PR_PAPER_ERA (flag): the query is ranked too (distance 0, so it sits in its own top-k and P@1 ~ 0);
 *   k list = {1,2,5,10,20,50,75,100,200,300,400,500,750,1000,1500,2000,2500,3000}, k > N takes all N.
 * Positives of query i: the other fragments with the same label. P@k = |topk & pos|/k, R@k = |topk & pos|/|pos|,
 * F1 = 2PR/(P+R+1e-8); each averaged over queries. AUC = sum_{t>=1} (R_t - R_{t-1}) * P_t over the k list
 * (right Riemann sum with no segment from R = 0). Ties in distance are broken by the lower fragment index.
 * Fragments with label < 0 are neither queries nor positives (they are still ranked). */
typedef enum { PR_UPSTREAM = 0, PR_PAPER_ERA = 1 } PrVariant;
#define PR_MAX_K 48
typedef struct {
    int n_k;
    int k[PR_MAX_K];
    double P[PR_MAX_K], R[PR_MAX_K], F1[PR_MAX_K];
    double auc, f1_min, f1_max;
    int n_queries;
} PrResult;
/* emb [N, d] row-major. Returns 0, or -1 with v3_last_error() (N < 2, no query with a positive). */
int retrieval_pr(const float *emb, int N, int d, const int32_t *label, PrVariant variant, PrResult *out);

/* ---- codebook confusion ----
 * M[a*C + c] = number of fragments on atom a with content label c (labels outside [0,C) are skipped). */
void confusion_counts(const int *atom, const int32_t *label, int N, int K, int C, int64_t *M);
/* The authors' "codebook accuracy": rows normalised by (row sum + 1e-7), then sum_a max_c / sum of all entries,
 * i.e. the unweighted mean purity of the atoms that were used. 0 when nothing was counted. */
double purity_authors(const int64_t *M, int K, int C);
/* Fragment-weighted purity: sum_a max_c M[a,c] / sum M (each atom votes its majority class). */
double purity_weighted(const int64_t *M, int K, int C);
/* Assignment maximising sum of w[r*cols + c] with each row and each column used at most once (rows or columns
 * left over when rows != cols stay unassigned). assign[r] = column or -1. Returns the maximum total.
 * O(n^3) Hungarian algorithm (Kuhn-Munkres with potentials) on the padded square matrix. */
double hungarian_max(const double *w, int rows, int cols, int *assign);
/* One-to-one accuracy: the fraction of fragments on atoms whose Hungarian-assigned class is their label
 * (atoms left unassigned when K > C count as wrong). atom_class[K] receives the assignment (-1 = none). */
double one_to_one_accuracy(const int64_t *M, int K, int C, int *atom_class);
/* One-to-one accuracy within each style (ours, issue 18): the Hungarian map fitted separately on the fragments of
 * each style label s in [0,S), and the fraction of all counted fragments it gets right (styles weighted by their
 * fragments). Far above one_to_one_accuracy it means each style has its own atom -> class permutation: every page
 * still holds one atom per class, which is all the V3 statistics can see. per_style[S] (if not NULL) gets each
 * style's accuracy (NAN for a style with no fragments). Fragments with a label or atom out of range are skipped. */
double one_to_one_within_styles(const int *atom, const int32_t *content, const int32_t *style, int N, int K, int C,
                                int S, double *per_style);
/* Majority class of each atom (lowest class on ties; -1 for unused atoms). */
void atom_majority(const int64_t *M, int K, int C, int *atom_class);

/* ---- zero-shot OOD (authors' rule) ----
 * perm = atoms sorted by their majority class (stable: ties keep atom order; unused atoms, class -1, first);
 * a fragment counts correct iff its content label equals the position of its atom in perm. */
void zero_shot_perm(const int *atom_class, int K, int *rank_of_atom);
double zero_shot_accuracy(const int *atom, const int32_t *label, int N, const int *rank_of_atom);
/* Same with an explicit atom -> class map (majority or Hungarian): correct iff atom_class[atom] == label. */
double mapped_accuracy(const int *atom, const int32_t *label, int N, const int *atom_class);

/* ---- linear probe ----
 * Multinomial logistic regression on standardised features (train mean/std; zero-variance columns left at 0),
 * L2 weight `l2` (e.g. 1e-4), full-batch optimisation for `iters` iterations (e.g. 300) from zero weights;
 * deterministic. Fitted on (Xtr, ytr), accuracy measured on (Xte, yte). Samples with label < 0 or >= n_classes
 * are skipped. Returns 0 and *acc_test (and *acc_train if not NULL), or -1 with v3_last_error(). */
int linear_probe(const float *Xtr, const int32_t *ytr, int Ntr, const float *Xte, const int32_t *yte, int Nte, int d,
                 int n_classes, double l2, int iters, double *acc_test, double *acc_train);
#endif
