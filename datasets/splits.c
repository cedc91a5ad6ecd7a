/* Split assignment and membership (include/splits.h). */
#include "splits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"

void splits_assign(int n, uint64_t seed, int8_t *split) {
    int *perm = xmalloc(sizeof(int) * (n > 0 ? n : 1));
    Rng r;
    rng_seed(&r, rng_derive_seed(seed, 0x5b117ull));
    rng_permutation(&r, n, perm);
    int n_val = n / 10, n_test = n / 10;
    for (int i = 0; i < n; i++) {
        int f = perm[i];
        split[f] = i < n_val ? SPLIT_VAL : i < n_val + n_test ? SPLIT_TEST : SPLIT_TRAIN;
    }
    free(perm);
}

const char *split_name(int s) { return s == SPLIT_VAL ? "val" : s == SPLIT_TEST ? "test" : "train"; }

void split_token_ood(int rank, char *buf, int cap) { snprintf(buf, (size_t)cap, "ood%d", rank); }

int split_contains(const char *split, const char *token, int ood) {
    int shots = 0;
    if (!strcmp(split, "1_shot")) shots = 1;
    else if (!strcmp(split, "5_shot")) shots = 5;
    else if (!strcmp(split, "10_shot")) shots = 10;
    else if (strcmp(split, "train") && strcmp(split, "val") && strcmp(split, "test"))
        return v3_error("split '%s': expected train, val, test, 1_shot, 5_shot or 10_shot", split);
    if (!ood) {
        if (shots) return v3_error("split '%s' exists only in OOD sets (generated with --ood); expected train, val "
                                   "or test", split);
        return strcmp(split, token) == 0;
    }
    if (!strcmp(split, "train") || !strcmp(split, "val"))
        return v3_error("split '%s': an OOD set has the splits 1_shot, 5_shot, 10_shot and test", split);
    if (strncmp(token, "ood", 3)) return 0;
    int rank = atoi(token + 3);
    return shots ? rank < shots : rank >= 10;
}
