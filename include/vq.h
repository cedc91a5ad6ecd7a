/* Vector quantiser as the authors use it (vector-quantize-pytorch 1.18.0 VectorQuantize, spec v3.md §4):
 * Euclidean nearest codeword (lowest index on ties), straight-through estimator, commitment MSE, EMA codebook
 * with Laplace smoothing, k-means initialisation on the first forward call, dead-code replacement. */
#ifndef V3_VQ_H
#define V3_VQ_H
#include "rng.h"

typedef struct {
    int K, d;
    float decay;        /* lambda */
    float threshold;    /* dead-code threshold T (0 = off) */
    int kmeans_iters;
    int revive_largest; /* ours (model_config.revive_from: largest): dead codes restart inside the batch's largest
                           atom (vq_revive_rows); 0: at uniform random rows of the batch, as the library does */
    float *embed;       /* [K, d] */
    float *embed_avg;   /* [K, d] */
    float *cluster_size;/* [K] */
    float initted;      /* 0 or 1; a float so it lives in the checkpointed buffer table like the others */
} VQ;

typedef enum { VQ_TRAIN = 0, VQ_EVAL = 1, VQ_FROZEN = 2 } VqMode;

void vq_init(VQ *vq, int K, int d, float decay, float threshold, int kmeans_iters);
void vq_free(VQ *vq);

/* The squared distance sum (x - e)^2 in double, term by term in order: the one vq_assign compares (and the cpu
 * backend's search where float32 cannot decide). */
double vq_distance(const float *x, const float *e, int d);
/* Nearest codeword of every row of x [N, d] (squared distance in double, lowest index wins ties). */
void vq_assign(const float *embed, int K, int d, int N, const float *x, int *ind);

/* Forward. Initialises the codebook by k-means on x if not yet done (any mode). Writes ind [N] and
 * q [N, d] = embed[ind] with the codebook *before* this call's update, and returns the commitment loss
 * mean((q - x)^2) (0 in VQ_EVAL). VQ_TRAIN then updates the EMA state and replaces dead codes. */
double vq_forward(VQ *vq, int N, const float *x, float *q, int *ind, VqMode mode, Rng *rng);

/* k-means init (exposed for tests). */
void vq_kmeans_init(VQ *vq, int N, const float *x, Rng *rng);
/* EMA update and dead-code replacement from this batch's assignment (exposed for tests). */
void vq_ema_update(VQ *vq, int N, const float *x, const int *ind, Rng *rng);

/* Dead-code replacement: code dead[i] takes row rows[i] of x [., d], cluster_size = threshold, embed_avg =
 * threshold * embed (vq_ema_update's, and every backend's vq_revive). */
void vq_revive_codes(int d, int ndead, const int *dead, const int *rows, const float *x, float threshold,
                     float *embed, float *embed_avg, float *cluster_size);

/* K distinct random rows of N (a randperm prefix) when N >= K, else K draws with replacement: the draws the
 * k-means init and the dead-code replacement make (shared with the GPU path, whose host makes the same draws). */
void vq_sample_rows(int N, int K, int *rows, Rng *rng);

/* The rows the ndead dead codes restart at. largest = 0: vq_sample_rows (the library's uniform draw). largest = 1
 * (ours): each dead code in turn takes a random row of the live atom with the most rows in this batch (ind [N],
 * K atoms; dead codes excluded, lowest index on ties, no row twice), and that atom's count is then halved, so a
 * second dead code goes to the next largest. A merged atom (two classes) is the largest, so the revived code
 * splits it instead of a random, healthy one. Falls back to a uniform draw of an unused row when no live atom has
 * one left. */
void vq_revive_rows(int N, int ndead, const int *dead, const int *ind, int K, int largest, int *rows, Rng *rng);

/* Codebook usage from the last EMA counts: perplexity exp(H(p)) and the number of codes with cluster_size < T. */
double vq_perplexity(const VQ *vq);
#endif
