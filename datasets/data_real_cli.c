/* `v3 data insnotes`, `v3 data phonenums`, `v3 data export-wav` and `v3 data info DIR`: the real datasets. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    static const char *const splits[] = {"train", "val", "test", "1_shot", "5_shot", "10_shot"};
    int shown = 0;
    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
        DataSource ds;
        if (datasource_open(dir, splits[k], 0, &ds)) {
            const char *e = v3_last_error();
            if (strstr(e, "exists only in OOD") || strstr(e, "an OOD set has")) continue; /* not this kind of set */
            return data_fail();
        }
        if (!shown++) printf("%s: %s\n", dir, ds.desc);
        printf("  %-8s %6llu samples x %u fragments x [%u, %u, %u]; %u contents, %u styles\n", splits[k],
               (unsigned long long)ds.n_samples, ds.n_frag, ds.C, ds.H, ds.W, ds.n_content, ds.n_style);
        datasource_close(&ds);
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
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--ood")) { p.ood = 1; continue; }
        if (!strcmp(a, "--mini")) { p.files_per_instrument = 4; p.velocity_layers = 1; continue; }
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
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--ood")) { p.ood = 1; continue; }
        if (!strcmp(a, "--mini")) { p.pages = 80; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 0;
        int rc = need_value(i, argc, a);
        if (rc) return rc;
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--font")) p.font = v;
        else if (!strcmp(a, "--seed")) { if (data_parse_u64(a, v, &p.seed)) return 2; }
        else if (!strcmp(a, "--pages")) { if (data_parse_int(a, v, &p.pages)) return 2; }
        else return data_usage_err("phonenums: unknown option '%s'", a);
    }
    if (!out) return data_usage_err("phonenums: missing required option '%s'", "--out DIR");
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
