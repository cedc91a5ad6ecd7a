/* The `v3 data` subcommand: generate synthetic datasets and inspect .v3ds files. */
#ifndef V3_DATA_CLI_H
#define V3_DATA_CLI_H
#include <stdint.h>

/* argv[0] is "data", argv[1] the dataset kind (synth, info, ...). Returns the process exit code:
 * 0 success, 1 runtime error (message "v3: error: ..." on stderr), 2 usage error. */
int cmd_data(int argc, char **argv);

/* Shared by the data_*.c command files: "v3 data: <msg> (see v3 data --help)" and 2; "v3: error: <last error>"
 * and 1; strict number parsing (-1 after printing the usage error). */
int data_usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int data_fail(void);
int data_parse_int(const char *flag, const char *s, int *out);
int data_parse_u64(const char *flag, const char *s, uint64_t *out);
int data_parse_float(const char *flag, const char *s, float *out);
/* The real datasets (datasets/data_real_cli.c): argv[1] is the kind. */
int cmd_data_insnotes(int argc, char **argv);
int cmd_data_phonenums(int argc, char **argv);
int cmd_data_export_wav(int argc, char **argv);
int cmd_data_info_dir(const char *dir);
#endif
