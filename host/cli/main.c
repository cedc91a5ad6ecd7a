/* The `v3` command line: subcommands train, eval, transfer, export, import, info, data, bench, device. Exit codes: 0 success, 1 runtime error (bad
 * input files, NaN loss, ...), 2 usage error, 130 interrupted (checkpoint saved). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "config.h"
#include "cuda_backend.h"
#include "data_cli.h"
#include "memory_limit.h"
#include "model.h"
#include "ops.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: v3 <command> [options]\n"
            "commands:\n"
            "  train   --config FILE --out DIR [--steps N] [--resume] [--data DIR] [--device auto|ref|cpu|cuda]\n"
            "          [--math fp32|tf32|bf16] [--on-nan stop|rollback] [--max-rollbacks N]\n"
            "          [--set section.key=value ...] [--quiet]\n"
            "                                                        train V3 (GPU when present; default math fp32)\n"
            "  info    --config FILE [--set ...]                     architecture and parameter counts\n"
            "  data    insnotes|phonenums|synth|export-wav|info ...  make or inspect datasets (v3 data --help)\n"
            "  eval    --run DIR [--split test|val|ood] [--checkpoint FILE] ...\n"
            "                                                        measure a run: results.json, figures, audio\n"
            "  transfer --run DIR --content SAMPLE --style SAMPLE --out FILE.png|FILE.wav\n"
            "                                                        decode one sample's content in another's style\n"
            "  export  --run DIR --out FILE.safetensors [--checkpoint FILE] [--probe-out FILE]\n"
            "                                                        a run's weights as the authors' PyTorch state_dict\n"
            "  import  FILE.safetensors --config FILE --out DIR      a state_dict as a new run (v3 eval --run DIR)\n"
            "  bench   step --config FILE [--device D] [--steps N]   s/step, GFLOP/s, peak RSS of the training step\n"
            "  bench   loader --data DIR [--data DIR ...]            batches/s of each dataset's loading path\n"
            "  device                                                report the CUDA device, if any\n"
            "exit codes: 0 ok, 1 error, 2 usage error, 130 interrupted (checkpoint saved)\n");
}

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: v3 train --config FILE --out DIR [options]\n"
            "  --config FILE        YAML config (the authors' cfg_v3_*.yaml load unchanged)     required\n"
            "  --out DIR            run directory: log.jsonl, tb/, config.txt, checkpoints/      required\n"
            "  --data DIR           dataset directory, overrides the config's data_dir           default: data_dir\n"
            "  --steps N            total steps to train to                     default: epochs x steps per epoch\n"
            "  --resume             continue DIR from checkpoints/latest.v3ck, replaying exactly  default: off\n"
            "                       (none there yet: start at step 0)\n"
            "  --device D           auto | ref | cpu | cuda: the backend (auto: cuda when a GPU   default: auto\n"
            "                       is present, else cpu; ref: the reference ops, the specification)\n"
            "  --math M             fp32 | tf32 | bf16 (CUDA path; fp32 is exact)               default: fp32\n"
            "  --on-nan A           stop | rollback when a step's loss or gradient is non-finite default: stop\n"
            "                       (rollback: reload checkpoints/latest.v3ck, skip that batch, go on)\n"
            "  --max-rollbacks N    rollbacks a run may make before it stops with an error       default: 3\n"
            "  --set KEY=VALUE      override any config key, e.g. optimizer_config.lr=5e-4 (repeatable)\n"
            "  --quiet              no progress output (the final metrics line is still printed)\n"
            "  --max-memory SIZE    refuse configs estimated to need more (e.g. 8G)   default: this machine's memory\n"
            "exit codes: 0 ok, 1 error (one line naming file, field and expectation), 2 usage error,\n"
            "            130 interrupted by SIGINT/SIGTERM after saving a resumable checkpoint\n");
}

static void info_usage(FILE *f) {
    fprintf(f, "usage: v3 info --config FILE [--set KEY=VALUE ...]\n"
               "  prints the architecture and the parameter counts (total, encoder, decoder, trained, codebook)\n");
}

static int cmd_train(int argc, char **argv) {
    TrainOpts o;
    memset(&o, 0, sizeof o);
    o.steps = -1;
    o.device = "auto";
    o.math = "fp32";
    o.max_rollbacks = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--config") && has) o.config_path = argv[++i];
        else if (!strcmp(a, "--out") && has) o.out_dir = argv[++i];
        else if (!strcmp(a, "--data") && has) o.data_dir = argv[++i];
        else if (!strcmp(a, "--device") && has) o.device = argv[++i];
        else if (!strcmp(a, "--math") && has) o.math = argv[++i];
        else if (!strcmp(a, "--steps") && has) {
            char *end;
            errno = 0;
            o.steps = strtol(argv[++i], &end, 10);
            if (*end || !*argv[i] || o.steps < 0 || errno)
                return cli_usage_error("train", "--steps expects a non-negative integer, got", argv[i]);
            if (o.steps > V3_MAX_STEPS)
                return cli_usage_error("train", "--steps is over the limit of 1000000000 steps (V3_MAX_STEPS), got",
                                       argv[i]);
        } else if (!strcmp(a, "--max-memory") && has) {
            if (v3_parse_size(argv[++i], &v3_max_memory))
                return cli_usage_error("train", "--max-memory expects a size such as 512M or 8G, got", argv[i]);
        } else if (!strcmp(a, "--on-nan") && has) {
            const char *v = argv[++i];
            if (strcmp(v, "stop") && strcmp(v, "rollback"))
                return cli_usage_error("train", "--on-nan expects stop or rollback, got", v);
            o.on_nan_rollback = !strcmp(v, "rollback");
        } else if (!strcmp(a, "--max-rollbacks") && has) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || n < 0 || n > 1000000)
                return cli_usage_error("train", "--max-rollbacks expects a non-negative integer, got", argv[i]);
            o.max_rollbacks = (int)n;
        } else if (!strcmp(a, "--set") && has) {
            if (o.n_sets == 64) return cli_usage_error("train", "too many --set options at", argv[i + 1]);
            o.sets[o.n_sets++] = argv[++i];
        } else if (!strcmp(a, "--resume")) o.resume = 1;
        else if (!strcmp(a, "--quiet")) v3_verbose = 0;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { train_usage(stdout); return 0; }
        else return cli_usage_error("train", "unknown or incomplete option", a);
    }
    if (!o.config_path) return cli_usage_error("train", "missing required option", "--config FILE");
    if (!o.out_dir) return cli_usage_error("train", "missing required option", "--out DIR");
    int rc = train_run(&o);
    if (rc < 0) return cli_fail();
    return rc == 1 ? 130 : 0;
}

int cmd_bench(int argc, char **argv); /* host/cli/bench_loader.c */
int cmd_eval(int argc, char **argv);     /* host/cli/eval_cli.c */
int cmd_transfer(int argc, char **argv); /* host/cli/eval_cli.c */
int cmd_export(int argc, char **argv);   /* host/cli/weights_cli.c */
int cmd_import(int argc, char **argv);   /* host/cli/weights_cli.c */

static int cmd_info(int argc, char **argv) {
    const char *path = NULL, *sets[64];
    int ns = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && ns < 64) sets[ns++] = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { info_usage(stdout); return 0; }
        else return cli_usage_error("info", "unknown or incomplete option", argv[i]);
    }
    if (!path) return cli_usage_error("info", "missing required option", "--config FILE");
    Config c;
    config_defaults(&c);
    if (config_load(path, &c)) return cli_fail();
    for (int i = 0; i < ns; i++)
        if (config_set(&c, sets[i])) return cli_fail();
    Model *m = model_build(&c, 0);
    if (!m) return cli_fail();
    model_print_info(m, stdout);
    model_free(m);
    return 0;
}

static int cmd_device(void) {
    char desc[256];
    int n = cuda_probe(desc, sizeof desc);
    if (n > 0) printf("CUDA: %d device(s); device 0: %s\n", n, desc);
    else printf("CUDA: unavailable: %s\n", desc);
    return 0;
}

int main(int argc, char **argv) {
    cpu_gemm_init();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "data")) return cmd_data(argc - 1, argv + 1);
    if (!strcmp(cmd, "device")) return cmd_device();
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "transfer")) return cmd_transfer(argc - 1, argv + 1);
    if (!strcmp(cmd, "export")) return cmd_export(argc - 1, argv + 1);
    if (!strcmp(cmd, "import")) return cmd_import(argc - 1, argv + 1);
    return cli_usage_error("", "unknown command", cmd);
}
