/* Feeds a YAML config file to config_load (host/config.c), then config_validate, config_print and the lr schedule. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *null;
    const char *p = fz_path("config.yaml");
    if (!null) null = fopen("/dev/null", "w");
    fz_write(p, data, size);
    Config c;
    config_defaults(&c);
    if (config_load(p, &c) == 0) {
        if (config_validate(&c) == 0)
            for (int e = 0; e < 3; e++) (void)config_lr_factor(&c, e * 50);
        config_print(&c, null);
    }
    return 0;
}
