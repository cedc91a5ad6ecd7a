/* Feeds `--set section.key=value` overrides (one per input line) to config_set (host/config.c), then
 * config_validate; the result must survive config_save and config_load (a run's config.yaml) unchanged. */
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
