/* Feeds a .v3ds file to dataset_load (datasets/v3ds.c), as given and with its CRCs made right. */
#include "fuzz_util.h"

#include "dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("in.v3ds");
    uint8_t *fixed = fz_fix_crcs(data, size, 48, 52, V3DS_HEADER_BYTES);
    for (int pass = 0; pass < 1 + !!fixed; pass++) {
        fz_write(p, pass ? fixed : data, size);
        Dataset d;
        if (dataset_load(p, &d)) continue;
        int last = (int)d.n_samples - 1;
        float *x = malloc(sizeof(float) * dataset_sample_elems(&d));
        int32_t *lab = malloc(sizeof(int32_t) * d.n_frag);
        dataset_gather(&d, &last, 1, x, lab, lab);
        free(x);
        free(lab);
        dataset_free(&d);
    }
    free(fixed);
    return 0;
}
