/* Training from the real datasets through the loader: PhoneNums and InsNotes mini sets train, a resumed run
 * replays the uninterrupted one byte for byte (augmentation included), and a config whose model does not fit
 * the data is rejected with a message naming the dataset and both shapes. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "insnotes.h"
#include "phonenums.h"
#include "testing.h"
#include "train.h"

static int train(const char *cfg, const char *out, long steps, int resume) {
    return test_train_cpu(cfg, out, steps, resume, NULL, NULL);
}

/* A small model of the authors' family for the dataset's fragment shape. */
static void write_cfg(const char *path, const char *data, const char *arch, int frags, int H, int W, int K) {
    FILE *f = fopen(path, "w");
    int insnotes = !strcmp(arch, "insnotes"); /* its first CNN starts at n_channels / 128 channels */
    fprintf(f, "name: \"t\"\ndata_dir: \"%s\"\nrandom_seed: 5\nbatch_size: %d\nsave_top_k: 1\n"
               "loss_config:\n  relativity: 15\n"
               "model_config:\n  arch: %s\n  n_channels: %d\n  n_fragments: %d\n  fragment_len: %d\n  n_feature: %d\n"
               "  d_emb_c: 8\n  d_emb_s: 8\n  n_atoms: %d\n  threshold_ema_dead_code: 0.5\n",
            data, insnotes ? 10 : 6, arch, insnotes ? 128 : 16, frags, W, H, K);
    fclose(f);
}

/* Uninterrupted N steps vs N/2 + resume: identical logs. */
static int resume_replays(const char *dir, const char *cfg, long steps) {
    char a[700], b[700], la[800], lb[800];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    CHECK(train(cfg, a, steps, 0) == 0, "uninterrupted: %s", v3_last_error());
    CHECK(train(cfg, b, steps / 2, 0) == 0, "first half: %s", v3_last_error());
    CHECK(train(cfg, b, steps, 1) == 0, "resumed: %s", v3_last_error());
    snprintf(la, sizeof la, "%s/log.jsonl", a);
    snprintf(lb, sizeof lb, "%s/log.jsonl", b);
    size_t na = 0, nb = 0;
    unsigned char *da = NULL, *db = NULL;
    CHECK(!test_read_all(la, &da, &na) && !test_read_all(lb, &db, &nb) && na > 0, "logs missing");
    int same = na == nb && !memcmp(da, db, na);
    CHECK(strstr((char *)da, "\"kind\":\"val\""), "no validation in %ld steps", steps);
    free(da);
    free(db);
    CHECK(same, "resumed log differs from the uninterrupted one");
    return 0;
}

TEST(train_real_phonenums_trains_and_resumes_exactly) {
    char *dir = test_tmpdir("realpn"), data[600], cfg[700];
    snprintf(data, sizeof data, "%s/pn", dir);
    PhonenumsParams p;
    phonenums_defaults(&p);
    p.pages = 30;
    p.seed = 4;
    if (phonenums_generate(data, &p)) {
        if (strstr(v3_last_error(), "install")) { free(dir); SKIP("%s", v3_last_error()); }
        CHECK(0, "generate: %s", v3_last_error());
    }
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    write_cfg(cfg, data, "phonenums", 4, 48, 32, 10); /* 4 of the 10 digits from a random start */
    if (resume_replays(dir, cfg, 8)) return 1;         /* 24 train pages at batch 6: 4 steps per epoch */
    test_rm_tree(dir);
    return 0;
}

TEST(train_real_insnotes_trains_and_resumes_exactly) {
    const char *sf = "/usr/share/sounds/sf2/TimGM6mb.sf2";
    if (access(sf, R_OK)) SKIP("%s not installed (Debian timgm6mb-soundfont)", sf);
    char *dir = test_tmpdir("realin"), data[600], cfg[700];
    snprintf(data, sizeof data, "%s/in", dir);
    InsnotesParams p;
    insnotes_defaults(&p);
    p.soundfont = sf;
    p.files_per_instrument = 2;
    p.velocity_layers = 1;
    p.seed = 6;
    if (insnotes_generate(data, &p)) {
        if (strstr(v3_last_error(), "install")) { free(dir); SKIP("%s", v3_last_error()); }
        CHECK(0, "generate: %s", v3_last_error());
    }
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    write_cfg(cfg, data, "insnotes", 3, 512, 32, 12); /* 24 files: 20 train at batch 10 */
    if (resume_replays(dir, cfg, 4)) return 1;
    test_rm_tree(dir);
    return 0;
}

TEST(train_real_rejects_a_model_that_does_not_fit_the_data) {
    char *dir = test_tmpdir("realshape"), data[600], cfg[700], out[700];
    snprintf(data, sizeof data, "%s/pn", dir);
    PhonenumsParams p;
    phonenums_defaults(&p);
    p.pages = 20;
    if (phonenums_generate(data, &p)) {
        if (strstr(v3_last_error(), "install")) { free(dir); SKIP("%s", v3_last_error()); }
        CHECK(0, "generate: %s", v3_last_error());
    }
    snprintf(cfg, sizeof cfg, "%s/cfg.yaml", dir);
    write_cfg(cfg, data, "tiny", 10, 16, 16, 10);
    snprintf(out, sizeof out, "%s/run", dir);
    CHECK(train(cfg, out, 1, 0) == -1, "a 16x16 model trained on 48x32 pages");
    const char *e = v3_last_error();
    CHECK(strstr(e, data) && strstr(e, "[3, 48, 32]") && strstr(e, "[3, 16, 16]"), "message: %s", e);
    write_cfg(cfg, data, "phonenums", 11, 48, 32, 10);
    CHECK(train(cfg, out, 1, 0) == -1 && strstr(v3_last_error(), "11"), "11 fragments of a 10-digit page: %s",
          v3_last_error());
    test_rm_tree(dir);
    return 0;
}
