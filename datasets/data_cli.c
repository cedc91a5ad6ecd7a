/* `v3 data`: generate synthetic datasets (synth) and inspect .v3ds files (info).
 * Exit codes follow the v3 CLI: 0 ok, 1 runtime error ("v3: error: ..."), 2 usage error. */
#define _POSIX_C_SOURCE 200809L
#include "data_cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "common.h"
#include "dataset.h"

static void data_usage(FILE *f) {
    fprintf(f,
            "usage: v3 data <kind> [options]\n"
            "  v3 data synth --out DIR [--seed S] [--train N] [--val N] [--test N] [--frags N] [--contents N]\n"
            "                [--styles N] [--size N] [--noise F]\n"
            "      coloured-strokes data (content = stroke shape, style = stroke colour); writes\n"
            "      DIR/train.v3ds, DIR/val.v3ds and DIR/test.v3ds (DIR is created).\n"
            "      defaults: --seed 1 --train 256 --val 32 --test 32 --frags 6 --contents 6 --styles 4\n"
            "                --size 16 --noise 0.05; limits: contents 2..10, styles 2..8, 2 <= frags <= contents,\n"
            "                size >= 8, train >= 2, val >= 2, test >= 1, noise in [0, 1]\n"
            "  v3 data info FILE.v3ds\n"
            "      validate a dataset file and print its header fields and label histograms\n"
            "  v3 data insnotes --out DIR [--soundfont FILE] [--files-per-instrument N] [--velocity-layers N]\n"
            "                   [--ood] [--seed S] [--mini]\n"
            "      InsNotes: 12 GM instruments (styles) x 12 pitch classes C4..B4 (contents), rendered with FluidSynth\n"
            "      into a note bank (DIR/bank.v3nb) plus a seeded recipe (DIR/index.tsv); samples are assembled and\n"
            "      STFT'd (512 x 32 per note) when loaded. --ood: the 4 OOD instruments, splits 1_shot/5_shot/10_shot/test.\n"
            "      defaults: --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 (Debian fluid-soundfont-gm)\n"
            "                --files-per-instrument 100 --velocity-layers 3 --seed 1; --mini: 4 files (12 with --ood), 1 layer\n"
            "  v3 data phonenums --out DIR [--font FILE] [--pages N] [--ood] [--seed S] [--mini] [--noise-sigma S]\n"
            "      PhoneNums: pages of the 10 digits in one of 8 colours, rendered with FreeType, blurred and noised;\n"
            "      DIR/pages/*.png plus DIR/index.tsv. --ood: the 8 OOD colours, splits 1_shot/5_shot/10_shot/test.\n"
            "      defaults: --font /usr/share/fonts/opentype/comic-neue/ComicNeue-Bold.otf (Debian fonts-comic-neue)\n"
            "                --pages 1000 --seed 1; --mini: 80 pages (120 with --ood)\n"
            "      --noise-sigma S: the same noise level S (0..100 grey levels) on every page instead of the authors'\n"
            "                10 U(0,1) drawn per page (a diagnostic; everything else is drawn as without it)\n"
            "      splits of both: 80/10/10 by file (train/val/test), seeded\n"
            "  v3 data export-wav --data DIR --out FILE.wav|FILE.flac [--split test] [--sample I] [--start-slot S]\n"
            "                     [--slots N | --full]\n"
            "      write an InsNotes file's audio (default: 12 slots from slot 0 of test sample 0) to listen to\n"
            "  v3 data info DIR\n"
            "      open every split of a dataset directory and print its shape and size\n"
            "exit codes: 0 ok, 1 error, 2 usage error\n");
}

int data_usage_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "v3 data: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see v3 data --help)\n");
    va_end(ap);
    return 2;
}

int data_fail(void) { return cli_fail(); }

/* Strict integer / float parsing: the whole argument must be a number in range. */
int data_parse_int(const char *flag, const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT32_MIN || v > INT32_MAX) {
        fprintf(stderr, "v3 data: %s expects an integer, got '%s' (see v3 data --help)\n", flag, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int data_parse_u64(const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "v3 data: %s expects a non-negative integer, got '%s' (see v3 data --help)\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int data_parse_float(const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "v3 data: %s expects a number, got '%s' (see v3 data --help)\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Apply one valued synth option; 1 if the flag is not a valued synth option, -1 on a bad value. */
static int synth_option(SynthParams *p, const char **out, const char *a, const char *v) {
    int size;
    if (!strcmp(a, "--out")) { *out = v; return 0; }
    if (!strcmp(a, "--seed")) return data_parse_u64(a, v, &p->seed);
    if (!strcmp(a, "--train")) return data_parse_int(a, v, &p->n_train);
    if (!strcmp(a, "--val")) return data_parse_int(a, v, &p->n_val);
    if (!strcmp(a, "--test")) return data_parse_int(a, v, &p->n_test);
    if (!strcmp(a, "--frags")) return data_parse_int(a, v, &p->n_frag);
    if (!strcmp(a, "--contents")) return data_parse_int(a, v, &p->n_content);
    if (!strcmp(a, "--styles")) return data_parse_int(a, v, &p->n_style);
    if (!strcmp(a, "--noise")) return data_parse_float(a, v, &p->noise);
    if (!strcmp(a, "--size")) {
        if (data_parse_int(a, v, &size)) return -1;
        p->H = p->W = size;
        return 0;
    }
    return 1;
}

static int is_valued_synth_flag(const char *a) {
    static const char *const flags[] = {"--out", "--seed", "--train", "--val", "--test", "--frags",
                                        "--contents", "--styles", "--size", "--noise"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(a, flags[i])) return 1;
    return 0;
}

/* One line per written split, read back from disk so it reports what is really there. */
static int report_split(const char *dir, const char *split) {
    Dataset d;
    if (dataset_load_split(dir, split, &d)) return -1;
    struct stat st;
    long long bytes = stat(d.path, &st) ? -1 : (long long)st.st_size;
    printf("%s: %llu samples x %u fragments x [%u, %u, %u], %u contents, %u styles, %lld bytes\n", d.path,
           (unsigned long long)d.n_samples, d.n_frag, d.C, d.H, d.W, d.n_content, d.n_style, bytes);
    dataset_free(&d);
    return 0;
}

static int cmd_synth(int argc, char **argv) {
    SynthParams p;
    synth_defaults(&p);
    const char *out = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { data_usage(stdout); return 0; }
        if (!is_valued_synth_flag(a))
            return data_usage_err(a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
        if (i + 1 >= argc) return data_usage_err("option '%s' needs a value", a);
        if (synth_option(&p, &out, a, argv[++i])) return 2;
    }
    if (!out) return data_usage_err("synth: missing required option '%s'", "--out DIR");
    if (synth_generate(out, &p)) return data_fail();
    const char *splits[] = {"train", "val", "test"};
    for (int k = 0; k < 3; k++)
        if (report_split(out, splits[k])) return data_fail();
    return 0;
}

/* "0:256 1:256 ..." plus an "unknown" count for -1 labels. */
static void print_histogram(const char *what, const int32_t *lab, uint64_t n, uint32_t n_classes) {
    uint64_t *count = xcalloc((size_t)n_classes + 1, sizeof(uint64_t));
    for (uint64_t i = 0; i < n; i++) count[lab[i] < 0 ? n_classes : (uint32_t)lab[i]]++;
    printf("%-16s", what);
    for (uint32_t c = 0; c < n_classes; c++) printf(" %u:%llu", c, (unsigned long long)count[c]);
    if (count[n_classes]) printf(" unknown:%llu", (unsigned long long)count[n_classes]);
    printf("\n");
    free(count);
}

static void print_info(const Dataset *d) {
    struct stat st;
    long long bytes = stat(d->path, &st) ? -1 : (long long)st.st_size;
    uint64_t n = d->n_samples * dataset_sample_elems(d), nl = d->n_samples * d->n_frag;
    double lo = d->x[0], hi = d->x[0], sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        double v = d->x[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sum += v;
    }
    printf("file:            %s (%lld bytes; header and payload CRC-32C verified)\n", d->path, bytes);
    printf("format:          v3ds version %u, dtype 0 (float32)\n", V3DS_VERSION);
    printf("samples:         %llu\n", (unsigned long long)d->n_samples);
    printf("fragments:       %u x [C=%u, H=%u, W=%u]\n", d->n_frag, d->C, d->H, d->W);
    printf("classes:         content %u, style %u\n", d->n_content, d->n_style);
    printf("x:               min %.4f, max %.4f, mean %.4f\n", lo, hi, sum / (double)n);
    print_histogram("content counts:", d->content, nl, d->n_content);
    print_histogram("style counts:", d->style, nl, d->n_style);
}

static int cmd_info_file(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { data_usage(stdout); return 0; }
        if (argv[i][0] == '-') return data_usage_err("unknown option '%s'", argv[i]);
        if (path) return data_usage_err("info takes one file, got an extra argument '%s'", argv[i]);
        path = argv[i];
    }
    if (!path) return data_usage_err("info: missing %s", "FILE.v3ds or DIR");
    struct stat st;
    if (!stat(path, &st) && S_ISDIR(st.st_mode)) return cmd_data_info_dir(path);
    Dataset d;
    if (dataset_load(path, &d)) return data_fail();
    print_info(&d);
    dataset_free(&d);
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2) {
        data_usage(stderr);
        return 2;
    }
    const char *kind = argv[1];
    if (!strcmp(kind, "--help") || !strcmp(kind, "-h") || !strcmp(kind, "help")) {
        data_usage(stdout);
        return 0;
    }
    if (!strcmp(kind, "synth")) return cmd_synth(argc, argv);
    if (!strcmp(kind, "info")) return cmd_info_file(argc, argv);
    if (!strcmp(kind, "insnotes") || !strcmp(kind, "phonenums") || !strcmp(kind, "export-wav")) {
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { data_usage(stdout); return 0; }
        return !strcmp(kind, "insnotes") ? cmd_data_insnotes(argc, argv)
             : !strcmp(kind, "phonenums") ? cmd_data_phonenums(argc, argv) : cmd_data_export_wav(argc, argv);
    }
    return data_usage_err("unknown dataset kind '%s'", kind);
}
