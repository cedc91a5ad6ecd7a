/* Dataset splits shared by the generators (the authors' rules, v3.md section 1).
 * In-distribution sets: 80/10/10 by file. The files are shuffled with a seeded permutation; the first
 * floor(n/10) go to val, the next floor(n/10) to test, the rest to train.
 * OOD sets: every file has a rank within its style (its generation order among files of that style).
 * k_shot (k = 1, 5, 10) holds the files of rank < k (so 1_shot is inside 5_shot, inside 10_shot);
 * test holds the files of rank >= 10, i.e. no file used for few-shot adaptation. */
#ifndef V3_SPLITS_H
#define V3_SPLITS_H
#include <stdint.h>

enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1, SPLIT_TEST = 2 };

/* split[i] in {SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST} for files 0..n-1. Deterministic given seed. */
void splits_assign(int n, uint64_t seed, int8_t *split);
const char *split_name(int s);                  /* "train", "val", "test" */

/* The split token stored for a file in a dataset index: "train", "val", "test" for in-distribution files,
 * "ood<rank>" (e.g. "ood0", "ood12") for OOD files. split_token_ood writes the latter into buf. */
void split_token_ood(int rank, char *buf, int cap);

/* Is a file with index token `token` in split `split` (train, val, test, 1_shot, 5_shot, 10_shot)?
 * Returns 1/0, or -1 with v3_last_error() set when the split name is unknown or does not apply to the set
 * (train/val of an OOD set, k_shot of an in-distribution set). */
int split_contains(const char *split, const char *token, int ood);
#endif
