/* Feeds a .v3ck file to checkpoint_peek/checkpoint_load (host/formats/checkpoint.c), as given and with its CRCs made right. */
#include "fuzz_util.h"

#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Model *m = fz_model();
    const char *p = fz_path("in.v3ck");
    CkptMeta meta;
    uint8_t *fixed = fz_fix_crcs(data, size, 120, 116, V3CK_HEADER_BYTES);
    for (int pass = 0; pass < 1 + !!fixed; pass++) {
        fz_write(p, pass ? fixed : data, size);
        (void)checkpoint_peek(p, &meta);
        (void)checkpoint_load(p, m, &meta);
    }
    free(fixed);
    return 0;
}
