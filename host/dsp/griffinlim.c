/* Griffin-Lim phase reconstruction on the CPU (include/griffinlim.h) with FFTW single precision, the feature
 * conversion, spectral convergence and the WAV writer.
 * STFT convention (the training feature, include/stft.h): frame t of audio [L = GL_HOP * (frames - 1)] is
 * samples [512 t - 512, 512 t + 512) times a periodic Hann window, zero outside [0, L). Its inverse divides the
 * overlap-add of the windowed inverse FFTs by the sum of squared windows at each sample. With hop = n_fft / 2
 * every sample of [0, L) lies in exactly two frames (t = n / 512 and t + 1), so that sum is w[r]^2 + w[r + 512]^2
 * with r = n mod 512: it depends on r only and lies in [0.5, 1] (the Hann squares do not add up to a constant).
 * Plans use FFTW_ESTIMATE (deterministic, cheap to make); creation and destruction hold the process-wide FFTW
 * planner lock (include/fftw_planner.h), since FFTW's planner is not thread-safe. */
#include <fftw3.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef V3_HAVE_SNDFILE
#include <sndfile.h>
#endif

#include "common.h"
#include "fftw_planner.h"
#include "griffinlim.h"
#include "griffinlim_internal.h"
#include "rng.h"

#define N GL_N_FFT
#define HOP GL_HOP
#define NB GL_BINS
#define PI 3.14159265358979323846

_Static_assert(2 * HOP == N, "the overlap-add below assumes exactly two frames per sample (hop = n_fft / 2)");

/* Window and 1 / (N * sum of squared windows) per r = n mod HOP: the 1/N is the inverse FFT's normalisation
 * (FFTW's c2r is unnormalised). The floor is librosa's guard against dividing by ~0; with hop = N/2 the sum is
 * >= 0.5, so it never binds, but keeps the formula honest. kernels/griffinlim.cu uploads these same tables. */
void gl_tables(float *win, float *inv) {
    for (int i = 0; i < N; i++) win[i] = (float)(0.5 - 0.5 * cos(2.0 * PI * i / N));
    for (int r = 0; r < HOP; r++) {
        double s = (double)win[r] * win[r] + (double)win[r + HOP] * win[r + HOP];
        inv[r] = (float)(1.0 / ((double)N * (s > 1e-10 ? s : 1e-10)));
    }
}

typedef struct {
    int frames;
    size_t len;            /* HOP * (frames - 1) audio samples */
    fftwf_plan r2c, c2r;   /* all frames at once: buf <-> spec */
    float *buf;            /* [frames][N] windowed frames / inverse FFTs */
    fftwf_complex *spec;   /* [frames][NB] */
    float win[N], inv[HOP];
} Gl;

static int check_frames(int frames) {
    if (frames < 2 || frames > GL_MAX_FRAMES)
        return v3_error("Griffin-Lim: %d frames (expected 2..%d: the audio is %d * (frames - 1) samples)", frames,
                        GL_MAX_FRAMES, HOP);
    return 0;
}

static void gl_free(Gl *g) {
    if (!g) return;
    fftw_planner_lock();
    if (g->r2c) fftwf_destroy_plan(g->r2c);
    if (g->c2r) fftwf_destroy_plan(g->c2r);
    fftwf_free(g->buf);
    fftwf_free(g->spec);
    fftw_planner_unlock();
    free(g);
}

static Gl *gl_create(int frames) {
    if (check_frames(frames)) return NULL;
    Gl *g = xcalloc(1, sizeof *g);
    g->frames = frames;
    g->len = (size_t)HOP * (frames - 1);
    gl_tables(g->win, g->inv);
    int n[1] = {N};
    fftw_planner_lock();
    g->buf = fftwf_alloc_real((size_t)frames * N);
    g->spec = fftwf_alloc_complex((size_t)frames * NB);
    if (g->buf && g->spec) {
        g->r2c = fftwf_plan_many_dft_r2c(1, n, frames, g->buf, NULL, 1, N, g->spec, NULL, 1, NB, FFTW_ESTIMATE);
        g->c2r = fftwf_plan_many_dft_c2r(1, n, frames, g->spec, NULL, 1, NB, g->buf, NULL, 1, N, FFTW_ESTIMATE);
    }
    fftw_planner_unlock();
    if (!g->r2c || !g->c2r) {
        gl_free(g);
        v3_error("Griffin-Lim: FFTW cannot make %d-point plans for %d frames (out of memory?)", N, frames);
        return NULL;
    }
    return g;
}

/* audio [len] -> g->spec: frame, window, forward FFT. */
static void gl_analyse(Gl *g, const float *audio) {
    for (int t = 0; t < g->frames; t++) {
        float *f = g->buf + (size_t)t * N;
        long start = (long)HOP * t - HOP;
        for (int i = 0; i < N; i++) {
            long n = start + i;
            f[i] = (n >= 0 && n < (long)g->len) ? audio[n] * g->win[i] : 0.0f;
        }
    }
    fftwf_execute(g->r2c);
}

/* g->spec -> audio [len]: inverse FFT (destroys g->spec), window, overlap-add, normalise. */
static void gl_synthesise(Gl *g, float *audio) {
    for (int t = 0; t < g->frames; t++) { /* irfft ignores these (numpy does); FFTW and cuFFT may not agree on them */
        g->spec[(size_t)t * NB][1] = 0.0f;
        g->spec[(size_t)t * NB + NB - 1][1] = 0.0f;
    }
    fftwf_execute(g->c2r);
    for (size_t n = 0; n < g->len; n++) {
        size_t k = n / HOP, r = n % HOP; /* frame k holds n at offset r + HOP, frame k + 1 at offset r */
        const float *f0 = g->buf + k * N, *f1 = f0 + N;
        audio[n] = (g->win[r + HOP] * f0[r + HOP] + g->win[r] * f1[r]) * g->inv[r];
    }
}

int gl_stft(const float *audio, int frames, float *spec) {
    Gl *g = gl_create(frames);
    if (!g) return -1;
    gl_analyse(g, audio);
    memcpy(spec, g->spec, sizeof(fftwf_complex) * (size_t)frames * NB);
    gl_free(g);
    return 0;
}

int gl_istft(const float *spec, int frames, float *audio) {
    Gl *g = gl_create(frames);
    if (!g) return -1;
    memcpy(g->spec, spec, sizeof(fftwf_complex) * (size_t)frames * NB);
    gl_synthesise(g, audio);
    gl_free(g);
    return 0;
}

void gl_features_to_mag(const float *logmag, int frames, float *mag) {
    for (int t = 0; t < frames; t++) {
        float *m = mag + (size_t)t * NB;
        for (int k = 0; k < NB - 1; k++) {
            float v = expf(logmag[(size_t)k * frames + t]) - 1e-5f;
            m[k] = v > 0.0f ? v : 0.0f;
        }
        m[NB - 1] = 0.0f; /* the features drop the Nyquist bin */
    }
}

/* Random initial phase in [frame][bin] order (librosa: exp(2 pi i U[0,1))); the GPU path uploads these. */
void gl_initial_angles(uint64_t seed, size_t n, float *ang) {
    Rng rng;
    rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        double ph = 2.0 * PI * rng_uniform(&rng);
        ang[2 * i] = (float)cos(ph);
        ang[2 * i + 1] = (float)sin(ph);
    }
}

int gl_check_args(const float *mag, int frames, int iters) {
    if (check_frames(frames)) return -1;
    if (iters < 0) return v3_error("Griffin-Lim: %d iterations (expected >= 0)", iters);
    for (size_t i = 0; i < (size_t)frames * NB; i++)
        if (!(mag[i] >= 0.0f) || isinf(mag[i]))
            return v3_error("Griffin-Lim: magnitude [frame %zu][bin %zu] is %g (expected finite and >= 0)", i / NB,
                            i % NB, (double)mag[i]);
    return 0;
}

int griffinlim_cpu(const float *mag, int frames, int iters, uint64_t seed, float *audio) {
    if (gl_check_args(mag, frames, iters)) return -1;
    Gl *g = gl_create(frames);
    if (!g) return -1;
    size_t ns = (size_t)frames * NB;
    /* angles and the previous rebuilt spectrum, interleaved (re, im) */
    float *ang = xmalloc(sizeof(float) * 2 * ns), *prev = xcalloc(2 * ns, sizeof(float));
    gl_initial_angles(seed, ns, ang);
    const float c = (float)(GL_MOMENTUM / (1.0 + GL_MOMENTUM));
    float *sp = (float *)g->spec;
    for (int it = 0; it <= iters; it++) {
        for (size_t i = 0; i < ns; i++) {
            sp[2 * i] = mag[i] * ang[2 * i];
            sp[2 * i + 1] = mag[i] * ang[2 * i + 1];
        }
        gl_synthesise(g, audio); /* the last pass (it == iters) is the result */
        if (it == iters) break;
        gl_analyse(g, audio);
        /* Fast Griffin-Lim: extrapolate away from the previous projection, then keep only the phase. */
        for (size_t i = 0; i < ns; i++) {
            float re = sp[2 * i], im = sp[2 * i + 1];
            float ar = re - c * prev[2 * i], ai = im - c * prev[2 * i + 1];
            float m = sqrtf(ar * ar + ai * ai);
            if (m > 1e-30f) {
                ang[2 * i] = ar / m;
                ang[2 * i + 1] = ai / m;
            } else { /* no phase information at all (silence): any unit phase will do */
                ang[2 * i] = 1.0f;
                ang[2 * i + 1] = 0.0f;
            }
            prev[2 * i] = re;
            prev[2 * i + 1] = im;
        }
    }
    free(ang);
    free(prev);
    gl_free(g);
    return 0;
}

double gl_spectral_convergence(const float *mag, int frames, const float *audio) {
    Gl *g = gl_create(frames);
    if (!g) return NAN;
    gl_analyse(g, audio);
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)frames * NB; i++) {
        double re = g->spec[i][0], im = g->spec[i][1], d = sqrt(re * re + im * im) - mag[i];
        num += d * d;
        den += (double)mag[i] * mag[i];
    }
    gl_free(g);
    if (den == 0) return num == 0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

int wav_write_mono(const char *path, const float *audio, int n, int sample_rate) {
    if (n < 0) return v3_error("%s: %d samples (expected >= 0)", path, n);
    if (sample_rate <= 0) return v3_error("%s: sample rate %d (expected > 0)", path, sample_rate);
#ifndef V3_HAVE_SNDFILE
    (void)audio;
    return v3_error("%s: writing WAV files needs libsndfile: install the Debian package libsndfile1-dev (and "
                    "rebuild)", path);
#else
    /* Clip here rather than rely on libsndfile's float->PCM conversion: out-of-range floats would wrap. */
    float *buf = xmalloc(sizeof(float) * (n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        float v = audio[i];
        if (isnan(v)) {
            free(buf);
            return v3_error("%s: sample %d is NaN", path, i);
        }
        buf[i] = v > 1.0f ? 1.0f : v < -1.0f ? -1.0f : v;
    }
    SF_INFO info;
    memset(&info, 0, sizeof info);
    info.samplerate = sample_rate;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    int rc = 0;
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) rc = v3_error("%s: cannot create WAV file: %s", path, sf_strerror(NULL));
    else {
        sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
        if (sf_writef_float(sf, buf, (sf_count_t)n) != (sf_count_t)n)
            rc = v3_error("%s: write failed: %s", path, sf_strerror(sf));
        if (sf_close(sf) && !rc) rc = v3_error("%s: close failed", path);
    }
    free(buf);
    return rc;
#endif
}
