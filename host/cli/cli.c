/* Shared usage-error and error exits of the subcommands (include/cli.h). */
#include <stdio.h>

#include "cli.h"
#include "common.h"

int cli_usage_error(const char *cmd, const char *msg, const char *arg) {
    fprintf(stderr, "v3 %s: %s '%s' (see v3 %s --help)\n", cmd, msg, arg ? arg : "", cmd);
    return 2;
}

int cli_fail(void) {
    fprintf(stderr, "v3: error: %s\n", v3_last_error());
    return 1;
}
