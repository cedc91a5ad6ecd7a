/* CPU log-magnitude STFT of InsNotes fragments (include/stft.h) with FFTW single precision, and the direct
 * double-precision DFT both FFT paths are tested against.
 * Plans use FFTW_ESTIMATE: FFTW_MEASURE times candidate algorithms and may pick a different one on the next run,
 * which changes the low bits of the output and would break bit-exact resume. FFTW's planner is not thread-safe,
 * so plan creation and destruction are serialised by the process-wide lock of include/fftw_planner.h
 * (shared with host/dsp/griffinlim.c); fftwf_execute on distinct plans is thread-safe. */
#include <fftw3.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fftw_planner.h"
#include "insnotes.h"
#include "stft.h"

#define N INSNOTES_NFFT
#define NB (INSNOTES_NFFT / 2 + 1) /* 513 bins out of the r2c transform */
#define F INSNOTES_FRAMES

struct StftCpu {
    fftwf_plan plan;     /* 32 frames of one fragment at once */
    float *in;           /* [32][1024] windowed frames */
    fftwf_complex *out;  /* [32][513] */
    float win[N];
};

/* Periodic Hann (librosa/scipy "hann", fftbins=True): w[i] = 0.5 - 0.5 cos(2 pi i / N). */
static double hann(int i) { return 0.5 - 0.5 * cos(2.0 * 3.14159265358979323846 * i / N); }

StftCpu *stft_cpu_create(void) {
    StftCpu *s = xcalloc(1, sizeof *s);
    for (int i = 0; i < N; i++) s->win[i] = (float)hann(i);
    int n[1] = {N};
    fftw_planner_lock();
    s->in = fftwf_alloc_real((size_t)F * N);
    s->out = fftwf_alloc_complex((size_t)F * NB);
    if (s->in && s->out)
        s->plan = fftwf_plan_many_dft_r2c(1, n, F, s->in, NULL, 1, N, s->out, NULL, 1, NB, FFTW_ESTIMATE);
    fftw_planner_unlock();
    if (!s->plan) V3_FATAL("FFTW: cannot create a %d-point r2c plan", N);
    return s;
}

void stft_cpu_free(StftCpu *s) {
    if (!s) return;
    fftw_planner_lock();
    if (s->plan) fftwf_destroy_plan(s->plan);
    fftwf_free(s->in);
    fftwf_free(s->out);
    fftw_planner_unlock();
    free(s);
}

void stft_logmag_cpu(StftCpu *s, const float *audio, int n_frags, float *out) {
    for (int b = 0; b < n_frags; b++) {
        const float *a = audio + (size_t)b * INSNOTES_FRAG_AUDIO;
        float *o = out + (size_t)b * INSNOTES_BINS * F;
        for (int f = 0; f < F; f++)
            for (int i = 0; i < N; i++) s->in[f * N + i] = a[f * INSNOTES_HOP + i] * s->win[i];
        fftwf_execute(s->plan);
        for (int f = 0; f < F; f++)
            for (int k = 0; k < INSNOTES_BINS; k++) {
                float re = s->out[f * NB + k][0], im = s->out[f * NB + k][1];
                o[k * F + f] = logf(sqrtf(re * re + im * im) + 1e-5f);
            }
    }
}

void stft_logmag_dft(const float *audio, int n_frags, float *out) {
    double *c = xmalloc(sizeof(double) * N), *sn = xmalloc(sizeof(double) * N), *x = xmalloc(sizeof(double) * N);
    for (int m = 0; m < N; m++) {
        c[m] = cos(2.0 * 3.14159265358979323846 * m / N);
        sn[m] = sin(2.0 * 3.14159265358979323846 * m / N);
    }
    for (int b = 0; b < n_frags; b++)
        for (int f = 0; f < F; f++) {
            const float *a = audio + (size_t)b * INSNOTES_FRAG_AUDIO + (size_t)f * INSNOTES_HOP;
            for (int i = 0; i < N; i++) x[i] = (double)a[i] * hann(i);
            for (int k = 0; k < INSNOTES_BINS; k++) {
                double re = 0, im = 0;
                for (int i = 0; i < N; i++) { /* exp(-2 pi i k n / N), angle index reduced mod N exactly */
                    int m = (k * i) & (N - 1);
                    re += x[i] * c[m];
                    im -= x[i] * sn[m];
                }
                out[(size_t)b * INSNOTES_BINS * F + (size_t)k * F + f] = (float)log(sqrt(re * re + im * im) + 1e-5);
            }
        }
    free(c);
    free(sn);
    free(x);
}
