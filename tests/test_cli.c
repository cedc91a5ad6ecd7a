/* The command line as a user meets it: exit codes and one-line errors (runs ./v3 from the repository root). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "testing.h"


TEST(cli_unknown_option_is_usage_error) {
    NEED_V3();
    char out[4096];
    int rc = test_sh("./v3 train --config configs/tiny.yaml --out /tmp/x --bogus", out, sizeof out);
    CHECK(rc == 2, "exit %d, want 2; output: %s", rc, out);
    CHECK(strstr(out, "--bogus"), "message does not name the option: %s", out);
    rc = test_sh("./v3 frobnicate", out, sizeof out);
    CHECK(rc == 2, "unknown command exit %d", rc);
    return 0;
}

TEST(cli_missing_config_is_one_line_error) {
    NEED_V3();
    char out[4096];
    int rc = test_sh("./v3 train --config /nonexistent/cfg.yaml --out /tmp/v3cli_x", out, sizeof out);
    CHECK(rc == 1, "exit %d, want 1; output: %s", rc, out);
    CHECK(strstr(out, "v3: error: /nonexistent/cfg.yaml: cannot open config"), "output: %s", out);
    int lines = 0;
    for (char *c = out; *c; c++) lines += *c == '\n';
    CHECK(lines == 1, "%d lines of error output, want 1: %s", lines, out);
    return 0;
}

TEST(cli_info_prints_authors_counts) {
    NEED_V3();
    char out[8192];
    int rc = test_sh("./v3 info --config configs/insnotes.yaml", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "total params      55185133"), "insnotes: exit %d: %s", rc, out);
    rc = test_sh("./v3 info --config configs/phonenums.yaml", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "total params      20612787"), "phonenums: exit %d: %s", rc, out);
    return 0;
}

TEST(cli_device_reports_in_one_line) {
    NEED_V3();
    char out[4096];
    int rc = test_sh("./v3 device", out, sizeof out);
    CHECK(rc == 0 && !strncmp(out, "CUDA: ", 6) && strchr(out, '\n') == out + strlen(out) - 1,
          "exit %d, output: %s", rc, out);
    rc = test_sh("./v3 train --config configs/tiny.yaml --out /tmp/v3cli_y --device cuda --data /nonexistent", out,
            sizeof out);
    CHECK(rc == 1 && strstr(out, "--device cuda"), "--device cuda: exit %d: %s", rc, out);
    return 0;
}

/* One line on stderr, exit 1, naming the missing file. */
static int one_line_error(const char *cmd, int want_rc, const char *needle) {
    char out[4096];
    int rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == want_rc, "%s: exit %d, want %d; output: %s", cmd, rc, want_rc, out);
    CHECK(strstr(out, needle), "%s: output does not mention '%s': %s", cmd, needle, out);
    int lines = 0;
    for (char *c = out; *c; c++) lines += *c == '\n';
    CHECK(lines == 1, "%s: %d lines of output, want 1: %s", cmd, lines, out);
    return 0;
}

TEST(cli_data_generators_reject_bad_input) {
    NEED_V3();
    if (one_line_error("./v3 data phonenums --out /tmp/v3cli_pn --bogus 1", 2, "--bogus") ||
        one_line_error("./v3 data phonenums --pages 10", 2, "--out") ||
        one_line_error("./v3 data phonenums --out /tmp/v3cli_pn --pages 3", 2, "--pages") ||
        one_line_error("./v3 data phonenums --out /tmp/v3cli_pn --noise-sigma -1", 2, "--noise-sigma") ||
        one_line_error("./v3 data phonenums --out /tmp/v3cli_pn --noise-sigma abc", 2, "--noise-sigma") ||
        one_line_error("./v3 data insnotes --out /tmp/v3cli_in --files-per-instrument x", 2, "--files-per-instrument") ||
        one_line_error("./v3 data export-wav --data /tmp/v3cli_none --out /tmp/v3cli.wav --slots 0", 2, "--slots") ||
        one_line_error("./v3 bench loader", 2, "--data"))
        return 1;
    /* missing inputs are runtime errors naming the file, or the Debian package when the build lacks the library */
    char out[4096];
    int rc = test_sh("./v3 data insnotes --out /tmp/v3cli_in --soundfont /nonexistent/x.sf2", out, sizeof out);
    CHECK(rc == 1 && (strstr(out, "/nonexistent/x.sf2") || strstr(out, "libfluidsynth-dev")), "exit %d: %s", rc, out);
    rc = test_sh("./v3 data phonenums --out /tmp/v3cli_pn --font /nonexistent/f.otf", out, sizeof out);
    CHECK(rc == 1 && (strstr(out, "/nonexistent/f.otf") || strstr(out, "libfreetype-dev")), "exit %d: %s", rc, out);
    return one_line_error("./v3 data info /nonexistent/v3data", 1, "/nonexistent/v3data");
}

TEST(cli_every_subcommand_has_help) {
    NEED_V3();
    const char *cmds[] = {"./v3 --help", "./v3 train --help", "./v3 info --help", "./v3 data --help",
                          "./v3 data phonenums --help", "./v3 bench --help", "./v3 bench loader --help",
                          "./v3 eval --help", "./v3 transfer --help"};
    char out[8192];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = test_sh(cmds[i], out, sizeof out);
        CHECK(rc == 0 && strstr(out, "usage: v3"), "%s: exit %d, output: %.200s", cmds[i], rc, out);
    }
    int rc = test_sh("./v3 train --help", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "default: auto") && strstr(out, "--math"), "train --help lacks defaults: %s", out);
    rc = test_sh("./v3 eval --help", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "default: 2000") && strstr(out, "--pr-paper-era"), "eval --help lacks defaults: %s", out);
    /* usage errors exit 2 and name the option */
    rc = test_sh("./v3 eval --run x --split train", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--split"), "eval --split train: exit %d, %s", rc, out);
    rc = test_sh("./v3 eval --run x --bogus", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--bogus"), "eval --bogus: exit %d, %s", rc, out);
    rc = test_sh("./v3 transfer --run x --content 0 --style 1", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--out"), "transfer without --out: exit %d, %s", rc, out);
    rc = test_sh("./v3 data phonenums --ood --pages 40 --out /nonexistent/x", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "88"), "an OOD set without a test split: exit %d, %s", rc, out);
    rc = test_sh("./v3 eval --run /nonexistent/run", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "/nonexistent/run/config.yaml"), "eval of a missing run: exit %d, %s", rc, out);
    return 0;
}

TEST(cli_data_info_lists_the_splits_of_a_generated_set) {
    NEED_V3();
    char *dir = test_tmpdir("cliinfo"), cmd[1200], out[8192];
    snprintf(cmd, sizeof cmd, "./v3 data phonenums --pages 40 --seed 2 --out %s/id && ./v3 data phonenums --ood "
                              "--pages 200 --out %s/ood", dir, dir);
    int rc = test_sh(cmd, out, sizeof out);
    if (rc && strstr(out, "libfreetype-dev")) { free(dir); SKIP("built without FreeType"); }
    CHECK(rc == 0, "generate: %s", out);
    snprintf(cmd, sizeof cmd, "./v3 data info %s/id", dir);
    CHECK(test_sh(cmd, out, sizeof out) == 0, "info: %s", out);
    CHECK(strstr(out, "train        32 samples") && strstr(out, "val           4 samples") &&
          strstr(out, "test          4 samples") && !strstr(out, "shot"), "in-distribution splits: %s", out);
    snprintf(cmd, sizeof cmd, "./v3 data info %s/ood", dir);
    CHECK(test_sh(cmd, out, sizeof out) == 0, "info: %s", out);
    /* 25 pages per colour: ranks 10..24 are test (15 x 8) */
    CHECK(strstr(out, "test        120 samples") && strstr(out, "1_shot        8 samples") &&
          strstr(out, "5_shot       40 samples") && strstr(out, "10_shot      80 samples") && !strstr(out, "train"),
          "OOD splits: %s", out);
    test_rm_tree(dir);
    return 0;
}

/* The FLOP count behind `v3 bench step` and `v3 info`: the authors' PhoneNums configs at widths 16, 64 and 256
 * give the per-step counts issue 17 computed independently (1.90, about 28, 885 GFLOP). And `v3 bench step`
 * runs the step and writes its JSON (its timings are not checked: speed is for benchmarks). */
TEST(cli_bench_step_and_flop_counts) {
    NEED_V3();
    char out[8192];
    const char *cases[][2] = {{"configs/phonenums-cpu.yaml", "1.90"}, {"configs/phonenums.yaml", "885.19"},
                              {"configs/phonenums-cpu.yaml --set model_config.n_channels=64", "28.01"}};
    for (int i = 0; i < 3; i++) {
        char cmd[300], want[64];
        snprintf(cmd, sizeof cmd, "./v3 info --config %s", cases[i][0]);
        snprintf(want, sizeof want, "GFLOP per step    %s ", cases[i][1]);
        int rc = test_sh(cmd, out, sizeof out);
        CHECK(rc == 0 && strstr(out, want), "%s: exit %d, want '%s': %s", cmd, rc, want, out);
    }
    char *dir = test_tmpdir("bench_step"), json[600];
    unsigned char *buf;
    size_t n;
    snprintf(json, sizeof json, "%s/step.json", dir);
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "./v3 bench step --config configs/tiny.yaml --set batch_size=4 --steps 2 --warmup 1 "
             "--threads 1 --device ref --json %s", json);
    int rc = test_sh(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "GFLOP/step"), "%s: exit %d: %s", cmd, rc, out);
    CHECK(test_read_all(json, &buf, &n) == 0, "%s not written", json);
    const char *txt = (const char *)buf;
    int ok = strstr(txt, "\"device\":\"ref\"") && strstr(txt, "\"median_s\":") && strstr(txt, "\"gflop_per_step\":") &&
             strstr(txt, "\"peak_rss_mb\":") && strstr(txt, "\"sgemm_gflops\":");
    free(buf);
    free(dir);
    CHECK(ok, "bench step JSON lacks a field");
    rc = test_sh("./v3 bench step --config configs/tiny.yaml --steps 0", out, sizeof out);
    CHECK(rc == 2, "--steps 0: exit %d: %s", rc, out);
    return 0;
}
