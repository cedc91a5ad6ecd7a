/* Feeds `--set section.key=value` overrides (one per input line) to config_set (host/config.c), then validates. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *null;
    if (!null) null = fopen("/dev/null", "w"), v3_verbose = -1;
    char *text = malloc(size + 1), *line = text, *nl;
    memcpy(text, data, size);
    text[size] = 0;
    Config c;
    config_defaults(&c);
    int ok = 1;
    do {
        if ((nl = strchr(line, '\n'))) *nl = 0;
        ok &= config_set(&c, line) == 0;
        if (nl) line = nl + 1;
    } while (nl);
    if (ok && config_validate(&c) == 0) config_print(&c, null);
    free(text);
    return 0;
}
