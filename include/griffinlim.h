/* Griffin-Lim phase reconstruction for listening to decoded InsNotes spectrograms, matching the features'
 * STFT (include/stft.h: n_fft 1024, hop 512, periodic Hann, centred with zero padding): audio of
 * hop * (frames - 1) samples from a magnitude [frames][n_fft/2 + 1]. The "fast" variant (Perraudin et al. 2013,
 * momentum 0.99, librosa's default) for a fixed number of iterations, from a seeded random phase. FFTW on the CPU;
 * cuFFT on the GPU (kernels/griffinlim.cu) gives the same result up to float rounding. */
#ifndef V3_GRIFFINLIM_H
#define V3_GRIFFINLIM_H
#include <stdint.h>

#define GL_N_FFT 1024
#define GL_HOP 512
#define GL_BINS (GL_N_FFT / 2 + 1)

/* The decoder's features back to magnitudes: mag[t][f] = max(exp(logmag[f][t]) - 1e-5, 0) for the 512 stored
 * bins (feature layout [512 bins][frames], as in the dataset), and 0 for the dropped Nyquist bin. */
void gl_features_to_mag(const float *logmag, int frames, float *mag);

/* CPU (FFTW). mag [frames][GL_BINS]; audio [GL_HOP * (frames - 1)]. Returns 0 or -1 with v3_last_error(). */
int griffinlim_cpu(const float *mag, int frames, int iters, uint64_t seed, float *audio);
/* GPU (cuFFT, loaded at run time). Same contract; -1 with a clear error when CUDA/cuFFT is unavailable. */
int griffinlim_gpu(const float *mag, int frames, int iters, uint64_t seed, float *audio);
/* Spectral convergence || |STFT(audio)| - mag ||_F / || mag ||_F: how well the audio matches the magnitudes. */
double gl_spectral_convergence(const float *mag, int frames, const float *audio);

/* Mono float WAV (PCM 16-bit, peak-clipped to [-1,1]) through libsndfile. -1 with an error naming the Debian
 * package when this build has no libsndfile. */
int wav_write_mono(const char *path, const float *audio, int n, int sample_rate);
#endif
