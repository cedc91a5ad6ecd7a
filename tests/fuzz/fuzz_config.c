/* Feeds a YAML config to config_load (host/formats/config.c) and config_validate; config_save's file must load back equal. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("config.yaml");
    fz_write(p, data, size);
    Config c;
    config_defaults(&c);
    if (config_load(p, &c)) return 0;
    if (config_validate(&c) == 0)
        for (int e = 0; e < 3; e++) (void)config_lr_factor(&c, e * 50);
    fz_config_round_trip("fuzz_config", &c);
    return 0;
}
