/* Shared pieces of the subcommands' argument handling: the usage-error and error exits every `v3 CMD` uses,
 * so the messages and exit codes (1 error, 2 usage error) read the same everywhere. */
#ifndef V3_CLI_H
#define V3_CLI_H

/* "v3 CMD: MSG 'ARG' (see v3 CMD --help)" on stderr; returns 2. */
int cli_usage_error(const char *cmd, const char *msg, const char *arg);
/* "v3: error: <v3_last_error()>" on stderr; returns 1. */
int cli_fail(void);
#endif
