/* Internals of host/dsp/griffinlim.c (not part of the public API): what kernels/griffinlim.cu shares with the CPU
 * path so both start from identical inputs, and the complex STFT and its inverse for tests/test_griffinlim.c. */
#ifndef V3_GRIFFINLIM_INTERNAL_H
#define V3_GRIFFINLIM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#define GL_MOMENTUM 0.99
/* Frame count bound (about 68 minutes at 16 kHz), so sizes stay far from int overflow. */
#define GL_MAX_FRAMES (1 << 17)

/* Argument checks of griffinlim_cpu/_gpu: 2 <= frames <= GL_MAX_FRAMES, iters >= 0, magnitudes finite and
 * >= 0. 0, or -1 with v3_error(). */
int gl_check_args(const float *mag, int frames, int iters);
/* win [GL_N_FFT]: periodic Hann. inv [GL_HOP]: 1 / (GL_N_FFT * sum of squared windows) at offset r = n mod hop. */
void gl_tables(float *win, float *inv);
/* The random initial phase for a seed: n unit complex numbers (re, im), phases uniform on [0, 2 pi). */
void gl_initial_angles(uint64_t seed, size_t n, float *ang);

/* Centred STFT of audio [GL_HOP * (frames - 1)] (zero outside it) -> spec [frames][GL_BINS][2] (re, im),
 * unnormalised r2c like librosa.stft. 0, or -1 with v3_last_error() on a bad frame count. */
int gl_stft(const float *audio, int frames, float *spec);
/* Inverse: windowed overlap-add of the frames' inverse FFTs divided by the per-sample sum of squared windows
 * (librosa.istft, center=True, length = GL_HOP * (frames - 1)). The imaginary parts of the DC and Nyquist bins
 * are ignored (a real signal's inverse). 0, or -1 with v3_last_error(). */
int gl_istft(const float *spec, int frames, float *audio);
#endif
