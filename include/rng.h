/* Seeded, serialisable random generator (xoshiro256**), so runs and resumes are reproducible.
 * The whole state is four uint64 words; checkpoints store it verbatim. */
#ifndef V3_RNG_H
#define V3_RNG_H
#include <stdint.h>

typedef struct { uint64_t s[4]; } Rng;

void rng_seed(Rng *r, uint64_t seed);          /* splitmix64 expansion of the seed */
uint64_t rng_u64(Rng *r);
uint32_t rng_below(Rng *r, uint32_t n);        /* uniform in [0, n), unbiased */
double rng_uniform(Rng *r);                    /* uniform in [0, 1), 53 bits */
float rng_uniform_range(Rng *r, float lo, float hi);
double rng_normal(Rng *r);                     /* standard normal (Box-Muller, no cached spare) */
void rng_permutation(Rng *r, int n, int *out); /* Fisher-Yates permutation of 0..n-1 */
/* Derive an independent stream from a parent seed and a tag (e.g. epoch number). */
uint64_t rng_derive_seed(uint64_t seed, uint64_t tag);
#endif
