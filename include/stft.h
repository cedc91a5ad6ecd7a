/* The InsNotes feature: log-magnitude STFT of fragments (v3.md section 1).
 * Input: n_frags blocks of INSNOTES_FRAG_AUDIO (16896) float samples; frame f (0..31) of a block is
 * audio[512 f .. 512 f + 1024) times a periodic Hann window (w[i] = 0.5 - 0.5 cos(2 pi i / 1024)).
 * (A block starts 512 samples before its slot, which is how centring with zero padding is realised: the
 * caller fills samples before t = 0 or after the end of the file with zeros.)
 * Output: n_frags blocks of [512 bins][32 frames] floats, row-major (bin-major): log(|X_k| + 1e-5) for
 * k = 0..511 (the Nyquist bin 512 is dropped). */
#ifndef V3_STFT_H
#define V3_STFT_H
#ifdef __cplusplus
extern "C" {
#endif

typedef struct StftCpu StftCpu;
/* FFTW single precision, FFTW_ESTIMATE plans (a measured plan may differ between runs, which would break
 * bit-exact resume). Creation is serialised internally (FFTW's planner is not thread-safe). */
StftCpu *stft_cpu_create(void);
void stft_cpu_free(StftCpu *s);
void stft_logmag_cpu(StftCpu *s, const float *audio, int n_frags, float *out);
/* Direct O(N^2) DFT in double precision: the reference both FFT paths are tested against. */
void stft_logmag_dft(const float *audio, int n_frags, float *out);
/* The same transform on the GPU (cuFFT, kernels/stft.cu) is part of the CUDA backend: cuda_stft_features in
 * include/cuda_backend.h computes the whole InsNotes feature (this STFT, the mask, 0 -> 1e-8) from host audio
 * straight into a device buffer. */
#ifdef __cplusplus
}
#endif
#endif
