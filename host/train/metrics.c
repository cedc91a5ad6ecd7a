/* Small evaluation metrics used during training (the full `v3 eval` suite is a later issue). */
#include <stdlib.h>

#include "common.h"
#include "train.h"

double codebook_purity(const int *ind, const int32_t *content, int N, int K, int n_content) {
    int *M = xcalloc((size_t)K * n_content, sizeof(int));
    for (int i = 0; i < N; i++)
        if (content[i] >= 0 && content[i] < n_content) M[(size_t)ind[i] * n_content + content[i]]++;
    long good = 0, total = 0;
    for (int k = 0; k < K; k++) {
        int best = 0;
        for (int c = 0; c < n_content; c++) {
            if (M[(size_t)k * n_content + c] > best) best = M[(size_t)k * n_content + c];
            total += M[(size_t)k * n_content + c];
        }
        good += best;
    }
    free(M);
    return total ? (double)good / total : 0.0;
}
