/* Griffin-Lim on the GPU (include/griffinlim.h): the same algorithm as host/dsp/griffinlim.c with cuFFT in place of
 * FFTW. The CPU path is the specification; here it is split into kernels per step: magnitude x angle
 * (spectrum), batched C2R, overlap-add with the squared-window normalisation (audio), framing + window, batched
 * R2C, and the fast Griffin-Lim momentum/normalise update. The random initial phase, the window and the
 * normalisation table are computed on the host by the CPU code (gl_initial_angles, gl_tables) and uploaded, so
 * both paths start from identical numbers and differ only by float rounding (FFT algorithms, FMA contraction).
 * cuFFT is dlopen()ed (libcufft.so.12, .11, then libcufft.so) like kernels/stft.cu, so the binary starts on
 * machines without it; it is loaded once per process and kept. The call runs on the current CUDA device in its
 * own stream with its own buffers and plans, all released before it returns. Every CUDA and cuFFT call is
 * checked; failures return -1 with v3_error() and never exit. */
#include <cuda_runtime.h>
#include <cufft.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "common.h"
#include "griffinlim.h"
#include "griffinlim_internal.h"
}

#define N GL_N_FFT
#define HOP GL_HOP
#define NB GL_BINS

static_assert(2 * HOP == N, "ola_kernel assumes exactly two frames per sample (hop = n_fft / 2)");

typedef cufftResult (*PlanManyFn)(cufftHandle *, int, int *, int *, int, int, int *, int, int, cufftType, int);
typedef cufftResult (*SetStreamFn)(cufftHandle, cudaStream_t);
typedef cufftResult (*ExecR2CFn)(cufftHandle, cufftReal *, cufftComplex *);
typedef cufftResult (*ExecC2RFn)(cufftHandle, cufftComplex *, cufftReal *);
typedef cufftResult (*DestroyFn)(cufftHandle);

/* cuFFT entry points, loaded once (under g_fft_lock) and kept for the life of the process. */
static struct {
    void *so;
    PlanManyFn plan_many;
    SetStreamFn set_stream;
    ExecR2CFn exec_r2c;
    ExecC2RFn exec_c2r;
    DestroyFn destroy;
} g_fft;
static pthread_mutex_t g_fft_lock = PTHREAD_MUTEX_INITIALIZER;

#define CU_TRY(call, what)                                                                                    \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess) return v3_error("GPU Griffin-Lim: %s: %s", what, cudaGetErrorString(e_));      \
    } while (0)
#define FFT_TRY(call, what)                                                                                   \
    do {                                                                                                      \
        cufftResult r_ = (call);                                                                              \
        if (r_ != CUFFT_SUCCESS)                                                                              \
            return v3_error("GPU Griffin-Lim: cuFFT %s failed (cufftResult %d)", what, (int)r_);              \
    } while (0)

/* Called with g_fft_lock held. On failure the library is closed again and a later call retries. */
static int load_cufft_locked(void) {
    if (g_fft.so) return 0;
    const char *names[] = {"libcufft.so.12", "libcufft.so.11", "libcufft.so"};
    char err[512] = "";
    void *so = NULL;
    for (int i = 0; i < 3 && !so; i++) {
        so = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        const char *de = so ? NULL : dlerror();
        if (de && (!err[0] || !strstr(de, "No such file"))) snprintf(err, sizeof err, "%s", de);
    }
    if (!so)
        return v3_error("GPU Griffin-Lim: cannot load cuFFT (tried libcufft.so.12, libcufft.so.11, libcufft.so): "
                        "%s; install the CUDA toolkit's cuFFT or add its lib64 to LD_LIBRARY_PATH", err);
    const char *syms[5] = {"cufftPlanMany", "cufftSetStream", "cufftExecR2C", "cufftExecC2R", "cufftDestroy"};
    void *p[5];
    for (int i = 0; i < 5; i++)
        if (!(p[i] = dlsym(so, syms[i]))) {
            dlclose(so);
            return v3_error("GPU Griffin-Lim: the cuFFT library has no symbol %s (expected cuFFT 11 or 12)", syms[i]);
        }
    g_fft.plan_many = (PlanManyFn)p[0];
    g_fft.set_stream = (SetStreamFn)p[1];
    g_fft.exec_r2c = (ExecR2CFn)p[2];
    g_fft.exec_c2r = (ExecC2RFn)p[3];
    g_fft.destroy = (DestroyFn)p[4];
    g_fft.so = so;
    return 0;
}

static int load_cufft(void) {
    pthread_mutex_lock(&g_fft_lock);
    int rc = load_cufft_locked();
    pthread_mutex_unlock(&g_fft_lock);
    return rc;
}

/* ---- kernels (grid-stride loops; one thread per output element, no atomics: deterministic) ---- */

/* spec = mag * angles; the DC and Nyquist imaginary parts are zeroed, as the CPU path does before its c2r
 * (a real signal's inverse ignores them; cuFFT and FFTW need not treat them alike). */
__global__ void apply_mag_kernel(const float *mag, const float2 *ang, float2 *spec, size_t ns) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < ns; i += (size_t)gridDim.x * blockDim.x) {
        float m = mag[i];
        float2 a = ang[i];
        size_t k = i % NB;
        spec[i] = make_float2(m * a.x, (k == 0 || k == NB - 1) ? 0.0f : m * a.y);
    }
}

/* frames [T][N] (unnormalised inverse FFTs) -> audio [len]: sample n is in frame n / HOP at offset r + HOP and in
 * the next frame at offset r (r = n mod HOP); inv[r] holds 1 / (N * sum of squared windows). */
__global__ void ola_kernel(const float *frames, const float *win, const float *inv, float *audio, size_t len) {
    for (size_t n = blockIdx.x * (size_t)blockDim.x + threadIdx.x; n < len; n += (size_t)gridDim.x * blockDim.x) {
        size_t k = n / HOP, r = n % HOP;
        const float *f0 = frames + k * N, *f1 = f0 + N;
        audio[n] = (win[r + HOP] * f0[r + HOP] + win[r] * f1[r]) * inv[r];
    }
}

/* audio [len] -> frames [T][N]: frame t is samples [HOP t - HOP, HOP t + HOP) times the window, 0 outside. */
__global__ void frame_kernel(const float *audio, const float *win, float *frames, size_t len, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / N, j = i % N;
        long long n = (long long)(HOP * t + j) - HOP;
        frames[i] = (n >= 0 && n < (long long)len) ? audio[n] * win[j] : 0.0f;
    }
}

/* Fast Griffin-Lim: angles = unit(rebuilt - c * prev) (unit phase 1 when that is ~0), prev = rebuilt. */
__global__ void update_kernel(const float2 *reb, float2 *prev, float2 *ang, float c, size_t ns) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < ns; i += (size_t)gridDim.x * blockDim.x) {
        float2 r = reb[i], p = prev[i];
        float ar = r.x - c * p.x, ai = r.y - c * p.y;
        float m = sqrtf(ar * ar + ai * ai);
        ang[i] = m > 1e-30f ? make_float2(ar / m, ai / m) : make_float2(1.0f, 0.0f);
        prev[i] = r;
    }
}

static unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    return (unsigned)(g < 1 ? 1 : g > 8192 ? 8192 : g);
}

/* Everything one call allocates; released by release() whatever happened. */
typedef struct {
    cudaStream_t stream;
    cufftHandle r2c, c2r;
    int have_r2c, have_c2r;
    float *d_mag, *d_win, *d_inv, *d_frames, *d_audio;
    float2 *d_ang, *d_prev, *d_reb, *d_spec;
} Run;

static void release(Run *g) {
    if (g->stream) cudaStreamSynchronize(g->stream);
    if (g->have_r2c) g_fft.destroy(g->r2c);
    if (g->have_c2r) g_fft.destroy(g->c2r);
    cudaFree(g->d_mag);
    cudaFree(g->d_win);
    cudaFree(g->d_inv);
    cudaFree(g->d_frames);
    cudaFree(g->d_audio);
    cudaFree(g->d_ang);
    cudaFree(g->d_prev);
    cudaFree(g->d_reb);
    cudaFree(g->d_spec);
    if (g->stream) cudaStreamDestroy(g->stream);
    (void)cudaGetLastError(); /* leave no non-sticky error behind for the caller's next CUDA call */
}

static int run(Run *g, const float *mag, int frames, int iters, uint64_t seed, float *audio) {
    const size_t ns = (size_t)frames * NB, nf = (size_t)frames * N, len = (size_t)HOP * (frames - 1);
    CU_TRY(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    CU_TRY(cudaMalloc(&g->d_mag, ns * sizeof(float)), "cudaMalloc magnitudes");
    CU_TRY(cudaMalloc(&g->d_win, N * sizeof(float)), "cudaMalloc window");
    CU_TRY(cudaMalloc(&g->d_inv, HOP * sizeof(float)), "cudaMalloc normalisation");
    CU_TRY(cudaMalloc(&g->d_frames, nf * sizeof(float)), "cudaMalloc frames");
    CU_TRY(cudaMalloc(&g->d_audio, len * sizeof(float)), "cudaMalloc audio");
    CU_TRY(cudaMalloc(&g->d_ang, ns * sizeof(float2)), "cudaMalloc angles");
    CU_TRY(cudaMalloc(&g->d_prev, ns * sizeof(float2)), "cudaMalloc previous spectrum");
    CU_TRY(cudaMalloc(&g->d_reb, ns * sizeof(float2)), "cudaMalloc rebuilt spectrum");
    CU_TRY(cudaMalloc(&g->d_spec, ns * sizeof(float2)), "cudaMalloc spectrum");

    int len_n[1] = {N}, real_embed[1] = {N}, cplx_embed[1] = {NB};
    FFT_TRY(g_fft.plan_many(&g->r2c, 1, len_n, real_embed, 1, N, cplx_embed, 1, NB, CUFFT_R2C, frames),
            "cufftPlanMany (R2C)");
    g->have_r2c = 1;
    FFT_TRY(g_fft.plan_many(&g->c2r, 1, len_n, cplx_embed, 1, NB, real_embed, 1, N, CUFFT_C2R, frames),
            "cufftPlanMany (C2R)");
    g->have_c2r = 1;
    FFT_TRY(g_fft.set_stream(g->r2c, g->stream), "cufftSetStream (R2C)");
    FFT_TRY(g_fft.set_stream(g->c2r, g->stream), "cufftSetStream (C2R)");

    /* Host-side inputs shared with the CPU path: identical tables and initial phase. */
    float win[N], inv[HOP];
    gl_tables(win, inv);
    float *ang = (float *)xmalloc(sizeof(float) * 2 * ns);
    gl_initial_angles(seed, ns, ang);
    cudaError_t e = cudaMemcpyAsync(g->d_ang, ang, ns * sizeof(float2), cudaMemcpyHostToDevice, g->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g->stream); /* ang is pageable and freed next */
    free(ang);
    CU_TRY(e, "copy initial angles");
    CU_TRY(cudaMemcpyAsync(g->d_mag, mag, ns * sizeof(float), cudaMemcpyHostToDevice, g->stream), "copy magnitudes");
    CU_TRY(cudaMemcpyAsync(g->d_win, win, sizeof win, cudaMemcpyHostToDevice, g->stream), "copy window");
    CU_TRY(cudaMemcpyAsync(g->d_inv, inv, sizeof inv, cudaMemcpyHostToDevice, g->stream), "copy normalisation");
    CU_TRY(cudaMemsetAsync(g->d_prev, 0, ns * sizeof(float2), g->stream), "clear previous spectrum");

    const float c = (float)(GL_MOMENTUM / (1.0 + GL_MOMENTUM));
    for (int it = 0; it <= iters; it++) {
        apply_mag_kernel<<<grid_for(ns), 256, 0, g->stream>>>(g->d_mag, g->d_ang, g->d_spec, ns);
        CU_TRY(cudaGetLastError(), "magnitude kernel launch");
        FFT_TRY(g_fft.exec_c2r(g->c2r, (cufftComplex *)g->d_spec, g->d_frames), "cufftExecC2R");
        ola_kernel<<<grid_for(len), 256, 0, g->stream>>>(g->d_frames, g->d_win, g->d_inv, g->d_audio, len);
        CU_TRY(cudaGetLastError(), "overlap-add kernel launch");
        if (it == iters) break; /* the last synthesis is the result */
        frame_kernel<<<grid_for(nf), 256, 0, g->stream>>>(g->d_audio, g->d_win, g->d_frames, len, nf);
        CU_TRY(cudaGetLastError(), "framing kernel launch");
        FFT_TRY(g_fft.exec_r2c(g->r2c, g->d_frames, (cufftComplex *)g->d_reb), "cufftExecR2C");
        update_kernel<<<grid_for(ns), 256, 0, g->stream>>>(g->d_reb, g->d_prev, g->d_ang, c, ns);
        CU_TRY(cudaGetLastError(), "update kernel launch");
    }
    CU_TRY(cudaMemcpyAsync(audio, g->d_audio, len * sizeof(float), cudaMemcpyDeviceToHost, g->stream), "copy audio");
    CU_TRY(cudaStreamSynchronize(g->stream), "synchronise");
    return 0;
}

extern "C" int griffinlim_gpu(const float *mag, int frames, int iters, uint64_t seed, float *audio) {
    if (gl_check_args(mag, frames, iters)) return -1;
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        (void)cudaGetLastError();
        return v3_error("GPU Griffin-Lim: no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (load_cufft()) return -1;
    Run g;
    memset(&g, 0, sizeof g);
    int rc = run(&g, mag, frames, iters, seed, audio);
    release(&g); /* sets no v3_error: a failure's message stays the first one */
    return rc;
}
