/* Feeds an InsNotes index.tsv to insnotes_open (datasets/insnotes_source.c), over a stub note bank. */
#include "fuzz_util.h"

#include "datasource.h"
#include "insnotes.h"

static int g_ood; /* the input says "# ood 1": serve the OOD programs' bank */

/* Linked with -Wl,--wrap=insnotes_bank_load (Makefile; fuzz_insnotes_bank fuzzes the real one): the shape of the
 * bank `v3 data insnotes --mini [--ood]` writes, silent. Batches below read labels only, never the clips. */
int __wrap_insnotes_bank_load(const char *path, InsnotesBank *b) {
    memset(b, 0, sizeof *b);
    b->sample_rate = INSNOTES_SR, b->n_pitches = 12, b->n_layers = 1, b->clip_len = INSNOTES_NOTE_LEN;
    b->n_programs = g_ood ? INSNOTES_N_OOD_PROGRAMS : INSNOTES_N_PROGRAMS;
    size_t n = (size_t)b->n_programs * 12;
    b->programs = xcalloc(b->n_programs, sizeof(int32_t));
    const int *progs = g_ood ? insnotes_ood_programs : insnotes_programs;
    for (uint32_t i = 0; i < b->n_programs; i++) b->programs[i] = progs[i];
    b->velocities = xcalloc(1, sizeof(int32_t));
    b->velocities[0] = 100;
    b->gain = xcalloc(n, sizeof(float));
    for (size_t i = 0; i < n; i++) b->gain[i] = 1.0f / 32767;
    b->clips = xcalloc(n * b->clip_len, sizeof(int16_t));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *idx = fz_path("index.tsv");
    fz_write(idx, data, size);
    const char *dir = fz_dir; /* index.tsv lives there */
    g_ood = memmem(data, size, "\n# ood 1\n", 9) != NULL;
    static const char *splits[] = {"test", "train", "5_shot"};
    for (int s = 0; s < 3; s++) {
        DataSource ds;
        if (insnotes_open(dir, splits[s], 12, &ds)) {
            if (s == 0) break; /* not a valid index: skip the other splits */
            continue;
        }
        uint64_t i = ds.n_samples - 1, aug = 12345;
        int32_t content[12], style[12];
        (void)ds.get_batch(&ds, &i, &aug, 1, NULL, content, style); /* labels only: no audio, no STFT */
        datasource_close(&ds);
    }
    return 0;
}
