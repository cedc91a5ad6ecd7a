/* The InsNotes feature on the GPU (include/cuda_backend.h, cuda_stft_*): upload of the fragments' audio, frame +
 * periodic Hann window, batched cuFFT R2C, log(|X| + 1e-5) of bins 0..511 written as [frag][512 bins][32 frames],
 * the sample's frequency mask (rows set to 0) and 0 -> 1e-8, straight into the caller's device buffer (the loader's
 * batch, which the training step reads in place). Same definition as host/dsp/stft_cpu.c (FFTW) plus the masking of
 * datasets/insnotes_source.c (insnotes_mask_and_guard), which tests/gpu/test_gpu_stft.c compares against.
 * cuFFT is dlopen()ed (libcufft.so.12, else libcufft.so) like cuBLAS/cuDNN in cuda_libs.cu, so the binary starts
 * on machines without it; only the types come from cufft.h. The workspace owns its stream; the audio is read from
 * the caller's host buffer (pinned by the loader, so the copy is a DMA). Every CUDA and cuFFT call is checked;
 * failures return -1 with v3_error() instead of exiting, so the trainer can report which part is missing. */
#include <cuda_runtime.h>
#include <cufft.h>
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "common.h"
#include "insnotes.h"
#include "cuda_backend.h"
}

#define NFFT INSNOTES_NFFT
#define NBIN (INSNOTES_NFFT / 2 + 1)
#define NFR INSNOTES_FRAMES

typedef cufftResult (*PlanManyFn)(cufftHandle *, int, int *, int *, int, int, int *, int, int, cufftType, int);
typedef cufftResult (*SetStreamFn)(cufftHandle, cudaStream_t);
typedef cufftResult (*ExecR2CFn)(cufftHandle, cufftReal *, cufftComplex *);
typedef cufftResult (*DestroyFn)(cufftHandle);

struct CudaStft {
    void *so;
    PlanManyFn plan_many;
    SetStreamFn set_stream;
    ExecR2CFn exec_r2c;
    DestroyFn destroy;
    cudaStream_t stream;
    cufftHandle plan;
    int plan_frags;          /* fragments the plan was made for (0: none) */
    int cap;                 /* fragments the buffers hold */
    int mask_cap;            /* samples d_mask holds */
    float *d_win, *d_audio, *d_frames;
    cufftComplex *d_spec;
    int32_t *d_mask;         /* [B][2] */
};

#define CU_TRY(call, what)                                                                                    \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) return v3_error("GPU STFT: %s: %s", what, cudaGetErrorString(e_));            \
    } while (0)
#define FFT_TRY(call, what)                                                                                   \
    do {                                                                                                      \
        cufftResult r_ = (call);                                                                              \
        if (r_ != CUFFT_SUCCESS) return v3_error("GPU STFT: cuFFT %s failed (cufftResult %d)", what, (int)r_); \
    } while (0)

/* audio [n][16896] -> frames [n * 32][1024], windowed */
__global__ void frame_kernel(const float *audio, const float *win, float *frames, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t fr = i / NFFT, n = i % NFFT, blk = fr / NFR, f = fr % NFR;
        frames[i] = audio[blk * INSNOTES_FRAG_AUDIO + f * INSNOTES_HOP + n] * win[n];
    }
}

/* spec [n * 32][513] -> out [n][512][32]: log(|X| + 1e-5), the same float formula as the CPU path; then the
 * mask of the fragment's sample (rows [mask[2b], mask[2b] + mask[2b+1]) become 0) and every exact 0 -> 1e-8, as
 * insnotes_mask_and_guard does on the host. */
__global__ void logmag_kernel(const cufftComplex *spec, const int32_t *mask, int n_frag, float *out, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t f = i % NFR, k = (i / NFR) % INSNOTES_BINS, blk = i / ((size_t)NFR * INSNOTES_BINS);
        size_t b = blk / (size_t)n_frag;
        long lo = mask[2 * b], hi = lo + mask[2 * b + 1];
        cufftComplex c = spec[(blk * NFR + f) * NBIN + k];
        float v = ((long)k >= lo && (long)k < hi) ? 0.0f : logf(sqrtf(c.x * c.x + c.y * c.y) + 1e-5f);
        out[i] = v == 0.0f ? 1e-8f : v;
    }
}

static unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    return (unsigned)(g < 1 ? 1 : g > 8192 ? 8192 : g);
}

static void release_buffers(CudaStft *s) {
    cudaFree(s->d_audio);
    cudaFree(s->d_frames);
    cudaFree(s->d_spec);
    s->d_audio = s->d_frames = NULL;
    s->d_spec = NULL;
    s->cap = 0;
}

static int ensure(CudaStft *s, int B, int n) {
    if (n > s->cap || B > s->mask_cap) CU_TRY(cudaStreamSynchronize(s->stream), "synchronise before growing buffers");
    if (B > s->mask_cap) {
        cudaFree(s->d_mask);
        s->d_mask = NULL;
        s->mask_cap = 0;
        CU_TRY(cudaMalloc(&s->d_mask, sizeof(int32_t) * 2 * (size_t)B), "cudaMalloc mask");
        s->mask_cap = B;
    }
    if (n > s->cap) {
        release_buffers(s);
        size_t fa = (size_t)n * INSNOTES_FRAG_AUDIO, ff = (size_t)n * NFR * NFFT, fs = (size_t)n * NFR * NBIN;
        CU_TRY(cudaMalloc(&s->d_audio, fa * sizeof(float)), "cudaMalloc audio");
        CU_TRY(cudaMalloc(&s->d_frames, ff * sizeof(float)), "cudaMalloc frames");
        CU_TRY(cudaMalloc(&s->d_spec, fs * sizeof(cufftComplex)), "cudaMalloc spectrum");
        s->cap = n;
    }
    if (n != s->plan_frags) { /* a cuFFT plan has a fixed batch: one per fragment count (constant in training) */
        if (s->plan_frags) {
            s->destroy(s->plan);
            s->plan_frags = 0;
        }
        int len[1] = {NFFT}, inembed[1] = {NFFT}, onembed[1] = {NBIN};
        FFT_TRY(s->plan_many(&s->plan, 1, len, inembed, 1, NFFT, onembed, 1, NBIN, CUFFT_R2C, n * NFR),
                "cufftPlanMany");
        s->plan_frags = n;
        FFT_TRY(s->set_stream(s->plan, s->stream), "cufftSetStream");
    }
    return 0;
}

static void *sym(CudaStft *s, const char *name, int *bad) {
    void *p = dlsym(s->so, name);
    if (!p && !*bad) {
        v3_error("GPU STFT: the cuFFT library has no symbol %s (expected cuFFT 11 or 12)", name);
        *bad = 1;
    }
    return p;
}

static int create(CudaStft *s) {
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0)
        return v3_error("GPU STFT: no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    const char *names[] = {"libcufft.so.12", "libcufft.so.11", "libcufft.so"};
    char err[512] = "";
    for (int i = 0; i < 3 && !s->so; i++) {
        s->so = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        const char *de = s->so ? NULL : dlerror();
        if (de && (!err[0] || !strstr(de, "No such file"))) snprintf(err, sizeof err, "%s", de);
    }
    if (!s->so)
        return v3_error("GPU STFT: cannot load cuFFT (tried libcufft.so.12, libcufft.so.11, libcufft.so): %s; "
                        "install the CUDA toolkit's cuFFT or add its lib64 to LD_LIBRARY_PATH", err);
    int bad = 0;
    s->plan_many = (PlanManyFn)sym(s, "cufftPlanMany", &bad);
    s->set_stream = (SetStreamFn)sym(s, "cufftSetStream", &bad);
    s->exec_r2c = (ExecR2CFn)sym(s, "cufftExecR2C", &bad);
    s->destroy = (DestroyFn)sym(s, "cufftDestroy", &bad);
    if (bad) return -1;
    CU_TRY(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    float win[NFFT];
    for (int i = 0; i < NFFT; i++) win[i] = (float)(0.5 - 0.5 * cos(2.0 * 3.14159265358979323846 * i / NFFT));
    CU_TRY(cudaMalloc(&s->d_win, sizeof win), "cudaMalloc window");
    CU_TRY(cudaMemcpy(s->d_win, win, sizeof win, cudaMemcpyHostToDevice), "copy window");
    return 0;
}

extern "C" CudaStft *cuda_stft_create(void) {
    CudaStft *s = (CudaStft *)xcalloc(1, sizeof *s);
    if (create(s)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", v3_last_error());
        cuda_stft_destroy(s);
        v3_error("%s", msg);
        return NULL;
    }
    return s;
}

extern "C" void cuda_stft_destroy(CudaStft *s) {
    if (!s) return;
    if (s->stream) cudaStreamSynchronize(s->stream);
    if (s->plan_frags) s->destroy(s->plan);
    release_buffers(s);
    cudaFree(s->d_mask);
    cudaFree(s->d_win);
    if (s->stream) cudaStreamDestroy(s->stream);
    if (s->so) dlclose(s->so);
    free(s);
}

extern "C" int cuda_stft_features(CudaStft *s, const float *audio, int B, int n_frag, const int32_t *mask,
                                  float *out_dev) {
    if (B < 1 || n_frag < 1 || n_frag > INSNOTES_NOTES)
        return v3_error("GPU STFT: %d samples of %d fragments (expected >= 1 samples of 1..%d fragments)", B, n_frag,
                        INSNOTES_NOTES);
    if ((long long)B * n_frag * NFR > INT_MAX)
        return v3_error("GPU STFT: %lld fragments in one call (at most %d)", (long long)B * n_frag, INT_MAX / NFR);
    int n = B * n_frag;
    if (ensure(s, B, n)) return -1;
    size_t fa = (size_t)n * INSNOTES_FRAG_AUDIO, ff = (size_t)n * NFR * NFFT, fo = (size_t)n * INSNOTES_BINS * NFR;
    CU_TRY(cudaMemcpyAsync(s->d_audio, audio, fa * sizeof(float), cudaMemcpyHostToDevice, s->stream), "copy audio in");
    CU_TRY(cudaMemcpyAsync(s->d_mask, mask, sizeof(int32_t) * 2 * (size_t)B, cudaMemcpyHostToDevice, s->stream),
           "copy mask in");
    frame_kernel<<<grid_for(ff), 256, 0, s->stream>>>(s->d_audio, s->d_win, s->d_frames, ff);
    CU_TRY(cudaGetLastError(), "frame kernel launch");
    FFT_TRY(s->exec_r2c(s->plan, s->d_frames, s->d_spec), "cufftExecR2C");
    logmag_kernel<<<grid_for(fo), 256, 0, s->stream>>>(s->d_spec, s->d_mask, n_frag, out_dev, fo);
    CU_TRY(cudaGetLastError(), "logmag kernel launch");
    CU_TRY(cudaStreamSynchronize(s->stream), "synchronise");
    return 0;
}
