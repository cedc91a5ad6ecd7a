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
/* cuFFT on the current CUDA device (kernels/stft.cu; cuFFT is dlopen()ed). Host in, host out; internal device
 * buffers grow as needed. Returns 0, or -1 with v3_last_error() (no GPU, no cuFFT). */
typedef struct StftGpu StftGpu;
StftGpu *stft_gpu_create(void);   /* NULL with v3_last_error() when unavailable */
void stft_gpu_free(StftGpu *s);
int stft_logmag_gpu(StftGpu *s, const float *audio, int n_frags, float *out);
#ifdef __cplusplus
}
#endif
#endif
