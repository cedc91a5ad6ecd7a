/* Command lines of `v3 eval` and `v3 transfer` (exit codes as the rest of v3: 0 ok, 1 error, 2 usage error). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "eval.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: v3 eval --run DIR [options]\n"
            "  measures a trained run and writes DIR/eval/results.json, figures (PNG) and, for InsNotes, audio (WAV)\n"
            "  --run DIR            a `v3 train --out` directory (config.yaml, checkpoints/, log.jsonl)   required\n"
            "  --checkpoint FILE    checkpoint to evaluate            default: lowest validation loss, else latest\n"
            "  --split S            test | val | ood (the OOD set's test split)                   default: test\n"
            "  --data DIR           dataset directory, overrides the run's data_dir             default: data_dir\n"
            "  --ood-data DIR       OOD dataset for zero-/few-shot accuracy              default: <data_dir>-ood if present\n"
            "  --out DIR            output directory               default: DIR/eval (test), DIR/eval-val, DIR/eval-ood\n"
            "  --pr-paper-era       retrieval with the query in its own ranking (the paper-era code)  default: off\n"
            "  --tsne-points N      fragments per t-SNE map (seeded subsample; 0: no t-SNE)       default: 2000\n"
            "  --sheet-styles N     style rows of the codebook sheet (and audio grid)              default: 8\n"
            "  --gl-iters N         Griffin-Lim iterations for the InsNotes audio                  default: 32\n"
            "  --probe-samples N    train samples encoded for the linear probes (0: all; -1: none) default: 0\n"
            "  --no-few-shot        skip the few-shot OOD adaptation                               default: run it\n"
            "  --no-figures         no PNG figures                                                 default: draw\n"
            "  --no-audio           no InsNotes WAV files                                          default: write\n"
            "  --device D           auto | cpu | cuda: where Griffin-Lim runs (the network runs on the CPU)\n"
            "                                                                                      default: auto\n"
            "  --quiet              no progress output (the table is still printed)\n"
            "exit codes: 0 ok, 1 error (missing checkpoint, model/config mismatch, bad data), 2 usage error\n");
}

static void transfer_usage(FILE *f) {
    fprintf(f,
            "usage: v3 transfer --run DIR --content SAMPLE --style SAMPLE --out FILE [options]\n"
            "  decodes the content codes of one sample with the style of another\n"
            "  SAMPLE               SPLIT:INDEX (e.g. test:3, train:0) or INDEX (test split)\n"
            "  --out FILE           .png (fragments side by side) or .wav (InsNotes, Griffin-Lim)  required\n"
            "  --checkpoint FILE    default: lowest validation loss, else latest\n"
            "  --data DIR           dataset directory, overrides the run's data_dir\n"
            "  --gl-iters N         Griffin-Lim iterations (.wav)                                   default: 64\n"
            "  --device D           auto | cpu | cuda: where Griffin-Lim runs                      default: auto\n"
            "exit codes: 0 ok, 1 error, 2 usage error\n");
}

static int parse_int(const char *cmd, const char *flag, const char *s, int lo, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > 1000000) {
        char m[96];
        snprintf(m, sizeof m, "%s expects an integer >= %d, got", flag, lo);
        cli_usage_error(cmd, m, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int check_device(const char *cmd, const char *d) {
    if (strcmp(d, "auto") && strcmp(d, "cpu") && strcmp(d, "cuda")) {
        cli_usage_error(cmd, "--device expects auto, cpu or cuda, got", d);
        return -1;
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    EvalOpts o;
    eval_opts_defaults(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--run") && has) o.run_dir = argv[++i];
        else if (!strcmp(a, "--checkpoint") && has) o.checkpoint = argv[++i];
        else if (!strcmp(a, "--split") && has) o.split = argv[++i];
        else if (!strcmp(a, "--data") && has) o.data_dir = argv[++i];
        else if (!strcmp(a, "--ood-data") && has) o.ood_dir = argv[++i];
        else if (!strcmp(a, "--out") && has) o.out_dir = argv[++i];
        else if (!strcmp(a, "--device") && has) { if (check_device("eval", o.device = argv[++i])) return 2; }
        else if (!strcmp(a, "--tsne-points") && has) { if (parse_int("eval", a, argv[++i], 0, &o.tsne_points)) return 2; }
        else if (!strcmp(a, "--sheet-styles") && has) { if (parse_int("eval", a, argv[++i], 1, &o.sheet_styles)) return 2; }
        else if (!strcmp(a, "--gl-iters") && has) { if (parse_int("eval", a, argv[++i], 1, &o.gl_iters)) return 2; }
        else if (!strcmp(a, "--probe-samples") && has) { if (parse_int("eval", a, argv[++i], -1, &o.probe_samples)) return 2; }
        else if (!strcmp(a, "--pr-paper-era")) o.pr_variant = PR_PAPER_ERA;
        else if (!strcmp(a, "--no-few-shot")) o.few_shot = 0;
        else if (!strcmp(a, "--no-figures")) o.figures = 0;
        else if (!strcmp(a, "--no-audio")) o.audio = 0;
        else if (!strcmp(a, "--quiet")) v3_verbose = 0;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { eval_usage(stdout); return 0; }
        else return cli_usage_error("eval", "unknown or incomplete option", a);
    }
    if (!o.run_dir) return cli_usage_error("eval", "missing required option", "--run DIR");
    if (strcmp(o.split, "test") && strcmp(o.split, "val") && strcmp(o.split, "ood"))
        return cli_usage_error("eval", "--split expects test, val or ood, got", o.split);
    if (eval_run(&o)) return cli_fail();
    return 0;
}

int cmd_transfer(int argc, char **argv) {
    TransferOpts o;
    memset(&o, 0, sizeof o);
    o.device = "auto";
    o.gl_iters = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--run") && has) o.run_dir = argv[++i];
        else if (!strcmp(a, "--checkpoint") && has) o.checkpoint = argv[++i];
        else if (!strcmp(a, "--data") && has) o.data_dir = argv[++i];
        else if (!strcmp(a, "--content") && has) o.content = argv[++i];
        else if (!strcmp(a, "--style") && has) o.style = argv[++i];
        else if (!strcmp(a, "--out") && has) o.out = argv[++i];
        else if (!strcmp(a, "--device") && has) { if (check_device("transfer", o.device = argv[++i])) return 2; }
        else if (!strcmp(a, "--gl-iters") && has) { if (parse_int("transfer", a, argv[++i], 1, &o.gl_iters)) return 2; }
        else if (!strcmp(a, "--quiet")) v3_verbose = 0;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { transfer_usage(stdout); return 0; }
        else return cli_usage_error("transfer", "unknown or incomplete option", a);
    }
    if (!o.run_dir) return cli_usage_error("transfer", "missing required option", "--run DIR");
    if (!o.content) return cli_usage_error("transfer", "missing required option", "--content SAMPLE");
    if (!o.style) return cli_usage_error("transfer", "missing required option", "--style SAMPLE");
    if (!o.out) return cli_usage_error("transfer", "missing required option", "--out FILE");
    if (transfer_run(&o)) return cli_fail();
    return 0;
}
