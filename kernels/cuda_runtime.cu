/* CUDA backend runtime: device probe, initialisation, the backend's stream, memory and copies, scratch space. */
#include <stdio.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_check.h"
extern "C" {
#include "common.h"
}

static int g_device = -1;          /* selected by cuda_init */
static cudaStream_t g_stream = 0;  /* created by cuda_init; legacy default stream until then */
static void *g_scratch = NULL;
static size_t g_scratch_bytes = 0;

/* The oldest architecture this build has code for (sm_80 SASS; sm_90 SASS; compute_90 PTX for newer GPUs). */
static int usable_cc(int major, int minor) { return major * 10 + minor >= 80; }

/* "Driver too old" is also what the runtime says when there is no driver at all: tell the two apart. */
static const char *driver_note(cudaError_t e) {
    static char note[128];
    if (e != cudaErrorInsufficientDriver) return "";
    int drv = 0, rt = 0;
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
    (void)cudaGetLastError();
    if (drv == 0) return "; no NVIDIA driver is installed";
    snprintf(note, sizeof note, "; the driver supports CUDA %d.%d, this build needs %d.%d", drv / 1000,
             drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    return note;
}

extern "C" int cuda_probe(char *desc, size_t n) {
    if (desc && n) desc[0] = 0;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the non-sticky error so later calls start clean */
        if (desc && n) snprintf(desc, n, "no CUDA device: %s%s", cudaGetErrorString(e), driver_note(e));
        return 0;
    }
    if (count <= 0) {
        if (desc && n) snprintf(desc, n, "no CUDA device: %s", cudaGetErrorString(cudaErrorNoDevice));
        return 0;
    }
    int usable = 0, first = -1, have_old = 0;
    cudaDeviceProp first_prop, old_prop;
    memset(&first_prop, 0, sizeof first_prop);
    memset(&old_prop, 0, sizeof old_prop);
    for (int d = 0; d < count; d++) {
        cudaDeviceProp p;
        memset(&p, 0, sizeof p);
        e = cudaGetDeviceProperties(&p, d);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        if (!usable_cc(p.major, p.minor)) {
            if (!have_old) { old_prop = p; have_old = 1; }
            continue;
        }
        if (first < 0) { first = d; first_prop = p; }
        usable++;
    }
    if (!usable) {
        if (have_old && desc && n)
            snprintf(desc, n, "no CUDA device: %s (sm_%d%d, %.1f GiB) is older than sm_80, the oldest "
                     "architecture this build supports", old_prop.name, old_prop.major, old_prop.minor,
                     old_prop.totalGlobalMem / 1073741824.0);
        else if (desc && n)
            snprintf(desc, n, "no CUDA device: the device properties could not be read");
        return 0;
    }
    if (desc && n) {
        snprintf(desc, n, "%s (sm_%d%d, %.1f GiB)", first_prop.name, first_prop.major, first_prop.minor,
                 first_prop.totalGlobalMem / 1073741824.0);
        if (first != 0) {
            size_t len = strlen(desc);
            if (len < n) snprintf(desc + len, n - len, " [CUDA device %d]", first);
        }
    }
    return usable;
}

extern "C" int cuda_init(int device) {
    if (g_device >= 0) {
        if (device == g_device) return 0;
        return v3_error("cuda_init: device %d requested, but the backend already runs on device %d", device,
                        g_device);
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return v3_error("no CUDA device: %s%s", cudaGetErrorString(e), driver_note(e));
    }
    if (device < 0 || device >= count)
        return v3_error("CUDA device %d does not exist (%d device(s) visible)", device, count);
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, device)) != cudaSuccess)
        return v3_error("CUDA device %d: cannot read its properties: %s", device, cudaGetErrorString(e));
    if (!usable_cc(p.major, p.minor))
        return v3_error("CUDA device %d (%s, sm_%d%d) is older than sm_80, the oldest architecture this build "
                        "supports", device, p.name, p.major, p.minor);
    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return v3_error("CUDA device %d (%s): cannot select it: %s", device, p.name, cudaGetErrorString(e));
    cudaStream_t s;
    if ((e = cudaStreamCreate(&s)) != cudaSuccess)
        return v3_error("CUDA device %d (%s): cannot create a stream: %s", device, p.name, cudaGetErrorString(e));
    g_stream = s;
    g_device = device;
    return 0;
}

cudaStream_t v3cu_stream(void) { return g_stream; }

void *v3cu_scratch(size_t bytes) {
    if (bytes <= g_scratch_bytes) return g_scratch;
    size_t want = bytes < 65536 ? 65536 : bytes + bytes / 2;
    if (g_scratch) {
        CUDA_CHECK(cudaStreamSynchronize(g_stream)); /* queued kernels may still read the old buffer */
        CUDA_CHECK(cudaFree(g_scratch));
    }
    g_scratch = NULL;
    g_scratch_bytes = 0;
    CUDA_CHECK(cudaMalloc(&g_scratch, want));
    g_scratch_bytes = want;
    return g_scratch;
}

extern "C" void cuda_reserve_scratch(size_t bytes) { (void)v3cu_scratch(bytes); }

extern "C" void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess || !p) {
        size_t fr = 0, tot = 0;
        (void)cudaGetLastError();
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) (void)cudaGetLastError();
        fprintf(stderr, "v3: CUDA error: cannot allocate %zu bytes of device memory (%.2f GiB free of %.2f GiB): "
                "%s\n", bytes, fr / 1073741824.0, tot / 1073741824.0, cudaGetErrorString(e));
        exit(1);
    }
    return p;
}

extern "C" void cuda_free(void *p) {
    if (p) CUDA_CHECK(cudaFree(p));
}

static int copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, const char *what) {
    if (!bytes) return 0;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, g_stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(g_stream);
    if (e != cudaSuccess) return v3_error("CUDA %s copy of %zu bytes failed: %s", what, bytes, cudaGetErrorString(e));
    return 0;
}

extern "C" int cuda_h2d(void *dst, const void *src, size_t bytes) {
    return copy(dst, src, bytes, cudaMemcpyHostToDevice, "host-to-device");
}

extern "C" int cuda_d2h(void *dst, const void *src, size_t bytes) {
    return copy(dst, src, bytes, cudaMemcpyDeviceToHost, "device-to-host");
}

extern "C" int cuda_memset(void *dst, int byte, size_t bytes) {
    if (!bytes) return 0;
    cudaError_t e = cudaMemsetAsync(dst, byte, bytes, g_stream);
    if (e != cudaSuccess) return v3_error("CUDA memset of %zu bytes failed: %s", bytes, cudaGetErrorString(e));
    return 0;
}

extern "C" int cuda_sync(void) {
    cudaError_t e = cudaStreamSynchronize(g_stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) return v3_error("CUDA error while waiting for queued work: %s", cudaGetErrorString(e));
    return 0;
}

/* ---- timers: a pair of events on the backend stream ---- */
struct CudaTimer { cudaEvent_t a, b; };

extern "C" CudaTimer *cuda_timer_create(void) {
    CudaTimer *t = (CudaTimer *)calloc(1, sizeof *t);
    if (!t) { fprintf(stderr, "v3: out of host memory\n"); exit(1); }
    CUDA_CHECK(cudaEventCreate(&t->a));
    CUDA_CHECK(cudaEventCreate(&t->b));
    return t;
}

extern "C" void cuda_timer_destroy(CudaTimer *t) {
    if (!t) return;
    CUDA_CHECK(cudaEventDestroy(t->a));
    CUDA_CHECK(cudaEventDestroy(t->b));
    free(t);
}

extern "C" void cuda_timer_start(CudaTimer *t) { CUDA_CHECK(cudaEventRecord(t->a, g_stream)); }

extern "C" double cuda_timer_stop_ms(CudaTimer *t) {
    float ms = 0;
    CUDA_CHECK(cudaEventRecord(t->b, g_stream));
    CUDA_CHECK(cudaEventSynchronize(t->b));
    CUDA_CHECK(cudaEventElapsedTime(&ms, t->a, t->b));
    return ms;
}

/* ---- data streaming: pinned host buffers and a copy stream used by the loader thread ---- */

extern "C" void *cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        v3_error("cannot allocate %zu bytes of pinned host memory: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void cuda_host_free(void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

/* The current device is per host thread: a loader thread must select the trainer's device before any call. */
extern "C" int cuda_thread_bind(void) {
    if (g_device < 0) return v3_error("cuda_thread_bind: cuda_init has not selected a device");
    cudaError_t e = cudaSetDevice(g_device);
    if (e != cudaSuccess) return v3_error("CUDA device %d: cannot select it in this thread: %s", g_device,
                                          cudaGetErrorString(e));
    return 0;
}

struct CudaCopyStream { cudaStream_t s; };

extern "C" CudaCopyStream *cuda_copy_stream_create(void) {
    CudaCopyStream *c = (CudaCopyStream *)calloc(1, sizeof *c);
    cudaError_t e = c ? cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking) : cudaErrorMemoryAllocation;
    if (e != cudaSuccess) {
        free(c);
        v3_error("cannot create a CUDA copy stream: %s", cudaGetErrorString(e));
        return NULL;
    }
    return c;
}

extern "C" void cuda_copy_stream_destroy(CudaCopyStream *c) {
    if (!c) return;
    CUDA_CHECK(cudaStreamDestroy(c->s));
    free(c);
}

/* Copies on the copy stream and waits for that stream only: the backend stream keeps running the step. */
extern "C" int cuda_copy_stream_h2d(CudaCopyStream *c, void *dst, const void *src, size_t bytes) {
    if (!bytes) return 0;
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->s);
    if (e != cudaSuccess) return v3_error("CUDA host-to-device copy of %zu bytes (loader) failed: %s", bytes,
                                          cudaGetErrorString(e));
    return 0;
}
