/* The InsNotes STFT on the device (kernels/stft.cu) against FFTW (host/stft_cpu.c) and the direct DFT.
 * Every test starts with REQUIRE_GPU() (SKIP without a device). Inputs are fresh random audio in [-1, 1] (plus
 * one block of sines and one of silence, which exercises log(0 + 1e-5)); outputs are poisoned with NaN first, so
 * an element the GPU never writes fails. Error measures (both limits 1e-4):
 *   magnitude: |m_gpu - m_ref| / (largest reference magnitude of the frame), m = exp(value) - 1e-5;
 *   log:       |value_gpu - value_ref| over bins whose reference magnitude is >= 1e-3 of the frame's largest.
 * n_frags: 1, 5, 384 (a training batch: 32 x 12), then 1 again (plan rebuilt for a smaller batch, buffers kept). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gpu_test.h"
#include "insnotes.h"
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

TEST(gpu_stft_matches_fftw_and_dft) {
    REQUIRE_GPU();
    StftGpu *g = stft_gpu_create();
    CHECK(g, "stft_gpu_create: %s", v3_last_error());
    StftCpu *c = stft_cpu_create();
    const int sizes[4] = {1, 5, 384, 1};
    for (int si = 0; si < 4; si++) {
        int n = sizes[si];
        float *a = make_audio(n, 100 + si), *og = xmalloc(sizeof(float) * n * FE), *oc = xmalloc(sizeof(float) * n * FE);
        poison(og, (size_t)n * FE);
        poison(oc, (size_t)n * FE);
        CHECK(stft_logmag_gpu(g, a, n, og) == 0, "n_frags %d: %s", n, v3_last_error());
        stft_logmag_cpu(c, a, n, oc);
        double mag, lg;
        test_stft_err(og, oc, n, &mag, &lg);
        CHECK(mag <= 1e-4 && lg <= 1e-4, "n_frags %d: GPU vs FFTW magnitude error %.3g, log error %.3g", n, mag, lg);
        /* the DFT is slow: the first 2 blocks only */
        int nd = n < 2 ? n : 2;
        float *od = xmalloc(sizeof(float) * nd * FE);
        stft_logmag_dft(a, nd, od);
        test_stft_err(og, od, nd, &mag, &lg);
        CHECK(mag <= 1e-4 && lg <= 1e-4, "n_frags %d: GPU vs DFT magnitude error %.3g, log error %.3g", n, mag, lg);
        if (n >= 3) {
            const float *last = og + (size_t)(n - 1) * FE;
            int silent_ok = 1;
            for (int i = 0; i < FE; i++) silent_ok &= fabsf(last[i] - logf(1e-5f)) < 1e-6f;
            CHECK(silent_ok, "n_frags %d: silent block is not log(1e-5)", n);
        }
        /* repeated run: bit-identical */
        float *og2 = xmalloc(sizeof(float) * n * FE);
        poison(og2, (size_t)n * FE);
        CHECK(stft_logmag_gpu(g, a, n, og2) == 0, "%s", v3_last_error());
        CHECK(!memcmp(og, og2, sizeof(float) * n * FE), "n_frags %d: two GPU runs differ", n);
        ffree(a);
        free(og);
        free(oc);
        free(od);
        free(og2);
    }
    stft_cpu_free(c);
    stft_gpu_free(g);
    return 0;
}

TEST(gpu_stft_rejects_bad_count) {
    REQUIRE_GPU();
    StftGpu *g = stft_gpu_create();
    CHECK(g, "stft_gpu_create: %s", v3_last_error());
    float dummy[1] = {0};
    int rc = stft_logmag_gpu(g, dummy, 0, dummy);
    stft_gpu_free(g);
    CHECK(rc == -1 && strstr(v3_last_error(), "fragments"), "n_frags 0 accepted: '%s'", v3_last_error());
    return 0;
}
