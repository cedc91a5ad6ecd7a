/* Griffin-Lim on the CPU (host/dsp/griffinlim.c): the STFT/ISTFT pair it iterates, convergence on a harmonic
 * signal, the features -> magnitudes conversion against the training feature (host/dsp/stft_cpu.c), determinism and
 * argument checks, and the WAV writer. V3_TEST_VERBOSE=1 prints the measured numbers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef V3_HAVE_SNDFILE
#include <sndfile.h>
#endif

#include "common.h"
#include "griffinlim.h"
#include "griffinlim_internal.h"
#include "insnotes.h"
#include "stft.h"
#include "testing.h"

#define PI 3.14159265358979323846

static int verbose(void) { return getenv("V3_TEST_VERBOSE") != NULL; }
static size_t audio_len(int frames) { return (size_t)GL_HOP * (frames - 1); }

/* A note-like test signal: harmonics 1..6 of f0 (amplitude 1/h, a little inharmonic drift) under an
 * attack-decay envelope, at 16 kHz. */
static void harmonic_signal(float *x, size_t n, double f0, double phase0) {
    for (size_t i = 0; i < n; i++) {
        double t = i / 16000.0, env = (1.0 - exp(-t / 0.01)) * exp(-t / 0.4), s = 0;
        for (int h = 1; h <= 6; h++) s += sin(2 * PI * f0 * h * (1 + 0.0005 * h) * t + phase0 * h) / h;
        x[i] = (float)(0.3 * env * s);
    }
}

/* |STFT| [frames][GL_BINS] through the internal STFT. */
static int magnitudes(const float *x, int frames, float *mag) {
    float *spec = xmalloc(sizeof(float) * 2 * frames * GL_BINS);
    int rc = gl_stft(x, frames, spec);
    for (int i = 0; !rc && i < frames * GL_BINS; i++) mag[i] = hypotf(spec[2 * i], spec[2 * i + 1]);
    free(spec);
    return rc;
}

TEST(griffinlim_istft_inverts_stft) {
    /* With the squared-window normalisation ISTFT(STFT(x)) = x at every sample of [0, L), edges included
     * (every sample lies in two frames); checked on all samples, for several lengths. */
    const int counts[3] = {2, 7, 40};
    for (int c = 0; c < 3; c++) {
        int frames = counts[c];
        size_t L = audio_len(frames);
        float *x = xmalloc(sizeof(float) * L), *y = xmalloc(sizeof(float) * L),
              *spec = xmalloc(sizeof(float) * 2 * frames * GL_BINS);
        fill_uniform(x, L, 11 + c, -1.0f, 1.0f);
        poison(y, L);
        CHECK(gl_stft(x, frames, spec) == 0, "%s", v3_last_error());
        CHECK(gl_istft(spec, frames, y) == 0, "%s", v3_last_error());
        double err = 0, peak = 0;
        for (size_t i = 0; i < L; i++) {
            double e = fabs((double)y[i] - x[i]);
            if (!(e <= err)) err = e; /* NaN propagates */
            if (fabs(x[i]) > peak) peak = fabs(x[i]);
        }
        if (verbose()) fprintf(stderr, "    %d frames: ISTFT(STFT(x)) max error %.3g (peak %.3g)\n", frames, err, peak);
        CHECK(err <= 1e-4 * peak, "%d frames: round-trip error %.3g, peak %.3g", frames, err, peak);
        free(x);
        free(y);
        free(spec);
    }
    /* Bin 0 of a constant is its windowed sum: sum w = N/2 (interior frames) pins the unnormalised
     * librosa convention and the framing. */
    {
        int frames = 5;
        size_t L = audio_len(frames);
        float *x = xmalloc(sizeof(float) * L), *spec = xmalloc(sizeof(float) * 2 * frames * GL_BINS);
        for (size_t i = 0; i < L; i++) x[i] = 1.0f;
        CHECK(gl_stft(x, frames, spec) == 0, "%s", v3_last_error());
        CHECK(fabsf(spec[2 * (2 * GL_BINS)] - GL_N_FFT / 2) < 1e-3f, "interior frame DC %g, expected %d",
              spec[2 * (2 * GL_BINS)], GL_N_FFT / 2);
        /* frame 0 sees samples [-512, 512): only the window's second half, whose sum is N/4 + 1/2 */
        CHECK(fabsf(spec[0] - (GL_N_FFT / 4 + 0.5f)) < 1e-3f, "frame 0 DC %g, expected %g", spec[0],
              GL_N_FFT / 4 + 0.5);
        free(x);
        free(spec);
    }
    return 0;
}

/* Spectral convergence measured on this signal (32 frames): seeds 1, 2, 3 give 0.039, 0.052, 0.062 after 32
 * iterations, 0.024, 0.029, 0.030 after 64, 0.013, 0.016, 0.021 after 100; over seeds 1..40 the ranges are
 * 0.039-0.104, 0.022-0.047, 0.013-0.032, and 0.46-0.58 for the random phase alone. The same magnitudes and
 * initial phase through librosa.griffinlim (float64) give the same audio to 1e-5 at 32 iterations. The limits
 * below (for seeds 1-3, deterministic) leave a margin of about 1.6-2x. */
#define SC_MAX_32 0.10
#define SC_MAX_100 0.04
#define SC_MIN_RANDOM 0.3

TEST(griffinlim_converges_on_harmonic_signal) {
    const int frames = 32;
    size_t L = audio_len(frames);
    float *x = xmalloc(sizeof(float) * L), *mag = xmalloc(sizeof(float) * frames * GL_BINS),
          *y = xmalloc(sizeof(float) * L);
    harmonic_signal(x, L, 261.63, 0.3);
    CHECK(magnitudes(x, frames, mag) == 0, "%s", v3_last_error());
    /* the measure itself: the true signal matches its own magnitudes */
    double sc_true = gl_spectral_convergence(mag, frames, x);
    CHECK(sc_true < 1e-5, "spectral convergence of the true signal %.3g", sc_true);
    const int iters[4] = {0, 32, 64, 100};
    for (uint64_t seed = 1; seed <= 3; seed++) {
        double sc[4];
        for (int k = 0; k < 4; k++) {
            poison(y, L);
            clock_t c0 = clock();
            CHECK(griffinlim_cpu(mag, frames, iters[k], seed, y) == 0, "%s", v3_last_error());
            double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
            sc[k] = gl_spectral_convergence(mag, frames, y);
            if (verbose())
                fprintf(stderr, "    seed %d, %3d iterations: spectral convergence %.4f (%.1f ms CPU)\n", (int)seed,
                        iters[k], sc[k], 1e3 * cpu);
        }
        CHECK(sc[0] > SC_MIN_RANDOM, "seed %d: random phase already gives %.3g", (int)seed, sc[0]);
        CHECK(sc[1] < SC_MAX_32, "seed %d: spectral convergence %.4f after 32 iterations (limit %g)", (int)seed,
              sc[1], SC_MAX_32);
        CHECK(sc[3] < SC_MAX_100, "seed %d: spectral convergence %.4f after 100 iterations (limit %g)", (int)seed,
              sc[3], SC_MAX_100);
        CHECK(sc[2] < sc[1] && sc[3] < sc[2], "seed %d: no steady improvement: %.4f, %.4f, %.4f at 32, 64, 100",
              (int)seed, sc[1], sc[2], sc[3]);
    }
    free(x);
    free(mag);
    free(y);
    return 0;
}

TEST(griffinlim_features_to_mag_matches_training_stft) {
    /* A fragment block as the dataset builds it: 512 leading samples, 16384 more (include/stft.h). Zeros before
     * and after the signal make the block exactly the centred, zero-padded framing of the L-sample signal, so
     * the training feature and Griffin-Lim's STFT must agree frame for frame. */
    const int frames = INSNOTES_FRAMES;
    size_t L = audio_len(frames);
    CHECK(INSNOTES_FRAG_AUDIO == GL_HOP + (int)L + GL_HOP, "block %d vs %zu", INSNOTES_FRAG_AUDIO, L);
    float *block = xcalloc(INSNOTES_FRAG_AUDIO, sizeof(float));
    harmonic_signal(block + GL_HOP, L, 440.0, 1.1);
    fill_uniform(block + GL_HOP + L / 2, L / 2, 5, -0.05f, 0.05f); /* noise in the second half: every bin active */
    for (size_t i = L / 2; i < L; i++) block[GL_HOP + i] += 0.1f * sinf(0.01f * (float)i);
    float *feat = xmalloc(sizeof(float) * INSNOTES_BINS * frames), *mag = xmalloc(sizeof(float) * frames * GL_BINS),
          *ref = xmalloc(sizeof(float) * frames * GL_BINS);
    StftCpu *s = stft_cpu_create();
    stft_logmag_cpu(s, block, 1, feat);
    stft_cpu_free(s);
    poison(mag, (size_t)frames * GL_BINS);
    gl_features_to_mag(feat, frames, mag);
    CHECK(magnitudes(block + GL_HOP, frames, ref) == 0, "%s", v3_last_error());
    double worst = 0;
    for (int t = 0; t < frames; t++) {
        double peak = 0;
        for (int k = 0; k < GL_BINS; k++) peak = fmax(peak, ref[t * GL_BINS + k]);
        for (int k = 0; k < GL_BINS - 1; k++) {
            double e = fabs((double)mag[t * GL_BINS + k] - ref[t * GL_BINS + k]) / peak;
            if (!(e <= worst)) worst = e;
        }
        CHECK(mag[t * GL_BINS + GL_BINS - 1] == 0.0f, "frame %d: Nyquist bin %g, expected 0", t,
              mag[t * GL_BINS + GL_BINS - 1]);
    }
    if (verbose()) fprintf(stderr, "    features -> magnitudes: worst error %.3g of the frame's peak\n", worst);
    CHECK(worst < 1e-5, "features -> magnitudes differ from |STFT| by %.3g of the frame's peak", worst);
    /* the floor: a silent bin's feature log(1e-5) gives magnitude 0 (never negative) */
    float m2[2 * GL_BINS];
    float *lm = xmalloc(sizeof(float) * INSNOTES_BINS * 2);
    for (int i = 0; i < INSNOTES_BINS * 2; i++) lm[i] = logf(1e-5f);
    gl_features_to_mag(lm, 2, m2);
    for (int i = 0; i < 2 * GL_BINS; i++) CHECK(m2[i] >= 0.0f && m2[i] < 1e-9f, "silent bin %d gives %g", i, m2[i]);
    free(lm);
    free(block);
    free(feat);
    free(mag);
    free(ref);
    return 0;
}

TEST(griffinlim_deterministic_and_checked) {
    const int frames = 12;
    size_t L = audio_len(frames);
    float *mag = xmalloc(sizeof(float) * frames * GL_BINS), *a = xmalloc(sizeof(float) * L),
          *b = xmalloc(sizeof(float) * L);
    fill_uniform(mag, (size_t)frames * GL_BINS, 21, 0.0f, 3.0f);
    for (int t = 0; t < frames; t++) mag[t * GL_BINS + 100] = 0.0f; /* exact zeros take the guarded branch */
    poison(a, L);
    poison(b, L);
    CHECK(griffinlim_cpu(mag, frames, 10, 42, a) == 0, "%s", v3_last_error());
    CHECK(griffinlim_cpu(mag, frames, 10, 42, b) == 0, "%s", v3_last_error());
    for (size_t i = 0; i < L; i++) CHECK(isfinite(a[i]), "sample %zu is %g", i, a[i]);
    CHECK(!memcmp(a, b, sizeof(float) * L), "two runs with seed 42 differ");
    poison(b, L);
    CHECK(griffinlim_cpu(mag, frames, 10, 43, b) == 0, "%s", v3_last_error());
    CHECK(memcmp(a, b, sizeof(float) * L), "seeds 42 and 43 give the same audio");
    /* iters 0 is the random-phase inverse: allowed, finite */
    poison(b, L);
    CHECK(griffinlim_cpu(mag, frames, 0, 42, b) == 0, "%s", v3_last_error());
    for (size_t i = 0; i < L; i++) CHECK(isfinite(b[i]), "iters 0: sample %zu is %g", i, b[i]);
    /* bad arguments: -1 and a message, output untouched */
    poison(b, L);
    CHECK(griffinlim_cpu(mag, 1, 10, 42, b) == -1 && strstr(v3_last_error(), "frames"), "1 frame: '%s'",
          v3_last_error());
    CHECK(griffinlim_cpu(mag, frames, -1, 42, b) == -1 && strstr(v3_last_error(), "iterations"), "-1 iters: '%s'",
          v3_last_error());
    mag[7] = -1.0f;
    CHECK(griffinlim_cpu(mag, frames, 10, 42, b) == -1 && strstr(v3_last_error(), "magnitude"), "negative: '%s'",
          v3_last_error());
    mag[7] = NAN;
    CHECK(griffinlim_cpu(mag, frames, 10, 42, b) == -1 && strstr(v3_last_error(), "magnitude"), "NaN: '%s'",
          v3_last_error());
    CHECK(isnan(b[0]) && isnan(b[L - 1]), "a failed call wrote the output");
    free(mag);
    free(a);
    free(b);
    return 0;
}

TEST(griffinlim_concurrent_calls_agree) {
    /* Plans are made in every call (and by the training STFT in loader threads): the shared FFTW planner lock
     * must make concurrent calls safe and leave each result as in a serial run. */
    enum { CALLS = 8, FRAMES = 6 };
    size_t L = audio_len(FRAMES), ns = (size_t)FRAMES * GL_BINS;
    float *mag = xmalloc(sizeof(float) * ns), *serial = xmalloc(sizeof(float) * CALLS * L),
          *par = xmalloc(sizeof(float) * CALLS * L);
    fill_uniform(mag, ns, 77, 0.0f, 1.0f);
    for (int i = 0; i < CALLS; i++)
        CHECK(griffinlim_cpu(mag, FRAMES, 4, (uint64_t)i, serial + i * L) == 0, "%s", v3_last_error());
    poison(par, CALLS * L);
    int fails = 0;
#pragma omp parallel for num_threads(4) schedule(static, 1) reduction(+ : fails)
    for (int i = 0; i < CALLS; i++) {
        StftCpu *s = stft_cpu_create(); /* another planner user at the same time */
        fails += griffinlim_cpu(mag, FRAMES, 4, (uint64_t)i, par + i * L) != 0;
        stft_cpu_free(s);
    }
    CHECK(fails == 0, "%d concurrent calls failed", fails);
    CHECK(!memcmp(serial, par, sizeof(float) * CALLS * L), "concurrent results differ from serial ones");
    free(mag);
    free(serial);
    free(par);
    return 0;
}

TEST(griffinlim_wav_write_reads_back) {
    const int n = 4000, sr = 16000;
    float *x = xmalloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) x[i] = (float)(0.5 * sin(0.05 * i));
    x[10] = 3.0f; /* clipped to 1 */
    x[11] = -3.0f;
    char *dir = test_tmpdir("glwav");
    char *path = test_path(dir, "out.wav");
#ifndef V3_HAVE_SNDFILE
    int rc = wav_write_mono(path, x, n, sr);
    free(x);
    test_rm_tree(dir);
    CHECK(rc == -1 && strstr(v3_last_error(), "libsndfile1-dev"), "without libsndfile: '%s'", v3_last_error());
    SKIP("this build has no libsndfile (the error names libsndfile1-dev, as it should)");
#else
    int rc = wav_write_mono(path, x, n, sr);
    CHECK(rc == 0, "%s", v3_last_error());
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    CHECK(sf, "libsndfile cannot read %s back: %s", path, sf_strerror(NULL));
    float *y = xmalloc(sizeof(float) * (n + 16));
    sf_count_t got = sf_readf_float(sf, y, n + 16);
    sf_close(sf);
    CHECK(info.frames == n && got == n, "%lld frames (read %lld), expected %d", (long long)info.frames,
          (long long)got, n);
    CHECK(info.samplerate == sr && info.channels == 1, "rate %d, channels %d", info.samplerate, info.channels);
    CHECK((info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_WAV && (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16,
          "format 0x%x is not 16-bit PCM WAV", info.format);
    double err = 0;
    for (int i = 0; i < n; i++) {
        double want = x[i] > 1 ? 1 : x[i] < -1 ? -1 : x[i];
        err = fmax(err, fabs(y[i] - want));
    }
    CHECK(err <= 1.0 / 16384, "read-back error %.3g exceeds 16-bit quantisation", err);
    /* bad arguments and an unwritable path: -1 with a message */
    CHECK(wav_write_mono(path, x, n, 0) == -1 && strstr(v3_last_error(), "sample rate"), "'%s'", v3_last_error());
    CHECK(wav_write_mono(test_path(dir, "no/such/dir.wav"), x, n, sr) == -1, "unwritable path accepted");
    free(y);
    free(x);
    return test_done(0, dir);
#endif
}
