/* Griffin-Lim on the device (kernels/griffinlim.cu) against the CPU path (host/dsp/griffinlim.c), which is the
 * specification. Every test starts with REQUIRE_GPU() (SKIP without a device). Inputs are fresh random
 * magnitudes: those of harmonic signals with random pitch and phase, and uniform random magnitudes (an
 * inconsistent spectrogram, the hardest case for agreement). Outputs are poisoned with NaN first.
 * Both paths start from the same uploaded initial phase and tables, so they differ only by float rounding in
 * the FFTs and kernels, which Griffin-Lim's iterations amplify (more for inconsistent, random magnitudes). The
 * tolerance on  audio error = max |gpu - cpu| / max |cpu|  is per case, about 10-25x what float rounding gave
 * in a CPU-only measurement (the CPU path against librosa.griffinlim with the same initial phase, float32 and
 * float64: one synthesis ~1e-6; 32 iterations ~2e-5 on a harmonic tone and ~1e-4 on random magnitudes; 16
 * iterations over 200 frames ~1e-5). The two outputs' spectral convergence must agree to 1e-3 absolute.
 * Not yet run on a GPU: the limits are an estimate until then. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gpu_test.h"
#include "griffinlim.h"
#include "griffinlim_internal.h"
#include "rng.h"
#include "testing.h"

#define PI 3.14159265358979323846

typedef struct {
    const char *what;
    int frames, iters, harmonic;
    double tol;
} Case;

/* Magnitudes [frames][GL_BINS]: uniform random values, or |STFT| of a tone with random pitch, harmonic
 * phases and decay (through the CPU path's own STFT, so they are the magnitudes of a real signal). */
static float *make_mag(const Case *c, uint64_t seed) {
    size_t ns = (size_t)c->frames * GL_BINS, L = (size_t)GL_HOP * (c->frames - 1);
    float *mag = xmalloc(sizeof(float) * ns);
    Rng r;
    rng_seed(&r, seed);
    if (!c->harmonic) {
        for (size_t i = 0; i < ns; i++) mag[i] = (float)(2.0 * rng_uniform(&r));
        return mag;
    }
    double f0 = 100.0 + 400.0 * rng_uniform(&r), tau = 0.2 + 0.6 * rng_uniform(&r), ph[8];
    for (int h = 0; h < 8; h++) ph[h] = 2 * PI * rng_uniform(&r);
    float *x = xmalloc(sizeof(float) * L), *spec = xmalloc(sizeof(float) * 2 * ns);
    for (size_t i = 0; i < L; i++) {
        double t = i / 16000.0, s = 0;
        for (int h = 1; h <= 8; h++) s += sin(2 * PI * f0 * h * t + ph[h - 1]) / h;
        x[i] = (float)(0.3 * (1 - exp(-t / 0.01)) * exp(-t / tau) * s);
    }
    if (gl_stft(x, c->frames, spec)) V3_FATAL("%s", v3_last_error());
    for (size_t i = 0; i < ns; i++) mag[i] = hypotf(spec[2 * i], spec[2 * i + 1]);
    free(x);
    free(spec);
    return mag;
}

static int finite_all(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

TEST(gpu_griffinlim_matches_cpu) {
    REQUIRE_GPU();
    const Case cases[] = {
        {"2 frames, no iteration", 2, 0, 0, 1e-5},
        {"random magnitudes, 9 frames, 1 iteration", 9, 1, 0, 1e-5},
        {"harmonic, 32 frames, 32 iterations", 32, 32, 1, 5e-4},
        {"random magnitudes, 32 frames, 32 iterations", 32, 32, 0, 2e-3},
        {"harmonic, 200 frames, 16 iterations", 200, 16, 1, 5e-4},
    };
    Rng r;
    rng_seed(&r, 0x6c); /* fixed test seeds, fresh inputs per case */
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const Case *c = &cases[ci];
        uint64_t mseed = rng_u64(&r), gseed = rng_u64(&r);
        float *mag = make_mag(c, mseed);
        size_t L = (size_t)GL_HOP * (c->frames - 1);
        float *cpu = xmalloc(sizeof(float) * L), *gpu = xmalloc(sizeof(float) * L), *gpu2 = xmalloc(sizeof(float) * L);
        poison(cpu, L);
        poison(gpu, L);
        poison(gpu2, L);
        CHECK(griffinlim_cpu(mag, c->frames, c->iters, gseed, cpu) == 0, "%s: CPU: %s", c->what, v3_last_error());
        CHECK(griffinlim_gpu(mag, c->frames, c->iters, gseed, gpu) == 0, "%s: GPU: %s", c->what, v3_last_error());
        CHECK(finite_all(gpu, L), "%s: GPU output has NaN/Inf (unwritten samples?)", c->what);
        double peak = 0, err = 0;
        size_t worst = 0;
        for (size_t i = 0; i < L; i++) {
            peak = fmax(peak, fabs(cpu[i]));
            double e = fabs((double)gpu[i] - cpu[i]);
            if (e > err) { err = e; worst = i; }
        }
        err /= peak > 0 ? peak : 1;
        double sc_c = gl_spectral_convergence(mag, c->frames, cpu), sc_g = gl_spectral_convergence(mag, c->frames, gpu);
        if (getenv("V3_TEST_VERBOSE"))
            fprintf(stderr, "    %s: audio error %.3g of peak %.3g; spectral convergence CPU %.5f GPU %.5f\n",
                    c->what, err, peak, sc_c, sc_g);
        CHECK(err <= c->tol, "%s: GPU vs CPU audio error %.3g of the peak (limit %g), worst at sample %zu: %g vs %g",
              c->what, err, c->tol, worst, gpu[worst], cpu[worst]);
        CHECK(fabs(sc_c - sc_g) <= 1e-3, "%s: spectral convergence CPU %.5f vs GPU %.5f", c->what, sc_c, sc_g);
        /* same seed, same device: bit-identical (fixed kernels, no atomics; cuFFT plans of one configuration) */
        CHECK(griffinlim_gpu(mag, c->frames, c->iters, gseed, gpu2) == 0, "%s: %s", c->what, v3_last_error());
        CHECK(!memcmp(gpu, gpu2, sizeof(float) * L), "%s: two GPU runs differ", c->what);
        free(mag);
        free(cpu);
        free(gpu);
        free(gpu2);
    }
    return 0;
}

TEST(gpu_griffinlim_rejects_bad_arguments) {
    REQUIRE_GPU();
    float mag[2 * GL_BINS], audio[GL_HOP];
    for (int i = 0; i < 2 * GL_BINS; i++) mag[i] = 1.0f;
    CHECK(griffinlim_gpu(mag, 1, 4, 1, audio) == -1 && strstr(v3_last_error(), "frames"), "1 frame: '%s'",
          v3_last_error());
    CHECK(griffinlim_gpu(mag, 2, -1, 1, audio) == -1 && strstr(v3_last_error(), "iterations"), "-1 iters: '%s'",
          v3_last_error());
    mag[3] = NAN;
    CHECK(griffinlim_gpu(mag, 2, 4, 1, audio) == -1 && strstr(v3_last_error(), "magnitude"), "NaN: '%s'",
          v3_last_error());
    return 0;
}
