/* The `v3 data` subcommand: generate synthetic datasets and inspect .v3ds files. */
#ifndef V3_DATA_CLI_H
#define V3_DATA_CLI_H

/* argv[0] is "data", argv[1] the dataset kind (synth, info, ...). Returns the process exit code:
 * 0 success, 1 runtime error (message "v3: error: ..." on stderr), 2 usage error. */
int cmd_data(int argc, char **argv);
#endif
