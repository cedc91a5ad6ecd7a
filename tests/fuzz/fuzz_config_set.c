/* Feeds --set KEY=VALUE lines to config_set (host/formats/config.c); config_save's file must load back equal. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1), *line = text, *nl;
    memcpy(text, data, size);
    text[size] = 0;
    Config c;
    config_defaults(&c);
    do {
        if ((nl = strchr(line, '\n'))) *nl = 0;
        (void)config_set(&c, line);
        if (nl) line = nl + 1;
    } while (nl);
    free(text);
    (void)config_validate(&c);
    fz_config_round_trip("fuzz_config_set", &c);
    return 0;
}
