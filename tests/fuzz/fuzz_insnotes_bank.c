/* Feeds a bank.v3nb to insnotes_bank_load (datasets/insnotes_bank.c), as given and with its CRCs made right. */
#include "fuzz_util.h"

#include "insnotes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("bank.v3nb");
    uint8_t *fixed = fz_fix_crcs(data, size, 56, 60, 64);
    for (int pass = 0; pass < 1 + !!fixed; pass++) {
        fz_write(p, pass ? fixed : data, size);
        InsnotesBank b;
        if (insnotes_bank_load(p, &b) == 0) {
            int prog;
            (void)insnotes_bank_worst_tail(&b, &prog);
            insnotes_bank_free(&b);
        }
    }
    free(fixed);
    return 0;
}
