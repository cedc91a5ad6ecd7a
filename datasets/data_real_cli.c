/* `v3 data insnotes`, `v3 data phonenums`, `v3 data export-wav` and `v3 data info DIR`: the real datasets. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "data_cli.h"
#include "datasource.h"
#include "insnotes.h"
#include "phonenums.h"

/* Bytes of regular files under dir (one level of subdirectories, enough for pages/). */
static long long dir_bytes(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1500];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st)) continue;
        if (S_ISREG(st.st_mode)) total += st.st_size;
        else if (S_ISDIR(st.st_mode) && depth > 0) total += dir_bytes(p, depth - 1);
    }
    closedir(d);
    return total;
}

/* One line per split that exists, read back through the loader's own opener. */
int cmd_data_info_dir(const char *dir) {
    /* test exists in every set; it tells whether the others are train/val or the few-shot splits */
    static const char *const id_splits[] = {"test", "train", "val"}, *const ood_splits[] = {"test", "1_shot", "5_shot",
                                                                                           "10_shot"};
    DataSource ds;
    if (datasource_open(dir, "test", 0, &ds)) return data_fail();
    int ood = ds.ood, n = ood ? 4 : 3;
    printf("%s: %s\n", dir, ds.desc);
    datasource_close(&ds);
    for (int k = 0; k < n; k++) {
        const char *split = ood ? ood_splits[k] : id_splits[k];
        if (datasource_open(dir, split, 0, &ds)) return data_fail();
        printf("  %-8s %6llu samples x %u fragments x [%u, %u, %u]; %u contents, %u styles\n", split,
               (unsigned long long)ds.n_samples, ds.n_frag, ds.C, ds.H, ds.W, ds.n_content, ds.n_style);
        datasource_close(&ds);
    }
    char bank_path[1100];
    snprintf(bank_path, sizeof bank_path, "%s/bank.v3nb", dir);
    InsnotesBank bank;
    if (access(bank_path, F_OK) == 0) { /* InsNotes: is the clip length long enough for the release tails? */
        if (insnotes_bank_load(bank_path, &bank)) return data_fail();
        int prog;
        double tail = insnotes_bank_worst_tail(&bank, &prog);
        printf("  bank: %u clips of %u samples; worst tail at the clip end %.4f of the clip's peak (GM program %d)\n",
               bank.n_programs * bank.n_pitches * bank.n_layers, bank.clip_len, tail, prog);
        insnotes_bank_free(&bank);
    }
    printf("  on disk: %.2f MB\n", dir_bytes(dir, 1) / 1e6);
    return 0;
}

static int need_value(int i, int argc, const char *a) {
    if (a[0] != '-') return data_usage_err("unexpected argument '%s'", a);
    if (i + 1 >= argc) return data_usage_err("option '%s' needs a value", a);
    return 0;
}

int cmd_data_insnotes(int argc, char **argv) {
    InsnotesParams p;
    insnotes_defaults(&p);
    const char *out = NULL;
    int mini = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--ood")) { p.ood = 1; continue; }
        if (!strcmp(a, "--mini")) { mini = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 0;
        int rc = need_value(i, argc, a);
        if (rc) return rc;
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--soundfont")) p.soundfont = v;
        else if (!strcmp(a, "--seed")) { if (data_parse_u64(a, v, &p.seed)) return 2; }
        else if (!strcmp(a, "--files-per-instrument")) { if (data_parse_int(a, v, &p.files_per_instrument)) return 2; }
        else if (!strcmp(a, "--velocity-layers")) { if (data_parse_int(a, v, &p.velocity_layers)) return 2; }
        else return data_usage_err("insnotes: unknown option '%s'", a);
    }
    if (!out) return data_usage_err("insnotes: missing required option '%s'", "--out DIR");
    /* mini: 4 files per instrument; an OOD set needs 11+ (1/5/10-shot files come first, then the test files) */
    if (mini) { p.files_per_instrument = p.ood ? 12 : 4; p.velocity_layers = 1; }
    if (p.ood && p.files_per_instrument <= 10)
        return data_usage_err("--files-per-instrument %d with --ood: the OOD test split takes the files after the "
                              "first 10 of each instrument; expected 11 or more", p.files_per_instrument);
    if (p.files_per_instrument < 1 || p.files_per_instrument > 1000)
        return data_usage_err("--files-per-instrument: expected 1..1000, got %d", p.files_per_instrument);
    if (p.velocity_layers < 1 || p.velocity_layers > 41)
        return data_usage_err("--velocity-layers: expected 1..41, got %d", p.velocity_layers);
    double t0 = now_seconds();
    if (insnotes_generate(out, &p)) return data_fail();
    printf("generated %s in %.1f s\n", out, now_seconds() - t0);
    return cmd_data_info_dir(out);
}

int cmd_data_phonenums(int argc, char **argv) {
    PhonenumsParams p;
    phonenums_defaults(&p);
    const char *out = NULL;
    int mini = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--ood")) { p.ood = 1; continue; }
        if (!strcmp(a, "--mini")) { mini = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 0;
        int rc = need_value(i, argc, a);
        if (rc) return rc;
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--font")) p.font = v;
        else if (!strcmp(a, "--seed")) { if (data_parse_u64(a, v, &p.seed)) return 2; }
        else if (!strcmp(a, "--pages")) { if (data_parse_int(a, v, &p.pages)) return 2; }
        else if (!strcmp(a, "--noise-sigma")) {
            if (data_parse_float(a, v, &p.noise_sigma)) return 2;
            if (!(p.noise_sigma >= 0 && p.noise_sigma <= 100))
                return data_usage_err("--noise-sigma: expected 0..100 (grey levels), got '%s'", v);
        }
        else return data_usage_err("phonenums: unknown option '%s'", a);
    }
    if (!out) return data_usage_err("phonenums: missing required option '%s'", "--out DIR");
    /* mini: 80 pages; an OOD set needs 11+ pages per colour (1/5/10-shot pages come first, then the test pages) */
    if (mini) p.pages = p.ood ? 120 : 80;
    if (p.ood && p.pages < 88)
        return data_usage_err("--pages %d with --ood: the OOD test split takes the pages after the first 10 of each "
                              "of the 8 colours; expected 88 or more", p.pages);
    if (p.pages < 10 || p.pages > 1000000) return data_usage_err("--pages: expected 10..1000000, got %d", p.pages);
    double t0 = now_seconds();
    if (phonenums_generate(out, &p)) return data_fail();
    printf("generated %s in %.1f s\n", out, now_seconds() - t0);
    return cmd_data_info_dir(out);
}

int cmd_data_export_wav(int argc, char **argv) {
    const char *data = NULL, *out = NULL, *split = "test";
    uint64_t sample = 0;
    int start = 0, slots = 12;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--full")) { start = 0; slots = 120; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 0;
        int rc = need_value(i, argc, a);
        if (rc) return rc;
        const char *v = argv[++i];
        if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--split")) split = v;
        else if (!strcmp(a, "--sample")) { if (data_parse_u64(a, v, &sample)) return 2; }
        else if (!strcmp(a, "--start-slot")) { if (data_parse_int(a, v, &start)) return 2; }
        else if (!strcmp(a, "--slots")) { if (data_parse_int(a, v, &slots)) return 2; }
        else return data_usage_err("export-wav: unknown option '%s'", a);
    }
    if (!data) return data_usage_err("export-wav: missing required option '%s'", "--data DIR");
    if (!out) return data_usage_err("export-wav: missing required option '%s'", "--out FILE.wav|FILE.flac");
    if (start < 0 || start >= 120) return data_usage_err("--start-slot: expected 0..119, got %d", start);
    if (slots < 1 || slots > 120) return data_usage_err("--slots: expected 1..120, got %d", slots);
    if (insnotes_export_audio(data, split, sample, start, slots, out)) return data_fail();
    printf("wrote %s: %s sample %llu, %d slots from slot %d (%.2f s at 16 kHz)\n", out, split,
           (unsigned long long)sample, slots, start, slots * 1.056);
    return 0;
}
