/* t-SNE (van der Maaten & Hinton 2008) into 2-D, exact O(N^2) gradients with OpenMP, seeded: for maps of a few
 * thousand embeddings. Settings follow scikit-learn's defaults where they matter: perplexity 30, early
 * exaggeration 12 for the first 250 iterations, momentum 0.5 then 0.8, learning rate max(N / 12 / 4, 50),
 * per-coordinate gains, initialisation from the first two principal components scaled to std 1e-4. */
#ifndef V3_TSNE_H
#define V3_TSNE_H
#include <stdint.h>

typedef struct {
    double perplexity;   /* 30 */
    int iters;           /* 1000 */
    uint64_t seed;       /* used for tie-breaking noise in the initialisation only */
} TsneOpts;
void tsne_defaults(TsneOpts *o);
/* X [N, d] row-major -> Y [N, 2]. N >= 4 and perplexity < N are required (else -1 with v3_last_error()).
 * Calls progress(it, iters, kl, ctx) every 50 iterations when not NULL. */
int tsne_2d(const float *X, int N, int d, const TsneOpts *o, float *Y,
            void (*progress)(int it, int iters, double kl, void *ctx), void *ctx);
#endif
