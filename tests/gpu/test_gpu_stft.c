/* The InsNotes features on the device (kernels/stft.cu, cuda_stft_features: audio uploaded, STFT, mask, 0 -> 1e-8
 * written into a device buffer) against the CPU path (FFTW + insnotes_mask_and_guard) and the direct DFT, and the
 * loader's device batches (host/train/loader.c: InsNotes get_raw -> cuda_stft_features into x_dev) against its host
 * batches of the same steps.
 * Every test starts with REQUIRE_GPU() (SKIP without a device). Device outputs are poisoned with NaN first (all
 * bytes 0xFF), so an element the GPU never writes fails: test_stft_err turns any NaN into an infinite error.
 * Error measures (both limits 1e-4):
 *   magnitude: |m_gpu - m_ref| / (largest reference magnitude of the frame), m = exp(value) - 1e-5 (relative);
 *   log:       |value_gpu - value_ref| over bins whose reference magnitude is >= 1e-3 of the frame's largest.
 * Masked rows must be exactly 1e-8 on the device, as on the CPU, and no exact 0 may remain. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "cuda_backend.h"
#include "datasource.h"
#include "gpu_test.h"
#include "insnotes.h"
#include "loader.h"
#include "stft.h"
#include "testing.h"

#define FE (INSNOTES_BINS * INSNOTES_FRAMES)

/* Random blocks; block 0 of a multi-block input is sines, the last one silence. */
static float *make_audio(int n, unsigned long long seed) {
    float *a = hrand((size_t)n * INSNOTES_FRAG_AUDIO, seed, -1.0f, 1.0f);
    if (n >= 3) {
        for (int t = 0; t < INSNOTES_FRAG_AUDIO; t++)
            a[t] = (float)(0.4 * sin(0.2271 * t) + 0.3 * sin(1.1 * t + 0.5));
        memset(a + (size_t)(n - 1) * INSNOTES_FRAG_AUDIO, 0, sizeof(float) * INSNOTES_FRAG_AUDIO);
    }
    return a;
}

/* Mask bands: sample b gets rows [lo, lo + w) with w = b % 16 (0: no mask), the last sample of a batch of more
 * than one a band that reaches past bin 511 (clipped, as on the CPU). */
static void make_mask(int B, int32_t *mask) {
    for (int b = 0; b < B; b++) {
        mask[2 * b] = (37 * b + 5) % 497;
        mask[2 * b + 1] = b % 16;
    }
    if (B > 1) {
        mask[2 * (B - 1)] = 505;
        mask[2 * (B - 1) + 1] = 14;
    }
}

/* Masked rows exactly 1e-8, no exact zeros: count of violations in x [B][n_frag][512][32]. */
static long mask_violations(const float *x, int B, int nf, const int32_t *mask) {
    long bad = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < nf; i++)
            for (int k = 0; k < INSNOTES_BINS; k++)
                for (int t = 0; t < INSNOTES_FRAMES; t++) {
                    float v = x[((size_t)b * nf + i) * FE + (size_t)k * INSNOTES_FRAMES + t];
                    int in = k >= mask[2 * b] && k < mask[2 * b] + mask[2 * b + 1];
                    bad += in ? v != 1e-8f : (v == 0.0f || !isfinite(v));
                }
    return bad;
}

/* cuda_stft_features of B samples x nf fragments into a NaN-poisoned device buffer; the host copy into `out`. */
static int run_dev(CudaStft *g, const float *audio, int B, int nf, const int32_t *mask, float *out) {
    size_t n = (size_t)B * nf * FE;
    float *d = dnan(n);
    int rc = cuda_stft_features(g, audio, B, nf, mask, d);
    if (rc) fprintf(stderr, "    cuda_stft_features(B %d, n_frag %d): %s\n", B, nf, v3_last_error());
    int ok = !rc && dget(out, d, n);
    cuda_free(d);
    return ok;
}

TEST(gpu_stft_features_match_cpu_and_dft) {
    REQUIRE_GPU();
    CudaStft *g = cuda_stft_create();
    CHECK(g, "cuda_stft_create: %s", v3_last_error());
    StftCpu *c = stft_cpu_create();
    /* (B, n_frag): one fragment, one sample of 5, a training batch (32 x 12 = 384 fragments), then fewer again
     * (plan rebuilt for a smaller batch, buffers kept) */
    const int shapes[4][2] = {{1, 1}, {1, 5}, {32, 12}, {2, 3}};
    for (int si = 0; si < 4; si++) {
        int B = shapes[si][0], nf = shapes[si][1], n = B * nf;
        size_t ne = (size_t)n * FE;
        float *a = make_audio(n, 100 + si);
        if (si == 2) { /* the loader's case: pinned host audio (asynchronous upload) */
            float *p = cuda_host_alloc(sizeof(float) * (size_t)n * INSNOTES_FRAG_AUDIO);
            CHECK(p, "cuda_host_alloc: %s", v3_last_error());
            memcpy(p, a, sizeof(float) * (size_t)n * INSNOTES_FRAG_AUDIO);
            ffree(a);
            a = p;
        }
        int32_t mask[64];
        make_mask(B, mask);
        float *og = xmalloc(sizeof(float) * ne), *oc = xmalloc(sizeof(float) * ne), *og2 = xmalloc(sizeof(float) * ne);
        poison(oc, ne);
        CHECK(run_dev(g, a, B, nf, mask, og), "B %d, n_frag %d: device features", B, nf);
        stft_logmag_cpu(c, a, n, oc);
        insnotes_mask_and_guard(oc, B, nf, mask);
        double mag, lg;
        test_stft_err(og, oc, n, &mag, &lg);
        CHECK(mag <= 1e-4 && lg <= 1e-4, "B %d, n_frag %d: GPU vs CPU magnitude error %.3g, log error %.3g", B, nf,
              mag, lg);
        long bad = mask_violations(og, B, nf, mask);
        CHECK(bad == 0, "B %d, n_frag %d: %ld values break 'masked rows are 1e-8, no zeros'", B, nf, bad);
        /* the DFT is slow: the first 2 blocks (of sample 0) only */
        int nd = nf < 2 ? nf : 2;
        float *od = xmalloc(sizeof(float) * nd * FE);
        stft_logmag_dft(a, nd, od);
        insnotes_mask_and_guard(od, 1, nd, mask);
        test_stft_err(og, od, nd, &mag, &lg);
        CHECK(mag <= 1e-4 && lg <= 1e-4, "B %d, n_frag %d: GPU vs DFT magnitude error %.3g, log error %.3g", B, nf,
              mag, lg);
        if (n >= 3) { /* the silent last block: log(1e-5) outside its sample's band */
            const float *last = og + (size_t)(n - 1) * FE;
            int lo = mask[2 * (B - 1)], hi = lo + mask[2 * (B - 1) + 1], silent_ok = 1;
            for (int i = 0; i < FE; i++)
                if (i / INSNOTES_FRAMES < lo || i / INSNOTES_FRAMES >= hi) silent_ok &= fabsf(last[i] - logf(1e-5f)) < 1e-6f;
            CHECK(silent_ok, "B %d, n_frag %d: silent block is not log(1e-5)", B, nf);
        }
        /* repeated run: bit-identical */
        CHECK(run_dev(g, a, B, nf, mask, og2), "B %d, n_frag %d: second run", B, nf);
        CHECK(!memcmp(og, og2, sizeof(float) * ne), "B %d, n_frag %d: two GPU runs differ", B, nf);
        if (si == 2) cuda_host_free(a);
        else ffree(a);
        free(og);
        free(oc);
        free(od);
        free(og2);
    }
    stft_cpu_free(c);
    cuda_stft_destroy(g);
    return 0;
}

TEST(gpu_stft_rejects_bad_counts) {
    REQUIRE_GPU();
    CudaStft *g = cuda_stft_create();
    CHECK(g, "cuda_stft_create: %s", v3_last_error());
    float dummy[1] = {0};
    int32_t mask[2] = {0, 0};
    int rc0 = cuda_stft_features(g, dummy, 0, 1, mask, dummy);
    int rc1 = cuda_stft_features(g, dummy, 1, 0, mask, dummy);
    cuda_stft_destroy(g);
    CHECK(rc0 == -1 && rc1 == -1 && strstr(v3_last_error(), "fragments"), "B 0 / n_frag 0 accepted: '%s'",
          v3_last_error());
    return 0;
}

/* ---- the loader's device batches on a hand-made InsNotes set (no FluidSynth on the GPU machine) ---- */

/* DIR with bank.v3nb (2 programs x 12 pitches, 1 layer of decaying harmonic tones) and index.tsv (12 train
 * files); caller frees the string. */
static char *toy_set(void) {
    char *dir = test_tmpdir("gpu_insnotes");
    InsnotesBank b;
    memset(&b, 0, sizeof b);
    b.sample_rate = INSNOTES_SR, b.n_programs = 2, b.n_pitches = 12, b.n_layers = 1, b.clip_len = INSNOTES_NOTE_LEN;
    int32_t programs[2] = {64, 19}, velocities[1] = {100};
    float gain[24];
    int16_t *clips = xmalloc(sizeof(int16_t) * 24 * INSNOTES_NOTE_LEN);
    b.programs = programs, b.velocities = velocities, b.gain = gain, b.clips = clips;
    for (int c = 0; c < 24; c++) {
        int prog = c / 12, pitch = c % 12;
        double f0 = 261.6256 * pow(2.0, pitch / 12.0);
        gain[c] = 1.0f / 32768;
        for (int t = 0; t < INSNOTES_NOTE_LEN; t++) {
            double ph = 2 * 3.14159265358979323846 * f0 * t / INSNOTES_SR;
            double v = sin(ph) + (prog ? 0.5 * sin(3 * ph) : 0.3 * sin(2 * ph));
            clips[(size_t)c * INSNOTES_NOTE_LEN + t] = (int16_t)lrint(15000 * v * exp(-t / 6000.0));
        }
    }
    int rc = insnotes_bank_save(test_path(dir, "bank.v3nb"), &b);
    free(clips);
    char txt[4096];
    int len = snprintf(txt, sizeof txt, "# v3-insnotes 1\n# ood 0\n# n_files 12\n");
    for (int i = 0; i < 12; i++)
        len += snprintf(txt + len, sizeof txt - len, "ins%02d_%03d\ttrain\t%d\t%d\t0x%016llx\t0.9\n", i / 6, i % 6,
                        i / 6, (int)programs[i / 6], 0x1234567800ull + (unsigned long long)i * 7919);
    if (rc || test_write_all(test_path(dir, "index.tsv"), txt, (size_t)len))
        V3_FATAL("writing the toy InsNotes set in %s: %s", dir, v3_last_error());
    return dir;
}

/* The device batch of step `s` (NaN-poisoned first) against the host batch of the same step. */
static int same_batch(const Batch *bg, const Batch *bc, int nf, const char *what) {
    size_t ne = (size_t)bc->B * nf * FE;
    float *xg = xmalloc(sizeof(float) * ne);
    int ok = bg->B == bc->B && bg->step == bc->step && dget(xg, bg->x_dev, ne);
    double mag = INFINITY, lg = INFINITY;
    if (ok) test_stft_err(xg, bc->x, bc->B * nf, &mag, &lg);
    int labels = ok && !memcmp(bg->content, bc->content, sizeof(int32_t) * bc->B * nf) &&
                 !memcmp(bg->style, bc->style, sizeof(int32_t) * bc->B * nf);
    long bad = 0; /* masked rows: 1e-8 on the host batch must be 1e-8 on the device too */
    for (size_t e = 0; ok && e < ne; e++) bad += (bc->x[e] == 1e-8f) != (xg[e] == 1e-8f) || xg[e] == 0.0f;
    free(xg);
    if (!ok || !labels || bad || !(mag <= 1e-4 && lg <= 1e-4)) {
        fprintf(stderr, "    %s, step %llu: B %d/%d, labels %s, %ld mask mismatches, magnitude error %.3g, log "
                "error %.3g\n", what, (unsigned long long)bc->step, bg->B, bc->B, labels ? "equal" : "differ", bad,
                mag, lg);
        return 0;
    }
    return 1;
}

TEST(gpu_loader_device_batches_match_host_batches) {
    REQUIRE_GPU();
    char *dir = toy_set();
    DataSource dg, dc;
    enum { B = 5, NF = 4 };
    CHECK(datasource_open(dir, "train", NF, &dg) == 0 && datasource_open(dir, "train", NF, &dc) == 0, "open: %s",
          v3_last_error());
    dg.use_gpu = 1;
    LoaderOpts og = {&dg, B, 3, 11, 1}, oc = {&dc, B, 3, 11, 0}; /* 12 files: batches of 5, 5, 2 */
    Loader *lg = loader_create(&og), *lc = loader_create(&oc);
    CHECK(lg && lc, "loader_create: %s", v3_last_error());
    for (uint64_t s = 0; s < 4; s++) {
        const Batch *bg = loader_produce(lg, s);
        CHECK(bg && !bg->x && bg->x_dev, "device batch of step %llu: %s", (unsigned long long)s, v3_last_error());
        /* poison the slot's device buffer, then produce the same step into it again */
        CHECK(cuda_memset((void *)bg->x_dev, 0xFF, sizeof(float) * B * NF * FE) == 0, "%s", v3_last_error());
        CHECK((bg = loader_produce(lg, s)) != NULL, "step %llu again: %s", (unsigned long long)s, v3_last_error());
        const Batch *bc = loader_produce(lc, s);
        CHECK(bc && bc->x, "host batch of step %llu: %s", (unsigned long long)s, v3_last_error());
        CHECK(same_batch(bg, bc, NF, "loader_produce"), "device batch of step %llu differs from the host batch",
              (unsigned long long)s);
    }
    /* through the loader thread: steps 2..5 (an epoch boundary) */
    CHECK(!loader_start(lg, 2, 6), "start: %s", v3_last_error());
    for (uint64_t s = 2; s < 6; s++) {
        const Batch *bg = loader_next(lg);
        CHECK(bg, "thread, step %llu: %s", (unsigned long long)s, v3_last_error());
        const Batch *bc = loader_produce(lc, s);
        CHECK(bc && same_batch(bg, bc, NF, "loader thread"), "thread: device batch of step %llu differs",
              (unsigned long long)s);
    }
    loader_free(lg);
    loader_free(lc);
    datasource_close(&dg);
    datasource_close(&dc);
    return test_done(0, dir);
}
