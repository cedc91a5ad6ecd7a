/* Tests for InsNotes: the CPU STFT (FFTW against the direct DFT, window, centring), the note bank (no state
 * carried between clips, validation of damaged files), the generator (determinism, splits, OOD shots) and the
 * DataSource (labels against the audio's pitch, mask, 0 -> 1e-8, determinism, wrapping, manual assembly), and
 * the WAV export. Generation tests use TimGM6mb (6 MB) with 1-2 velocity layers and a few files per instrument;
 * they SKIP only when FluidSynth was not found at build time or the soundfont is not installed. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "datasource.h"
#include "insnotes.h"
#include "rng.h"
#include "stft.h"
#include "testing.h"

#ifdef V3_HAVE_SNDFILE
#include <sndfile.h>
#endif

#define SF_SMALL "/usr/share/sounds/sf2/TimGM6mb.sf2"
#define FE (INSNOTES_BINS * INSNOTES_FRAMES) /* floats per fragment */

/* ---- helpers ---- */

/* Why a generation test cannot run here, or NULL. */
static const char *no_synth(void) {
#ifndef V3_HAVE_FLUIDSYNTH
    return "built without FluidSynth (install libfluidsynth-dev and rebuild)";
#else
    return access(SF_SMALL, R_OK) ? "soundfont " SF_SMALL " not installed (Debian timgm6mb-soundfont)" : NULL;
#endif
}
#define REQUIRE_SYNTH()                     \
    do {                                    \
        const char *why_ = no_synth();      \
        if (why_) SKIP("%s", why_);         \
    } while (0)

static int gen(const char *dir, int fpi, int layers, int ood, uint64_t seed) {
    InsnotesParams p;
    insnotes_defaults(&p);
    p.soundfont = SF_SMALL;
    p.files_per_instrument = fpi;
    p.velocity_layers = layers;
    p.ood = ood;
    p.seed = seed;
    return insnotes_generate(dir, &p);
}

/* One in-distribution set (4 files per instrument, 1 layer) shared by the read-only tests, removed at exit. */
static char *g_shared;
static void rm_shared(void) {
    if (g_shared) test_rm_tree(g_shared);
    g_shared = NULL;
}
static const char *shared_set(void) {
    if (!g_shared) {
        g_shared = test_tmpdir("insnotes_shared");
        if (gen(g_shared, 4, 1, 0, 7)) V3_FATAL("generating the shared InsNotes set: %s", v3_last_error());
        atexit(rm_shared);
    }
    return g_shared;
}


/* ---- STFT ---- */

TEST(insnotes_stft_fftw_matches_dft_random) {
    const int n = 3;
    float *a = xmalloc(sizeof(float) * n * INSNOTES_FRAG_AUDIO), *o1 = xmalloc(sizeof(float) * n * FE),
          *o2 = xmalloc(sizeof(float) * n * FE);
    fill_uniform(a, (size_t)n * INSNOTES_FRAG_AUDIO, 11, -1, 1);
    poison(o1, (size_t)n * FE);
    poison(o2, (size_t)n * FE);
    StftCpu *s = stft_cpu_create();
    stft_logmag_cpu(s, a, n, o1);
    stft_logmag_dft(a, n, o2);
    double mag, lg;
    test_stft_err(o1, o2, n, &mag, &lg);
    /* repeated call on the same plan: bit-identical */
    float *o3 = xmalloc(sizeof(float) * n * FE);
    stft_logmag_cpu(s, a, n, o3);
    stft_cpu_free(s);
    int same = memcmp(o1, o3, sizeof(float) * n * FE) == 0;
    free(a);
    free(o1);
    free(o2);
    free(o3);
    if (getenv("V3_TEST_VERBOSE")) fprintf(stderr, "    FFTW vs DFT: magnitude %.3g, log %.3g\n", mag, lg);
    CHECK(mag <= 1e-4, "FFTW vs DFT: magnitude error %.3g of the frame maximum (limit 1e-4)", mag);
    CHECK(lg <= 1e-4, "FFTW vs DFT: log-magnitude error %.3g (limit 1e-4)", lg);
    CHECK(same, "two FFTW runs on the same input differ");
    return 0;
}

TEST(insnotes_stft_sines) {
    /* A bin-centred sine (bin 37) and an off-bin one (bin 100.3), amplitude 0.5: the peak bin and, for the centred
     * one, the exact magnitude A N / 4 = 128 of a periodic Hann window; both against the DFT. */
    const double freqs[2] = {37.0, 100.3};
    float *a = xmalloc(sizeof(float) * 2 * INSNOTES_FRAG_AUDIO), *o1 = xmalloc(sizeof(float) * 2 * FE),
          *o2 = xmalloc(sizeof(float) * 2 * FE);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < INSNOTES_FRAG_AUDIO; t++)
            a[b * INSNOTES_FRAG_AUDIO + t] = (float)(0.5 * sin(2 * 3.14159265358979323846 * freqs[b] * t / 1024 + 0.3));
    poison(o1, 2 * FE);
    StftCpu *s = stft_cpu_create();
    stft_logmag_cpu(s, a, 2, o1);
    stft_cpu_free(s);
    stft_logmag_dft(a, 2, o2);
    double mag, lg;
    test_stft_err(o1, o2, 2, &mag, &lg);
    int bad_peak = -1;
    double m37 = exp(o1[37 * INSNOTES_FRAMES + 5]) - 1e-5;
    for (int b = 0; b < 2; b++)
        for (int f = 0; f < INSNOTES_FRAMES; f++) {
            int best = 0;
            for (int k = 1; k < INSNOTES_BINS; k++)
                if (o1[b * FE + k * INSNOTES_FRAMES + f] > o1[b * FE + best * INSNOTES_FRAMES + f]) best = k;
            if (best != (int)lround(freqs[b])) bad_peak = best;
        }
    free(a);
    free(o1);
    free(o2);
    CHECK(mag <= 1e-4 && lg <= 1e-4, "sines: FFTW vs DFT magnitude error %.3g, log error %.3g (limit 1e-4)", mag, lg);
    CHECK(bad_peak < 0, "a frame's largest bin is %d (expected 37 / 100)", bad_peak);
    CHECK(fabs(m37 - 128) < 1e-3, "bin-centred sine magnitude %.6f (expected A N / 4 = 128)", m37);
    return 0;
}

TEST(insnotes_stft_hann_is_periodic) {
    /* A constant 1: the periodic Hann's DFT is N/2 at bin 0, N/4 at bin 1 and 0 elsewhere; the symmetric window
     * would give 511.5 at bin 0 and leak into every bin. */
    float *a = xmalloc(sizeof(float) * INSNOTES_FRAG_AUDIO), *o = xmalloc(sizeof(float) * FE);
    for (int t = 0; t < INSNOTES_FRAG_AUDIO; t++) a[t] = 1.0f;
    poison(o, FE);
    StftCpu *s = stft_cpu_create();
    stft_logmag_cpu(s, a, 1, o);
    stft_cpu_free(s);
    double b0 = exp(o[0]) - 1e-5, b1 = exp(o[INSNOTES_FRAMES]) - 1e-5, rest = 0;
    for (int k = 2; k < INSNOTES_BINS; k++) rest = fmax(rest, exp(o[k * INSNOTES_FRAMES + 3]) - 1e-5);
    free(a);
    free(o);
    CHECK(fabs(b0 - 512) < 1e-3, "bin 0 = %.6f (expected 512 = sum of the periodic Hann window)", b0);
    CHECK(fabs(b1 - 256) < 1e-3, "bin 1 = %.6f (expected 256)", b1);
    CHECK(rest < 1e-3, "bins 2.. reach %.3g (expected ~0)", rest);
    return 0;
}

TEST(insnotes_stft_centring) {
    /* A click at block sample 512 (a slot's onset) lands in the centre of frame 0 (window 1: flat magnitude 1),
     * on the edge of frame 1 (window 0: silence) and nowhere else. */
    float *a = xcalloc(INSNOTES_FRAG_AUDIO, sizeof(float)), *o = xmalloc(sizeof(float) * FE);
    a[INSNOTES_HOP] = 1.0f;
    poison(o, FE);
    StftCpu *s = stft_cpu_create();
    stft_logmag_cpu(s, a, 1, o);
    stft_cpu_free(s);
    double e0 = 0, e_rest = 0;
    for (int k = 0; k < INSNOTES_BINS; k++) {
        e0 = fmax(e0, fabs(exp(o[k * INSNOTES_FRAMES]) - 1e-5 - 1.0));
        for (int f = 1; f < INSNOTES_FRAMES; f++) e_rest = fmax(e_rest, exp(o[k * INSNOTES_FRAMES + f]) - 1e-5);
    }
    free(a);
    free(o);
    CHECK(e0 < 1e-5, "frame 0 magnitude deviates from 1 by %.3g (click not at the frame centre)", e0);
    CHECK(e_rest < 1e-6, "frames 1..31 reach %.3g (expected 0)", e_rest);
    return 0;
}

/* ---- bank ---- */

/* A hand-made bank (no FluidSynth): constant clips, so the mix rules can be checked exactly. Layer l of pitch p
 * holds the constant 1000 (l + 1) (p + 1) with gain 1e-4. */
static void toy_bank(InsnotesBank *b, int layers) {
    memset(b, 0, sizeof *b);
    b->sample_rate = 16000, b->n_programs = 1, b->n_pitches = 12, b->n_layers = (uint32_t)layers, b->clip_len = 24000;
    b->programs = xcalloc(1, 4);
    b->velocities = xcalloc((size_t)layers, 4);
    b->gain = xcalloc((size_t)12 * layers, 4);
    b->clips = xcalloc((size_t)12 * layers * 24000, 2);
    b->programs[0] = 41;
    for (int l = 0; l < layers; l++) b->velocities[l] = layers == 1 ? 100 : 80 + 40 * l / (layers - 1);
    for (int p = 0; p < 12; p++)
        for (int l = 0; l < layers; l++) {
            b->gain[p * layers + l] = 1e-4f;
            for (int t = 0; t < 24000; t++) b->clips[((size_t)p * layers + l) * 24000 + t] = (int16_t)(1000 * (l + 1) * (p + 1));
        }
}

TEST(insnotes_mix_rules_on_a_toy_bank) {
    InsnotesBank b2, b1, back;
    toy_bank(&b2, 2);
    toy_bank(&b1, 1);
    InsnotesFile *f = xmalloc(sizeof *f);
    insnotes_file_init(f, 1, 0, 2.0f);
    for (int i = 0; i < INSNOTES_NOTES; i++) f->seg_end[i] = 1.0, f->seg_sine[i] = (unsigned char)(i & 1); /* flat */
    f->velocity[3] = 90;  /* 3/4 of layer 80 + 1/4 of layer 120 */
    f->velocity[4] = 120; /* layer 120 exactly */
    float v[3];
    insnotes_signal(&b2, f, 3 * INSNOTES_SLOT + 8000, 3 * INSNOTES_SLOT + 8001, &v[0]); /* note 3 alone */
    insnotes_signal(&b2, f, 4 * INSNOTES_SLOT + 10, 4 * INSNOTES_SLOT + 11, &v[1]);   /* note 4 + tail of 3 */
    insnotes_signal(&b1, f, 3 * INSNOTES_SLOT + 8000, 3 * INSNOTES_SLOT + 8001, &v[2]); /* one layer: (v/100)^2 */
    /* note 3 = pitch 3: layers 0.4 / 0.8; note 4: layer 120 = 1.0; file gain 2; the clip tail of note j covers the
     * first 7104 samples of slot j + 1 */
    double want0 = 2 * (0.75 * 0.4 + 0.25 * 0.8), want1 = 2 * (1.0 + want0 / 2), want2 = 2 * 0.4 * 0.81;
    /* save/load round trip and refusal of a bank load would reject */
    char *dir = test_tmpdir("insnotes_toy");
    int saved = insnotes_bank_save(test_path(dir, "b.v3nb"), &b2), loaded = insnotes_bank_load(test_path(dir, "b.v3nb"), &back);
    int same = !loaded && back.n_layers == 2 && back.velocities[1] == 120 && back.programs[0] == 41 &&
               !memcmp(back.clips, b2.clips, (size_t)24 * 24000 * 2) && !memcmp(back.gain, b2.gain, 24 * 4);
    insnotes_bank_free(&back);
    b2.velocities[1] = 80;
    int refused = insnotes_bank_save(test_path(dir, "c.v3nb"), &b2) == -1 && strstr(v3_last_error(), "ascending");
    insnotes_bank_free(&b2);
    insnotes_bank_free(&b1);
    free(f);
    CHECK(fabs(v[0] - want0) < 1e-5, "velocity 90 between layers 80/120: %.6f (expected %.6f)", v[0], want0);
    CHECK(fabs(v[1] - want1) < 1e-5, "overlapping notes: %.6f (expected %.6f)", v[1], want1);
    CHECK(fabs(v[2] - want2) < 1e-5, "one layer, velocity 90: %.6f (expected %.6f)", v[2], want2);
    CHECK(saved == 0 && same, "bank save/load round trip: save %d load %d identical %d", saved, loaded, same);
    CHECK(refused, "a bank with non-ascending velocities was saved: '%s'", v3_last_error());
    CHECK(access(test_path(dir, "c.v3nb"), F_OK) != 0, "refused bank left a file");
    return test_done(0, dir);
}

TEST(insnotes_bank_no_carry_over) {
    REQUIRE_SYNTH();
    /* Clips of program 41 rendered after program 64's must equal those rendered alone. */
    InsnotesBank a, b;
    const int two[2] = {64, 41}, one[1] = {41};
    CHECK(insnotes_bank_render(SF_SMALL, two, 2, 1, 24000, &a) == 0, "%s", v3_last_error());
    CHECK(insnotes_bank_render(SF_SMALL, one, 1, 1, 24000, &b) == 0, "%s", v3_last_error());
    size_t per = (size_t)12 * 24000;
    int same = !memcmp(a.clips + per, b.clips, per * sizeof(int16_t)) && !memcmp(a.gain + 12, b.gain, 12 * 4);
    int differ = memcmp(a.clips, b.clips, per * sizeof(int16_t)) != 0; /* the two programs really differ */
    insnotes_bank_free(&a);
    insnotes_bank_free(&b);
    CHECK(same, "program 41's clips depend on what was rendered before them");
    CHECK(differ, "programs 64 and 41 rendered identical clips");
    return 0;
}

TEST(insnotes_bank_missing_soundfont_and_program) {
    char *dir = test_tmpdir("insnotes_nosf");
    InsnotesParams p;
    insnotes_defaults(&p);
    p.soundfont = "/nonexistent/none.sf2";
    p.files_per_instrument = 1;
    v3_clear_error();
    int rc = insnotes_generate(test_path(dir, "set"), &p);
#ifndef V3_HAVE_FLUIDSYNTH
    /* without FluidSynth the generator says which package to install, and creates nothing */
    CHECK(rc == -1 && strstr(v3_last_error(), "libfluidsynth-dev"), "rc %d, '%s'", rc, v3_last_error());
    CHECK(access(test_path(dir, "set"), F_OK) != 0, "a failed generation created its directory");
    return test_done(0, dir);
#endif
    CHECK(rc == -1 && strstr(v3_last_error(), "/nonexistent/none.sf2") && strstr(v3_last_error(), "soundfont"),
          "missing soundfont: rc %d, '%s'", rc, v3_last_error());
    CHECK(access(test_path(dir, "set"), F_OK) != 0, "a failed generation created its directory");
    /* A file that is not a soundfont. */
    CHECK(test_write_all(test_path(dir, "bad.sf2"), "not a soundfont", 15) == 0, "write");
    p.soundfont = test_path(dir, "bad.sf2");
    rc = insnotes_generate(test_path(dir, "set"), &p);
    CHECK(rc == -1 && strstr(v3_last_error(), "bad.sf2"), "not a soundfont: rc %d, '%s'", rc, v3_last_error());
    /* Duplicate or out-of-range programs are refused before rendering. */
    InsnotesBank b;
    const int dup[2] = {5, 5};
    rc = insnotes_bank_render(SF_SMALL, dup, 2, 1, 24000, &b);
    CHECK(rc == -1 && strstr(v3_last_error(), "program 5"), "duplicate program: '%s'", v3_last_error());
    const int big[1] = {128};
    rc = insnotes_bank_render(SF_SMALL, big, 1, 1, 24000, &b);
    CHECK(rc == -1 && strstr(v3_last_error(), "program 128"), "program 128: '%s'", v3_last_error());
    return test_done(0, dir);
}

/* ---- generator ---- */

TEST(insnotes_generate_deterministic) {
    REQUIRE_SYNTH();
    char *dir = test_tmpdir("insnotes_det");
    const char *a = test_path(dir, "a"), *b = test_path(dir, "b"), *c = test_path(dir, "c");
    CHECK(gen(a, 1, 2, 0, 5) == 0 && gen(b, 1, 2, 0, 5) == 0 && gen(c, 1, 2, 0, 6) == 0, "%s", v3_last_error());
    unsigned char *x[3], *y[3];
    size_t nx[3], ny[3];
    const char *d[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        CHECK(test_read_all(test_path(d[i], "bank.v3nb"), &x[i], &nx[i]) == 0 &&
                  test_read_all(test_path(d[i], "index.tsv"), &y[i], &ny[i]) == 0, "read %s", d[i]);
    int bank_same = nx[0] == nx[1] && !memcmp(x[0], x[1], nx[0]), idx_same = ny[0] == ny[1] && !memcmp(y[0], y[1], ny[0]);
    int bank_seedfree = nx[0] == nx[2] && !memcmp(x[0], x[2], nx[0]), idx_differs = ny[0] != ny[2] || memcmp(y[0], y[2], ny[0]);
    size_t want = 64 + 12 * 4 + 2 * 4 + 12 * 12 * 2 * (4 + 2 * (size_t)INSNOTES_SLOT * 2); /* default clip: 2 slots */
    for (int i = 0; i < 3; i++) {
        free(x[i]);
        free(y[i]);
    }
    CHECK(bank_same && idx_same, "same seed: bank identical %d, index identical %d", bank_same, idx_same);
    CHECK(bank_seedfree, "the bank depends on the seed");
    CHECK(idx_differs, "seeds 5 and 6 gave the same index");
    CHECK(nx[0] == want, "bank size %zu (expected %zu)", nx[0], want);
    CHECK(access(test_path(a, "bank.v3nb.tmp"), F_OK) && access(test_path(a, "index.tsv.tmp"), F_OK), "temp file left");
    return test_done(0, dir);
}

TEST(insnotes_signal_range_invariant_and_peak) {
    REQUIRE_SYNTH();
    const char *dir = shared_set();
    InsnotesBank b;
    CHECK(insnotes_bank_load(test_path(dir, "bank.v3nb"), &b) == 0, "%s", v3_last_error());
    InsnotesFile *f = xmalloc(sizeof *f);
    insnotes_file_init(f, 12345, 3, 1.0f);
    const int64_t t0 = INSNOTES_SLOT * 5 - 700, n = 3 * INSNOTES_SLOT;
    float *whole = xmalloc(sizeof(float) * n), *parts = xmalloc(sizeof(float) * n), edge[600];
    insnotes_signal(&b, f, t0, t0 + n, whole);
    insnotes_signal(&b, f, t0, t0 + 1001, parts);
    insnotes_signal(&b, f, t0 + 1001, t0 + n, parts + 1001);
    int same = !memcmp(whole, parts, sizeof(float) * n);
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(whole[i]));
    insnotes_signal(&b, f, -300, 300, edge); /* before the file: zeros; at the start: the first note */
    int pad_zero = 1, head_nonzero = 0;
    for (int i = 0; i < 300; i++) pad_zero &= edge[i] == 0.0f;
    for (int i = 300; i < 600; i++) head_nonzero |= edge[i] != 0.0f;
    insnotes_signal(&b, f, INSNOTES_FILE_LEN - 10, INSNOTES_FILE_LEN + 10, edge);
    for (int i = 10; i < 20; i++) pad_zero &= edge[i] == 0.0f;
    /* the stored gains normalise every file's peak to 0.9 */
    unsigned char *txt;
    size_t nt;
    CHECK(test_read_all(test_path(dir, "index.tsv"), &txt, &nt) == 0, "read index");
    char *line = strstr((char *)txt, "\nins05_002\t");
    CHECK(line, "index lacks ins05_002");
    char name[32], tok[16];
    int style, prog;
    unsigned long long seed;
    float gain;
    CHECK(sscanf(line + 1, "%31s %15s %d %d %llx %f", name, tok, &style, &prog, &seed, &gain) == 6, "parse");
    free(txt);
    insnotes_file_init(f, seed, style, gain);
    float *all = xmalloc(sizeof(float) * INSNOTES_FILE_LEN);
    insnotes_signal(&b, f, 0, INSNOTES_FILE_LEN, all);
    double peak = 0;
    for (int64_t i = 0; i < INSNOTES_FILE_LEN; i++) peak = fmax(peak, fabs(all[i]));
    free(all);
    free(whole);
    free(parts);
    free(f);
    insnotes_bank_free(&b);
    CHECK(same, "the signal depends on the range it is rendered in");
    CHECK(mx > 1e-3, "signal is silent");
    CHECK(pad_zero && head_nonzero, "outside the file: zeros %d; first samples sound %d", pad_zero, head_nonzero);
    CHECK(fabs(peak - 0.9) < 1e-5, "normalised peak %.7f (expected 0.9)", peak);
    return 0;
}

static int open_ok(DataSource *ds, const char *dir, const char *split, int nf) {
    if (insnotes_open(dir, split, nf, ds)) {
        fprintf(stderr, "    open %s %s: %s\n", dir, split, v3_last_error());
        return -1;
    }
    return 0;
}

TEST(insnotes_splits_80_10_10) {
    REQUIRE_SYNTH();
    const char *dir = shared_set();
    const char *names[3] = {"train", "val", "test"};
    uint64_t n[3];
    int from_index[3] = {0, 0, 0};
    for (int s = 0; s < 3; s++) {
        DataSource ds;
        CHECK(open_ok(&ds, dir, names[s], 12) == 0, "open");
        n[s] = ds.n_samples;
        CHECK(ds.n_frag == 12 && ds.C == 1 && ds.H == 512 && ds.W == 32 && ds.n_content == 12 && ds.n_style == 12 &&
                  !strcmp(ds.kind, "insnotes"), "shape/kind of %s", names[s]);
        CHECK(strstr(ds.desc, "TimGM6mb.sf2") != NULL, "desc '%s'", ds.desc);
        ds.close(&ds);
    }
    /* every file line carries exactly one of the three tokens */
    unsigned char *txt;
    size_t nt;
    CHECK(test_read_all(test_path(dir, "index.tsv"), &txt, &nt) == 0, "read index");
    int lines = 0;
    for (char *l = strtok((char *)txt, "\n"); l; l = strtok(NULL, "\n")) {
        if (l[0] == '#') continue;
        lines++;
        for (int s = 0; s < 3; s++)
            if (strstr(l, names[s]) == strchr(l, '\t') + 1) from_index[s]++;
    }
    free(txt);
    CHECK(n[0] == 40 && n[1] == 4 && n[2] == 4, "split sizes %llu/%llu/%llu (expected 40/4/4 of 48)",
          (unsigned long long)n[0], (unsigned long long)n[1], (unsigned long long)n[2]);
    CHECK(lines == 48 && from_index[0] + from_index[1] + from_index[2] == 48 && from_index[0] == 40 &&
              from_index[1] == 4, "index tokens %d/%d/%d over %d lines", from_index[0], from_index[1], from_index[2],
          lines);
    return 0;
}

/* x of sample idx with aug seed `aug`, n_frag fragments (caller frees). */
static float *batch1(DataSource *ds, uint64_t idx, uint64_t aug, int32_t *content, int32_t *style) {
    float *x = xmalloc(sizeof(float) * ds->n_frag * FE);
    poison(x, (size_t)ds->n_frag * FE);
    if (ds->get_batch(ds, &idx, &aug, 1, x, content, style)) {
        fprintf(stderr, "    get_batch: %s\n", v3_last_error());
        free(x);
        return NULL;
    }
    return x;
}

TEST(insnotes_ood_shots_nested_and_test_excluded) {
    REQUIRE_SYNTH();
    char *dir = test_tmpdir("insnotes_ood");
    CHECK(gen(dir, 12, 1, 1, 3) == 0, "%s", v3_last_error());
    DataSource s1, s5, s10, st;
    CHECK(open_ok(&s1, dir, "1_shot", 2) == 0 && open_ok(&s5, dir, "5_shot", 2) == 0 &&
              open_ok(&s10, dir, "10_shot", 2) == 0 && open_ok(&st, dir, "test", 2) == 0, "open");
    CHECK(s1.n_samples == 4 && s5.n_samples == 20 && s10.n_samples == 40 && st.n_samples == 8 && s1.n_style == 4,
          "sizes %llu/%llu/%llu/%llu (expected 4/20/40/8)", (unsigned long long)s1.n_samples,
          (unsigned long long)s5.n_samples, (unsigned long long)s10.n_samples, (unsigned long long)st.n_samples);
    /* Files are in index order (style-major, rank-minor): 1_shot file i = rank 0 of style i = 5_shot file 5 i =
     * 10_shot file 10 i; with the same aug seed their samples are bit-identical. */
    int nested = 1;
    for (int i = 0; i < 4; i++) {
        float *a = batch1(&s1, i, 99, NULL, NULL), *b = batch1(&s5, 5 * i, 99, NULL, NULL),
              *c = batch1(&s10, 10 * i, 99, NULL, NULL);
        CHECK(a && b && c, "get_batch");
        nested &= !memcmp(a, b, sizeof(float) * 2 * FE) && !memcmp(a, c, sizeof(float) * 2 * FE);
        free(a);
        free(b);
        free(c);
    }
    CHECK(nested, "1_shot files are not the first files of 5_shot / 10_shot");
    /* No test file equals any 10_shot file. */
    int overlap = 0;
    for (int i = 0; i < 8; i++) {
        float *t = batch1(&st, i, 5, NULL, NULL);
        CHECK(t, "get_batch");
        for (int j = 0; j < 40 && !overlap; j++) {
            float *u = batch1(&s10, j, 5, NULL, NULL);
            overlap |= !memcmp(t, u, sizeof(float) * 2 * FE);
            free(u);
        }
        free(t);
    }
    s1.close(&s1);
    s5.close(&s5);
    s10.close(&s10);
    st.close(&st);
    CHECK(!overlap, "a test file is also a 10_shot file");
    DataSource bad;
    CHECK(insnotes_open(dir, "train", 2, &bad) == -1 && strstr(v3_last_error(), "OOD"), "train of OOD: '%s'",
          v3_last_error());
    CHECK(insnotes_open(shared_set(), "5_shot", 2, &bad) == -1 && strstr(v3_last_error(), "5_shot"),
          "5_shot of an in-distribution set: '%s'", v3_last_error());
    return test_done(0, dir);
}

/* Fundamental (MIDI, continuous) of a fragment: harmonic sum of the frames' mean magnitude over f0 from B3 to C#5
 * in 5-cent steps (harmonics 1..8, linear interpolation between bins). */
static double f0_midi(const float *frag) {
    double m[INSNOTES_BINS];
    for (int k = 0; k < INSNOTES_BINS; k++) {
        m[k] = 0;
        for (int f = 6; f < 26; f++) m[k] += exp(frag[k * INSNOTES_FRAMES + f]);
    }
    double best = -1, best_midi = 0;
    for (double midi = 59; midi <= 73; midi += 0.05) {
        double f0 = 440 * pow(2, (midi - 69) / 12), sc = 0;
        for (int h = 1; h <= 8; h++) {
            double bin = h * f0 / (16000.0 / 1024);
            int b0 = (int)bin;
            if (b0 + 1 >= INSNOTES_BINS) break;
            sc += m[b0] + (m[b0 + 1] - m[b0]) * (bin - b0);
        }
        if (sc > best) {
            best = sc;
            best_midi = midi;
        }
    }
    return best_midi;
}

TEST(insnotes_labels_match_pitch) {
    REQUIRE_SYNTH();
    DataSource ds;
    CHECK(open_ok(&ds, shared_set(), "train", 12) == 0, "open");
    /* clearly pitched instruments: Viola (style 3), Oboe (6), Clarinet (7) */
    int n = 0, exact = 0, near = 0, shifted = 0;
    for (uint64_t i = 0; i < ds.n_samples; i++) {
        int32_t c[12], s[12];
        float *x = batch1(&ds, i, 1000 + i, c, s);
        CHECK(x, "get_batch");
        if (s[0] == 3 || s[0] == 6 || s[0] == 7)
            for (int j = 0; j < 12; j++) {
                double est = f0_midi(x + (size_t)j * FE);
                int want = 60 + c[j];
                n++;
                exact += fabs(est - want) <= 0.5;
                near += fabs(est - want) <= 1.0;
                shifted += fabs(est - (want + 1)) <= 0.5; /* what a label off by one would match */
            }
        free(x);
    }
    ds.close(&ds);
    CHECK(n >= 60, "only %d fragments of the pitched instruments", n);
    CHECK(near >= 0.95 * n && exact >= 0.9 * n, "pitch matches label: %d exact, %d within a semitone of %d", exact,
          near, n);
    CHECK(shifted <= 0.1 * n, "%d of %d fragments match label + 1", shifted, n);
    return 0;
}

/* The expected mask and start of an aug seed (the documented draw order). */
static void aug_draws(uint64_t aug, int *start, int *lo, int *w) {
    Rng r;
    rng_seed(&r, aug);
    *start = (int)rng_below(&r, 120);
    double value = rng_uniform(&r) * 15, min_value = rng_uniform(&r) * (512 - value);
    *lo = (int)min_value;
    *w = (int)value;
}

TEST(insnotes_batch_matches_manual_assembly_mask_and_wrap) {
    REQUIRE_SYNTH();
    const char *dir = shared_set();
    DataSource ds;
    const int nf = 12;
    CHECK(open_ok(&ds, dir, "val", nf) == 0, "open");
    /* an aug seed whose start wraps past slot 119 and whose mask band is at least 8 rows wide */
    uint64_t aug = 0;
    int start, lo, w;
    for (;; aug++) {
        aug_draws(aug, &start, &lo, &w);
        if (start > 120 - nf && w >= 8) break;
    }
    int32_t c[12], s[12];
    float *x = batch1(&ds, 2, aug, c, s);
    CHECK(x, "get_batch");
    /* manual: bank + index line of val file 2 + insnotes_signal + FFTW */
    InsnotesBank b;
    CHECK(insnotes_bank_load(test_path(dir, "bank.v3nb"), &b) == 0, "%s", v3_last_error());
    unsigned char *txt;
    size_t nt;
    CHECK(test_read_all(test_path(dir, "index.tsv"), &txt, &nt) == 0, "read index");
    int seen = 0, style = -1;
    unsigned long long seed = 0;
    float gain = 0;
    for (char *l = strtok((char *)txt, "\n"); l; l = strtok(NULL, "\n")) {
        char name[32], tok[16];
        int prog;
        if (l[0] != '#' && sscanf(l, "%31s %15s %d %d %llx %f", name, tok, &style, &prog, &seed, &gain) == 6 &&
            !strcmp(tok, "val") && seen++ == 2)
            break;
    }
    free(txt);
    CHECK(seen == 3, "val file 2 not found in the index");
    InsnotesFile *f = xmalloc(sizeof *f);
    insnotes_file_init(f, seed, style, gain);
    float *audio = xmalloc(sizeof(float) * nf * INSNOTES_FRAG_AUDIO), *ref = xmalloc(sizeof(float) * nf * FE);
    for (int i = 0; i < nf; i++) {
        int64_t k = (start + i) % 120;
        insnotes_signal(&b, f, k * INSNOTES_SLOT - 512, k * INSNOTES_SLOT - 512 + INSNOTES_FRAG_AUDIO,
                        audio + (size_t)i * INSNOTES_FRAG_AUDIO);
    }
    StftCpu *st = stft_cpu_create();
    stft_logmag_cpu(st, audio, nf, ref);
    stft_cpu_free(st);
    int labels_ok = 1, outside_ok = 1, mask_ok = 1, zeros = 0;
    for (int i = 0; i < nf; i++) {
        labels_ok &= c[i] == (start + i) % 120 % 12 && s[i] == style;
        for (int k = 0; k < 512; k++)
            for (int t = 0; t < 32; t++) {
                float v = x[(size_t)i * FE + k * 32 + t], r = ref[(size_t)i * FE + k * 32 + t];
                zeros += v == 0.0f;
                if (k >= lo && k < lo + w) mask_ok &= v == 1e-8f;
                else outside_ok &= v == r || (r == 0.0f && v == 1e-8f);
            }
    }
    free(audio);
    free(ref);
    free(f);
    free(x);
    insnotes_bank_free(&b);
    ds.close(&ds);
    CHECK(labels_ok, "labels differ from slot %% 12 / style for start %d", start);
    CHECK(mask_ok, "rows [%d, %d) are not all 1e-8 (the mask, then 0 -> 1e-8)", lo, lo + w);
    CHECK(outside_ok, "unmasked values differ from bank + recipe + FFTW (start %d)", start);
    CHECK(zeros == 0, "%d exact zeros left", zeros);
    return 0;
}

TEST(insnotes_batch_deterministic) {
    REQUIRE_SYNTH();
    const char *dir = shared_set();
    DataSource a, b;
    CHECK(open_ok(&a, dir, "train", 4) == 0 && open_ok(&b, dir, "train", 4) == 0, "open");
    const int B = 3;
    uint64_t idx[3] = {0, 17, 39}, aug[3] = {5, 6, 7}, aug2[3] = {5, 6, 8};
    size_t n = (size_t)B * 4 * FE;
    float *x1 = xmalloc(n * 4), *x2 = xmalloc(n * 4), *x3 = xmalloc(n * 4);
    poison(x1, n);
    poison(x2, n);
    poison(x3, n);
    int32_t c1[12], c2[12], s1[12], s2[12];
    CHECK(a.get_batch(&a, idx, aug, B, x1, c1, s1) == 0 && b.get_batch(&b, idx, aug, B, x2, c2, s2) == 0 &&
              a.get_batch(&a, idx, aug2, B, x3, NULL, NULL) == 0, "%s", v3_last_error());
    int same = !memcmp(x1, x2, n * 4) && !memcmp(c1, c2, sizeof c1) && !memcmp(s1, s2, sizeof s1);
    int first_two_same = !memcmp(x1, x3, 2 * 4 * FE * 4), third_differs = memcmp(x1, x3, n * 4) != 0;
    uint64_t bad = 40;
    int rc = a.get_batch(&a, &bad, aug, 1, x1, NULL, NULL);
    free(x1);
    free(x2);
    free(x3);
    a.close(&a);
    b.close(&b);
    CHECK(same, "same idx/aug gave different batches");
    CHECK(first_two_same && third_differs, "aug seeds act per sample: same %d, differs %d", first_two_same,
          third_differs);
    CHECK(rc == -1 && strstr(v3_last_error(), "index.tsv") && strstr(v3_last_error(), "40"),
          "out-of-range sample: '%s'", v3_last_error());
    return 0;
}

/* get_raw is get_batch stopped before the STFT: the same labels, and its audio and mask bands give get_batch's x
 * bit for bit through the CPU's STFT + insnotes_mask_and_guard (the loader's device path starts from exactly
 * this). use_gpu does not change get_batch (the CPU features; only the loader uses the device). */
TEST(insnotes_get_raw_is_get_batch_before_the_stft) {
    REQUIRE_SYNTH();
    DataSource ds;
    CHECK(open_ok(&ds, shared_set(), "train", 3) == 0, "open");
    CHECK(ds.get_raw && ds.raw_elems == INSNOTES_FRAG_AUDIO, "InsNotes should offer get_raw (raw_elems %u)",
          ds.raw_elems);
    enum { B = 3, NF = 3 };
    uint64_t idx[B] = {3, 0, 39}, aug[B] = {77, 5, 123456789};
    size_t nx = (size_t)B * NF * FE;
    float *x = xmalloc(sizeof(float) * nx), *xg = xmalloc(sizeof(float) * nx), *y = xmalloc(sizeof(float) * nx);
    float *raw = xmalloc(sizeof(float) * B * NF * INSNOTES_FRAG_AUDIO);
    poison(x, nx);
    poison(xg, nx);
    poison(y, nx);
    poison(raw, (size_t)B * NF * INSNOTES_FRAG_AUDIO);
    int32_t c1[B * NF], s1[B * NF], c2[B * NF], s2[B * NF], mask[2 * B], mask0[2 * B];
    memset(mask, 0xFF, sizeof mask);
    int rc1 = ds.get_batch(&ds, idx, aug, B, x, c1, s1);
    int rc2 = ds.get_raw(&ds, idx, aug, B, raw, mask, c2, s2);
    int rc3 = ds.get_raw(&ds, idx, aug, B, NULL, mask0, NULL, NULL); /* labels and mask only */
    ds.use_gpu = 1;
    int rc4 = ds.get_batch(&ds, idx, aug, B, xg, NULL, NULL);
    StftCpu *st = stft_cpu_create();
    stft_logmag_cpu(st, raw, B * NF, y);
    stft_cpu_free(st);
    insnotes_mask_and_guard(y, B, NF, mask);
    int bands_ok = 1;
    for (int b = 0; b < B; b++) {
        int start, lo, w;
        aug_draws(aug[b], &start, &lo, &w);
        bands_ok &= mask[2 * b] == lo && mask[2 * b + 1] == w;
    }
    int same_x = !memcmp(x, y, sizeof(float) * nx), same_gpu_flag = !memcmp(x, xg, sizeof(float) * nx);
    int same_labels = !memcmp(c1, c2, sizeof c1) && !memcmp(s1, s2, sizeof s1), same_mask = !memcmp(mask, mask0, sizeof mask);
    uint64_t bad = 40;
    int rc5 = ds.get_raw(&ds, &bad, aug, 1, raw, mask, NULL, NULL);
    free(x);
    free(xg);
    free(y);
    free(raw);
    ds.close(&ds);
    CHECK(rc1 == 0 && rc2 == 0 && rc3 == 0 && rc4 == 0, "get_batch/get_raw failed: %s", v3_last_error());
    CHECK(bands_ok && same_mask, "mask bands differ from the documented draws");
    CHECK(same_labels, "get_raw's labels differ from get_batch's");
    CHECK(same_x, "STFT + mask + guard of get_raw's audio differs from get_batch's x");
    CHECK(same_gpu_flag, "use_gpu changed get_batch's output");
    CHECK(rc5 == -1 && strstr(v3_last_error(), "40"), "out-of-range sample in get_raw: '%s'", v3_last_error());
    return 0;
}

/* ---- damaged files and bad arguments ---- */

/* A copy of the shared set in a fresh directory (returns it), with bank bytes in *bank. */
static char *copy_set(unsigned char **bank, size_t *nb, unsigned char **index, size_t *ni) {
    const char *src = shared_set();
    char *dir = test_tmpdir("insnotes_bad");
    if (test_read_all(test_path(src, "bank.v3nb"), bank, nb) || test_read_all(test_path(src, "index.tsv"), index, ni) ||
        test_write_all(test_path(dir, "bank.v3nb"), *bank, *nb) || test_write_all(test_path(dir, "index.tsv"), *index, *ni))
        V3_FATAL("copying %s", src);
    return dir;
}

static int expect_open_error(const char *dir, const char *split, int nf, const char *n1, const char *n2) {
    DataSource ds;
    v3_clear_error();
    int rc = insnotes_open(dir, split, nf, &ds);
    const char *e = v3_last_error();
    CHECK(rc == -1, "open should fail (%s)", n1);
    CHECK(ds.impl == NULL && ds.get_batch == NULL, "failed open left a half-filled DataSource");
    CHECK(strstr(e, n1) != NULL, "error should contain '%s': %s", n1, e);
    CHECK(!n2 || strstr(e, n2) != NULL, "error should contain '%s': %s", n2, e);
    CHECK(strchr(e, '\n') == NULL, "error should be one line: %s", e);
    return 0;
}

TEST(insnotes_bad_bank_files) {
    REQUIRE_SYNTH();
    unsigned char *bank, *index;
    size_t nb, ni;
    char *dir = copy_set(&bank, &nb, &index, &ni);
    const char *bp = test_path(dir, "bank.v3nb");
    /* pristine copy opens */
    DataSource ds;
    CHECK(insnotes_open(dir, "train", 12, &ds) == 0, "copy: %s", v3_last_error());
    ds.close(&ds);
    CHECK(test_write_all(bp, bank, nb - 1) == 0, "write");
    CHECK(expect_open_error(dir, "train", 12, bp, "truncated") == 0, "truncated");
    CHECK(test_write_all(bp, bank, 40) == 0, "write");
    CHECK(expect_open_error(dir, "train", 12, bp, "truncated") == 0, "header only");
    unsigned char *big = xmalloc(nb + 2);
    memcpy(big, bank, nb);
    big[nb] = big[nb + 1] = 0;
    CHECK(test_write_all(bp, big, nb + 2) == 0, "write");
    free(big);
    CHECK(expect_open_error(dir, "train", 12, bp, "oversized") == 0, "oversized");
    bank[nb / 2] ^= 0x10;
    CHECK(test_write_all(bp, bank, nb) == 0, "write");
    CHECK(expect_open_error(dir, "train", 12, bp, "corrupt") == 0, "payload byte");
    bank[nb / 2] ^= 0x10;
    bank[20] ^= 1; /* n_layers */
    CHECK(test_write_all(bp, bank, nb) == 0, "write");
    CHECK(expect_open_error(dir, "train", 12, bp, "header checksum") == 0, "header byte");
    bank[20] ^= 1;
    bank[0] = 'X';
    CHECK(test_write_all(bp, bank, nb) == 0, "write");
    CHECK(expect_open_error(dir, "train", 12, bp, "magic") == 0, "magic");
    CHECK(remove(bp) == 0, "remove");
    CHECK(expect_open_error(dir, "train", 12, bp, "cannot open") == 0, "missing bank");
    free(bank);
    free(index);
    return test_done(0, dir);
}

TEST(insnotes_bad_index_and_arguments) {
    REQUIRE_SYNTH();
    unsigned char *bank, *index;
    size_t nb, ni;
    char *dir = copy_set(&bank, &nb, &index, &ni);
    const char *ip = test_path(dir, "index.tsv");
    /* line 9 is the second file line: replace its gain, then its program, then drop a field */
    char *txt = (char *)index, *l9 = txt;
    for (int i = 1; i < 9; i++) l9 = strchr(l9, '\n') + 1;
    size_t pre = (size_t)(l9 - txt);
    char *end9 = strchr(l9, '\n'), line[256], *edited = xmalloc(ni + 64);
    snprintf(line, sizeof line, "%.*s", (int)(end9 - l9), l9);
    struct { const char *from, *to, *n1, *n2; } cases[4] = {
        {"\t0x", "\tzz", "index.tsv:9", "file_seed"}, {NULL, "\tabc", "index.tsv:9", "gain"},
        {"\t64\t", "\t65\t", "index.tsv:9", "program"}, {"\t0\t64", "\t0", "index.tsv:9", "fields"}};
    for (int c = 0; c < 4; c++) {
        char mod[256];
        if (cases[c].from) {
            char *at = strstr(line, cases[c].from);
            CHECK(at, "line 9 '%s' lacks '%s'", line, cases[c].from);
            snprintf(mod, sizeof mod, "%.*s%s%s", (int)(at - line), line, cases[c].to, at + strlen(cases[c].from));
        } else {
            snprintf(mod, sizeof mod, "%.*s%s", (int)(strrchr(line, '\t') - line), line, cases[c].to);
        }
        size_t n = (size_t)snprintf(edited, ni + 64, "%.*s%s%s", (int)pre, txt, mod, end9);
        CHECK(test_write_all(ip, edited, n) == 0, "write");
        CHECK(expect_open_error(dir, "train", 12, cases[c].n1, cases[c].n2) == 0, "case %d: %s", c, mod);
    }
    /* a missing last line: count mismatch */
    char *last = txt + ni - 1;
    while (last > txt && last[-1] != '\n') last--;
    size_t n = (size_t)(last - txt);
    memcpy(edited, txt, n);
    CHECK(test_write_all(ip, edited, n) == 0, "write");
    CHECK(expect_open_error(dir, "train", 12, "index.tsv", "n_files") == 0, "dropped line");
    free(edited);
    CHECK(test_write_all(ip, index, ni) == 0, "restore");
    CHECK(expect_open_error(dir, "training", 12, "training", "expected train") == 0, "bad split");
    CHECK(expect_open_error(dir, "train", 0, "n_frag 0", "1..120") == 0, "n_frag 0");
    CHECK(expect_open_error(dir, "train", 121, "n_frag 121", "1..120") == 0, "n_frag 121");
    DataSource ds;
    CHECK(insnotes_open(dir, "train", 120, &ds) == 0, "n_frag 120: %s", v3_last_error());
    ds.close(&ds);
    free(bank);
    free(index);
    return test_done(0, dir);
}

/* ---- export ---- */

TEST(insnotes_export_wav) {
    REQUIRE_SYNTH();
#ifndef V3_HAVE_SNDFILE
    SKIP("built without libsndfile");
#else
    const char *set = shared_set();
    char *dir = test_tmpdir("insnotes_wav");
    const char *wav = test_path(dir, "x.wav");
    CHECK(insnotes_export_audio(set, "test", 1, 118, 4, wav) == 0, "%s", v3_last_error());
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *f = sf_open(wav, SFM_READ, &info);
    CHECK(f, "libsndfile cannot read %s: %s", wav, sf_strerror(NULL));
    size_t n = 4 * INSNOTES_SLOT;
    float *a = xmalloc(sizeof(float) * (n + 10));
    sf_count_t got = sf_readf_float(f, a, (sf_count_t)n + 10);
    sf_close(f);
    double mx = 0;
    for (sf_count_t i = 0; i < got; i++) mx = fmax(mx, fabs(a[i]));
    free(a);
    CHECK(info.samplerate == 16000 && info.channels == 1 &&
              (info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_WAV && (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16,
          "format %x, %d Hz, %d channels", info.format, info.samplerate, info.channels);
    CHECK(got == (sf_count_t)n, "%lld frames (expected %zu)", (long long)got, n);
    CHECK(mx > 0.05 && mx <= 0.9001, "peak %.4f (expected non-silent, <= 0.9)", mx);
    CHECK(insnotes_export_audio(set, "test", 1, 0, 1, test_path(dir, "x.mp3")) == -1 &&
              strstr(v3_last_error(), ".wav or .flac"), "bad extension: '%s'", v3_last_error());
    CHECK(insnotes_export_audio(set, "test", 4, 0, 1, wav) == -1 && strstr(v3_last_error(), "out of range"),
          "bad sample: '%s'", v3_last_error());
    CHECK(insnotes_export_audio(set, "tset", 0, 0, 1, wav) == -1 && strstr(v3_last_error(), "tset"),
          "bad split: '%s'", v3_last_error());
    CHECK(insnotes_export_audio(set, "test", 0, 120, 1, wav) == -1, "start slot 120 accepted");
    return test_done(0, dir);
#endif
}

TEST(insnotes_bank_worst_tail_known_values) {
    int32_t programs[2] = {19, 52}, vel[1] = {100};
    float gain[2] = {1.0f, 0.25f}; /* gains cancel in the ratio */
    int16_t clips[2 * 200] = {0};
    clips[10] = 1000;
    clips[150] = -50;  /* clip 0: tail 50 / peak 1000 */
    clips[200 + 5] = -100;
    clips[200 + 199] = 20; /* clip 1: tail 20 / peak 100, the worse one */
    InsnotesBank b = {16000, 2, 1, 1, 200, programs, vel, gain, clips};
    int prog;
    double w = insnotes_bank_worst_tail(&b, &prog);
    CHECK(fabs(w - 0.2) < 1e-12 && prog == 52, "worst %g program %d, want 0.2 and 52", w, prog);
    clips[200 + 199] = 0;
    clips[99] = 900; /* before the last 100 samples of clip 0: not tail */
    w = insnotes_bank_worst_tail(&b, &prog);
    CHECK(fabs(w - 0.05) < 1e-12 && prog == 19, "worst %g program %d, want 0.05 and 19", w, prog);
    return 0;
}
