/* Feeds a PhoneNums index.tsv to phonenums_open (datasets/phonenums_source.c), with stub blank pages. */
#include "fuzz_util.h"

#include "datasource.h"
#include "phonenums.h"

/* Linked with -Wl,--wrap=png_read_rgb (Makefile; fuzz_png fuzzes the real one): every page is blank. */
int __wrap_png_read_rgb(const char *path, int ew, int eh, uint8_t **pix, int *w, int *h) {
    *pix = xcalloc((size_t)ew * eh * 3, 1);
    *w = ew, *h = eh;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *idx = fz_path("index.tsv");
    fz_write(idx, data, size);
    const char *dir = fz_dir; /* index.tsv lives there */
    static const char *splits[] = {"test", "train", "5_shot"};
    static const int nfrag[] = {10, 3, 1};
    for (int s = 0; s < 3; s++) {
        DataSource ds;
        if (phonenums_open(dir, splits[s], nfrag[s], &ds)) {
            if (s == 0) break; /* not a valid index: skip the other splits */
            continue;
        }
        uint64_t i = ds.n_samples - 1, aug = 12345;
        int32_t content[10], style[10];
        float *x = malloc(sizeof(float) * datasource_sample_elems(&ds));
        (void)ds.get_batch(&ds, &i, &aug, 1, x, content, style);
        free(x);
        datasource_close(&ds);
    }
    return 0;
}
