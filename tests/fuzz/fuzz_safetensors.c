/* Feeds a .safetensors file to st_read (host/formats/safetensors.c), then weights_import into the fuzz model. */
#include "fuzz_util.h"

#include "safetensors.h"
#include "weights_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Model *m = fz_model();
    const char *p = fz_path("in.safetensors");
    fz_write(p, data, size);
    StFile f;
    if (st_read(p, &f)) return 0;
    (void)st_meta(&f, "format");
    (void)weights_import(m, &f);
    st_free(&f);
    return 0;
}
